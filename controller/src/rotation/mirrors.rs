//! After the store holds the new version: `propagate` refreshes every ExternalSecret
//! that mirrors the remote key (through any store on the same server) and waits until
//! each Secret holds it; `restart` rolls the workloads that consume those Secrets, and
//! `await-rollout` waits until their rollouts complete.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt;
use sigil_providers::Provider;
use sigil_types::{ExternalSecret, Rotation, RotationPhase, RotationTarget, WorkloadRef};

use super::target::{describe, verified};
use super::{Outcome, RotationContext, StepName, Stop, display_name, fail, status_of};
use crate::restart::{Progress, Rolled, Workload};
use crate::sync::external::mirrors;

/// How many ExternalSecrets are refreshed at once.
const REFRESH_CONCURRENCY: usize = 16;
/// How often `propagate` looks at the mirrors while they refresh.
const POLL: Duration = Duration::from_millis(100);
/// How long one reconcile waits for the mirrors before it requeues.
const WAIT_IN_RECONCILE: Duration = Duration::from_secs(10);
/// How often `await-rollout` looks at the rollouts.
const ROLLOUT_POLL: Duration = Duration::from_secs(1);

/// What a Rotation would touch: for a dry run, and the lists `propagate` records.
pub(super) struct Plan {
    pub external_secrets: Vec<String>,
    pub secrets: Vec<String>,
    pub workloads: Vec<WorkloadRef>,
}

/// The ExternalSecrets, Secrets and (when restarts are on) workloads a rotation of
/// `target` reaches. Reads only.
pub(super) async fn plan(
    obj: &Rotation,
    ctx: &RotationContext,
    target: &RotationTarget,
) -> Result<Plan, Stop> {
    let found = mirrors(&ctx.sync, &target.server, &target.key).await?;
    let secrets = secrets_of(&found);
    let workloads = if obj.spec.restart_or_default() {
        consumers(ctx, &secrets).await?
    } else {
        Vec::new()
    };
    Ok(Plan {
        external_secrets: found.iter().map(|es| name_of(es)).collect(),
        secrets: flatten(&secrets),
        workloads: workloads.iter().map(workload_ref).collect(),
    })
}

/// Refreshes every mirror now with values read after the new version was written (so
/// no value cached before it serves them; one read serves them all), and finishes once
/// each holds it.
pub(super) async fn propagate(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let (target, _, _) = verified(obj, ctx).await?;
    let new = status_of(obj).new_version.unwrap_or_default();
    let started = super::step_started(obj, StepName::Propagate);
    let deadline = tokio::time::Instant::now() + WAIT_IN_RECONCILE;
    let mut refreshed = false;
    loop {
        let found = mirrors(&ctx.sync, &target.server, &target.key).await?;
        let behind: Vec<Arc<ExternalSecret>> = found
            .iter()
            .filter(|es| !holds(es, &target, &new))
            .cloned()
            .collect();
        if behind.is_empty() {
            let secrets = secrets_of(&found);
            let message = format!(
                "{} Secret(s) of {} ExternalSecret(s) hold version {new} of {}",
                flatten(&secrets).len(),
                found.len(),
                describe(&target)
            );
            let external_secrets: Vec<String> = found.iter().map(|es| name_of(es)).collect();
            let secrets = flatten(&secrets);
            return Ok(Outcome::new(RotationPhase::Propagated, message, move |s| {
                s.external_secrets = external_secrets;
                s.secrets = secrets;
            }));
        }
        if !refreshed {
            // Values read from now on hold the new version: the mirrors share them.
            let read_after = tokio::time::Instant::now();
            futures::stream::iter(behind.iter().cloned())
                .for_each_concurrent(REFRESH_CONCURRENCY, |es| async move {
                    if let Err(err) = ctx.sync.refresh_now(es.clone(), read_after).await {
                        tracing::warn!(external_secret = %name_of(&es), error = %err, "refresh for rotation failed");
                    }
                })
                .await;
            super::crash_point("rotation-after-refresh");
            refreshed = true;
            continue;
        }
        let waited = Timestamp::now().duration_since(started.0);
        let names: Vec<String> = behind.iter().take(5).map(|es| name_of(es)).collect();
        if waited.unsigned_abs() > ctx.config.rotation_propagation_timeout {
            return Err(fail(
                "PropagationTimedOut",
                format!(
                    "{} ExternalSecret(s) did not pick up version {new} of {} within {}s: {}; see their Ready conditions. The store holds the new version; no workload was restarted",
                    behind.len(),
                    describe(&target),
                    ctx.config.rotation_propagation_timeout.as_secs(),
                    names.join(", ")
                ),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Stop::Wait(
                Duration::from_secs(1),
                format!(
                    "waiting for {} ExternalSecret(s) to hold version {new}: {}",
                    behind.len(),
                    names.join(", ")
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
        // ExternalSecrets whose refresh failed (an outage) are tried again.
        if waited.unsigned_abs() > Duration::from_secs(5) {
            refreshed = false;
        }
    }
}

/// Rolls every workload that consumes a refreshed Secret, once per Rotation. The Secrets
/// are found again from the mirrors of the verified target, never read from status.
pub(super) async fn restart(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let workloads = consumers_of_target(obj, ctx).await?;
    let new = status_of(obj).new_version.unwrap_or_default();
    let restarted_for = format!("{}@{new}", display_name(obj));
    let results = futures::future::join_all(
        workloads
            .iter()
            .map(|w| ctx.restarter.roll(w, &restarted_for)),
    )
    .await;
    let mut rolled = Vec::new();
    for (workload, result) in workloads.iter().zip(results) {
        match result? {
            Rolled::Rolled | Rolled::AlreadyRolled => rolled.push(workload_ref(workload)),
            Rolled::Gone => {}
        }
    }
    super::crash_point("rotation-after-roll");
    let message = format!(
        "restarted {} workload(s) that consume the refreshed Secrets",
        rolled.len()
    );
    Ok(Outcome::new(RotationPhase::Restarted, message, move |s| {
        s.workloads = rolled;
    }))
}

/// Waits until every workload `restart` rolled has finished its rollout, as `kubectl
/// rollout status` judges it, so that nothing after this step runs while a pod still
/// holds the old value. The workloads are found again, as `restart` found them; past
/// `--rollout-timeout` after `restart` (or once a Deployment passed its own progress
/// deadline) the Rotation fails.
pub(super) async fn await_rollout(
    obj: &Rotation,
    ctx: &Arc<RotationContext>,
) -> Result<Outcome, Stop> {
    let mut pending = consumers_of_target(obj, ctx).await?;
    let timeout =
        super::policy::rollout_timeout(ctx, super::policy::policy_of(obj, ctx)?.as_deref());
    let restarted_at = status_of(obj)
        .steps
        .iter()
        .rev()
        .find(|s| s.name == StepName::Restart.as_str())
        .and_then(|s| s.finished_at.clone())
        .map_or_else(Timestamp::now, |t| t.0);
    // The target and its consumers are resolved once per reconcile; in between, only the
    // rollouts not yet complete are read again.
    let deadline = tokio::time::Instant::now() + WAIT_IN_RECONCILE;
    let mut done = 0;
    loop {
        let mut waiting = Vec::new();
        let mut stuck = Vec::new();
        for workload in pending {
            match ctx.restarter.progress(&workload).await? {
                None => {}
                Some(Progress::Complete) => done += 1,
                Some(Progress::Waiting) => waiting.push(workload),
                Some(Progress::Failed) => stuck.push(workload.to_string()),
            }
        }
        let waited = Timestamp::now().duration_since(restarted_at).unsigned_abs();
        if !stuck.is_empty() || (!waiting.is_empty() && waited > timeout) {
            let why = if stuck.is_empty() {
                format!(
                    "did not complete within {}s (--rollout-timeout)",
                    timeout.as_secs()
                )
            } else {
                "passed its progress deadline".to_owned()
            };
            stuck.extend(waiting.iter().map(ToString::to_string));
            return Err(fail(
                "RolloutTimedOut",
                format!(
                    "the rollout of {} {why}; nothing after this step ran. `kubectl rollout status` and the pods' events say why",
                    stuck.join(", ")
                ),
            ));
        }
        if waiting.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<String> = waiting.iter().map(ToString::to_string).collect();
            return Err(Stop::Wait(
                ROLLOUT_POLL,
                format!(
                    "waiting for the rollout of {} ({}s of {}s)",
                    names.join(", "),
                    waited.as_secs(),
                    timeout.as_secs()
                ),
            ));
        }
        pending = waiting;
        tokio::time::sleep(ROLLOUT_POLL).await;
    }
    let message = format!("{done} workload(s) finished their rollout");
    Ok(Outcome::new(RotationPhase::RolledOut, message, |_| {}))
}

/// The workloads that consume the Secrets mirroring the verified target: found again at
/// every step, never read from status.
async fn consumers_of_target(obj: &Rotation, ctx: &RotationContext) -> Result<Vec<Workload>, Stop> {
    let (target, _, _) = verified(obj, ctx).await?;
    let secrets = secrets_of(&mirrors(&ctx.sync, &target.server, &target.key).await?);
    consumers(ctx, &secrets).await
}

/// Whether `es` holds version `new` of the target's key (Vault: or a later one).
fn holds(es: &ExternalSecret, target: &RotationTarget, new: &str) -> bool {
    let Some(status) = &es.status else {
        return false;
    };
    let wanted = target.key.trim_matches('/');
    status
        .synced_versions
        .iter()
        .filter(|(key, _)| key.trim_matches('/') == wanted)
        .any(|(_, version)| match Provider::named(&target.provider) {
            Some(provider) => provider.holds_at_least(version, new),
            None => version == new,
        })
}

/// Target Secret names of `found`, by namespace.
fn secrets_of(found: &[Arc<ExternalSecret>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for es in found {
        secrets
            .entry(es.namespace().unwrap_or_default())
            .or_default()
            .insert(es.target_name());
    }
    secrets
}

fn flatten(secrets: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    secrets
        .iter()
        .flat_map(|(ns, names)| names.iter().map(move |n| format!("{ns}/{n}")))
        .collect()
}

async fn consumers(
    ctx: &RotationContext,
    secrets: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<Workload>, Stop> {
    let mut all = Vec::new();
    for (namespace, names) in secrets {
        all.extend(ctx.restarter.consumers(namespace, names).await?);
    }
    Ok(all)
}

fn workload_ref(workload: &Workload) -> WorkloadRef {
    WorkloadRef {
        kind: workload.kind.as_str().to_owned(),
        namespace: workload.namespace.clone(),
        name: workload.name.clone(),
    }
}

fn name_of(es: &ExternalSecret) -> String {
    format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any())
}
