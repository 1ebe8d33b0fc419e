//! `sigil-controller`: turns SealedSecrets into Secrets and keeps the sealing keys.
//!
//! One replica leads (a `coordination.k8s.io` Lease); it makes and renews keys, watches
//! them so changes take effect at once, publishes the public keys, and reconciles every
//! SealedSecret with bounded concurrency. No client-side request rate caps it: the
//! client retries what the API server sheds (429 with Retry-After, 503, 504).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client};
use sealed::cached::CachedSealedSecret;

pub mod backoff;
pub mod caller;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod restart;
pub mod rotation;
pub mod sealed;
pub mod secrets;
mod status;
pub mod sync;

pub use error::{Error, Result};
use sealed::{keys, unseal};

/// The field manager of every write.
pub const MANAGER: &str = "sigil-controller";

/// How the controller runs; `main` fills it from flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace holding the key Secrets, the public key ConfigMap and the Lease.
    pub namespace: String,
    /// Cluster name written into the public key lines.
    pub cluster_name: Option<String>,
    /// How old the active key may get before a new one is made.
    pub key_renewal_period: Duration,
    /// SealedSecrets reconciled at once.
    pub concurrency: u16,
    /// Where `/healthz`, `/readyz`, `/metrics` and the internal verify and re-seal are served.
    pub http_addr: SocketAddr,
    /// Whether to take a Lease before working (off only for a single local replica).
    pub leader_election: bool,
    /// The Lease name.
    pub lease_name: String,
    /// How long a Lease lasts without renewal.
    pub lease_duration: Duration,
    /// This replica's name in the Lease and in Events.
    pub identity: String,
    /// Only this namespace's SealedSecrets (all namespaces when unset).
    pub watch_namespace: Option<String>,
    /// Whether ClusterSecretStores are served.
    pub cluster_secret_stores: bool,
    /// How long a Rotation waits for every mirror to hold the new version.
    pub rotation_propagation_timeout: Duration,
    /// Rollouts started and not yet complete, at most.
    pub max_concurrent_restarts: usize,
    /// How long a rollout may hold its slot before the next one starts anyway.
    pub rollout_deadline: Duration,
    /// How long a Secret must stay unchanged before opted-in workloads are reloaded.
    pub reload_debounce: Duration,
    /// How watches learn what exists; `None`: by the API server's version.
    pub initial_list: Option<InitialList>,
    /// Whether a ServiceAccount must opt in before stores may mint tokens for it.
    pub store_tokens_need_opt_in: bool,
    /// sigil-api's ServiceAccount (`NAMESPACE/NAME`), the only caller of the internal
    /// verify and re-seal endpoints.
    pub api_service_account: String,
}

/// Runs until SIGTERM/SIGINT, or until leadership is lost (an error: the process should
/// restart and stand by).
pub async fn run(config: Config, client: Client) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    // Made before the HTTP server, which shares it: verify and re-seal answer 503 while it
    // is empty, until this replica leads and loads the keys.
    let keys = Arc::new(keys::Keys::default());
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz, /metrics, /internal/v1/verify, /internal/v1/reseal");
    let callers = caller::InternalCallers::new(
        Arc::new(caller::KubeTokenReviewer(client.clone())),
        &config.api_service_account,
    );
    let router = http::router(http::HttpState::new(
        ready.clone(),
        metrics.clone(),
        keys.clone(),
        Arc::new(callers),
    ));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(error = %err, "internal HTTP server stopped");
        }
    });

    let shutdown = sigil_telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    let elector = if config.leader_election {
        let acquire = leader::Leadership::acquire(
            client.clone(),
            &config.namespace,
            &config.lease_name,
            &config.identity,
            config.lease_duration,
        );
        tokio::select! {
            acquired = acquire => Some(acquired?),
            () = &mut shutdown => return Ok(()),
        }
    } else {
        None
    };
    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };

    let (key_changes_tx, key_changes) = futures::channel::mpsc::unbounded::<()>();
    let (keys_ready_tx, mut keys_ready) = tokio::sync::watch::channel(false);
    let key_task = tokio::spawn(keep_keys(
        client.clone(),
        config.clone(),
        keys.clone(),
        key_changes_tx,
        keys_ready_tx,
    ));
    keys_ready
        .wait_for(|ready| *ready)
        .await
        .map_err(|_| anyhow::anyhow!("the sealing key watch stopped before it loaded the keys"))?;

    let reporter = Reporter {
        controller: MANAGER.to_owned(),
        instance: Some(config.identity.clone()),
    };
    let events = status::Events::start(client.clone(), reporter, metrics.clone());
    let watch_namespace = config.watch_namespace.as_deref();
    let initial_list = match config.initial_list {
        Some(initial_list) => initial_list,
        None => InitialList::for_server(&client).await,
    };
    tracing::info!(?initial_list, "how watches start");
    let mut secret_watch =
        secrets::SecretWatch::new(scoped_api(&client, watch_namespace), initial_list);
    let (secrets, owned_changes) = secret_watch.owned(sigil_types::SEALED_SECRET_LABEL);
    let context = Arc::new(unseal::Context {
        client: client.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        keys: keys.clone(),
        backoff: Default::default(),
        secrets,
        settled: Default::default(),
    });
    let (sealed_store, sealed_changes) =
        watch_lean::<CachedSealedSecret>(scoped_api(&client, watch_namespace), initial_list);
    // A reconcile opens every value: one for the controller's own status write, echoed
    // back by the watch, would double the cold start's work for nothing.
    let sealed_changes =
        sealed_changes.predicate_filter(predicates::generation, Default::default());
    let controller = Controller::for_stream(sealed_changes, sealed_store)
        .owns_stream(owned_changes)
        .reconcile_all_on(key_changes)
        .with_config(controller::Config::default().concurrency(config.concurrency));
    let store = controller.store();
    tokio::spawn(mark_ready(store.clone(), ready.clone()));
    tokio::spawn(count_by_key(
        store.clone(),
        metrics.clone(),
        context.clone(),
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let unseal_run = controller
        .graceful_shutdown_on(stopped())
        .run(unseal::reconcile, unseal::error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "controller event");
            }
        });
    let (sync_context, sync_run) = sync::start(
        client.clone(),
        secret_watch.owned(sigil_types::EXTERNAL_SECRET_LABEL),
        events.clone(),
        metrics.clone(),
        sync::SyncConfig {
            watch_namespace: config.watch_namespace.clone(),
            cluster_secret_stores: config.cluster_secret_stores,
            concurrency: config.concurrency,
            initial_list,
            store_tokens_need_opt_in: config.store_tokens_need_opt_in,
        },
        stopped(),
    );
    let restarter = restart::Restarter::new(
        client.clone(),
        config.max_concurrent_restarts,
        config.rollout_deadline,
        metrics.clone(),
    );
    let reload_run = restart::reload(
        client.clone(),
        restarter.clone(),
        config.reload_debounce,
        config.watch_namespace.clone(),
        secret_watch.every_event(),
        stopped(),
    );
    let secret_watch_run = {
        let stop = stopped();
        async move {
            tokio::select! {
                () = secret_watch.run() => {}
                () = stop => {}
            }
        }
    };
    let rotation_context = Arc::new(rotation::RotationContext {
        client: client.clone(),
        events,
        metrics: metrics.clone(),
        sync: sync_context,
        restarter,
        keys,
        sealed: store,
        namespace: config.namespace.clone(),
        cluster_name: config.cluster_name.clone(),
        propagation_timeout: config.rotation_propagation_timeout,
        backoff: Default::default(),
    });
    let rotation_run = rotation::run(
        rotation_context,
        rotation::RotationConfig {
            watch_namespace: config.watch_namespace.clone(),
            concurrency: config.concurrency,
            initial_list,
        },
        stopped(),
    );
    let run = futures::future::join5(
        unseal_run,
        sync_run,
        rotation_run,
        reload_run,
        secret_watch_run,
    );
    tokio::pin!(run);
    let result = tokio::select! {
        _ = &mut run => Ok(()),
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            run.await;
            Ok(())
        }
        err = lost => Err(anyhow::Error::new(err)),
        ended = key_task => Err(match ended {
            Ok(Err(err)) => anyhow::Error::new(err).context("the sealing key watch failed"),
            _ => anyhow::anyhow!("the sealing key watch stopped"),
        }),
    };
    ready.store(false, Ordering::Release);
    if let Some(elector) = &elector {
        elector.release().await;
    }
    result
}

/// The API of `K` in `namespace`, or in every namespace when `None`.
pub(crate) fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches every `K` `api` reaches, caching each without its bookkeeping: the cache a
/// controller reads, and the objects that changed, each one after the cache has it.
pub(crate) fn watch_lean<K>(
    api: Api<K>,
    initial: InitialList,
) -> (
    Store<K>,
    impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let changes = watcher(api, initial.watcher_config())
        .default_backoff()
        .modify(forget_bookkeeping)
        .reflect(writer)
        .applied_objects();
    (store, changes)
}

/// How a watch learns what exists when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialList {
    /// One watch streams every object, then the changes (Kubernetes' streaming lists,
    /// `WatchList`, beta and on by default since 1.32). No list page is held in memory,
    /// and a cold start's cache fills sooner.
    Streaming,
    /// Paginated lists, then a watch: what every API server serves.
    Paginated,
}

impl InitialList {
    /// Streaming where the API server is 1.32 or newer; paginated where it is older or
    /// does not say.
    pub async fn for_server(client: &Client) -> Self {
        match client.apiserver_version().await {
            Ok(info) => Self::for_version(&info.major, &info.minor),
            Err(_) => InitialList::Paginated,
        }
    }

    /// As [`InitialList::for_server`], from the version's parts (a managed cluster's minor
    /// version may end in `+`).
    fn for_version(major: &str, minor: &str) -> Self {
        let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u32>() {
            Ok(minor) if major == "1" && minor >= 32 => InitialList::Streaming,
            _ => InitialList::Paginated,
        }
    }

    pub(crate) fn watcher_config(self) -> watcher::Config {
        match self {
            InitialList::Streaming => watcher::Config::default().streaming_lists(),
            InitialList::Paginated => watcher::Config::default().any_semantic(),
        }
    }
}

/// Drops what no reconcile reads and caches would otherwise keep for every object: the
/// managed fields, and the copy of the whole object `kubectl apply` leaves in an
/// annotation (for a SealedSecret, every sealed value a second time).
pub(crate) fn forget_bookkeeping<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Waits until `store` has been filled by its first list; false if its watch is gone.
pub(crate) async fn cache_synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // Polled rather than awaited: the store's readiness signal wakes only its most recent
    // waiter, and the controllers wait on it too.
    loop {
        match store.wait_until_ready().now_or_never() {
            Some(Ok(())) => return true,
            Some(Err(_)) => return false,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn mark_ready(store: Store<CachedSealedSecret>, ready: Arc<AtomicBool>) {
    if !cache_synced(&store).await {
        return;
    }
    ready.store(true, Ordering::Release);
    tracing::info!("caches synced; ready");
}

/// Counts SealedSecrets by the key that opens them, every ten seconds; and, on the same
/// walk, lets the unseal context forget objects that are gone.
async fn count_by_key(
    store: Store<CachedSealedSecret>,
    metrics: Arc<metrics::Metrics>,
    context: Arc<unseal::Context>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        let state = store.state();
        context
            .settled
            .forget_all_but(state.iter().map(|obj| obj.as_ref()));
        for obj in state {
            for id in obj.status().iter().flat_map(|s| s.key_ids.iter()) {
                *counts.entry(id.to_string()).or_default() += 1;
            }
        }
        metrics.sealed_secrets_by_key.clear();
        for (key_id, count) in counts {
            metrics
                .sealed_secrets_by_key
                .get_or_create(&metrics::KeyLabel { key_id })
                .set(count);
        }
    }
}

/// Watches the key Secrets: rebuilds the keyring on every change, publishes the public
/// keys, makes a key when none is active or the active one is due, and asks for every
/// SealedSecret to be reconciled again when the usable keys changed.
async fn keep_keys(
    client: Client,
    config: Config,
    keys: Arc<keys::Keys>,
    key_changes: futures::channel::mpsc::UnboundedSender<()>,
    keys_ready: tokio::sync::watch::Sender<bool>,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let (reader, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default().labels(keys::KEY_LABEL))
        .default_backoff()
        .reflect(writer);
    tokio::pin!(events);
    let mut renewal_check = tokio::time::interval(
        (config.key_renewal_period / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)),
    );
    let mut published: Option<(String, Vec<String>)> = None;
    let mut generated_for: Option<Option<sigil_core::KeyId>> = None;
    loop {
        tokio::select! {
            event = events.try_next() => match event {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(err) => {
                    tracing::warn!(error = %err, "sealing key watch failed; retrying");
                    continue;
                }
            },
            _ = renewal_check.tick() => {}
        }
        if reader.wait_until_ready().now_or_never().is_none() {
            continue;
        }
        let secrets = reader.state();
        let state = keys::KeyState::from_secrets(
            secrets.iter().map(|s| s.as_ref()),
            config.cluster_name.as_deref(),
        );
        let active = state.active.map(|(id, _)| id);
        if state.needs_renewal(config.key_renewal_period, jiff::Timestamp::now()) {
            // One new key per active key that fell due, even while the watch catches up.
            if generated_for != Some(active) {
                keys::generate(
                    &client,
                    &config.namespace,
                    config.cluster_name.as_deref(),
                    None,
                )
                .await?;
                generated_for = Some(active);
            }
            if active.is_none() {
                continue;
            }
        }
        let fingerprint = (
            state.public_keys.clone(),
            state
                .revoked
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        );
        if published.as_ref() == Some(&fingerprint) {
            continue;
        }
        keys::publish(&client, &config.namespace, &state).await?;
        tracing::info!(
            active = %active.map(|id| id.to_string()).unwrap_or_default(),
            usable = state.keyring.len(),
            revoked = state.revoked.len(),
            "sealing keys loaded"
        );
        keys.replace(state);
        // The first keys come before the controllers start, whose first list reconciles
        // every object anyway: asking again would open every value twice.
        if published.replace(fingerprint).is_some() {
            let _ = key_changes.unbounded_send(());
        }
        let _ = keys_ready.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::InitialList;

    #[test]
    fn watches_stream_from_kubernetes_1_32_on() {
        assert_eq!(InitialList::for_version("1", "34"), InitialList::Streaming);
        assert_eq!(InitialList::for_version("1", "32+"), InitialList::Streaming);
        assert_eq!(InitialList::for_version("1", "31"), InitialList::Paginated);
        assert_eq!(InitialList::for_version("1", ""), InitialList::Paginated);
    }
}
