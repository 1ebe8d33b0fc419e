//! Writing the Secrets the controller manages, for every kind that produces one
//! (SealedSecret, ExternalSecret): who may take a Secret over, when a write is needed at
//! all, and how a Secret is replaced when its type or immutable data must change.
//! Nothing here formats a Secret's data.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use sigil_types::{MANAGED_ANNOTATION, OWNED_BY_ANNOTATION};

use super::error::{Error, KubeContext, Result};
use super::secret_watch::{OwnedSecrets, SecretVersion};

/// Who writes a Secret, and how much of it.
pub(crate) struct Claim<'a> {
    /// The writing object's kind, e.g. `ExternalSecret`.
    pub kind: &'static str,
    /// The writing object's UID.
    pub uid: &'a str,
    /// How the Secret is written.
    pub mode: Mode,
}

/// How a Secret is written.
pub(crate) enum Mode {
    /// The whole Secret is this object's: created when missing, taken over only when it
    /// already belongs to this object or opts in, restored when edited.
    Own,
    /// Only this object's keys are written, into a Secret that must already exist, by
    /// server-side apply under the object's own field manager.
    Merge {
        /// The field manager of this object.
        manager: String,
    },
}

/// Why a Secret was not written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It exists and belongs to nothing that may be overwritten.
    NotOwned(String),
    /// Another object of the same kind claims it, or the keys to merge.
    Conflict(String),
    /// `Merge` needs an existing Secret.
    Missing(String),
    /// The API server refused it.
    Rejected(String),
}

/// What became of a write. The version is the Secret's once it held what was desired:
/// while the watch shows that version, nothing needs checking again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The Secret already held everything.
    Unchanged(Option<SecretVersion>),
    /// The Secret was created or changed.
    Changed(Option<SecretVersion>),
    /// Nothing was written.
    Refused(Refusal),
}

/// Writes Secrets through the API server, skipping requests the watch shows to be
/// unnecessary.
pub(crate) struct SecretWriter<'a> {
    pub client: &'a kube::Client,
    pub secrets: &'a OwnedSecrets,
    pub manager: &'a str,
}

impl Claim<'_> {
    fn is_mine(&self, secret: &Secret) -> bool {
        secret
            .owner_references()
            .iter()
            .any(|r| r.uid == self.uid && r.controller == Some(true))
            || secret
                .annotations()
                .get(OWNED_BY_ANNOTATION)
                .map(String::as_str)
                == Some(self.uid)
    }

    /// Another object of this kind controls the Secret.
    fn rival(&self, secret: &Secret) -> Option<String> {
        let by_owner = secret
            .owner_references()
            .iter()
            .find(|r| {
                r.controller == Some(true)
                    && is_sigils(r)
                    && r.kind == self.kind
                    && r.uid != self.uid
            })
            .map(|r| format!("{} {}", r.kind, r.name));
        by_owner.or_else(|| {
            secret
                .annotations()
                .get(OWNED_BY_ANNOTATION)
                .filter(|uid| uid.as_str() != self.uid)
                .map(|uid| format!("the object with UID {uid}"))
        })
    }
}

/// Whether the owner is one of Sigil's objects: Bitnami's SealedSecret and ESO's
/// ExternalSecret share the kind names.
fn is_sigils(owner: &OwnerReference) -> bool {
    owner
        .api_version
        .strip_prefix(sigil_types::GROUP)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// A controller of the Secret outside Sigil, which would keep writing it: the API server
/// also refuses a second controller reference.
fn foreign_controller(secret: &Secret) -> Option<&OwnerReference> {
    secret
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true) && !is_sigils(r))
}

/// Why a Secret controlled outside Sigil was left alone, and how to hand it over.
fn foreign_refusal(namespace: &str, name: &str, owner: &OwnerReference) -> Refusal {
    let release = if owner.api_version.starts_with("bitnami.com/") {
        format!(
            "moving from Bitnami Sealed Secrets, delete that object but not its Secret: kubectl delete sealedsecrets.bitnami.com {} -n {namespace} --cascade=orphan",
            owner.name
        )
    } else {
        format!(
            "remove that owner reference (or delete the {} with --cascade=orphan)",
            owner.kind
        )
    };
    Refusal::NotOwned(format!(
        "Secret {namespace}/{name} is controlled by {} {} ({}), so it was left untouched; {release}, then annotate the Secret with {MANAGED_ANNOTATION}=\"true\"",
        owner.kind, owner.name, owner.api_version
    ))
}

/// Whether `existing` already carries everything `desired` sets (for `Own`, exactly the
/// desired data; for `Merge`, the desired keys among others).
fn matches(existing: &Secret, desired: &Secret, whole: bool) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let data_matches = if whole {
        existing.data.clone().unwrap_or_default() == desired.data.clone().unwrap_or_default()
    } else {
        desired.data.iter().flatten().all(|(k, v)| {
            existing
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .is_some_and(|have| have == v)
        })
    };
    data_matches
        && (desired.type_.is_none() || existing.type_ == desired.type_)
        && (desired.immutable.is_none() || existing.immutable == desired.immutable)
        && subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
        && desired
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|want| {
                existing
                    .owner_references()
                    .iter()
                    .any(|have| have.uid == want.uid && have.controller == Some(true))
            })
}

/// The keys of `desired` that a field manager other than `manager` (and other than
/// this kind's managers, which `prefix` names) owns in `existing`: for `Merge`, another
/// merging object's keys are a conflict.
fn merged_by_others(existing: &Secret, desired: &Secret, manager: &str, prefix: &str) -> bool {
    let keys: Vec<String> = desired
        .data
        .iter()
        .flatten()
        .map(|(k, _)| format!("f:{k}"))
        .collect();
    existing
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager
                .as_deref()
                .is_some_and(|name| name != manager && name.starts_with(prefix))
        })
        .filter_map(|m| m.fields_v1.as_ref())
        .any(|fields| {
            fields
                .0
                .get("f:data")
                .and_then(|d| d.as_object())
                .is_some_and(|d| keys.iter().any(|k| d.contains_key(k)))
        })
}

impl SecretWriter<'_> {
    /// Makes the Secret `desired` (name and namespace set) hold what it should.
    pub(crate) async fn write(&self, desired: &Secret, claim: &Claim<'_>) -> Result<Written> {
        let namespace = desired.namespace().unwrap_or_default();
        let name = desired.name_any();
        let fingerprint = self.secrets.fingerprint(desired);
        // Written with the same fingerprint, unchanged since: it is still ours and holds
        // everything desired.
        if let Some(version) = self.secrets.holds(&namespace, &name, fingerprint) {
            return Ok(Written::Unchanged(Some(version)));
        }
        let seen = self.secrets.seen(&namespace, &name);
        let written = self
            .write_through(desired, claim, &namespace, &name, seen.is_some())
            .await?;
        if let Written::Unchanged(version) | Written::Changed(version) = &written {
            self.secrets
                .remember(&namespace, &name, *version, fingerprint);
        }
        Ok(written)
    }

    /// `write`, for a Secret the watch cannot vouch for: `seen` if it shows one at all.
    async fn write_through(
        &self,
        desired: &Secret,
        claim: &Claim<'_>,
        namespace: &str,
        name: &str,
        seen: bool,
    ) -> Result<Written> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let whole = matches!(claim.mode, Mode::Own);
        if !seen && whole {
            // Most Secrets do not exist yet: one create, instead of a read and an apply.
            let params = PostParams {
                field_manager: Some(self.manager.to_owned()),
                ..PostParams::default()
            };
            match api.create(&params, desired).await {
                Ok(created) => {
                    return Ok(Written::Changed(self.secrets.version_of(&created.metadata)));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
                    return Ok(rejected(namespace, name, &status.message));
                }
                Err(source) => {
                    return Err(Error::Kube {
                        action: format!("create Secret {namespace}/{name}"),
                        source,
                    });
                }
            }
        }
        let existing = api
            .get_opt(name)
            .await
            .during(|| format!("read Secret {namespace}/{name}"))?;
        let manager = match &claim.mode {
            Mode::Own => self.manager,
            Mode::Merge { manager } => manager.as_str(),
        };
        match (&existing, &claim.mode) {
            (None, Mode::Merge { .. }) => {
                return Ok(Written::Refused(Refusal::Missing(format!(
                    "Secret {namespace}/{name} does not exist, and creationPolicy Merge only adds keys to an existing Secret; create it, or use creationPolicy Owner"
                ))));
            }
            (Some(existing), Mode::Own) if !claim.is_mine(existing) => {
                if let Some(rival) = claim.rival(existing) {
                    return Ok(Written::Refused(Refusal::Conflict(format!(
                        "Secret {namespace}/{name} already belongs to {rival}; nothing was written. Give one of them another target.name"
                    ))));
                }
                if let Some(owner) = foreign_controller(existing) {
                    return Ok(Written::Refused(foreign_refusal(namespace, name, owner)));
                }
                let opted_in = existing
                    .annotations()
                    .get(MANAGED_ANNOTATION)
                    .is_some_and(|v| v == "true");
                if !opted_in {
                    return Ok(Written::Refused(Refusal::NotOwned(format!(
                        "Secret {namespace}/{name} already exists and does not belong to this {}, so it was left untouched; delete it, or annotate it with {MANAGED_ANNOTATION}=\"true\" to let sigil take it over",
                        claim.kind
                    ))));
                }
            }
            (Some(existing), Mode::Merge { .. }) if claim.rival(existing).is_some() => {
                return Ok(Written::Refused(Refusal::Conflict(format!(
                    "Secret {namespace}/{name} belongs to {}, which keeps it exactly as it wants it; nothing was merged. Merge into a Secret nothing owns",
                    claim.rival(existing).unwrap_or_default()
                ))));
            }
            (Some(existing), Mode::Merge { manager })
                if merged_by_others(existing, desired, manager, self.manager) =>
            {
                return Ok(Written::Refused(Refusal::Conflict(format!(
                    "another {} already merges some of these keys into Secret {namespace}/{name}; nothing was written. Each key may come from one {} only",
                    claim.kind, claim.kind
                ))));
            }
            _ => {}
        }
        if let Some(existing) = &existing
            && matches(existing, desired, whole)
        {
            return Ok(Written::Unchanged(
                self.secrets.version_of(&existing.metadata),
            ));
        }
        // Type and immutable data cannot change in place: replace the Secret.
        if let Some(existing) = &existing
            && whole
            && (existing.type_ != desired.type_
                || (existing.immutable == Some(true) && existing.data != desired.data))
        {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: existing.uid(),
                    resource_version: existing.resource_version(),
                }),
                ..DeleteParams::default()
            };
            api.delete(name, &params)
                .await
                .during(|| format!("replace Secret {namespace}/{name}"))?;
        }
        // Keys that another field manager put there (a taken-over Secret) would survive
        // an apply: remove them first, so an owned Secret holds exactly its data.
        if let Some(existing) = &existing
            && whole
        {
            let want = desired.data.clone().unwrap_or_default();
            let extra: serde_json::Map<String, serde_json::Value> = existing
                .data
                .iter()
                .flatten()
                .filter(|(k, _)| !want.contains_key(*k))
                .map(|(k, _)| (k.clone(), serde_json::Value::Null))
                .collect();
            if !extra.is_empty() {
                api.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "data": extra })),
                )
                .await
                .during(|| format!("remove foreign keys from Secret {namespace}/{name}"))?;
            }
        }
        match api
            .patch(
                name,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(desired),
            )
            .await
        {
            Ok(applied) => Ok(Written::Changed(self.secrets.version_of(&applied.metadata))),
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
                Ok(rejected(namespace, name, &status.message))
            }
            Err(source) => Err(Error::Kube {
                action: format!("apply Secret {namespace}/{name}"),
                source,
            }),
        }
    }

    /// Deletes the Secret if it belongs to `claim` (404 counts as done); `Merge` removes
    /// only the claim's own keys, by applying nothing under its field manager.
    pub(crate) async fn remove(
        &self,
        namespace: &str,
        name: &str,
        claim: &Claim<'_>,
    ) -> Result<bool> {
        self.secrets.forget(namespace, name);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(existing) = api
            .get_opt(name)
            .await
            .during(|| format!("read Secret {namespace}/{name}"))?
        else {
            return Ok(false);
        };
        match &claim.mode {
            Mode::Own => {
                if !claim.is_mine(&existing) {
                    return Ok(false);
                }
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: existing.uid(),
                        resource_version: existing.resource_version(),
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(name, &params).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                    Err(source) => Err(Error::Kube {
                        action: format!("delete Secret {namespace}/{name}"),
                        source,
                    }),
                }
            }
            Mode::Merge { manager } => {
                let empty = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace},
                });
                api.patch(
                    name,
                    &PatchParams::apply(manager).force(),
                    &Patch::Apply(&empty),
                )
                .await
                .during(|| format!("remove merged keys from Secret {namespace}/{name}"))?;
                Ok(true)
            }
        }
    }
}

fn rejected(namespace: &str, name: &str, reason: &str) -> Written {
    Written::Refused(Refusal::Rejected(format!(
        "the API server refused Secret {namespace}/{name}: {reason}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, ManagedFieldsEntry, OwnerReference,
    };

    use super::super::secret_watch::tests::secret;

    fn claim(uid: &str) -> Claim<'_> {
        Claim {
            kind: "ExternalSecret",
            uid,
            mode: Mode::Own,
        }
    }

    #[test]
    fn own_needs_exactly_the_desired_data_merge_only_its_keys() {
        let existing = secret(&[("a", "1"), ("b", "2")]);
        let desired = secret(&[("a", "1")]);
        assert!(!matches(&existing, &desired, true));
        assert!(matches(&existing, &desired, false));
        assert!(!matches(&existing, &secret(&[("a", "9")]), false));
    }

    #[test]
    fn ownership_by_owner_reference_or_annotation() {
        let mut s = secret(&[]);
        assert!(!claim("u1").is_mine(&s));
        assert_eq!(claim("u1").rival(&s), None);
        s.metadata.annotations = Some(BTreeMap::from([(
            OWNED_BY_ANNOTATION.to_owned(),
            "u1".to_owned(),
        )]));
        assert!(claim("u1").is_mine(&s));
        assert!(claim("u2").rival(&s).is_some());
        let mut t = secret(&[]);
        t.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "sigil.dev/v1".into(),
            kind: "ExternalSecret".into(),
            name: "first".into(),
            uid: "u1".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        assert!(claim("u1").is_mine(&t));
        assert_eq!(
            claim("u2").rival(&t).as_deref(),
            Some("ExternalSecret first")
        );
        assert!(foreign_controller(&t).is_none());
    }

    #[test]
    fn a_secret_controlled_outside_sigil_is_foreign_even_with_the_same_kind() {
        let mut s = secret(&[]);
        s.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "bitnami.com/v1alpha1".into(),
            kind: "SealedSecret".into(),
            name: "db".into(),
            uid: "b1".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        let sealed = Claim {
            kind: "SealedSecret",
            uid: "s1",
            mode: Mode::Own,
        };
        assert_eq!(sealed.rival(&s), None);
        let owner = foreign_controller(&s).expect("Bitnami's controller reference");
        let Refusal::NotOwned(message) = foreign_refusal("prod", "db", owner) else {
            panic!("a foreign controller is a NotOwned refusal");
        };
        assert!(
            message
                .contains("kubectl delete sealedsecrets.bitnami.com db -n prod --cascade=orphan")
                && message.contains("sigil.dev/managed"),
            "{message}"
        );
        // A sigil.dev lookalike group is not Sigil's.
        s.metadata.owner_references.as_mut().unwrap()[0].api_version = "sigil.dev.evil/v1".into();
        assert!(foreign_controller(&s).is_some());
    }

    #[test]
    fn merged_keys_of_another_object_conflict() {
        let mut existing = secret(&[("a", "1"), ("b", "2")]);
        existing.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("sigil-controller/es/other".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:data": {"f:a": {}}}))),
            ..ManagedFieldsEntry::default()
        }]);
        let prefix = "sigil-controller";
        assert!(merged_by_others(
            &existing,
            &secret(&[("a", "3")]),
            "sigil-controller/es/mine",
            prefix
        ));
        assert!(!merged_by_others(
            &existing,
            &secret(&[("b", "3")]),
            "sigil-controller/es/mine",
            prefix
        ));
        // A person's edit (kubectl) is not a conflict: it is restored.
        assert!(!merged_by_others(
            &existing,
            &secret(&[("a", "3")]),
            "sigil-controller/es/other",
            prefix
        ));
    }
}
