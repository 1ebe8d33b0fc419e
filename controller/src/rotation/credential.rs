//! The steps that change where the credential is checked, for a Rotation whose policy
//! names a target (PostgreSQL, a webhook): `set` makes the staged login work there
//! before any mirror receives it, `test` logs in with it (and, refused, puts the target
//! and the store back as they were), and `retire` makes the previous login useless once
//! every rollout completed.
//!
//! The logins are read back from the store's versions (the base and the staged one),
//! never kept elsewhere, so a step resumed after a crash sets exactly what the store
//! holds.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use sigil_providers::Session;
use sigil_providers::credential::{Change, CredentialTarget, Login, TargetError};
use sigil_providers::versioned::{Mark, Versioned};
use sigil_types::policy::DEFAULT_USERNAME_PROPERTY;
use sigil_types::{
    CredentialStatus, ROTATION_BASE_CLAIM, ROTATION_CLAIM, Rotation, RotationPhase, RotationPolicy,
    RotationStatus, RotationTarget, Strategy,
};
use zeroize::Zeroizing;

use super::policy::{credential_target, policy_of, rollout_timeout};
use super::remote::version_stop;
use super::target::{describe, session_of, verified};
use super::{Outcome, RotationContext, StepName, Stop, fail, status_of, step_started};
use crate::sync::values::property;

/// The login in use before the Rotation and the one its staged version holds.
struct Logins {
    previous_username: String,
    previous_password: Zeroizing<Vec<u8>>,
    new_username: String,
    new_password: Zeroizing<Vec<u8>>,
}

impl Logins {
    fn change<'a>(&'a self, rotation: &'a str) -> Change<'a> {
        Change {
            rotation,
            previous: Login {
                username: &self.previous_username,
                password: &self.previous_password,
            },
            new: Login {
                username: &self.new_username,
                password: &self.new_password,
            },
        }
    }
}

/// Everything a credential step works with, checked again at every step.
struct Prepared {
    policy: Arc<RotationPolicy>,
    credential: CredentialTarget,
    target: RotationTarget,
    base: String,
    new: String,
    session: Arc<Session>,
    logins: Logins,
}

async fn prepared(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Prepared, Stop> {
    let (target, base, store) = verified(obj, ctx).await?;
    let policy = policy_of(obj, ctx)?.ok_or_else(|| {
        fail(
            "InvalidStatus",
            "status names no RotationPolicy, yet a credential step was due; create a new Rotation",
        )
    })?;
    let credential = credential_target(ctx, &policy).await?.ok_or_else(|| {
        fail(
            "InvalidPolicy",
            format!(
                "RotationPolicy {} names neither postgres nor webhook any more; nothing was set",
                policy.name_any()
            ),
        )
    })?;
    let new = status_of(obj).new_version.unwrap_or_default();
    let session = session_of(ctx, &store).await?;
    let read = |version: String| {
        let session = session.clone();
        let target = target.clone();
        let base = base.clone();
        async move {
            session
                .read_version(&target.key, &version)
                .await
                .map_err(|e| version_stop(&target, &base, e))
        }
    };
    let before = read(base.clone()).await?;
    let after = read(new.clone()).await?;
    let login = |bytes: &[u8], which: &str| -> Result<(String, Zeroizing<Vec<u8>>), Stop> {
        let password = property(&target.key, bytes, target.property.as_deref())
            .map_err(|e| fail("InvalidTarget", format!("{which} version: {e:?}")))?;
        // A PostgreSQL policy names the role's property, which must be there; a webhook
        // receives the value's `username` when it has one.
        let name = match &target.username_property {
            Some(p) => property(&target.key, bytes, Some(p)).map_err(|e| {
                fail(
                    "InvalidTarget",
                    format!("{which} version: {e:?}; the policy needs the role name in the store"),
                )
            })?,
            None => {
                property(&target.key, bytes, Some(DEFAULT_USERNAME_PROPERTY)).unwrap_or_default()
            }
        };
        let username = String::from_utf8(name.to_vec()).map_err(|_| {
            fail(
                "InvalidTarget",
                format!("{which} version: the role name is not UTF-8 text"),
            )
        })?;
        Ok((username, password))
    };
    let (previous_username, previous_password) = login(before.bytes(), "the base")?;
    let (new_username, new_password) = login(after.bytes(), "the staged")?;
    Ok(Prepared {
        policy,
        credential,
        target,
        base,
        new,
        session,
        logins: Logins {
            previous_username,
            previous_password,
            new_username,
            new_password,
        },
    })
}

/// How a target's failure affects the step: an outage retries until the policy's
/// rollout timeout (from the step's start), anything else fails with `reason`.
fn target_stop(
    obj: &Rotation,
    ctx: &RotationContext,
    policy: &RotationPolicy,
    step: StepName,
    reason: &'static str,
    err: TargetError,
) -> Stop {
    let timeout = rollout_timeout(ctx, Some(policy));
    let waited = Timestamp::now()
        .duration_since(step_started(obj, step).0)
        .unsigned_abs();
    match err {
        // Recorded as the step's message (so its start, which the timeout counts from,
        // is kept across attempts); the wait grows with the time waited.
        TargetError::Unavailable(message) if waited <= timeout => Stop::Wait(
            (waited / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)),
            format!("retrying: {message}"),
        ),
        TargetError::Unavailable(message) => fail(
            reason,
            format!(
                "{message}; retried for {}s (the policy's rolloutTimeout)",
                timeout.as_secs()
            ),
        ),
        TargetError::Refused(message) | TargetError::Invalid(message) => fail(reason, message),
    }
}

/// Makes the staged login work where it is checked.
pub(super) async fn set(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let p = prepared(obj, ctx).await?;
    let uid = obj.uid().unwrap_or_default();
    if let Err(err) = p.credential.set(p.logins.change(&uid)).await {
        return Err(
            match target_stop(obj, ctx, &p.policy, StepName::Set, "SetFailed", err) {
                // The staged version must not become what the mirrors read (on Vault, once
                // the pin lifts): it is taken back before the Rotation fails.
                Stop::Fail(failure) => {
                    let withdrawn = withdraw(&p, &uid).await?;
                    fail(
                        failure.reason,
                        format!(
                            "{}; {} {withdrawn}, so the store's current value is what it was before",
                            failure.message,
                            describe(&p.target)
                        ),
                    )
                }
                other => other,
            },
        );
    }
    let keeps = if p.logins.new_username == p.logins.previous_username {
        " (the only role: its previous password no longer works)".to_owned()
    } else {
        format!(
            "; role `{}` keeps working until retire",
            p.logins.previous_username
        )
    };
    let message = format!(
        "set the new password of `{}` on {}{keeps}",
        p.logins.new_username,
        p.credential.describe()
    );
    let (previous, username) = (
        p.logins.previous_username.clone(),
        p.logins.new_username.clone(),
    );
    Ok(Outcome::new(RotationPhase::Set, message, move |s| {
        let credential = s.credential.get_or_insert_with(CredentialStatus::default);
        credential.previous_username = Some(previous);
        credential.username = Some(username);
        credential.set_at = Some(Time(Timestamp::now()));
    }))
}

/// Logs in with the staged login; refused, restores the previous password (SingleUser)
/// and takes the staged version back, and fails.
pub(super) async fn test(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let p = prepared(obj, ctx).await?;
    let uid = obj.uid().unwrap_or_default();
    let change = p.logins.change(&uid);
    let refusal = match p.credential.test(change).await {
        Ok(()) => {
            let message = format!(
                "`{}` logs in on {}",
                p.logins.new_username,
                p.credential.describe()
            );
            return Ok(Outcome::new(RotationPhase::Tested, message, |_| {}));
        }
        Err(TargetError::Unavailable(message)) => {
            match target_stop(
                obj,
                ctx,
                &p.policy,
                StepName::Test,
                "TestFailed",
                TargetError::Unavailable(message.clone()),
            ) {
                Stop::Fail(failure) => failure.message,
                other => return Err(other),
            }
        }
        Err(TargetError::Refused(message) | TargetError::Invalid(message)) => message,
    };
    let restored = p
        .credential
        .restore(change)
        .await
        .map_err(|e| target_stop(obj, ctx, &p.policy, StepName::Test, "TestFailed", e))?;
    let withdrawn = withdraw(&p, &uid).await?;
    let restored = restored.map_or_else(String::new, |r| format!("; {r}"));
    Err(fail(
        "TestFailed",
        format!(
            "the new credential did not log in: {refusal}{restored}; {} {withdrawn}, so the store's current value is what it was before. No mirror received the new value and nothing was restarted",
            describe(&p.target)
        ),
    ))
}

/// Takes the staged version back (`Versioned::withdraw`); returns what was done.
async fn withdraw(p: &Prepared, uid: &str) -> Result<String, Stop> {
    let mark = Mark {
        token: uid,
        token_entry: ROTATION_CLAIM,
        base_entry: ROTATION_BASE_CLAIM,
    };
    p.session
        .withdraw(&p.target.key, &p.base, &p.new, mark)
        .await
        .map_err(|e| version_stop(&p.target, &p.base, e))
}

/// Makes the previous login useless, after every rollout completed.
pub(super) async fn retire(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let p = prepared(obj, ctx).await?;
    let uid = obj.uid().unwrap_or_default();
    // Status keeps whole seconds: a session that began in the second of `set` may hold
    // the leaked password, so the cutoff is the next second.
    let set_at = status_of(obj)
        .credential
        .and_then(|c| c.set_at)
        .map_or_else(Timestamp::now, |t| t.0)
        + jiff::SignedDuration::from_secs(1);
    let retired = p
        .credential
        .retire(p.logins.change(&uid), set_at)
        .await
        .map_err(|e| target_stop(obj, ctx, &p.policy, StepName::Retire, "RetireFailed", e))?;
    let message = format!(
        "retired on {}: {}",
        p.credential.describe(),
        retired.what.join("; ")
    );
    Ok(Outcome::new(RotationPhase::Retired, message, move |s| {
        let credential = s.credential.get_or_insert_with(CredentialStatus::default);
        credential.retired = retired.what;
        credential.sessions_terminated = Some(retired.sessions_terminated);
    }))
}

/// What `resolve` records of the policy: its name and, when it names one, where the
/// credential is checked (which adds `set`, `test` and `retire`).
pub(super) fn record_policy(
    status: &mut RotationStatus,
    policy: &RotationPolicy,
    checked_at: Option<String>,
) {
    status.policy = Some(policy.name_any());
    status.credential = checked_at.map(|target| CredentialStatus {
        target,
        strategy: policy
            .spec
            .postgres
            .as_ref()
            .map(|pg| pg.strategy.as_str().to_owned()),
        ..CredentialStatus::default()
    });
}

/// The properties a policy's new version holds: (password, username), overriding what
/// the ExternalSecret reads (PostgreSQL keeps both in one JSON value).
pub(super) fn properties(policy: &RotationPolicy) -> Option<(String, String)> {
    policy.spec.postgres.as_ref().map(|pg| {
        (
            pg.password_property_or_default().to_owned(),
            pg.username_property_or_default().to_owned(),
        )
    })
}

/// SingleUser: once every mirror holds the new password, how long they held the one
/// `set` replaced.
pub(super) fn note_propagated(status: &mut RotationStatus, at: Timestamp) {
    let Some(credential) = status.credential.as_mut() else {
        return;
    };
    if credential.strategy.as_deref() != Some(Strategy::SingleUser.as_str()) {
        return;
    }
    if let Some(set_at) = &credential.set_at {
        let refused = at.duration_since(set_at.0);
        credential.mirrors_refused_for = Some(format!("{:.1}s", refused.as_secs_f64().max(0.0)));
    }
}
