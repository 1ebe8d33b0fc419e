//! ClusterExternalSecrets: one ExternalSecret, owned by the ClusterExternalSecret, in
//! every namespace its selectors or names choose. Namespaces are watched, so one that
//! starts matching gets its ExternalSecret, and one that stops matching loses it, within
//! seconds; an ExternalSecret of the same name that is not this ClusterExternalSecret's
//! is never touched. Deleting the ClusterExternalSecret leaves the rest to Kubernetes'
//! garbage collector (owner references). The ExternalSecrets themselves are synced by
//! the ExternalSecret controller like any other.
//!
//! A controller confined to one namespace (`--watch-namespace`) cannot serve a kind that
//! writes into every namespace: unless told to (`--cluster-external-secrets=serve`), it
//! only says so in the status (`NotServed`), where no serving controller has reported.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use sigil_types::{
    CLUSTER_EXTERNAL_SECRET_LABEL, ClusterExternalSecret, ClusterExternalSecretNamespaceFailure,
    ClusterExternalSecretStatus, ExternalSecret, is_object_name,
};

use crate::common::backoff::{Backoff, ObjectKey};
use crate::common::error::{Error, Result};
use crate::common::status::{self, Health};
use crate::common::watch::{cache_synced, forget_bookkeeping, watch_lean};
use crate::common::{ClusterExternalSecrets, Context, MANAGER};

/// Reasons of the `Ready` condition.
const PROVISIONED: &str = "Provisioned";
const PROVISION_FAILED: &str = "ProvisionFailed";
const INVALID_SPEC: &str = "InvalidSpec";
const NOT_SERVED: &str = "NotServed";
/// The most a namespace that failed waits before it is tried again: an ExternalSecret in
/// the way carries no label of ours, so its deletion reaches no watch here.
const FAILED_RETRY_CAP: Duration = Duration::from_secs(10);
/// ExternalSecrets written at once by one reconcile.
const WRITES_AT_ONCE: usize = 8;

/// What this controller does with ClusterExternalSecrets, from its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    Serve,
    /// Confined to this namespace: report `NotServed`.
    Report(String),
}

fn mode(flag: ClusterExternalSecrets, watch_namespace: Option<&str>) -> Option<Mode> {
    match (flag, watch_namespace) {
        (ClusterExternalSecrets::Off, _) => None,
        (ClusterExternalSecrets::Serve, _) | (ClusterExternalSecrets::Auto, None) => {
            Some(Mode::Serve)
        }
        (ClusterExternalSecrets::Auto, Some(namespace)) => Some(Mode::Report(namespace.to_owned())),
    }
}

/// The ClusterExternalSecret controller's own state; the client, Events and
/// configuration through [`Context`].
pub(crate) struct CesContext {
    shared: Arc<Context>,
    /// Every Namespace, metadata only.
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The ExternalSecrets labelled as written by a ClusterExternalSecret.
    owned: Store<ExternalSecret>,
    backoff: Backoff,
    /// Hash of the labels, annotations and spec last applied to each ExternalSecret. Labels and annotations of others may sit beside ours, so
    /// the object alone cannot say that one of ours was dropped from the spec since.
    applied: Arc<Applied>,
}

/// (ClusterExternalSecret UID, namespace, name) → hash of what was last applied there.
type Applied = Mutex<HashMap<(String, String, String), u64>>;

crate::common::context::shares_context!(CesContext);

/// The future that serves (or reports on) ClusterExternalSecrets until `stop` resolves;
/// it ends at once with `--cluster-external-secrets=off`.
pub(crate) fn run(
    shared: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send {
    let mode = mode(
        shared.config.cluster_external_secrets,
        shared.config.watch_namespace.as_deref(),
    );
    async move {
        match mode {
            None => {}
            Some(Mode::Serve) => serve(shared, stop).await,
            Some(Mode::Report(namespace)) => report(shared, namespace, stop).await,
        }
    }
}

async fn serve(
    shared: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = shared.client.clone();
    let initial = shared.initial_list;
    let (cluster_externals, changes) =
        watch_lean(Api::<ClusterExternalSecret>::all(client.clone()), initial);
    let (namespaces, writer) = reflector::store();
    let namespace_changes = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        initial.watcher_config(),
    )
    .default_backoff()
    .modify(forget_bookkeeping)
    .reflect(writer)
    .touched_objects()
    // Only what can change a choice: labels, and the start of termination.
    .predicate_filter(namespace_choice, Default::default())
    .filter_map(|changed| async move { changed.ok().map(|_| ()) });
    let (owned, writer) = reflector::store();
    let applied = Arc::new(Applied::default());
    let forget = applied.clone();
    let owned_changes = watcher(
        Api::<ExternalSecret>::all(client),
        initial
            .watcher_config()
            .labels(CLUSTER_EXTERNAL_SECRET_LABEL),
    )
    .default_backoff()
    .modify(forget_bookkeeping)
    .reflect(writer)
    .inspect_ok(move |event| {
        // Whatever removed it (a namespace that stopped matching, the garbage collector
        // after its ClusterExternalSecret), what was applied there is history.
        if let watcher::Event::Delete(es) = event
            && let Some(owner) = controller_owner(es)
        {
            forget.lock().unwrap_or_else(|e| e.into_inner()).remove(&(
                owner.uid.clone(),
                es.namespace().unwrap_or_default(),
                es.name_any(),
            ));
        }
    })
    .touched_objects();
    let concurrency = shared.config.concurrency;
    let context = Arc::new(CesContext {
        shared,
        namespaces,
        owned,
        backoff: Backoff::default(),
        applied,
    });
    Controller::for_stream(changes, cluster_externals)
        // The owner is cluster-scoped: kube's `owns` would look it up in the
        // ExternalSecret's namespace.
        .watches_stream(owned_changes, owner_of)
        .reconcile_all_on(namespace_changes)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, context)
        .for_each(log_event)
        .await;
}

async fn report(
    shared: Arc<Context>,
    namespace: String,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (store, changes) = watch_lean(
        Api::<ClusterExternalSecret>::all(shared.client.clone()),
        shared.initial_list,
    );
    let context = Arc::new((shared, namespace));
    Controller::for_stream(changes, store)
        .graceful_shutdown_on(stop)
        .run(report_not_served, report_error_policy, context)
        .for_each(log_event)
        .await;
}

async fn log_event<T, E: std::fmt::Display>(result: std::result::Result<T, E>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "ClusterExternalSecret controller event");
    }
}

fn namespace_choice(ns: &PartialObjectMeta<Namespace>) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    ns.metadata.labels.hash(&mut hasher);
    ns.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

fn owner_of(es: ExternalSecret) -> Option<ObjectRef<ClusterExternalSecret>> {
    controller_owner(&es)
        .filter(|owner| owner.kind == ClusterExternalSecret::kind(&()))
        .map(|owner| ObjectRef::new(&owner.name))
}

fn controller_owner(es: &ExternalSecret) -> Option<&OwnerReference> {
    es.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
}

fn object_key(ces: &ClusterExternalSecret) -> ObjectKey {
    ("ClusterExternalSecret", String::new(), ces.name_any())
}

/// Reconciles a ClusterExternalSecret: removes its ExternalSecrets that are no longer
/// wanted, writes the wanted ones, and records which namespaces hold one.
#[tracing::instrument(skip(ces, ctx), fields(name = %ces.name_any()))]
async fn reconcile(ces: Arc<ClusterExternalSecret>, ctx: Arc<CesContext>) -> Result<Action> {
    // An incomplete list of namespaces would look like namespaces that stopped matching.
    if !cache_synced(&ctx.namespaces).await || !cache_synced(&ctx.owned).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if ces.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the ExternalSecrets it owns.
        return Ok(Action::await_change());
    }
    let uid = ces.uid().unwrap_or_default();
    let name = ces.external_secret_name();
    let plan = ces
        .spec
        .refresh_time_duration()
        .and_then(|refresh| Ok((refresh, selectors(&ces)?)))
        .and_then(|plan| {
            if is_object_name(&name) {
                Ok(plan)
            } else {
                Err(format!(
                    "spec.externalSecretName `{name}` is not an object name; use lowercase letters, digits, `-` and `.`"
                ))
            }
        });
    let (refresh, selectors) = match plan {
        Ok(plan) => plan,
        Err(message) => {
            // Nothing is removed on a spec that cannot be read: it may be a typo away
            // from choosing the same namespaces.
            record(
                &ctx,
                &ces,
                &name,
                None,
                Health::Failed,
                INVALID_SPEC,
                &message,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };

    let chosen: BTreeSet<String> = ctx
        .namespaces
        .state()
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| chooses(&ces, &selectors, ns))
        .map(|ns| ns.name_any())
        .collect();
    let terminating: BTreeSet<String> = ctx
        .namespaces
        .state()
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_some())
        .map(|ns| ns.name_any())
        .collect();
    let ours: Vec<Arc<ExternalSecret>> = ctx
        .owned
        .state()
        .into_iter()
        .filter(|es| controller_owner(es).is_some_and(|owner| owner.uid == uid))
        .collect();

    for es in &ours {
        let namespace = es.namespace().unwrap_or_default();
        let wanted = chosen.contains(&namespace) && es.name_any() == name;
        // A terminating namespace takes its ExternalSecrets with it.
        if !wanted && !terminating.contains(&namespace) {
            remove(&ctx, es).await?;
        }
    }

    let outcomes: Vec<(String, std::result::Result<(), String>)> =
        futures::stream::iter(chosen.iter().cloned())
            .map(|namespace| {
                let (ctx, ces, name, ours) = (&ctx, &ces, &name, &ours);
                async move {
                    let cached = ours.iter().find(|es| {
                        es.namespace().as_deref() == Some(namespace.as_str())
                            && es.name_any() == *name
                    });
                    let outcome = provision(ctx, ces, &namespace, name, cached).await;
                    (namespace, outcome)
                }
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .collect()
            .await;
    let mut provisioned = Vec::new();
    let mut failed = Vec::new();
    for (namespace, outcome) in outcomes {
        match outcome {
            Ok(()) => provisioned.push(namespace),
            Err(reason) => failed.push(ClusterExternalSecretNamespaceFailure {
                namespace,
                reason: Some(reason),
            }),
        }
    }
    provisioned.sort();
    failed.sort();

    let (health, reason, message) = if failed.is_empty() {
        let message = if provisioned.is_empty() {
            "no namespace is chosen: no namespace matches namespaceSelectors, namespaceSelector or namespaces".to_owned()
        } else {
            format!(
                "ExternalSecret `{name}` is in {} namespace(s)",
                provisioned.len()
            )
        };
        (Health::Ready, PROVISIONED, message)
    } else {
        let first: Vec<String> = failed
            .iter()
            .take(3)
            .map(|f| {
                format!(
                    "{}: {}",
                    f.namespace,
                    f.reason.as_deref().unwrap_or_default()
                )
            })
            .collect();
        let message = format!(
            "ExternalSecret `{name}` could not be written in {} of {} namespace(s) (see status.failedNamespaces): {}",
            failed.len(),
            chosen.len(),
            first.join("; ")
        );
        (Health::Failed, PROVISION_FAILED, message)
    };
    let lists = Some((provisioned, failed));
    let failed_any = lists.as_ref().is_some_and(|(_, f)| !f.is_empty());
    record(&ctx, &ces, &name, lists, health, reason, &message).await?;
    if failed_any {
        let delay = ctx
            .backoff
            .failed(object_key(&ces), refresh.min(FAILED_RETRY_CAP));
        return Ok(Action::requeue(delay));
    }
    ctx.backoff.succeeded(&object_key(&ces));
    Ok(Action::requeue(refresh))
}

fn error_policy(ces: Arc<ClusterExternalSecret>, err: &Error, ctx: Arc<CesContext>) -> Action {
    let cap = ces
        .spec
        .refresh_time_duration()
        .unwrap_or(sigil_types::cluster_external::DEFAULT_CES_REFRESH_TIME);
    let delay = ctx.backoff.failed(object_key(&ces), cap);
    tracing::warn!(error = %err, ?delay, "ClusterExternalSecret reconcile failed; retrying");
    Action::requeue(delay)
}

/// The selectors of `ces`, parsed; the error names the one that is wrong.
fn selectors(ces: &ClusterExternalSecret) -> std::result::Result<Vec<Selector>, String> {
    ces.selectors()
        .enumerate()
        .map(|(i, selector)| {
            Selector::try_from(selector.clone()).map_err(|err| {
                format!(
                    "namespace selector {} of {} is not a label selector ({err}); use the operators In, NotIn, Exists and DoesNotExist",
                    i + 1,
                    ces.selectors().count()
                )
            })
        })
        .collect()
}

/// Whether `ces` chooses `ns`: a selector matches its labels, or it is named.
fn chooses(
    ces: &ClusterExternalSecret,
    selectors: &[Selector],
    ns: &PartialObjectMeta<Namespace>,
) -> bool {
    let name = ns.name_any();
    let empty = BTreeMap::new();
    let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
    ces.spec.namespaces.contains(&name) || selectors.iter().any(|s| s.matches(labels))
}

/// The ExternalSecret `ces` wants in `namespace`, as applied.
fn desired(ces: &ClusterExternalSecret, namespace: &str, name: &str) -> serde_json::Value {
    let metadata = ces
        .spec
        .external_secret_metadata
        .clone()
        .unwrap_or_default();
    let mut labels = metadata.labels;
    labels.insert(
        CLUSTER_EXTERNAL_SECRET_LABEL.to_owned(),
        ces.uid().unwrap_or_default(),
    );
    serde_json::json!({
        "apiVersion": ExternalSecret::api_version(&()),
        "kind": ExternalSecret::kind(&()),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": metadata.annotations,
            // No blockOwnerDeletion: that would need `update` on the owner's finalizers.
            "ownerReferences": [{
                "apiVersion": ClusterExternalSecret::api_version(&()),
                "kind": ClusterExternalSecret::kind(&()),
                "name": ces.name_any(),
                "uid": ces.uid().unwrap_or_default(),
                "controller": true,
            }],
        },
        "spec": ces.spec.external_secret_spec,
    })
}

fn fingerprint(desired: &serde_json::Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    desired.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Whether `es` already holds what `ces` wants, by what this controller last applied.
fn holds(
    ctx: &CesContext,
    ces: &ClusterExternalSecret,
    es: &ExternalSecret,
    desired: &serde_json::Value,
) -> bool {
    let key = (
        ces.uid().unwrap_or_default(),
        es.namespace().unwrap_or_default(),
        es.name_any(),
    );
    let applied = ctx
        .applied
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    let subset = |want: &serde_json::Value, have: &Option<BTreeMap<String, String>>| {
        want.as_object().into_iter().flatten().all(|(k, v)| {
            have.as_ref()
                .and_then(|have| have.get(k))
                .is_some_and(|h| v.as_str() == Some(h))
        })
    };
    applied == Some(fingerprint(desired))
        && es.spec == ces.spec.external_secret_spec
        && subset(&desired["metadata"]["labels"], &es.metadata.labels)
        && subset(
            &desired["metadata"]["annotations"],
            &es.metadata.annotations,
        )
}

/// Writes the ExternalSecret of `ces` into `namespace`, unless one of that name is
/// there that is not its own. The error is the reason recorded for the namespace.
async fn provision(
    ctx: &CesContext,
    ces: &ClusterExternalSecret,
    namespace: &str,
    name: &str,
    cached: Option<&Arc<ExternalSecret>>,
) -> std::result::Result<(), String> {
    let uid = ces.uid().unwrap_or_default();
    let api = Api::<ExternalSecret>::namespaced(ctx.client.clone(), namespace);
    let want = desired(ces, namespace, name);
    let existing = match cached {
        Some(es) => Some(es.as_ref().clone()),
        // Not labelled as ours: read it, in case someone else's is in the way.
        None => api.get_opt(name).await.map_err(|err| {
            format!(
                "could not read ExternalSecret `{name}`: {}",
                api_message(&err)
            )
        })?,
    };
    let params = match &existing {
        Some(es) => match controller_owner(es) {
            Some(owner) if owner.uid == uid => {
                if holds(ctx, ces, es, &want) {
                    return Ok(());
                }
                // Ours: take back whatever was edited by hand.
                PatchParams::apply(MANAGER).force()
            }
            Some(owner) => {
                return Err(format!(
                    "ExternalSecret `{name}` already exists and belongs to {} `{}`; delete it, or set spec.externalSecretName to another name",
                    owner.kind, owner.name
                ));
            }
            None => {
                return Err(format!(
                    "ExternalSecret `{name}` already exists and is not this ClusterExternalSecret's; it is left as it is: delete or rename it, or set spec.externalSecretName to another name"
                ));
            }
        },
        // Not forced: should one be created meanwhile, its fields conflict (409)
        // instead of being taken over.
        None => PatchParams::apply(MANAGER),
    };
    match api.patch(name, &params, &Patch::Apply(&want)).await {
        Ok(_) => {
            ctx.applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    (uid, namespace.to_owned(), name.to_owned()),
                    fingerprint(&want),
                );
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Err(format!(
            "ExternalSecret `{name}` was created by someone else meanwhile and is left as it is: delete or rename it, or set spec.externalSecretName to another name"
        )),
        Err(err) => Err(format!(
            "the API server refused ExternalSecret `{name}`: {}",
            api_message(&err)
        )),
    }
}

/// The API server's own words for a failed request (never a value: an ExternalSecret
/// holds none).
fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Deletes `es`, one of this controller's, if it is still the object that was seen.
async fn remove(ctx: &CesContext, es: &ExternalSecret) -> Result<()> {
    let namespace = es.namespace().unwrap_or_default();
    let name = es.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: es.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<ExternalSecret>::namespaced(ctx.client.clone(), &namespace)
        .delete(&name, &params)
        .await
    {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another object of that name.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("delete ExternalSecret {namespace}/{name}"),
            source,
        }),
    }
}

/// Writes the status of `ces` if it changed, and an Event when the reason did. `lists`
/// are the provisioned and failed namespaces; `None` keeps the previous ones.
async fn record(
    ctx: &CesContext,
    ces: &ClusterExternalSecret,
    name: &str,
    lists: Option<(Vec<String>, Vec<ClusterExternalSecretNamespaceFailure>)>,
    health: Health,
    reason: &str,
    message: &str,
) -> Result<()> {
    let previous = ces.status.clone().unwrap_or_default();
    let generation = ces.metadata.generation;
    let mut status = ClusterExternalSecretStatus {
        observed_generation: generation,
        external_secret_name: Some(name.to_owned()),
        conditions: status::conditions(
            &previous.conditions,
            generation,
            health,
            reason,
            message,
            &[],
        ),
        ..previous.clone()
    };
    if let Some((provisioned, failed)) = lists {
        status.provisioned_namespaces = provisioned;
        status.failed_namespaces = failed;
    }
    let written = status::patch_status(
        Api::<ClusterExternalSecret>::all(ctx.client.clone()),
        ces,
        ces.status.as_ref(),
        &status,
    )
    .await?;
    let was = status::reason_of(&previous.conditions, status::READY);
    if written && was != Some(reason) {
        status::publish(
            &ctx.events,
            ces,
            health != Health::Ready,
            reason,
            "Provision",
            message,
        );
    }
    Ok(())
}

/// With `--watch-namespace`: says in the status of `ces` that it is not served, unless a
/// controller has already reported on its generation (one that serves it, or another
/// confined one: they would otherwise take turns).
async fn report_not_served(
    ces: Arc<ClusterExternalSecret>,
    ctx: Arc<(Arc<Context>, String)>,
) -> Result<Action> {
    let (shared, namespace) = ctx.as_ref();
    let generation = ces.metadata.generation;
    let previous = ces.status.clone().unwrap_or_default();
    let reported = previous.observed_generation == generation
        && status::reason_of(&previous.conditions, status::READY).is_some();
    if reported || ces.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let message = format!(
        "not served: the controller that saw it watches only namespace `{namespace}` (--watch-namespace), and a ClusterExternalSecret writes ExternalSecrets into any namespace; run a Sigil controller without --watch-namespace to serve it"
    );
    let status = ClusterExternalSecretStatus {
        observed_generation: generation,
        conditions: status::conditions(
            &previous.conditions,
            generation,
            Health::Failed,
            NOT_SERVED,
            &message,
            &[],
        ),
        ..previous
    };
    // Only onto the object as seen: a serving controller's status written meanwhile wins.
    match status::record_status_at(
        Api::<ClusterExternalSecret>::all(shared.client.clone()),
        ces.as_ref(),
        &status,
    )
    .await
    {
        Ok(_) => {
            status::publish(
                &shared.events,
                ces.as_ref(),
                true,
                NOT_SERVED,
                "Provision",
                &message,
            );
            Ok(Action::await_change())
        }
        Err(Error::Kube {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 409 => Ok(Action::await_change()),
        Err(err) => Err(err),
    }
}

fn report_error_policy(
    _: Arc<ClusterExternalSecret>,
    err: &Error,
    _: Arc<(Arc<Context>, String)>,
) -> Action {
    tracing::warn!(error = %err, "could not report a ClusterExternalSecret as not served; retrying");
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    #[test]
    fn confined_controllers_report_unless_told_to_serve() {
        use ClusterExternalSecrets::*;
        assert_eq!(mode(Auto, None), Some(Mode::Serve));
        assert_eq!(mode(Auto, Some("a")), Some(Mode::Report("a".into())));
        assert_eq!(mode(Serve, Some("a")), Some(Mode::Serve));
        assert_eq!(mode(Off, None), None);
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some(name.into());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        );
        ns
    }

    fn ces(spec: serde_json::Value) -> ClusterExternalSecret {
        let mut spec = spec;
        spec["externalSecretSpec"] = serde_json::json!({"secretStoreRef": {"name": "s"}});
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sigil.dev/v1", "kind": "ClusterExternalSecret",
            "metadata": {"name": "c", "uid": "u-1"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn selectors_and_names_are_ored_and_nothing_chooses_nothing() {
        let ces = ces(serde_json::json!({
            "namespaceSelectors": [{"matchLabels": {"team": "a"}}],
            "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
            "namespaces": ["billing"]
        }));
        let parsed = selectors(&ces).unwrap();
        assert!(chooses(&ces, &parsed, &namespace("x", &[("team", "a")])));
        assert!(chooses(&ces, &parsed, &namespace("y", &[("env", "prod")])));
        assert!(chooses(&ces, &parsed, &namespace("billing", &[])));
        assert!(!chooses(&ces, &parsed, &namespace("z", &[("team", "b")])));

        let none = self::ces(serde_json::json!({}));
        assert!(!chooses(
            &none,
            &selectors(&none).unwrap(),
            &namespace("x", &[])
        ));
        let every = self::ces(serde_json::json!({"namespaceSelectors": [{}]}));
        assert!(chooses(
            &every,
            &selectors(&every).unwrap(),
            &namespace("x", &[])
        ));
    }

    #[test]
    fn a_bad_operator_is_named() {
        let mut bad = ces(serde_json::json!({}));
        bad.spec.namespace_selectors = vec![LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Like".into(),
                    values: None,
                },
            ]),
            ..LabelSelector::default()
        }];
        let message = selectors(&bad).unwrap_err();
        assert!(message.contains("selector 1 of 1"), "{message}");
    }

    #[test]
    fn the_external_secret_is_owned_labelled_and_named() {
        let mut ces = ces(serde_json::json!({
            "externalSecretName": "app",
            "externalSecretMetadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}}
        }));
        ces.spec.external_secret_name = Some("app".into());
        let want = desired(&ces, "ns", &ces.external_secret_name());
        assert_eq!(want["metadata"]["name"], "app");
        assert_eq!(want["metadata"]["labels"]["team"], "a");
        assert_eq!(
            want["metadata"]["labels"][CLUSTER_EXTERNAL_SECRET_LABEL],
            "u-1"
        );
        assert_eq!(want["metadata"]["annotations"]["note"], "x");
        let owner = &want["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["uid"].as_str(),
                owner["controller"].as_bool()
            ),
            (Some("ClusterExternalSecret"), Some("u-1"), Some(true))
        );
        let es: ExternalSecret = serde_json::from_value(want).unwrap();
        assert_eq!(
            owner_of(es).map(|r| r.name),
            Some("c".to_owned()),
            "the owner is looked up cluster-wide"
        );
    }
}
