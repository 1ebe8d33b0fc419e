//! RotationPolicies: which one a Rotation follows, the credential target it names (its
//! Secrets read from its own namespace only, as every store's are), its `Ready`
//! condition, and its schedule.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use secrecy::SecretString;
use sigil_providers::credential::postgres::{self, PostgresConfig};
use sigil_providers::credential::{CredentialTarget, Login, Postgres, Webhook};
use sigil_types::{
    ExternalSecretRef, Rotation, RotationPolicy, RotationPolicyStatus, RotationSpec, SslMode,
    Strategy,
};
use zeroize::Zeroizing;

use super::{RotationContext, Stop, fail, status_of};
use crate::common::error::{Error, KubeContext as _, Result};
use crate::common::status::{self, Health};
use crate::common::watch::{cache_synced, scoped_api, watch_lean};

/// How `requestedBy` names a Rotation the schedule made: `schedule/<policy>`.
const SCHEDULE_PREFIX: &str = "schedule/";

/// The policy that governs Rotations of ExternalSecret `name` in `namespace`: the
/// oldest of those naming it (a later one is in conflict and governs nothing).
pub(super) fn governing(
    policies: &Store<RotationPolicy>,
    namespace: &str,
    name: &str,
) -> Option<Arc<RotationPolicy>> {
    policies
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace) && p.spec.external_secret_ref.name == name
        })
        .min_by(|a, b| {
            let created = |p: &RotationPolicy| p.creation_timestamp().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

/// The policy `obj` follows: the governing one when it resolves, then the one its
/// status names (a policy made midway does not change a Rotation under way).
pub(super) fn policy_of(
    obj: &Rotation,
    ctx: &RotationContext,
) -> Result<Option<Arc<RotationPolicy>>, Stop> {
    let namespace = obj.namespace().unwrap_or_default();
    let status = status_of(obj);
    let resolved = status.target.is_some() || status.base_version.is_some();
    if !resolved {
        let Some(reference) = &obj.spec.external_secret_ref else {
            return Ok(None);
        };
        return Ok(governing(&ctx.policies, &namespace, &reference.name));
    }
    let Some(name) = status.policy else {
        return Ok(None);
    };
    let found = ctx
        .policies
        .get(&kube::runtime::reflector::ObjectRef::new(&name).within(&namespace));
    match found {
        Some(policy) => Ok(Some(policy)),
        None => Err(fail(
            "PolicyNotFound",
            format!(
                "RotationPolicy {namespace}/{name}, which this Rotation follows, was deleted midway; nothing more was done. Recreate it to let a new Rotation finish the job"
            ),
        )),
    }
}

/// The system the policy's credential is checked by, with its Secrets read from the
/// policy's namespace.
pub(super) async fn credential_target(
    ctx: &RotationContext,
    policy: &RotationPolicy,
) -> Result<Option<CredentialTarget>, Stop> {
    let namespace = policy.namespace().unwrap_or_default();
    let owner = format!("RotationPolicy {namespace}/{}", policy.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let invalid = |m: String| fail("InvalidPolicy", format!("{owner}: {m}"));
    if let Some(pg) = &policy.spec.postgres {
        let admin_user = secret_key(
            &secrets,
            &owner,
            "postgres.adminSecretRef",
            &pg.admin_secret_ref.name,
            "username",
        )
        .await?;
        let admin_password = secret_key(
            &secrets,
            &owner,
            "postgres.adminSecretRef",
            &pg.admin_secret_ref.name,
            "password",
        )
        .await?;
        let ca = match &pg.ca_secret_ref {
            Some(r) => {
                Some(secret_key(&secrets, &owner, "postgres.caSecretRef", &r.name, &r.key).await?)
            }
            None => None,
        };
        let admin_user = String::from_utf8(admin_user.to_vec()).map_err(|_| {
            invalid("postgres.adminSecretRef key `username` is not UTF-8 text".into())
        })?;
        let target = Postgres::new(&PostgresConfig {
            host: &pg.host,
            port: pg.port_or_default(),
            database: &pg.database,
            tls: match pg.ssl_mode_or_default() {
                SslMode::Disable => postgres::Tls::Disable,
                SslMode::Require => postgres::Tls::Require,
                SslMode::VerifyFull => postgres::Tls::VerifyFull,
            },
            ca_pem: ca.as_deref().map(Vec::as_slice),
            admin: Login {
                username: admin_user.trim(),
                password: &admin_password,
            },
            strategy: strategy_of(pg.strategy),
            terminate_sessions: pg.terminates_sessions(),
        })
        .map_err(|e| invalid(e.to_string()))?;
        return Ok(Some(CredentialTarget::Postgres(target)));
    }
    if let Some(hook) = &policy.spec.webhook {
        let token = match &hook.token_secret_ref {
            Some(r) => {
                let bytes =
                    secret_key(&secrets, &owner, "webhook.tokenSecretRef", &r.name, &r.key).await?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| invalid("webhook.tokenSecretRef is not UTF-8 text".into()))?;
                Some(SecretString::from(text.trim().to_owned()))
            }
            None => None,
        };
        let target = Webhook::new(
            &hook.url,
            hook.ca_bundle.as_deref().map(str::as_bytes),
            token,
        )
        .map_err(|e| invalid(e.to_string()))?;
        return Ok(Some(CredentialTarget::Webhook(target)));
    }
    Ok(None)
}

/// The provider's name for a policy's strategy.
pub(super) fn strategy_of(strategy: Strategy) -> postgres::Strategy {
    match strategy {
        Strategy::AlternatingUsers => postgres::Strategy::AlternatingUsers,
        Strategy::SingleUser => postgres::Strategy::SingleUser,
    }
}

/// One key of a Secret in the policy's own namespace: `field` names it as the policy's
/// spec does, for the message.
async fn secret_key(
    secrets: &Api<Secret>,
    owner: &str,
    field: &str,
    name: &str,
    key: &str,
) -> Result<Zeroizing<Vec<u8>>, Stop> {
    let namespace = secrets.namespace().unwrap_or_default().to_owned();
    let secret = secrets
        .get_opt(name)
        .await
        .during(|| format!("read Secret {namespace}/{name} ({owner} {field})"))?;
    secret
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(key))
        .map(|bytes| Zeroizing::new(bytes.0))
        .ok_or_else(|| {
            fail(
                "InvalidPolicy",
                format!(
                    "{owner}: {field} names Secret {namespace}/{name} key `{key}`, which does not exist; create it in the policy's namespace"
                ),
            )
        })
}

/// The rollout timeout `obj` waits with: its policy's, or the controller's flag.
pub(super) fn rollout_timeout(ctx: &RotationContext, policy: Option<&RotationPolicy>) -> Duration {
    policy
        .and_then(|p| p.spec.rollout_timeout.as_deref())
        .and_then(|text| sigil_types::external::parse_go_duration(text).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(ctx.config.rollout_timeout)
}

/// Runs the RotationPolicy controller (conditions and schedules) until `stop` resolves.
pub async fn run(
    ctx: Arc<RotationContext>,
    changes: impl futures::Stream<Item = kube::runtime::watcher::Result<RotationPolicy>>
    + Send
    + 'static,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let concurrency = ctx.config.concurrency;
    Controller::for_stream(changes, ctx.policies.clone())
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "rotation policy controller event");
            }
        })
        .await;
}

/// The policies' watch, shared by Rotations (which policy governs) and the policy
/// controller.
pub fn watch(
    client: &kube::Client,
    watch_namespace: Option<&str>,
    initial_list: crate::common::watch::InitialList,
) -> (
    Store<RotationPolicy>,
    impl futures::Stream<Item = kube::runtime::watcher::Result<RotationPolicy>> + Send + 'static,
) {
    watch_lean(
        scoped_api::<RotationPolicy>(client, watch_namespace),
        initial_list,
    )
}

fn error_policy(_: Arc<RotationPolicy>, err: &Error, _: Arc<RotationContext>) -> Action {
    tracing::warn!(error = %err, "rotation policy reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Reports whether the policy governs its ExternalSecret, and makes the schedule's
/// Rotation when one is due and none of the ExternalSecret is under way.
async fn reconcile(policy: Arc<RotationPolicy>, ctx: Arc<RotationContext>) -> Result<Action> {
    cache_synced(&ctx.policies).await;
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let es = &policy.spec.external_secret_ref.name;
    let mut status = policy.status.clone().unwrap_or_default();
    let governing = governing(&ctx.policies, &namespace, es);
    let every = policy
        .spec
        .schedule
        .as_ref()
        .map(|s| sigil_types::external::parse_go_duration(&s.every));
    let (health, reason, message, next) = match (governing, every) {
        (Some(g), _) if g.name_any() != name => (
            Health::Failed,
            "Conflict",
            format!(
                "RotationPolicy {namespace}/{} already governs ExternalSecret {es}; this one is ignored. Delete one of them",
                g.name_any()
            ),
            None,
        ),
        (_, Some(Err(why))) => (
            Health::Failed,
            "InvalidSpec",
            format!("spec.schedule.every: {why}"),
            None,
        ),
        (_, Some(Ok(every))) if every < ctx.config.min_rotation_interval => (
            Health::Failed,
            "InvalidSpec",
            format!(
                "spec.schedule.every is {}, below this controller's minimum of {} (--min-rotation-interval); rotate less often",
                humantime::format_duration(every),
                humantime::format_duration(ctx.config.min_rotation_interval)
            ),
            None,
        ),
        (_, Some(Ok(every))) => {
            let wait = schedule(&ctx, &policy, &mut status, every).await?;
            (
                Health::Ready,
                "Ready",
                format!(
                    "Rotations of ExternalSecret {es} follow this policy, every {}",
                    humantime::format_duration(every)
                ),
                Some(wait),
            )
        }
        (_, None) => (
            Health::Ready,
            "Ready",
            format!("Rotations of ExternalSecret {es} follow this policy"),
            None,
        ),
    };
    status.observed_generation = policy.metadata.generation;
    status.conditions = status::conditions(
        &status.conditions,
        policy.metadata.generation,
        health,
        reason,
        &message,
        &[],
    );
    if policy.status.as_ref() != Some(&status) {
        let api: Api<RotationPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        status::record_status_at(api, &policy, &status).await?;
    }
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// Makes the scheduled Rotation when due and no Rotation of the ExternalSecret is under
/// way (two never run at once); returns how long until the next look.
async fn schedule(
    ctx: &RotationContext,
    policy: &RotationPolicy,
    status: &mut RotationPolicyStatus,
    every: Duration,
) -> Result<Duration> {
    let namespace = policy.namespace().unwrap_or_default();
    let es = &policy.spec.external_secret_ref.name;
    let last = status
        .last_scheduled
        .as_ref()
        .map(|t| t.0)
        .or_else(|| policy.creation_timestamp().map(|t| t.0))
        .unwrap_or_else(Timestamp::now);
    let due = last
        .checked_add(jiff::SignedDuration::try_from(every).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    let now = Timestamp::now();
    if now < due {
        return Ok(due.duration_since(now).unsigned_abs().min(every));
    }
    let rotations: Api<Rotation> = Api::namespaced(ctx.client.clone(), &namespace);
    let under_way = rotations
        .list(&ListParams::default())
        .await
        .during(|| format!("list Rotations of namespace {namespace}"))?
        .items
        .into_iter()
        .any(|r| {
            r.spec
                .external_secret_ref
                .as_ref()
                .is_some_and(|t| &t.name == es)
                && !r
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_final())
        });
    if under_way {
        return Ok(Duration::from_secs(1)
            .max(every / 10)
            .min(Duration::from_secs(30)));
    }
    let rotation = Rotation {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-scheduled-", policy.name_any())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: RotationSpec {
            external_secret_ref: Some(ExternalSecretRef {
                name: es.clone(),
                secret_key: policy.spec.external_secret_ref.secret_key.clone(),
            }),
            requested_by: Some(format!("{SCHEDULE_PREFIX}{}", policy.name_any())),
            reason: Some(format!("scheduled by RotationPolicy {}", policy.name_any())),
            ..RotationSpec::default()
        },
        status: None,
    };
    let made = rotations
        .create(&PostParams::default(), &rotation)
        .await
        .during(|| {
            format!(
                "create the scheduled Rotation of RotationPolicy {namespace}/{}",
                policy.name_any()
            )
        })?;
    tracing::info!(policy = %policy.name_any(), namespace, rotation = %made.name_any(), "scheduled rotation created");
    status.last_rotation = Some(made.name_any());
    status.last_scheduled = Some(Time(now));
    Ok(every)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use sigil_types::{PolicyTarget, RotationPolicySpec};

    use super::*;

    fn policy(namespace: &str, name: &str, external_secret: &str, created: i64) -> RotationPolicy {
        let mut p = RotationPolicy::new(
            name,
            RotationPolicySpec {
                external_secret_ref: PolicyTarget {
                    name: external_secret.to_owned(),
                    secret_key: None,
                },
                ..RotationPolicySpec::default()
            },
        );
        p.metadata.namespace = Some(namespace.to_owned());
        p.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_700_000_000 + created).unwrap(),
        ));
        p
    }

    #[test]
    fn the_oldest_policy_of_the_namespace_governs_and_no_other_namespace_does() {
        let (store, mut writer) = reflector::store::<RotationPolicy>();
        for p in [
            policy("team-b", "borrowed", "app", 0),
            policy("team-a", "late", "app", 20),
            policy("team-a", "first", "app", 10),
            policy("team-a", "other", "billing", 5),
        ] {
            writer.apply_watcher_event(&Event::Apply(p));
        }
        let name = |ns: &str, es: &str| governing(&store, ns, es).map(|p| p.name_any());
        assert_eq!(name("team-a", "app").as_deref(), Some("first"));
        assert_eq!(name("team-b", "app").as_deref(), Some("borrowed"));
        assert_eq!(
            name("team-c", "app"),
            None,
            "a policy governs its namespace only"
        );
        assert_eq!(name("team-a", "billing").as_deref(), Some("other"));
    }
}
