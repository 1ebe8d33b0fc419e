//! Recording what a reconcile found, the same way for every kind: conditions whose
//! transition time moves only when their status does, status written by server-side
//! apply only when it changed, and Events when something was written or went wrong in
//! a new way.
//!
//! Every kind says how it is in one [`Health`], which [`conditions`] turns into the
//! `Ready`, `Reconciling` and `Stalled` conditions that kstatus, Flux and Argo CD read
//! alike (docs/design.md, "Conditions", says how each tool judges them).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::MANAGER;
use super::error::{KubeContext, Result};
use super::metrics::Metrics;

/// How a reconcile left an object, in the terms GitOps tools read (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// The object is what its spec asks for: `Ready=True`.
    Ready,
    /// Work is under way, or waits for something that is on its way: `Ready=False` and
    /// `Reconciling=True`.
    Progressing,
    /// The reconcile failed. The controller may well retry (an outage can pass), but the
    /// object does not do its job now and a person may have to act: `Ready=False` and
    /// `Stalled=True`.
    Failed,
}

/// The condition `Ready` that every kind writes.
pub(crate) const READY: &str = "Ready";
/// kstatus's condition for work under way (abnormal-true: written only while true).
pub(crate) const RECONCILING: &str = "Reconciling";
/// kstatus's condition for a failure (abnormal-true: written only while true).
pub(crate) const STALLED: &str = "Stalled";

/// The conditions of an object at `generation` whose reconcile ended in `health` for
/// `reason`: `Ready`, then `Reconciling` or `Stalled` while true, then each type of
/// `twins` with `Ready`'s status (kind-specific conditions kept for compatibility, such
/// as a SealedSecret's `Synced`). All carry `reason` and `message`; a condition whose
/// status is unchanged keeps its transition time from `previous`, so that writing the
/// same outcome again changes nothing.
pub(crate) fn conditions(
    previous: &[Condition],
    generation: Option<i64>,
    health: Health,
    reason: &str,
    message: &str,
    twins: &[&str],
) -> Vec<Condition> {
    let ready = health == Health::Ready;
    let abnormal = match health {
        Health::Ready => None,
        Health::Progressing => Some(RECONCILING),
        Health::Failed => Some(STALLED),
    };
    std::iter::once((READY, ready))
        .chain(abnormal.map(|type_| (type_, true)))
        .chain(twins.iter().map(|type_| (*type_, ready)))
        .map(|(type_, ok)| condition(previous, type_, ok, reason, message, generation))
        .collect()
}

/// A condition of `type_` for an object at `generation`, keeping the previous transition
/// time when the status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message, 1000),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The reason of condition `type_`, if present.
pub(crate) fn reason_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

/// What is known of an object's current status, against which a new one is compared:
/// the status itself, or what a cache keeps of it.
pub(crate) trait CurrentStatus<S> {
    /// Whether the current status is `status`.
    fn is(&self, status: &S) -> bool;
}

impl<S: PartialEq> CurrentStatus<S> for S {
    fn is(&self, status: &S) -> bool {
        self == status
    }
}

/// Writes `status` of `obj` (through `api`, of its scope) unless it is `current`.
pub(crate) async fn patch_status<K, C, S>(
    api: Api<K>,
    obj: &K,
    current: Option<&C>,
    status: &S,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    C: CurrentStatus<S>,
    S: Serialize,
{
    if current.is_some_and(|current| current.is(status)) {
        return Ok(false);
    }
    apply_status(api, obj, status, false).await?;
    Ok(true)
}

/// Writes `status` of `obj` only if `obj` is still at the resourceVersion it was read
/// at, and returns the object as written: a step recorded this way never overwrites
/// what another replica recorded meanwhile (that write fails with 409 Conflict).
pub(crate) async fn record_status_at<K, S>(api: Api<K>, obj: &K, status: &S) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    apply_status(api, obj, status, true).await
}

/// Server-side applies `status` of `obj`, on the condition that `obj` is still at its
/// resourceVersion when `at_version` is set.
async fn apply_status<K, S>(api: Api<K>, obj: &K, status: &S, at_version: bool) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let name = obj.name_any();
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if at_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": obj.resource_version() });
    }
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .during(|| {
        format!(
            "update status of {} {}{name}",
            K::kind(&()),
            obj.namespace().map(|n| n + "/").unwrap_or_default()
        )
    })
}

/// Events waiting to be published, at most; more are dropped and counted.
const EVENT_QUEUE: usize = 1024;
/// More Events than this arriving within one window is a burst.
const EVENT_BURST: u64 = 32;
const EVENT_WINDOW: Duration = Duration::from_millis(500);

/// Publishes Events from one background task, for every kind, so that no reconcile
/// waits on one. During a burst (a cold start makes one Event per object) they wait
/// until it is over: each Event is a write, and the Secrets and statuses come first.
/// Events are best effort, as in client-go: when the queue is full, the newest are
/// dropped and counted.
#[derive(Clone)]
pub(crate) struct Events {
    queue: tokio::sync::mpsc::Sender<(Event, ObjectReference)>,
    arrived: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// Starts the publishing task.
    pub(crate) fn start(client: kube::Client, reporter: Reporter, metrics: Arc<Metrics>) -> Self {
        let (queue, mut waiting) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let arrived = Arc::new(AtomicU64::new(0));
        let counter = arrived.clone();
        tokio::spawn(async move {
            // The window now open: when it began, and how many had arrived by then.
            let mut window = (tokio::time::Instant::now(), 0);
            let mut last_window_busy = false;
            while let Some((event, reference)) = waiting.recv().await {
                loop {
                    let now = tokio::time::Instant::now();
                    let arrived = counter.load(Ordering::Relaxed);
                    if now >= window.0 + EVENT_WINDOW {
                        last_window_busy = arrived - window.1 >= EVENT_BURST;
                        window = (now, arrived);
                    }
                    if !last_window_busy && arrived - window.1 < EVENT_BURST {
                        break;
                    }
                    tokio::time::sleep_until(window.0 + EVENT_WINDOW).await;
                }
                // A Recorder per Event: a shared one keeps every Event it sent for six
                // minutes (to count repeats into a series), which after a cold start is
                // one per object; Events here already mark changes only.
                let recorder = Recorder::new(client.clone(), reporter.clone());
                if let Err(err) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %err, "cannot publish Event");
                }
            }
        });
        Self {
            queue,
            arrived,
            metrics,
        }
    }
}

/// Queues an Event about `obj`; a failure to publish is logged, never fatal.
pub(crate) fn publish<K: Resource<DynamicType = ()>>(
    events: &Events,
    obj: &K,
    warning: bool,
    reason: &str,
    action: &str,
    message: &str,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(truncate(message, 1000)),
        action: action.to_owned(),
        secondary: None,
    };
    events.arrived.fetch_add(1, Ordering::Relaxed);
    if events.queue.try_send((event, obj.object_ref(&()))).is_err() {
        events.metrics.events_dropped.inc();
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_does() {
        let first = condition(&[], "Ready", false, "ProviderUnavailable", "down", Some(1));
        let again = condition(
            std::slice::from_ref(&first),
            "Ready",
            false,
            "AuthFailed",
            "refused",
            Some(2),
        );
        assert_eq!(again.last_transition_time, first.last_transition_time);
        assert_eq!(again.reason, "AuthFailed");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let recovered = condition(&[again], "Ready", true, "SecretSynced", "ok", Some(2));
        assert_ne!(recovered.last_transition_time, first.last_transition_time);
        assert_eq!(recovered.status, "True");
    }

    fn summary(conditions: &[Condition]) -> Vec<(&str, &str, &str)> {
        conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect()
    }

    #[test]
    fn each_health_writes_what_kstatus_reads() {
        let ready = conditions(&[], Some(3), Health::Ready, "Unsealed", "ok", &["Synced"]);
        assert_eq!(
            summary(&ready),
            [
                ("Ready", "True", "Unsealed"),
                ("Synced", "True", "Unsealed")
            ]
        );
        let progressing = conditions(&[], Some(3), Health::Progressing, "Staged", "…", &[]);
        assert_eq!(
            summary(&progressing),
            [
                ("Ready", "False", "Staged"),
                ("Reconciling", "True", "Staged")
            ]
        );
        let failed = conditions(&[], Some(3), Health::Failed, "Tampered", "bad", &["Synced"]);
        assert_eq!(
            summary(&failed),
            [
                ("Ready", "False", "Tampered"),
                ("Stalled", "True", "Tampered"),
                ("Synced", "False", "Tampered")
            ]
        );
        assert!(
            [ready, progressing, failed]
                .iter()
                .flatten()
                .all(|c| c.observed_generation == Some(3) && !c.message.is_empty())
        );
    }

    #[test]
    fn the_same_outcome_again_is_the_same_status() {
        let first = conditions(
            &[],
            Some(1),
            Health::Failed,
            "ProviderUnavailable",
            "down",
            &[],
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        let again = conditions(
            &first,
            Some(1),
            Health::Failed,
            "ProviderUnavailable",
            "down",
            &[],
        );
        assert_eq!(again, first, "no timestamp churn");
        let other = conditions(
            &first,
            Some(1),
            Health::Failed,
            "AuthFailed",
            "refused",
            &[],
        );
        assert_eq!(other[1].type_, "Stalled");
        assert_eq!(
            other[1].last_transition_time, first[1].last_transition_time,
            "still stalled, for another reason"
        );
        let recovered = conditions(&other, Some(1), Health::Ready, "SecretSynced", "ok", &[]);
        assert_eq!(summary(&recovered), [("Ready", "True", "SecretSynced")]);
        assert_ne!(
            recovered[0].last_transition_time,
            first[0].last_transition_time
        );
    }

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
