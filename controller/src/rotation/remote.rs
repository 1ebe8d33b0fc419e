//! The remote key behind an ExternalSecret: `resolve` finds it and its current version,
//! `stage` writes the new value exactly once, `promote` makes it the current one.
//!
//! AWS: the new version's VersionId is the Rotation's UID (`ClientRequestToken`), staged
//! as `AWSPENDING`, read back, then `AWSCURRENT` moves to it from the base version (AWS
//! refuses the move if someone else moved `AWSCURRENT` meanwhile) and the old version
//! keeps `AWSPREVIOUS`. Vault KV v2: the secret's `custom_metadata` is claimed with the
//! Rotation's UID and base version, then the value is written with check-and-set on
//! the base version, so exactly one version follows it and a resumed step knows it as
//! its own.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use rand::Rng;
use sigil_providers::{Error as ProviderError, ErrorKind};
use sigil_types::{ExternalSecret, Generate, Rotation, RotationPhase, RotationTarget, StoreKind};
use zeroize::Zeroizing;

use super::{Outcome, RotationContext, Stop, display_name, fail, status_of};
use crate::error::Error;
use crate::sync::external::resolve_store;
use crate::sync::stores::{Session, StoreObject};
use sigil_types::store::ProviderRef;

use sigil_types::{ROTATION_BASE_CLAIM, ROTATION_CLAIM};
/// The staging labels of AWS Secrets Manager.
const AWSCURRENT: &str = "AWSCURRENT";
const AWSPENDING: &str = "AWSPENDING";

/// Finds the remote key, property and store the ExternalSecret reads, and the version
/// current now; a dry run also lists what would change, and finishes.
pub(super) async fn resolve(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let (target, store) = resolve_target(obj, ctx).await?;
    let session = session_of(ctx, &store).await?;
    if !obj.spec.is_dry_run() {
        super::lock::acquire(ctx, obj, Some(&target)).await?;
    }
    let key = &target.key;
    let base = match &*session {
        Session::Vault(vault) => vault
            .metadata(key)
            .await
            .map_err(|e| provider_stop(e, "read the remote key's metadata"))?
            .current_version
            .to_string(),
        Session::Aws(aws) => aws
            .versions(key)
            .await
            .map_err(|e| provider_stop(e, "list the remote key's versions"))?
            .into_iter()
            .find(|v| v.stages.iter().any(|s| s == AWSCURRENT))
            .map(|v| v.id)
            .ok_or_else(|| {
                fail(
                    "RemoteKeyNotFound",
                    format!("AWS secret `{key}` has no AWSCURRENT version to rotate from"),
                )
            })?,
    };
    let described = describe(&target);
    if obj.spec.is_dry_run() {
        let plan = super::mirrors::plan(obj, ctx, &target).await?;
        let message = format!(
            "dry run: would write a new version of {described} on top of version {base}, refresh {} ExternalSecret(s) and {} Secret(s), and restart {} workload(s); nothing was changed",
            plan.external_secrets.len(),
            plan.secrets.len(),
            plan.workloads.len()
        );
        return Ok(Outcome::new(RotationPhase::Completed, message, move |s| {
            s.target = Some(target);
            s.base_version = Some(base);
            s.external_secrets = plan.external_secrets;
            s.secrets = plan.secrets;
            s.workloads = plan.workloads;
        }));
    }
    let message = format!("rotating {described}, now at version {base}");
    Ok(Outcome::new(RotationPhase::Pending, message, move |s| {
        s.target = Some(target);
        s.base_version = Some(base);
    }))
}

/// Writes the new value once, on top of the base version, and records its version.
pub(super) async fn stage(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let (target, base, store) = verified(obj, ctx).await?;
    // The lock is named by the target as recorded (a Rotation recorded before AWS
    // servers named their account keeps its Lease), and only once it is verified.
    super::lock::acquire(ctx, obj, status_of(obj).target.as_ref()).await?;
    let session = session_of(ctx, &store).await?;
    let uid = obj.uid().unwrap_or_default();
    let generate = obj.spec.generate.clone().unwrap_or_default();
    let version = match &*session {
        Session::Vault(vault) => {
            let base: u64 = base.parse().map_err(|_| {
                fail(
                    "InvalidTarget",
                    format!("status.baseVersion `{base}` is not a KV version number"),
                )
            })?;
            let key = target.key.as_str();
            let meta = vault
                .metadata(key)
                .await
                .map_err(|e| provider_stop(e, "read the remote key's metadata"))?;
            let claimed = meta.custom_metadata.get(ROTATION_CLAIM) == Some(&uid)
                && meta.custom_metadata.get(ROTATION_BASE_CLAIM) == Some(&base.to_string());
            if meta.current_version == base + 1 && claimed {
                // A write of an earlier attempt that was not recorded: it is this one's.
                base + 1
            } else if meta.current_version != base {
                return Err(concurrent_write(
                    &target,
                    &base.to_string(),
                    &meta.current_version.to_string(),
                ));
            } else {
                if !claimed {
                    vault
                        .mark(
                            key,
                            &[
                                (ROTATION_CLAIM, &uid),
                                (ROTATION_BASE_CLAIM, &base.to_string()),
                            ],
                        )
                        .await
                        .map_err(|e| {
                            provider_stop(e, "claim the next version in custom_metadata")
                        })?;
                }
                let current = vault
                    .read(key, Some(base))
                    .await
                    .map_err(|e| provider_stop(e, "read the base version"))?;
                let value = new_value(current.bytes(), target.property.as_deref(), &generate, true)
                    .map_err(|m| fail("InvalidTarget", format!("{}: {m}", describe(&target))))?;
                super::crash_point("rotation-before-write");
                vault
                    .write(key, &value, base)
                    .await
                    .map_err(|e| match e.kind() {
                        ErrorKind::Conflict => {
                            concurrent_write(&target, &base.to_string(), "a newer one")
                        }
                        _ => provider_stop(e, "write the new version"),
                    })?
            }
            .to_string()
        }
        Session::Aws(aws) => {
            let key = target.key.as_str();
            let versions = aws
                .versions(key)
                .await
                .map_err(|e| provider_stop(e, "list the remote key's versions"))?;
            if !versions.iter().any(|v| v.id == uid) {
                let current = versions
                    .iter()
                    .find(|v| v.stages.iter().any(|s| s == AWSCURRENT))
                    .map(|v| v.id.clone())
                    .unwrap_or_default();
                if current != base {
                    return Err(concurrent_write(&target, &base, &current));
                }
                let old = aws
                    .read(key, Some(&format!("uuid/{base}")))
                    .await
                    .map_err(|e| provider_stop(e, "read the base version"))?;
                let value = new_value(old.bytes(), target.property.as_deref(), &generate, false)
                    .map_err(|m| fail("InvalidTarget", format!("{}: {m}", describe(&target))))?;
                super::crash_point("rotation-before-write");
                aws.put_pending(key, &uid, &value)
                    .await
                    .map_err(|e| provider_stop(e, "stage the new version as AWSPENDING"))?;
            }
            // Read back what was staged before anything depends on it.
            let staged = aws
                .read(key, Some(&format!("uuid/{uid}")))
                .await
                .map_err(|e| provider_stop(e, "read back the staged version"))?;
            if let Some(property) = &target.property {
                let holds = serde_json::from_slice::<serde_json::Value>(staged.bytes())
                    .ok()
                    .is_some_and(|v| v.get(property).is_some_and(serde_json::Value::is_string));
                if !holds {
                    return Err(fail(
                        "VerificationFailed",
                        format!(
                            "the staged version {uid} of {} does not hold property `{property}`; it stays AWSPENDING and AWSCURRENT was not moved",
                            describe(&target)
                        ),
                    ));
                }
            }
            uid.clone()
        }
    };
    super::crash_point("rotation-after-write");
    let message = format!("wrote version {version} of {}", describe(&target));
    Ok(Outcome::new(RotationPhase::Staged, message, move |s| {
        s.new_version = Some(version);
    }))
}

/// Makes the new version the current one (AWS: moves `AWSCURRENT`, drops `AWSPENDING`;
/// Vault: a KV write is current at once, so it is read back).
pub(super) async fn promote(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let (target, base, store) = verified(obj, ctx).await?;
    let status = status_of(obj);
    let new = status.new_version.clone().unwrap_or_default();
    let session = session_of(ctx, &store).await?;
    let key = target.key.as_str();
    match &*session {
        Session::Vault(vault) => {
            let version: u64 = new.parse().unwrap_or_default();
            vault
                .read(key, Some(version))
                .await
                .map_err(|e| provider_stop(e, "read back the new version"))?;
        }
        Session::Aws(aws) => {
            let versions = aws
                .versions(key)
                .await
                .map_err(|e| provider_stop(e, "list the remote key's versions"))?;
            let holder = |stage: &str| {
                versions
                    .iter()
                    .find(|v| v.stages.iter().any(|s| s == stage))
                    .map(|v| v.id.clone())
            };
            match holder(AWSCURRENT) {
                Some(current) if current == new => {}
                Some(current) if current == base => {
                    aws.move_stage(key, AWSCURRENT, Some(&new), Some(&base))
                        .await
                        .map_err(|e| match e.kind() {
                            ErrorKind::Conflict => {
                                concurrent_write(&target, &base, "another version")
                            }
                            _ => provider_stop(e, "move AWSCURRENT to the new version"),
                        })?;
                }
                other => {
                    return Err(concurrent_write(
                        &target,
                        &base,
                        other.as_deref().unwrap_or("none"),
                    ));
                }
            }
            super::crash_point("rotation-after-move");
            if holder(AWSPENDING).as_deref() == Some(new.as_str()) {
                aws.move_stage(key, AWSPENDING, None, Some(&new))
                    .await
                    .map_err(|e| provider_stop(e, "remove AWSPENDING from the new version"))?;
            }
        }
    }
    let message = format!(
        "version {new} of {} is current; version {base} stays readable",
        describe(&target)
    );
    Ok(Outcome::new(RotationPhase::Promoted, message, |_| {}))
}

/// What `spec.externalSecretRef` names now: the remote key and property, and the store
/// as the ExternalSecret may use it (a SecretStore of its namespace, or a
/// ClusterSecretStore whose conditions admit the namespace).
async fn resolve_target(
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
    let (key, property) = remote_key_of(&es, reference.secret_key.as_deref())
        .map_err(|m| fail("InvalidTarget", m))?;
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
    let provider = match store.spec.provider.which() {
        Ok(ProviderRef::Vault(_)) => "vault",
        Ok(ProviderRef::Aws(_)) => "aws",
        Err(m) => return Err(fail("StoreNotReady", m)),
    };
    let target = RotationTarget {
        provider: provider.to_owned(),
        store: store_name(&store),
        server,
        key,
        property,
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
/// before AWS servers named their account resumes: its server is today's without
/// ` account <id>`, and everything else must match.
fn still_the_target(recorded: &RotationTarget, now: &RotationTarget) -> bool {
    let recorded_before_accounts = recorded.provider == "aws"
        && !recorded.server.contains(" account ")
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
async fn session_of(ctx: &RotationContext, store: &StoreObject) -> Result<Arc<Session>, Stop> {
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

/// "vault key `app/db` property `password`": how messages name a target.
pub(crate) fn describe(target: &RotationTarget) -> String {
    let provider = if target.provider == "vault" {
        "Vault"
    } else {
        "AWS"
    };
    match &target.property {
        Some(property) => format!("{provider} key `{}` property `{property}`", target.key),
        None => format!("{provider} key `{}`", target.key),
    }
}

fn concurrent_write(target: &RotationTarget, base: &str, now: &str) -> Stop {
    fail(
        "ConcurrentWrite",
        format!(
            "{} changed after this Rotation read version {base} (now: {now}), and not by this Rotation; nothing more was written. Check who wrote it, then create a new Rotation",
            describe(target)
        ),
    )
}

/// How a provider failure affects the Rotation: outages retry, the rest fail it.
fn provider_stop(err: ProviderError, doing: &str) -> Stop {
    match err.kind() {
        ErrorKind::Unavailable | ErrorKind::Throttled => Stop::Retry(Error::Provider {
            action: doing.to_owned(),
            source: err,
        }),
        ErrorKind::Conflict => fail("ConcurrentWrite", format!("could not {doing}: {err}")),
        ErrorKind::NotFound => fail(
            "RemoteKeyNotFound",
            format!("could not {doing}: {err}; a rotation replaces an existing value"),
        ),
        ErrorKind::AuthFailed => fail(
            "AuthFailed",
            format!(
                "could not {doing}: {err}; the store's credentials must be allowed to write the key (Vault policy: read, create and update on the key's data/ path, read and patch on its metadata/ path; AWS: DescribeSecret, GetSecretValue, PutSecretValue, UpdateSecretVersionStage)"
            ),
        ),
        _ => fail("InvalidTarget", format!("could not {doing}: {err}")),
    }
}

/// The whole new remote value: `current` with `property` set to a fresh value, every
/// other property kept; without a property, the fresh value alone (Vault: the only key
/// of the secret).
fn new_value(
    current: &[u8],
    property: Option<&str>,
    generate: &Generate,
    vault: bool,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let fresh = generate_value(generate);
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(current).ok();
    let property = match (property, &parsed) {
        (Some(p), _) => Some(p.to_owned()),
        (None, Some(map)) if vault && map.len() == 1 => map.keys().next().cloned(),
        (None, Some(_)) => {
            return Err("the value is a JSON object with several properties; set remoteRef.property in the ExternalSecret to the one to rotate".to_owned());
        }
        (None, None) if vault => return Err("the KV data is not a JSON object".to_owned()),
        (None, None) => None,
    };
    let Some(property) = property else {
        return Ok(Zeroizing::new(fresh.as_bytes().to_vec()));
    };
    let mut map = parsed.ok_or_else(|| {
        format!("the value is not a JSON object, so it has no property `{property}`; remove remoteRef.property to rotate the whole value")
    })?;
    set_property(&mut map, &property, fresh.to_string())?;
    let bytes =
        serde_json::to_vec(&map).map_err(|e| format!("cannot serialize the new value: {e}"))?;
    // serde_json's tree is not zeroizable; its strings are dropped here, and what
    // leaves is zeroized.
    drop(map);
    Ok(Zeroizing::new(bytes))
}

/// Sets `property` to `fresh` the way sync reads it: a key that itself contains dots
/// first, else a dotted path through nested objects. A new property is added only at
/// the top level; the value replaced must be a string.
fn set_property(
    map: &mut serde_json::Map<String, serde_json::Value>,
    property: &str,
    fresh: String,
) -> Result<(), String> {
    let slot = if map.contains_key(property) || !property.contains('.') {
        map.entry(property.to_owned())
            .or_insert(serde_json::Value::String(String::new()))
    } else {
        let mut parts = property.split('.');
        let first = parts.next().unwrap_or_default();
        let mut node = map.get_mut(first);
        for part in parts {
            node = node.and_then(|n| n.get_mut(part));
        }
        node.ok_or_else(|| {
            format!("the value has no property `{property}`; add it in the store first (a rotation creates only top-level properties)")
        })?
    };
    if !slot.is_string() {
        return Err(format!(
            "property `{property}` is not a string; only string properties are rotated"
        ));
    }
    *slot = serde_json::Value::String(fresh);
    Ok(())
}

/// A fresh random value with at least one character of each class its alphabet has.
fn generate_value(generate: &Generate) -> Zeroizing<String> {
    let alphabet = generate.alphabet();
    let length = generate.length_or_default() as usize;
    let classes: Vec<fn(&char) -> bool> = [
        char::is_ascii_alphabetic,
        char::is_ascii_digit,
        |c: &char| !c.is_ascii_alphanumeric(),
    ]
    .into_iter()
    .filter(|class| alphabet.iter().any(class))
    .collect();
    let mut rng = rand::rng();
    loop {
        let value: Zeroizing<String> = Zeroizing::new(
            (0..length)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
        );
        if classes.iter().all(|class| value.chars().any(|c| class(&c))) {
            return value;
        }
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

    #[test]
    fn generated_values_use_only_and_all_asked_classes() {
        let letters_digits = Generate {
            length: Some(12),
            symbols: Some(false),
            ..Generate::default()
        };
        for _ in 0..200 {
            let v = generate_value(&letters_digits);
            assert_eq!(v.chars().count(), 12);
            assert!(v.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(v.chars().any(|c| c.is_ascii_digit()));
        }
        // Symbols asked for, but none usable: letters and digits, without hanging.
        let no_symbols = Generate {
            symbol_characters: Some("abc \t".to_owned()),
            ..Generate::default()
        };
        let value = generate_value(&no_symbols);
        assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
        let a = generate_value(&Generate::default());
        let b = generate_value(&Generate::default());
        assert_eq!(a.len(), 32);
        assert_ne!(*a, *b);
    }

    #[test]
    fn the_property_is_replaced_and_every_other_kept() {
        let out = new_value(
            br#"{"user":"app","password":"old","port":5432}"#,
            Some("password"),
            &Generate::default(),
            false,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user"], "app");
        assert_eq!(v["port"], 5432);
        assert_ne!(v["password"], "old");
        assert_eq!(v["password"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn values_without_a_property() {
        let whole = new_value(b"plain-old", None, &Generate::default(), false).unwrap();
        assert_eq!(whole.len(), 32);
        let only = new_value(br#"{"token":"x"}"#, None, &Generate::default(), true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&only).unwrap();
        assert_ne!(v["token"], "x");
        let err =
            new_value(br#"{"a":"1","b":"2"}"#, None, &Generate::default(), false).unwrap_err();
        assert!(err.contains("remoteRef.property"), "{err}");
        let err =
            new_value(b"not json", Some("password"), &Generate::default(), false).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let nested = new_value(
            br#"{"db":{"password":"old","host":"h"},"a.b":"x"}"#,
            Some("db.password"),
            &Generate::default(),
            false,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&nested).unwrap();
        assert_eq!(v["db"]["host"], "h");
        assert_ne!(v["db"]["password"], "old");
        assert!(v.get("db.password").is_none());
        let err = new_value(
            br#"{"db":{}}"#,
            Some("db.password"),
            &Generate::default(),
            false,
        )
        .unwrap_err();
        assert!(err.contains("no property `db.password`"), "{err}");
        let err = new_value(
            br#"{"password":{"nested":1}}"#,
            Some("password"),
            &Generate::default(),
            false,
        )
        .unwrap_err();
        assert!(err.contains("not a string"), "{err}");
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
