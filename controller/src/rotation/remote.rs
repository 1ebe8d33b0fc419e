//! The steps that write the store, through the same [`Versioned`] protocol for every
//! provider: `resolve` finds the current version, `stage` writes the new value exactly
//! once on top of it (marked with the Rotation's UID) and reads it back, `promote`
//! makes it the current one.

use std::sync::Arc;

use kube::ResourceExt;
use sigil_providers::versioned::{Mark, VersionError, Versioned};
use sigil_providers::{Error as ProviderError, ErrorKind};
use sigil_types::{ROTATION_BASE_CLAIM, ROTATION_CLAIM, Rotation, RotationPhase, RotationTarget};

use super::policy::{credential_target, policy_of};
use super::target::{describe, resolve_target, session_of, verified};
use super::value::{fresh_value, new_value};
use super::{Outcome, RotationContext, Stop, fail, status_of};
use crate::common::error::Error;

/// Finds the remote key, property and store the ExternalSecret reads, and the version
/// current now; a dry run also lists what would change, and finishes.
pub(super) async fn resolve(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let policy = policy_of(obj, ctx)?;
    // A supplied value that does not open fails before anything is looked up, locked or
    // written; so does a policy whose target's Secrets are missing.
    drop(fresh_value(obj, policy.as_deref(), &ctx.keys)?);
    let checked = match &policy {
        Some(policy) => Some((
            policy.clone(),
            credential_target(ctx, policy)
                .await?
                .map(|credential| credential.describe()),
        )),
        None => None,
    };
    let (target, store) = resolve_target(obj, ctx).await?;
    let session = session_of(ctx, &store).await?;
    if !obj.spec.is_dry_run() {
        super::lock::acquire(ctx, obj, Some(&target)).await?;
    }
    let base = session
        .current_version(&target.key)
        .await
        .map_err(|e| version_stop(&target, "", e))?;
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
    let message = match &checked {
        Some((policy, Some(checked_at))) => format!(
            "rotating {described}, now at version {base}, checked at {checked_at} (RotationPolicy {})",
            policy.name_any()
        ),
        Some((policy, None)) => format!(
            "rotating {described}, now at version {base} (RotationPolicy {})",
            policy.name_any()
        ),
        None => format!("rotating {described}, now at version {base}"),
    };
    Ok(Outcome::new(RotationPhase::Pending, message, move |s| {
        s.target = Some(target);
        s.base_version = Some(base);
        if let Some((policy, checked_at)) = checked {
            super::credential::record_policy(s, &policy, checked_at);
        }
    }))
}

/// Writes the new value once, on top of the base version, reads it back and records
/// its version.
pub(super) async fn stage(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let (target, base, store) = verified(obj, ctx).await?;
    // The lock is named by the target as recorded (a Rotation recorded before AWS
    // servers named their account keeps its Lease), and only once it is verified.
    super::lock::acquire(ctx, obj, status_of(obj).target.as_ref()).await?;
    let session = session_of(ctx, &store).await?;
    let uid = obj.uid().unwrap_or_default();
    let policy = policy_of(obj, ctx)?;
    let fresh = fresh_value(obj, policy.as_deref(), &ctx.keys)?;
    let strategy = policy
        .as_deref()
        .and_then(|p| p.spec.postgres.as_ref())
        .map(|pg| super::policy::strategy_of(pg.strategy));
    let key = target.key.as_str();
    let mark = Mark {
        token: &uid,
        token_entry: ROTATION_CLAIM,
        base_entry: ROTATION_BASE_CLAIM,
    };
    let objects = session.values_are_objects();
    if session.provider() == sigil_providers::Provider::Vault {
        ctx.sync.pin(&uid, &target.server, key, &base);
    }
    let property = target.property.as_deref();
    let username_property = target.username_property.as_deref();
    let version = session
        .stage(key, &base, mark, |current| -> Result<_, String> {
            let username = match (username_property, strategy) {
                (Some(p), Some(strategy)) => {
                    let in_use = crate::sync::values::property(key, current, Some(p))
                        .map_err(|_| format!("the current value has no string property `{p}` naming the role in use; add it to the store (usernameProperty)"))?;
                    let in_use = std::str::from_utf8(&in_use)
                        .map_err(|_| format!("property `{p}` is not UTF-8 text"))?;
                    Some((p, sigil_providers::credential::postgres::next_username(strategy, in_use)))
                }
                _ => None,
            };
            let value = new_value(current, property, fresh, objects, username)?;
            super::crash_point("rotation-before-write");
            Ok(value)
        })
        .await
        .map_err(|e| version_stop(&target, &base, e))?;
    // Read back what was staged before anything depends on it.
    let staged = session
        .read_version(key, &version)
        .await
        .map_err(|e| version_stop(&target, &base, e))?;
    if let Some(property) = property {
        let holds = serde_json::from_slice::<serde_json::Value>(staged.bytes())
            .ok()
            .is_some_and(|v| v.get(property).is_some_and(serde_json::Value::is_string));
        if !holds {
            return Err(fail(
                "VerificationFailed",
                format!(
                    "the staged version {version} of {} does not hold property `{property}`; it was not promoted and nothing was refreshed",
                    describe(&target)
                ),
            ));
        }
    }
    super::crash_point("rotation-after-write");
    let message = format!("wrote version {version} of {}", describe(&target));
    Ok(Outcome::new(RotationPhase::Staged, message, move |s| {
        s.new_version = Some(version);
    }))
}

/// Makes the new version the current one, from the base version only.
pub(super) async fn promote(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let (target, base, store) = verified(obj, ctx).await?;
    let new = status_of(obj).new_version.unwrap_or_default();
    let session = session_of(ctx, &store).await?;
    let key = target.key.as_str();
    session
        .promote(key, &base, &new)
        .await
        .map_err(|e| version_stop(&target, &base, e))?;
    super::crash_point("rotation-after-move");
    session
        .clear_staged(key, &new)
        .await
        .map_err(|e| version_stop(&target, &base, e))?;
    let message = format!(
        "version {new} of {} is current; version {base} stays readable",
        describe(&target)
    );
    Ok(Outcome::new(RotationPhase::Promoted, message, |_| {}))
}

/// How a refusal of the store's versioned protocol affects the Rotation.
pub(super) fn version_stop<E: std::fmt::Display>(
    target: &RotationTarget,
    base: &str,
    err: VersionError<E>,
) -> Stop {
    match err {
        VersionError::Moved { now } => concurrent_write(target, base, &now),
        VersionError::NoCurrent => fail(
            "RemoteKeyNotFound",
            format!("{} has no current version to rotate from", describe(target)),
        ),
        VersionError::NotAVersion { version } => fail(
            "InvalidTarget",
            format!(
                "`{version}` in status is not a version {} could have; create a new Rotation",
                describe(target)
            ),
        ),
        VersionError::Value(message) => {
            fail("InvalidTarget", format!("{}: {message}", describe(target)))
        }
        VersionError::Store { doing, error } => provider_stop(error, doing),
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
