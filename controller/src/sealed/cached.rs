//! A SealedSecret as the controller's cache keeps it. The cache holds every SealedSecret
//! the controller watches, for as long as it runs, so each one is kept in the least
//! memory that still serves every reconcile: the values in one boxed slice rather than a
//! map, and of the status only what a reconcile reads back (the conditions' types,
//! statuses, reasons and transition times, the key IDs) and a fingerprint of the rest, to
//! tell whether a status it computes is new.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Deserialize;
use sigil_types::{Scope, SealedSecret, SealedSecretStatus, SecretTemplate};

use crate::common::status::CurrentStatus;

/// A SealedSecret's sealed values and scope, whichever form holds them: the reconcile
/// opens a cached one, verify and re-seal one sent to them.
pub(crate) trait SealedValues {
    /// What each value is bound to.
    fn scope(&self) -> Scope;
    /// Data key and sealed value (base64), in key order.
    fn values(&self) -> impl Iterator<Item = (&str, &str)>;
}

impl SealedValues for SealedSecret {
    fn scope(&self) -> Scope {
        self.spec.scope
    }

    fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spec
            .encrypted_data
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

/// A SealedSecret as cached: everything a reconcile reads, nothing else.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "SealedSecret")]
pub struct CachedSealedSecret {
    /// The object's metadata.
    pub metadata: ObjectMeta,
    scope: Scope,
    /// Data key and sealed value, in key order.
    values: Box<[(Box<str>, Box<str>)]>,
    template: Option<Box<SecretTemplate>>,
    status: Option<Box<StatusSummary>>,
}

impl From<SealedSecret> for CachedSealedSecret {
    fn from(obj: SealedSecret) -> Self {
        Self {
            metadata: obj.metadata,
            scope: obj.spec.scope,
            values: obj
                .spec
                .encrypted_data
                .into_iter()
                .map(|(key, value)| (key.into_boxed_str(), value.into_boxed_str()))
                .collect(),
            template: obj.spec.template.map(Box::new),
            status: obj
                .status
                .map(|status| Box::new(StatusSummary::of(&status))),
        }
    }
}

impl SealedValues for CachedSealedSecret {
    fn scope(&self) -> Scope {
        self.scope
    }

    fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(key, value)| (&**key, &**value))
    }
}

impl CachedSealedSecret {
    /// How many values it holds.
    pub fn value_count(&self) -> usize {
        self.values.len()
    }

    /// What the unsealed Secret looks like besides its data.
    pub fn template(&self) -> Option<&SecretTemplate> {
        self.template.as_deref()
    }

    /// What its status says, as far as the cache keeps it.
    pub fn status(&self) -> Option<&StatusSummary> {
        self.status.as_deref()
    }
}

impl Resource for CachedSealedSecret {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        SealedSecret::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        SealedSecret::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        SealedSecret::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        SealedSecret::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the cache keeps of a SealedSecret's status.
#[derive(Clone, Debug)]
pub struct StatusSummary {
    /// The key IDs that opened the values.
    pub key_ids: Box<[Box<str>]>,
    conditions: Box<[ConditionSummary]>,
    fingerprint: u64,
}

#[derive(Clone, Debug)]
struct ConditionSummary {
    type_: Box<str>,
    status: Box<str>,
    reason: Box<str>,
    last_transition_time: Time,
}

impl StatusSummary {
    fn of(status: &SealedSecretStatus) -> Self {
        Self {
            key_ids: status.key_ids.iter().map(|id| id.as_str().into()).collect(),
            conditions: status
                .conditions
                .iter()
                .map(|c| ConditionSummary {
                    type_: c.type_.as_str().into(),
                    status: c.status.as_str().into(),
                    reason: c.reason.as_str().into(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect(),
            fingerprint: fingerprint(status),
        }
    }

    /// The conditions with their types, statuses, reasons and transition times (messages
    /// are not kept): what a new status carries over from the last.
    pub fn conditions(&self) -> Vec<Condition> {
        self.conditions
            .iter()
            .map(|c| Condition {
                type_: c.type_.to_string(),
                status: c.status.to_string(),
                reason: c.reason.to_string(),
                last_transition_time: c.last_transition_time.clone(),
                message: String::new(),
                observed_generation: None,
            })
            .collect()
    }
}

impl CurrentStatus<SealedSecretStatus> for StatusSummary {
    fn is(&self, status: &SealedSecretStatus) -> bool {
        self.fingerprint == fingerprint(status)
    }
}

/// A hash of everything `status` says, as it would be written. Not keyed: a status holds
/// no secret, and the hash never leaves the process.
fn fingerprint(status: &SealedSecretStatus) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_vec(status)
        .expect("a status serialises")
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(reason: &str, message: &str) -> SealedSecretStatus {
        SealedSecretStatus {
            observed_generation: Some(2),
            key_ids: vec!["0511a5555b1a342d".to_owned()],
            conditions: vec![Condition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
                observed_generation: Some(2),
                last_transition_time: Time(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
            }],
        }
    }

    #[test]
    fn a_status_is_told_apart_by_everything_it_says() {
        let summary = StatusSummary::of(&status("Unsealed", "written"));
        assert!(summary.is(&status("Unsealed", "written")));
        assert!(!summary.is(&status("Unsealed", "holds")), "message");
        assert!(!summary.is(&status("Tampered", "written")), "reason");
        let mut later = status("Unsealed", "written");
        later.observed_generation = Some(3);
        assert!(!summary.is(&later), "generation");
    }

    #[test]
    fn the_cache_keeps_what_a_reconcile_reads() {
        let json = serde_json::json!({
            "apiVersion": "sigil.dev/v1",
            "kind": "SealedSecret",
            "metadata": {"name": "db", "namespace": "prod", "uid": "u1", "generation": 2},
            "spec": {
                "scope": "namespace",
                "encryptedData": {"user": "AAAA", "password": "BBBB"},
                "template": {"type": "kubernetes.io/basic-auth"}
            },
            "status": status("Unsealed", "written"),
        });
        let cached: CachedSealedSecret = serde_json::from_value(json).unwrap();
        assert_eq!(cached.scope(), Scope::Namespace);
        assert_eq!(
            cached.values().collect::<Vec<_>>(),
            [("password", "BBBB"), ("user", "AAAA")]
        );
        assert_eq!(
            cached.template().and_then(|t| t.type_.as_deref()),
            Some("kubernetes.io/basic-auth")
        );
        let summary = cached.status().unwrap();
        assert_eq!(&*summary.key_ids, [Box::from("0511a5555b1a342d")]);
        let conditions = summary.conditions();
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].reason.as_str()),
            ("Ready", "Unsealed")
        );
        assert!(summary.is(&status("Unsealed", "written")));
    }
}
