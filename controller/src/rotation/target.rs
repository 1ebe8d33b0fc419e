//! Which remote key a Rotation writes: what `spec.externalSecretRef` resolves to, the
//! store session to write through, and, at every step after `resolve`, the proof that
//! the target recorded in status is still the one the spec names.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use sigil_providers::{Provider, Session};
use sigil_types::{ExternalSecret, Rotation, RotationTarget, StoreKind};

use super::{RotationContext, Stop, display_name, fail, status_of};
use crate::common::error::Error;
use crate::sync::external::resolve_store;
use crate::sync::stores::StoreObject;

/// What `spec.externalSecretRef` names now: the remote key and property, and the store
/// as the ExternalSecret may use it (a SecretStore of its namespace, or a
/// ClusterSecretStore whose conditions admit the namespace).
pub(super) async fn resolve_target(
    obj: &Rotation,
    ctx: &RotationContext,
) -> Result<(RotationTarget, StoreObject), Stop> {
    let namespace = obj.namespace().unwrap_or_default();
    let reference = obj.spec.external_secret_ref.as_ref().ok_or_else(|| {
        fail(
            "InvalidSpec",
            "set spec.externalSecretRef or spec.sealingKey",
        )
    })?;
    let es = external_secret(ctx, &namespace, &reference.name).await?;
    let policy = super::policy::policy_of(obj, ctx)?;
    // A runbook names only the ExternalSecret: its policy may say which entry.
    let secret_key = reference.secret_key.clone().or_else(|| {
        policy
            .as_ref()
            .and_then(|p| p.spec.external_secret_ref.secret_key.clone())
    });
    let (key, property) =
        remote_key_of(&es, secret_key.as_deref()).map_err(|m| fail("InvalidTarget", m))?;
    let store = match resolve_store(&es, &namespace, &ctx.sync).await? {
        Ok(store) => store,
        Err(failure) => return Err(fail("StoreNotReady", failure.message)),
    };
    let server = ctx
        .sync
        .stores
        .server_of(&store)
        .await
        .map_err(|problem| fail("StoreNotReady", problem.message().to_owned()))?;
    let provider = session_of(ctx, &store).await?.provider();
    // A policy's PostgreSQL credential is one JSON value holding both the role name and
    // its password, whichever of them the ExternalSecret reads.
    let (property, username_property) =
        match policy.as_deref().and_then(super::credential::properties) {
            Some((password, username)) => (Some(password), Some(username)),
            None => (property, None),
        };
    let target = RotationTarget {
        provider: provider.as_str().to_owned(),
        store: store_name(&store),
        server,
        key,
        property,
        username_property,
    };
    Ok((target, store))
}

/// The target and base version recorded at `resolve`, with the store to write through,
/// once the target is again what the spec resolves to. Anyone who may write
/// `rotations/status` could have written it: alone, it names nothing to write or roll.
pub(super) async fn verified(
    obj: &Rotation,
    ctx: &RotationContext,
) -> Result<(RotationTarget, String, StoreObject), Stop> {
    let (recorded_target, base) = recorded(obj)?;
    let (target, store) = resolve_target(obj, ctx).await?;
    if !still_the_target(&recorded_target, &target) {
        let shown =
            |t: &RotationTarget| format!("{} through {} at {}", describe(t), t.store, t.server);
        return Err(fail(
            "InvalidStatus",
            format!(
                "{}: status.target ({}) is not what spec.externalSecretRef resolves to now ({}); nothing more was written or restarted. Create a new Rotation",
                display_name(obj),
                shown(&recorded_target),
                shown(&target)
            ),
        ));
    }
    Ok((target, base, store))
}

/// Whether the target resolved now is the one `resolve` recorded. A Rotation recorded
/// before servers named their account (AWS) resumes: its server is today's without
/// ` account <id>`, and everything else must match.
fn still_the_target(recorded: &RotationTarget, now: &RotationTarget) -> bool {
    let recorded_before_accounts = !recorded.server.contains(" account ")
        && now
            .server
            .strip_prefix(recorded.server.as_str())
            .is_some_and(|rest| rest.starts_with(" account "))
        && RotationTarget {
            server: recorded.server.clone(),
            ..now.clone()
        } == *recorded;
    now == recorded || recorded_before_accounts
}

/// The ExternalSecret a Rotation names, from the watch cache or the API server.
async fn external_secret(
    ctx: &RotationContext,
    namespace: &str,
    name: &str,
) -> Result<Arc<ExternalSecret>, Stop> {
    if !sigil_types::is_object_name(name) {
        return Err(fail(
            "InvalidSpec",
            format!(
                "spec.externalSecretRef.name `{name}` is not an object name; name an ExternalSecret of namespace {namespace}"
            ),
        ));
    }
    if let Some(es) = ctx
        .sync
        .externals
        .get(&ObjectRef::new(name).within(namespace))
    {
        return Ok(es);
    }
    let api: kube::Api<ExternalSecret> = kube::Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(es)) => Ok(Arc::new(es)),
        Ok(None) => Err(fail(
            "TargetNotFound",
            format!(
                "ExternalSecret {namespace}/{name} does not exist; fix spec.externalSecretRef.name (it must be in the Rotation's namespace)"
            ),
        )),
        Err(source) => Err(Stop::Retry(Error::Kube {
            action: format!("read ExternalSecret {namespace}/{name}"),
            source,
        })),
    }
}

/// The remote key and property that `secret_key` (or the only entry) of `es` reads.
pub(crate) fn remote_key_of(
    es: &ExternalSecret,
    secret_key: Option<&str>,
) -> Result<(String, Option<String>), String> {
    let name = format!(
        "ExternalSecret {}/{}",
        es.namespace().unwrap_or_default(),
        es.name_any()
    );
    let keys: Vec<&str> = es.spec.data.iter().map(|d| d.secret_key.as_str()).collect();
    let entry = match secret_key {
        Some(wanted) => es
            .spec
            .data
            .iter()
            .find(|d| d.secret_key == wanted)
            .ok_or_else(|| {
                format!(
                    "{name} has no spec.data entry with secretKey `{wanted}`; fix spec.externalSecretRef.secretKey (its keys: {})",
                    keys.join(", ")
                )
            })?,
        None => match (es.spec.data.as_slice(), es.spec.data_from.as_slice()) {
            ([only], []) => only,
            ([], [from]) => {
                let extract = from.extract.as_ref().ok_or_else(|| format!("{name} has no remote key"))?;
                if extract.version.is_some() {
                    return Err(format!("{name} pins version `{}` of `{}`; a rotation writes a new current version, which it would never read", extract.version.as_deref().unwrap_or(""), extract.key));
                }
                return Ok((extract.key.clone(), None));
            }
            _ => {
                return Err(format!(
                    "{name} reads several remote values; set spec.externalSecretRef.secretKey to the one to rotate (one of: {})",
                    keys.join(", ")
                ));
            }
        },
    };
    if let Some(version) = &entry.remote_ref.version {
        return Err(format!(
            "{name}: secretKey `{}` pins version `{version}` of `{}`; a rotation writes a new current version, which it would never read. Remove the pin first",
            entry.secret_key, entry.remote_ref.key
        ));
    }
    Ok((
        entry.remote_ref.key.clone(),
        entry.remote_ref.property.clone(),
    ))
}

/// The store's session, or why the Rotation cannot use it.
pub(super) async fn session_of(
    ctx: &RotationContext,
    store: &StoreObject,
) -> Result<Arc<Session>, Stop> {
    match ctx.sync.stores.session(store).await {
        Ok((_, session)) => Ok(session),
        Err(problem) => Err(fail("StoreNotReady", problem.message().to_owned())),
    }
}

fn store_name(store: &StoreObject) -> String {
    match store.store.kind {
        StoreKind::ClusterSecretStore => format!("ClusterSecretStore/{}", store.store.name),
        _ => format!("SecretStore/{}/{}", store.store.namespace, store.store.name),
    }
}

/// The target and base version recorded at `resolve`, unchecked.
fn recorded(obj: &Rotation) -> Result<(RotationTarget, String), Stop> {
    let status = status_of(obj);
    match (status.target, status.base_version) {
        (Some(target), Some(base)) => Ok((target, base)),
        _ => Err(fail(
            "InvalidStatus",
            format!(
                "{}: status lost its target; create a new Rotation",
                display_name(obj)
            ),
        )),
    }
}

/// "Vault key `app/db` property `password`": how messages name a target.
pub(super) fn describe(target: &RotationTarget) -> String {
    let provider = Provider::named(&target.provider).map_or("remote", Provider::short_name);
    match &target.property {
        Some(property) => format!("{provider} key `{}` property `{property}`", target.key),
        None => format!("{provider} key `{}`", target.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_types::{ExternalSecretData, ExternalSecretSpec, RemoteRef};

    #[test]
    fn a_target_recorded_without_the_aws_account_still_matches_and_nothing_else_does() {
        let now = RotationTarget {
            provider: "aws".to_owned(),
            store: "SecretStore/team-a/aws".to_owned(),
            server: "aws us-east-1 endpoint default account 111111111111".to_owned(),
            key: "app/db".to_owned(),
            property: Some("password".to_owned()),
            username_property: None,
        };
        let legacy = RotationTarget {
            server: "aws us-east-1 endpoint default".to_owned(),
            ..now.clone()
        };
        assert!(still_the_target(&now, &now));
        assert!(still_the_target(&legacy, &now));
        for forged in [
            RotationTarget {
                key: "other/db".to_owned(),
                ..legacy.clone()
            },
            RotationTarget {
                server: "aws us-east-1 endpoint default account 222222222222".to_owned(),
                ..now.clone()
            },
            RotationTarget {
                server: "aws us-east-1".to_owned(),
                ..now.clone()
            },
        ] {
            assert!(!still_the_target(&forged, &now), "{forged:?}");
        }
    }

    fn es(data: &[(&str, &str, Option<&str>, Option<&str>)]) -> ExternalSecret {
        let mut es = ExternalSecret::new(
            "db",
            ExternalSecretSpec {
                data: data
                    .iter()
                    .map(|(secret_key, key, property, version)| ExternalSecretData {
                        secret_key: (*secret_key).to_owned(),
                        remote_ref: RemoteRef {
                            key: (*key).to_owned(),
                            property: property.map(str::to_owned),
                            version: version.map(str::to_owned),
                            decoding_strategy: None,
                        },
                    })
                    .collect(),
                ..ExternalSecretSpec::default()
            },
        );
        es.metadata.namespace = Some("prod".to_owned());
        es
    }

    #[test]
    fn the_rotated_key_comes_from_the_external_secret() {
        let one = es(&[("password", "app/db", Some("password"), None)]);
        assert_eq!(
            remote_key_of(&one, None).unwrap(),
            ("app/db".to_owned(), Some("password".to_owned()))
        );
        let two = es(&[
            ("user", "app/db", Some("user"), None),
            ("password", "app/db", Some("password"), None),
        ]);
        let err = remote_key_of(&two, None).unwrap_err();
        assert!(
            err.contains("secretKey") && err.contains("user, password"),
            "{err}"
        );
        assert_eq!(
            remote_key_of(&two, Some("user")).unwrap().1.as_deref(),
            Some("user")
        );
        let err = remote_key_of(&two, Some("nope")).unwrap_err();
        assert!(
            err.contains("ExternalSecret prod/db has no spec.data entry with secretKey `nope`"),
            "{err}"
        );
        let pinned = es(&[("password", "app/db", None, Some("3"))]);
        let err = remote_key_of(&pinned, None).unwrap_err();
        assert!(err.contains("pins version `3`"), "{err}");
    }
}
