//! Sync: SecretStores, ClusterSecretStores and ExternalSecrets. One provider session
//! per store, one read per remote key (the shared [`cache`]), each ExternalSecret on
//! its own jittered interval, and the Secret kept as it was whenever a read fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use sigil_providers::{ErrorKind, Observer, Operation, Provider};
use sigil_types::{
    ClusterSecretStore, ExternalSecret, Rotation, RotationPhase, SecretStore, StoreKind,
};
use tokio::time::Instant;

use crate::common::Context;
use crate::common::backoff::{Backoff, ObjectKey};
use crate::common::metrics::{Metrics, ProviderLabel, ProviderRequestLabel, ReadyLabel};
use crate::common::secret_watch::{OwnedSecrets, SecretVersion};
use crate::common::secret_writer::SecretWriter;
use crate::common::watch::{cache_synced, scoped_api, watch_lean};

pub mod cache;
pub mod external;
mod find;
pub mod stores;
mod template;
pub mod values;

pub use external::SyncReason;

/// (remote key, version) → when the value an ExternalSecret holds was read.
pub(crate) type Held = std::collections::BTreeMap<(String, Option<String>), Instant>;

/// What the last successful sync of an ExternalSecret left behind.
pub(crate) struct Scheduled {
    generation: Option<i64>,
    force: Option<String>,
    /// When each remote value it holds was read: values read since are new to it.
    held: Held,
    /// `None`: synced once, never due again.
    next_due: Option<Instant>,
    /// The Secret's resourceVersion once it held what was written: while the watch
    /// shows it, the Secret is intact.
    secret_version: Option<SecretVersion>,
    /// The Secret was deleted (every remote key gone, `deletionPolicy: Delete`).
    deleted: bool,
}

/// Shared by the store and ExternalSecret reconcilers; the client, metrics and Events
/// through [`Context`].
pub struct SyncContext {
    pub(crate) shared: Arc<Context>,
    pub(crate) stores: stores::Stores,
    pub(crate) cache: Arc<cache::ReadCache>,
    /// What each store's finds listed.
    pub(crate) finds: find::FindCache,
    pub(crate) backoff: Backoff,
    pub(crate) store_backoff: Backoff,
    /// The Secrets ExternalSecrets write.
    pub(crate) secrets: Arc<OwnedSecrets>,
    pub(crate) secret_stores: Store<SecretStore>,
    /// `None` when ClusterSecretStores are not served.
    pub(crate) cluster_stores: Option<Store<ClusterSecretStore>>,
    schedule: Mutex<HashMap<ObjectKey, Arc<Scheduled>>>,
    /// Every ExternalSecret watched, as last seen.
    pub(crate) externals: Store<ExternalSecret>,
    /// ExternalSecrets asked to refresh now, and the instant after which their values
    /// must have been read.
    forced: Mutex<HashMap<ObjectKey, Instant>>,
    /// One refresh of an ExternalSecret at a time: a forced refresh runs beside the
    /// controller's own, and a read from before a rotation must not land after it.
    in_progress: Mutex<HashMap<ObjectKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Rotations as last seen: a Vault key whose Rotation has staged but not yet
    /// promoted is read at its base version.
    rotations: Store<Rotation>,
    /// What the Rotation controller pinned or released itself, ahead of the watch.
    pins: Mutex<Pins>,
}

/// Pins the Rotation controller made known before its watch shows them: a key pinned
/// just before the write, and Rotations released just after recording `Promoted` (or
/// failing), so that neither waits for the watch event.
#[derive(Default)]
struct Pins {
    /// Rotation UID → (server, key, base version).
    pinned: HashMap<String, (String, String, String)>,
    /// Rotation UIDs whose pins no longer hold.
    released: std::collections::HashSet<String>,
}

crate::common::context::shares_context!(SyncContext);

impl SyncContext {
    pub(crate) fn writer(&self) -> SecretWriter<'_> {
        SecretWriter {
            client: &self.client,
            secrets: &self.secrets,
            manager: crate::common::MANAGER,
        }
    }

    fn schedule_of(&self, key: &ObjectKey) -> Option<Arc<Scheduled>> {
        self.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn schedule(&self, key: ObjectKey, scheduled: Scheduled) {
        self.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::new(scheduled));
    }

    /// Waits until the watches of stores and ExternalSecrets have listed once, so that
    /// what is looked up in them is complete.
    /// The Vault keys of `store`'s server that a Rotation has staged and not yet
    /// promoted, each with the Rotation's base version: what a read of the current
    /// version reads instead. KV v2 makes a write current at once; pinned, no mirror
    /// receives a new credential before its policy's target accepted it (`set`, `test`),
    /// and a refused one that is written back never reaches a mirror. Status is the
    /// record: a controller that restarts mid-rotation pins again before its first read.
    pub(crate) async fn pinned_at_base(
        &self,
        store: &stores::StoreObject,
    ) -> HashMap<String, String> {
        let vault = matches!(
            store.spec.provider.which(),
            Ok(sigil_types::ProviderRef::Vault(_))
        );
        let Ok(server) = store.server() else {
            return HashMap::new();
        };
        if !vault {
            return HashMap::new();
        }
        cache_synced(&self.rotations).await;
        let rotations = self.rotations.state();
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what the watch has caught up with.
        let staging_now = |uid: &str| {
            rotations.iter().any(|r| {
                r.uid().as_deref() == Some(uid)
                    && r.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
                        < RotationPhase::Promoted
            })
        };
        let Pins { pinned, released } = &mut *pins;
        released.retain(|uid| staging_now(uid));
        pinned.retain(|uid, _| !released.contains(uid));
        let from_status = rotations.iter().filter_map(|r| {
            let uid = r.uid()?;
            let status = r.status.as_ref()?;
            let phase = status.phase.unwrap_or_default();
            let staging = phase < RotationPhase::Promoted && !r.spec.is_dry_run();
            let target = status.target.as_ref()?;
            let base = status.base_version.clone()?;
            (staging && target.server == server && !released.contains(&uid))
                .then(|| (target.key.clone(), base))
        });
        let from_controller = pinned
            .values()
            .filter(|(pinned_server, _, _)| *pinned_server == server)
            .map(|(_, key, base)| (key.clone(), base.clone()));
        from_status.chain(from_controller).collect()
    }

    /// Pins `key` of `server` at `base` for Rotation `uid` before it writes there.
    pub(crate) fn pin(&self, uid: &str, server: &str, key: &str, base: &str) {
        self.pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pinned
            .insert(
                uid.to_owned(),
                (server.to_owned(), key.to_owned(), base.to_owned()),
            );
    }

    /// Lifts Rotation `uid`'s pin once it recorded `Promoted`, or failed.
    pub(crate) fn release(&self, uid: &str) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        pins.pinned.remove(uid);
        pins.released.insert(uid.to_owned());
    }

    pub(crate) async fn caches_synced(&self) {
        cache_synced(&self.externals).await;
        cache_synced(&self.secret_stores).await;
        if let Some(cluster_stores) = &self.cluster_stores {
            cache_synced(cluster_stores).await;
        }
    }

    /// Refreshes `es` now with values read after `read_after` (a Rotation wrote a new
    /// version then, which no earlier read holds), and records the outcome in its
    /// status as any refresh does. Mirrors refreshed with the same instant share one
    /// read through the cache. Runs beside the controller's own schedule, which it
    /// moves on.
    pub(crate) async fn refresh_now(
        self: &Arc<Self>,
        es: Arc<ExternalSecret>,
        read_after: Instant,
    ) -> crate::common::Result<()> {
        self.forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(external::object_key(&es), read_after);
        external::reconcile(es, self.clone()).await.map(|_| ())
    }

    /// Held while `key` refreshes.
    pub(crate) async fn refreshing(&self, key: &ObjectKey) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Whether `key` was asked to refresh now, and with values read after when (and
    /// forgets that it was).
    fn take_forced(&self, key: &ObjectKey) -> Option<Instant> {
        self.forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }

    fn forget_schedule(&self, key: &ObjectKey) {
        self.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Turns every provider request into metrics.
struct MetricsObserver(Arc<Metrics>);

impl Observer for MetricsObserver {
    fn observe(
        &self,
        provider: Provider,
        operation: Operation,
        outcome: Result<(), ErrorKind>,
        elapsed: Duration,
    ) {
        let result = match outcome {
            Ok(()) => "success",
            Err(kind) => kind.as_str(),
        };
        self.0
            .provider_requests
            .get_or_create(&ProviderRequestLabel {
                provider: provider.as_str(),
                operation: operation.as_str(),
                result,
            })
            .inc();
        self.0
            .provider_request_duration
            .get_or_create(&ProviderLabel {
                provider: provider.as_str(),
                operation: operation.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Sets up the store and ExternalSecret controllers, following the Secrets labelled
/// for ExternalSecrets through the shared Secret watch: returns their shared context
/// (for the Rotation engine) and the future that runs them until `stop` resolves.
pub(crate) fn start(
    shared: Arc<Context>,
    (secrets, owned_changes): (
        Arc<OwnedSecrets>,
        impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    ),
    rotations: Store<Rotation>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> (
    Arc<SyncContext>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (client, config, metrics) = (&shared.client, &shared.config, &shared.metrics);
    let ns = config.watch_namespace.as_deref();
    let initial = shared.initial_list;
    let (secret_stores, changes) = watch_lean(scoped_api::<SecretStore>(client, ns), initial);
    let store_controller = Controller::for_stream(changes, secret_stores);
    let cluster_controller = config.cluster_secret_stores.then(|| {
        let (cluster_stores, changes) =
            watch_lean(Api::<ClusterSecretStore>::all(client.clone()), initial);
        Controller::for_stream(changes, cluster_stores)
    });
    let (externals, changes) = watch_lean(scoped_api::<ExternalSecret>(client, ns), initial);
    let es_controller = Controller::for_stream(changes, externals.clone());
    let context = Arc::new(SyncContext {
        shared: shared.clone(),
        stores: stores::Stores::new(
            client.clone(),
            Arc::new(MetricsObserver(metrics.clone())),
            config.store_tokens_need_opt_in,
        ),
        cache: cache::ReadCache::new(metrics.clone()),
        finds: find::FindCache::default(),
        backoff: Backoff::default(),
        store_backoff: Backoff::default(),
        // `not_due` reads what the Secret watch shows: a Secret deleted by hand is
        // restored at once.
        secrets,
        secret_stores: store_controller.store(),
        cluster_stores: cluster_controller.as_ref().map(Controller::store),
        schedule: Mutex::default(),
        externals: externals.clone(),
        forced: Mutex::default(),
        in_progress: Mutex::default(),
        rotations,
        pins: Mutex::default(),
    });

    let by_secret = externals.clone();
    let by_store = externals.clone();
    let mut es_controller = es_controller
        .watches_stream(owned_changes, move |secret| {
            external::targets_of(&by_secret, &secret)
        })
        .watches(
            scoped_api::<SecretStore>(client, ns),
            watcher::Config::default().any_semantic(),
            move |store: SecretStore| {
                external::users_of(
                    &by_store,
                    StoreKind::SecretStore,
                    store.namespace().as_deref(),
                    &store.name_any(),
                )
            },
        );
    if config.cluster_secret_stores {
        let by_cluster_store = externals.clone();
        es_controller = es_controller.watches(
            Api::<ClusterSecretStore>::all(client.clone()),
            watcher::Config::default().any_semantic(),
            move |store: ClusterSecretStore| {
                external::users_of(
                    &by_cluster_store,
                    StoreKind::ClusterSecretStore,
                    None,
                    &store.name_any(),
                )
            },
        );
    }
    let es_controller =
        es_controller.with_config(controller::Config::default().concurrency(config.concurrency));

    let stop = futures::future::FutureExt::shared(Box::pin(stop));
    let es_run = es_controller
        .graceful_shutdown_on(stop.clone())
        .run(external::reconcile, external::error_policy, context.clone())
        .for_each(log_event);
    let store_run = store_controller
        .graceful_shutdown_on(stop.clone())
        .run(
            stores::reconcile_store::<SecretStore>,
            stores::store_error_policy::<SecretStore>,
            context.clone(),
        )
        .for_each(log_event);
    let cluster_context = context.clone();
    let cluster_run = async move {
        if let Some(controller) = cluster_controller {
            controller
                .graceful_shutdown_on(stop)
                .run(
                    stores::reconcile_store::<ClusterSecretStore>,
                    stores::store_error_policy::<ClusterSecretStore>,
                    cluster_context,
                )
                .for_each(log_event)
                .await;
        }
    };
    let housekeeping = housekeeping(context.clone());
    let run = async move {
        tokio::select! {
            _ = futures::future::join3(es_run, store_run, cluster_run) => {}
            () = housekeeping => {}
        }
    };
    (context, run)
}

async fn log_event<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "sync controller event");
    }
}

/// Every few seconds: the `sigil_externalsecrets` gauge, and forgetting sessions, cache
/// entries and schedules of objects that are gone.
async fn housekeeping(ctx: Arc<SyncContext>) {
    let externals = &ctx.externals;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let all = externals.state();
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for es in &all {
            let reason = es
                .status
                .as_ref()
                .and_then(|s| {
                    crate::common::status::reason_of(&s.conditions, crate::common::status::READY)
                })
                .and_then(|r| SyncReason::ALL.into_iter().find(|k| k.as_str() == r))
                .map_or("Pending", SyncReason::as_str);
            *counts.entry(reason).or_default() += 1;
        }
        for reason in SyncReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(["Pending"])
        {
            ctx.metrics
                .externalsecrets
                .get_or_create(&ReadyLabel { condition: reason })
                .set(counts.get(reason).copied().unwrap_or(0));
        }
        let exists = |kind: StoreKind, namespace: &str, name: &str| match kind {
            StoreKind::ClusterSecretStore => ctx
                .cluster_stores
                .as_ref()
                .is_some_and(|stores| stores.get(&ObjectRef::new(name)).is_some()),
            _ => ctx
                .secret_stores
                .get(&ObjectRef::new(name).within(namespace))
                .is_some(),
        };
        ctx.stores
            .retain(|store| exists(store.kind, &store.namespace, &store.name));
        ctx.cache.sweep(&|identity| ctx.stores.is_live(identity));
        ctx.finds.sweep(&|identity| ctx.stores.is_live(identity));
        let exists = |(_, namespace, name): &ObjectKey| {
            externals
                .get(&ObjectRef::new(name).within(namespace))
                .is_some()
        };
        ctx.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| exists(key));
        ctx.in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, lock| exists(key) || Arc::strong_count(lock) > 1);
    }
}
