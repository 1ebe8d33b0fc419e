//! The Rotation state machine: `resolve` → `stage` → (`set` → `test`) → `promote` →
//! `propagate` → `restart` → `await-rollout` → (`retire`) → `complete`, one function
//! per step; the steps in brackets are a RotationPolicy target's.
//!
//! Each step is idempotent and its outcome is written to the Rotation's status (with
//! optimistic concurrency on `resourceVersion`) before the next step begins, so a
//! controller killed anywhere resumes from the last recorded step and finds its own
//! remote write instead of making another: AWS versions carry the Rotation's UID as
//! their VersionId, Vault versions are claimed in `custom_metadata` and written with
//! check-and-set. A Lease per remote key keeps two Rotations of one key from
//! interleaving. Every step emits an Event and one JSON line on the `audit` target.

mod credential;
pub(crate) mod lock;
mod mirrors;
pub mod policy;
mod remote;
mod sealing;
mod target;
mod value;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use sigil_types::{Rotation, RotationPhase, RotationStatus, RotationStep};

use crate::common::Context;
use crate::common::backoff::{Backoff, ObjectKey};
use crate::common::error::{Error, Result};
use crate::common::status::{self, Health};
use crate::common::watch::{cache_synced, scoped_api, watch_lean};
use crate::restart::Restarter;
use crate::sealed::cached::CachedSealedSecret;
use crate::sealed::keys::Keys;
use crate::sync::SyncContext;

/// How long a failed step waits at most before it is tried again.
const RETRY_CAP: Duration = Duration::from_secs(60);

/// Shared by every Rotation reconcile; the client, metrics, Events and the
/// controller's namespace through [`Context`].
pub struct RotationContext {
    pub(crate) shared: Arc<Context>,
    /// Stores, sessions and ExternalSecrets, shared with the sync controllers.
    pub(crate) sync: Arc<SyncContext>,
    pub(crate) restarter: Arc<Restarter>,
    pub(crate) keys: Arc<Keys>,
    /// SealedSecrets as last seen, for the sealing-key report.
    pub(crate) sealed: Store<CachedSealedSecret>,
    /// RotationPolicies as last seen: which one governs a Rotation.
    pub(crate) policies: Store<sigil_types::RotationPolicy>,
    pub(crate) backoff: Backoff,
}

crate::common::context::shares_context!(RotationContext);

/// The Rotations' watch, shared with sync (which pins Vault keys a Rotation staged)
/// and the Rotation controller.
pub fn watch(
    client: &kube::Client,
    watch_namespace: Option<&str>,
    initial_list: crate::common::watch::InitialList,
) -> (
    Store<Rotation>,
    impl futures::Stream<Item = kube::runtime::watcher::Result<Rotation>> + Send + 'static,
) {
    watch_lean(
        scoped_api::<Rotation>(client, watch_namespace),
        initial_list,
    )
}

/// Runs the Rotation controller until `stop` resolves.
pub async fn run(
    ctx: Arc<RotationContext>,
    (rotations, changes): (
        Store<Rotation>,
        impl futures::Stream<Item = kube::runtime::watcher::Result<Rotation>> + Send + 'static,
    ),
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let concurrency = ctx.config.concurrency;
    Controller::for_stream(changes, rotations)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "rotation controller event");
            }
        })
        .await;
}

/// Why a step stopped short of recording its outcome.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Something was unavailable; the step runs again after a backoff.
    Retry(Error),
    /// Not done yet (e.g. mirrors still refreshing); look again after this long.
    Wait(Duration, String),
    /// The Rotation cannot go on; nothing more is written.
    Fail(Failure),
}

impl From<Error> for Stop {
    fn from(err: Error) -> Self {
        Stop::Retry(err)
    }
}

/// Why a Rotation failed: the `Ready` reason and a message that says what to do.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub reason: &'static str,
    pub message: String,
}

pub(crate) fn fail(reason: &'static str, message: impl Into<String>) -> Stop {
    Stop::Fail(Failure {
        reason,
        message: message.into(),
    })
}

/// A step's outcome, to be recorded: the next phase and what changed in status.
pub(crate) struct Outcome {
    pub phase: RotationPhase,
    pub message: String,
    pub change: Box<dyn FnOnce(&mut RotationStatus) + Send>,
}

impl Outcome {
    pub(crate) fn new(
        phase: RotationPhase,
        message: impl Into<String>,
        change: impl FnOnce(&mut RotationStatus) + Send + 'static,
    ) -> Self {
        Outcome {
            phase,
            message: message.into(),
            change: Box::new(change),
        }
    }
}

/// The steps, in order; each names its Event reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepName {
    Resolve,
    Stage,
    Set,
    Test,
    Promote,
    Propagate,
    Restart,
    AwaitRollout,
    Retire,
    Complete,
}

impl StepName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepName::Resolve => "resolve",
            StepName::Stage => "stage",
            StepName::Set => "set",
            StepName::Test => "test",
            StepName::Promote => "promote",
            StepName::Propagate => "propagate",
            StepName::Restart => "restart",
            StepName::AwaitRollout => "await-rollout",
            StepName::Retire => "retire",
            StepName::Complete => "complete",
        }
    }

    /// The phase recorded once the step is done; `resolve` leaves a Rotation `Pending`
    /// with its target recorded.
    fn done_at(self) -> RotationPhase {
        match self {
            StepName::Resolve => RotationPhase::Pending,
            StepName::Stage => RotationPhase::Staged,
            StepName::Set => RotationPhase::Set,
            StepName::Test => RotationPhase::Tested,
            StepName::Promote => RotationPhase::Promoted,
            StepName::Propagate => RotationPhase::Propagated,
            StepName::Restart => RotationPhase::Restarted,
            StepName::AwaitRollout => RotationPhase::RolledOut,
            StepName::Retire => RotationPhase::Retired,
            StepName::Complete => RotationPhase::Completed,
        }
    }

    fn event_reason(self) -> &'static str {
        match self {
            StepName::Resolve => "RotationStarted",
            StepName::Stage => "RotationStaged",
            StepName::Set => "CredentialSet",
            StepName::Test => "CredentialTested",
            StepName::Promote => "RotationPromoted",
            StepName::Propagate => "SecretsRefreshed",
            StepName::Restart => "WorkloadsRestarted",
            StepName::AwaitRollout => "WorkloadsRolledOut",
            StepName::Retire => "CredentialRetired",
            StepName::Complete => "RotationCompleted",
        }
    }
}

fn phase_of(obj: &Rotation) -> RotationPhase {
    obj.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(RotationPhase::Pending)
}

pub(crate) fn status_of(obj: &Rotation) -> RotationStatus {
    obj.status.clone().unwrap_or_default()
}

/// `namespace/name` of the Rotation.
pub(crate) fn display_name(obj: &Rotation) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Stops the process here when the `failpoints` feature is on and the fail point
/// `name` is configured (tests kill the controller at every step boundary this way).
pub(crate) fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| {
        tracing::warn!(fail_point = name, "fail point reached: exiting");
        std::process::exit(86)
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Works a Rotation through its steps until it finishes, must wait, or fails.
#[tracing::instrument(skip(obj, ctx), fields(namespace = obj.namespace().as_deref().unwrap_or(""), name = %obj.name_any()))]
pub async fn reconcile(obj: Arc<Rotation>, ctx: Arc<RotationContext>) -> Result<Action> {
    let key = object_key(&obj);
    // A step that looked before the watches listed would miss mirrors and keys.
    ctx.sync.caches_synced().await;
    cache_synced(&ctx.sealed).await;
    let mut obj = (*obj).clone();
    loop {
        let phase = phase_of(&obj);
        if phase.is_final() {
            ctx.backoff.succeeded(&key);
            return Ok(Action::await_change());
        }
        let step = next_step(&obj, phase);
        let started = step_started(&obj, step);
        match run_step(&obj, &ctx, step).await {
            Ok(outcome) => {
                if outcome.phase.is_final() {
                    lock::release(&ctx, &obj).await?;
                }
                obj = record(&ctx, &obj, step, started, outcome).await?;
                crash_point(&format!("rotation-after-{}", step.as_str()));
            }
            Err(Stop::Wait(delay, message)) => {
                note_waiting(&ctx, &obj, step, started, &message).await?;
                return Ok(Action::requeue(delay));
            }
            Err(Stop::Retry(err)) => return Err(err),
            Err(Stop::Fail(failure)) => {
                lock::release(&ctx, &obj).await?;
                obj = record_failed(&ctx, &obj, step, started, failure).await?;
            }
        }
    }
}

/// Transient failures (API or provider unavailable) back off per Rotation.
pub fn error_policy(obj: Arc<Rotation>, err: &Error, ctx: Arc<RotationContext>) -> Action {
    let delay = ctx.backoff.failed(object_key(&obj), RETRY_CAP);
    tracing::warn!(error = %err, ?delay, "rotation step failed; retrying");
    Action::requeue(delay)
}

fn object_key(obj: &Rotation) -> ObjectKey {
    (
        "Rotation",
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    )
}

/// The steps `obj` goes through, in order. With a policy's credential target (where
/// the leaked value is checked, e.g. a database), `set` and `test` run between `stage`
/// and `promote` (no mirror reads the staged version before it is promoted, on any
/// store), and `retire` only after every rollout completed.
fn sequence(obj: &Rotation) -> Vec<StepName> {
    if obj.spec.sealing_key.is_some() {
        return vec![
            StepName::Resolve,
            StepName::Stage,
            StepName::Promote,
            StepName::Complete,
        ];
    }
    let checked = obj.status.as_ref().is_some_and(|s| s.credential.is_some());
    let mut steps = vec![StepName::Resolve, StepName::Stage];
    if checked {
        steps.extend([StepName::Set, StepName::Test]);
    }
    steps.extend([StepName::Promote, StepName::Propagate]);
    if obj.spec.restart_or_default() {
        steps.extend([StepName::Restart, StepName::AwaitRollout]);
    }
    if checked {
        steps.push(StepName::Retire);
    }
    steps.push(StepName::Complete);
    steps
}

/// The step that moves `obj` on from `phase`: the first of its sequence not done yet.
fn next_step(obj: &Rotation, phase: RotationPhase) -> StepName {
    let resolved = obj
        .status
        .as_ref()
        .is_some_and(|s| s.target.is_some() || s.base_version.is_some());
    sequence(obj)
        .into_iter()
        .find(|step| match step.done_at() {
            RotationPhase::Pending => phase == RotationPhase::Pending && !resolved,
            done_at => phase < done_at,
        })
        .unwrap_or(StepName::Complete)
}

/// When `step` began: as recorded by an earlier attempt, or now.
fn step_started(obj: &Rotation, step: StepName) -> Time {
    obj.status
        .as_ref()
        .and_then(|s| s.steps.iter().rev().find(|r| r.name == step.as_str()))
        .filter(|r| r.finished_at.is_none())
        .map_or_else(|| Time(Timestamp::now()), |r| r.started_at.clone())
}

async fn run_step(
    obj: &Rotation,
    ctx: &Arc<RotationContext>,
    step: StepName,
) -> Result<Outcome, Stop> {
    let sealing = obj.spec.sealing_key.is_some();
    // The sealing key is the cluster's: a Rotation of it elsewhere is a tenant's, at
    // every step (its status may have been written to skip `resolve`).
    let namespace = obj.namespace().unwrap_or_default();
    if sealing && namespace != ctx.config.namespace {
        return Err(fail(
            "WrongNamespace",
            format!(
                "a sealing-key Rotation is carried out only in the controller's namespace `{}`, not `{namespace}`; nothing was made. Use `sigil keys rotate` or create it there",
                ctx.config.namespace
            ),
        ));
    }
    match step {
        StepName::Resolve if sealing => {
            if !obj.spec.is_dry_run() {
                lock::acquire(ctx, obj, None).await?;
            }
            sealing::resolve(obj, ctx)
        }
        StepName::Resolve => remote::resolve(obj, ctx).await,
        StepName::Stage if sealing => {
            lock::acquire(ctx, obj, None).await?;
            sealing::stage(obj, ctx).await
        }
        StepName::Stage => remote::stage(obj, ctx).await,
        StepName::Set => credential::set(obj, ctx).await,
        StepName::Test => credential::test(obj, ctx).await,
        StepName::Retire => credential::retire(obj, ctx).await,
        StepName::Promote if sealing => sealing::promote(obj, ctx).await,
        StepName::Promote => remote::promote(obj, ctx).await,
        StepName::Propagate => mirrors::propagate(obj, ctx).await,
        StepName::Restart => mirrors::restart(obj, ctx).await,
        StepName::AwaitRollout => mirrors::await_rollout(obj, ctx).await,
        StepName::Complete if sealing => sealing::complete(obj, ctx),
        StepName::Complete => Ok(Outcome::new(
            RotationPhase::Completed,
            "rotation completed",
            |_| {},
        )),
    }
}

/// The conditions of a Rotation in `phase`: `Ready` once Completed, `Stalled` once
/// Failed (nothing more will happen: a new Rotation is the way on), `Reconciling` in
/// every step between (also while a step waits or retries).
fn conditions_of(
    obj: &Rotation,
    status: &RotationStatus,
    phase: RotationPhase,
    reason: &str,
    message: &str,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let health = match phase {
        RotationPhase::Completed => Health::Ready,
        RotationPhase::Failed => Health::Failed,
        _ => Health::Progressing,
    };
    status::conditions(
        &status.conditions,
        obj.metadata.generation,
        health,
        reason,
        message,
        &[],
    )
}

/// Records a finished step: its entry, the next phase and what it changed, then the
/// Event and the audit line.
async fn record(
    ctx: &RotationContext,
    obj: &Rotation,
    step: StepName,
    started: Time,
    outcome: Outcome,
) -> Result<Rotation> {
    let mut status = status_of(obj);
    (outcome.change)(&mut status);
    let finished = Time(Timestamp::now());
    if step == StepName::Propagate {
        credential::note_propagated(&mut status, finished.0);
    }
    set_step(&mut status, step, started, Some(finished), &outcome.message);
    status.phase = Some(outcome.phase);
    status.observed_generation = obj.metadata.generation;
    let reason = match outcome.phase {
        RotationPhase::Completed if obj.spec.is_dry_run() => "DryRun",
        phase => phase.as_str(),
    };
    status.conditions = conditions_of(obj, &status, outcome.phase, reason, &outcome.message);
    let written = status::record_status_at(api_of(ctx, obj), obj, &status).await?;
    if outcome.phase >= RotationPhase::Promoted {
        ctx.sync.release(&obj.uid().unwrap_or_default());
    }
    let event_reason = if outcome.phase == RotationPhase::Completed {
        StepName::Complete.event_reason()
    } else {
        step.event_reason()
    };
    announce(ctx, &written, step, event_reason, false, &outcome.message).await;
    if outcome.phase == RotationPhase::Completed {
        count(
            ctx,
            if obj.spec.is_dry_run() {
                "dry_run"
            } else {
                "completed"
            },
        );
    }
    Ok(written)
}

async fn record_failed(
    ctx: &RotationContext,
    obj: &Rotation,
    step: StepName,
    started: Time,
    failure: Failure,
) -> Result<Rotation> {
    let mut status = status_of(obj);
    set_step(
        &mut status,
        step,
        started,
        Some(Time(Timestamp::now())),
        &failure.message,
    );
    status.phase = Some(RotationPhase::Failed);
    status.observed_generation = obj.metadata.generation;
    status.conditions = conditions_of(
        obj,
        &status,
        RotationPhase::Failed,
        failure.reason,
        &failure.message,
    );
    let written = status::record_status_at(api_of(ctx, obj), obj, &status).await?;
    ctx.sync.release(&obj.uid().unwrap_or_default());
    announce(
        ctx,
        &written,
        step,
        "RotationFailed",
        true,
        &failure.message,
    )
    .await;
    count(ctx, "failed");
    Ok(written)
}

/// Shows that a step is under way and why it waits, once per distinct message.
async fn note_waiting(
    ctx: &RotationContext,
    obj: &Rotation,
    step: StepName,
    started: Time,
    message: &str,
) -> Result<()> {
    let mut status = status_of(obj);
    let phase = phase_of(obj);
    let before = status.clone();
    set_step(&mut status, step, started, None, message);
    let reason = match step {
        StepName::Resolve | StepName::Stage => "Waiting",
        _ => phase.as_str(),
    };
    status.conditions = conditions_of(obj, &status, phase, reason, message);
    status.observed_generation = obj.metadata.generation;
    if status != before {
        status::record_status_at(api_of(ctx, obj), obj, &status).await?;
    }
    Ok(())
}

/// Puts `step`'s entry last in `status.steps`, replacing an unfinished entry of it.
fn set_step(
    status: &mut RotationStatus,
    step: StepName,
    started_at: Time,
    finished_at: Option<Time>,
    message: &str,
) {
    if status
        .steps
        .last()
        .is_some_and(|s| s.name == step.as_str() && s.finished_at.is_none())
    {
        status.steps.pop();
    }
    status.steps.push(RotationStep {
        name: step.as_str().to_owned(),
        started_at,
        finished_at,
        message: Some(status::truncate(message, 500)),
    });
}

fn api_of(ctx: &RotationContext, obj: &Rotation) -> Api<Rotation> {
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

/// The Event on the Rotation and the JSON audit line of one step.
async fn announce(
    ctx: &RotationContext,
    obj: &Rotation,
    step: StepName,
    reason: &str,
    warning: bool,
    message: &str,
) {
    let target = obj
        .status
        .as_ref()
        .and_then(|s| s.target.as_ref())
        .map_or_else(
            || {
                if obj.spec.sealing_key.is_some() {
                    "sealing key".to_owned()
                } else {
                    obj.spec
                        .external_secret_ref
                        .as_ref()
                        .map_or_else(String::new, |r| format!("ExternalSecret {}", r.name))
                }
            },
            |t| format!("{} {} ({})", t.provider, t.key, t.server),
        );
    tracing::info!(
        target: "audit",
        rotation = %display_name(obj),
        uid = obj.uid().unwrap_or_default(),
        requested_by = obj.spec.requested_by_or_default(),
        reason = obj.spec.reason.as_deref().unwrap_or(""),
        step = step.as_str(),
        target = %target,
        dry_run = obj.spec.is_dry_run(),
        result = if warning { "failed" } else { reason },
        message,
    );
    status::publish(&ctx.events, obj, warning, reason, step.as_str(), message);
}

fn count(ctx: &RotationContext, result: &'static str) {
    ctx.metrics
        .rotations
        .get_or_create(&crate::common::metrics::RotationLabel { result })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_types::{RotationSpec, RotationTarget, SealingKeyTarget};

    /// The steps a Rotation takes when every one succeeds, recording what `record` would.
    fn walk(spec: RotationSpec) -> Vec<StepName> {
        let mut obj = Rotation::new("r", spec);
        let mut steps = Vec::new();
        loop {
            let phase = phase_of(&obj);
            if phase.is_final() {
                return steps;
            }
            let step = next_step(&obj, phase);
            steps.push(step);
            let status = obj.status.get_or_insert_with(Default::default);
            if step == StepName::Resolve {
                status.target = Some(RotationTarget::default());
            }
            status.phase = Some(step.done_at());
        }
    }

    #[test]
    fn each_kind_of_rotation_takes_its_steps_in_order() {
        let names = |spec| {
            walk(spec)
                .into_iter()
                .map(StepName::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            names(RotationSpec::default()),
            "resolve stage promote propagate restart await-rollout complete"
        );
        assert_eq!(
            names(RotationSpec {
                restart: Some(false),
                ..RotationSpec::default()
            }),
            "resolve stage promote propagate complete"
        );
        assert_eq!(
            names(RotationSpec {
                sealing_key: Some(SealingKeyTarget::default()),
                ..RotationSpec::default()
            }),
            "resolve stage promote complete"
        );
    }

    #[test]
    fn a_policy_sets_and_tests_before_promote_and_retires_only_after_the_rollouts() {
        let mut obj = Rotation::new("r", RotationSpec::default());
        obj.status = Some(RotationStatus {
            target: Some(RotationTarget::default()),
            policy: Some("app-db".to_owned()),
            credential: Some(sigil_types::CredentialStatus::default()),
            ..RotationStatus::default()
        });
        let mut steps = Vec::new();
        while !phase_of(&obj).is_final() {
            let step = next_step(&obj, phase_of(&obj));
            steps.push(step.as_str());
            obj.status.as_mut().unwrap().phase = Some(step.done_at());
        }
        assert_eq!(
            steps.join(" "),
            "stage set test promote propagate restart await-rollout retire complete"
        );
    }

    #[test]
    fn a_status_past_pending_without_a_target_is_never_resolved_again() {
        let mut obj = Rotation::new("r", RotationSpec::default());
        obj.status = Some(RotationStatus {
            phase: Some(RotationPhase::Staged),
            ..RotationStatus::default()
        });
        assert_eq!(next_step(&obj, RotationPhase::Staged), StepName::Promote);
    }
}
