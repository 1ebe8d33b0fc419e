//! Recording what a reconcile found, the same way for every kind: conditions whose
//! transition time moves only when their status does, status written by server-side
//! apply only when it changed, and Events when something was written or went wrong in
//! a new way.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::MANAGER;
use crate::error::{KubeContext, Result};

/// A condition of `type_` for an object at `generation`, keeping the previous transition
/// time when the status did not change.
pub(crate) fn condition(
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

/// Writes `status` of `obj` (through `api`, of its scope) unless it equals `current`.
pub(crate) async fn patch_status<K, S>(
    api: Api<K>,
    limiter: &governor::DefaultDirectRateLimiter,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    apply_status(api, limiter, obj, status, false).await?;
    Ok(true)
}

/// Writes `status` of `obj` only if `obj` is still at the resourceVersion it was read
/// at, and returns the object as written: a step recorded this way never overwrites
/// what another replica recorded meanwhile (that write fails with 409 Conflict).
pub(crate) async fn record_status_at<K, S>(
    api: Api<K>,
    limiter: &governor::DefaultDirectRateLimiter,
    obj: &K,
    status: &S,
) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    apply_status(api, limiter, obj, status, true).await
}

/// Server-side applies `status` of `obj`, on the condition that `obj` is still at its
/// resourceVersion when `at_version` is set.
async fn apply_status<K, S>(
    api: Api<K>,
    limiter: &governor::DefaultDirectRateLimiter,
    obj: &K,
    status: &S,
    at_version: bool,
) -> Result<K>
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
    limiter.until_ready().await;
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

/// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    limiter: &governor::DefaultDirectRateLimiter,
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
    limiter.until_ready().await;
    if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %err, "cannot publish Event");
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

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
