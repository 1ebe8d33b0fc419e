//! Starting the controller: the HTTP server, leadership, the sealing keys, the shared
//! Secret watch, then every kind's controllers until SIGTERM or lost leadership.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::Client;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, predicates};

use crate::common::secret_watch::SecretWatch;
use crate::common::watch::{InitialList, cache_synced, scoped_api, watch_lean};
use crate::common::{Config, Context, MANAGER, leader, metrics, status};
use crate::http::{self, caller};
use crate::sealed::cached::CachedSealedSecret;
use crate::sealed::{key_loop, keys, unseal};
use crate::{cluster_external, restart, rotation, sync};

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
    let key_task = tokio::spawn(key_loop::keep_keys(
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
    let initial_list = match config.initial_list {
        Some(initial_list) => initial_list,
        None => InitialList::for_server(&client).await,
    };
    tracing::info!(?initial_list, "how watches start");
    let shared = Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        events,
        initial_list,
    });
    let watch_namespace = config.watch_namespace.as_deref();
    let mut secret_watch = SecretWatch::new(scoped_api(&client, watch_namespace), initial_list);
    let (secrets, owned_changes) = secret_watch.owned(sigil_types::SEALED_SECRET_LABEL);
    let context = Arc::new(unseal::UnsealContext {
        shared: shared.clone(),
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
    tokio::spawn(key_loop::count_by_key(
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
    let rotations = rotation::watch(&client, watch_namespace, initial_list);
    let (sync_context, sync_run) = sync::start(
        shared.clone(),
        secret_watch.owned(sigil_types::EXTERNAL_SECRET_LABEL),
        rotations.0.clone(),
        stopped(),
    );
    let cluster_external_run = cluster_external::run(shared.clone(), stopped());
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
    let (policies, policy_changes) =
        rotation::policy::watch(&client, watch_namespace, initial_list);
    let rotation_context = Arc::new(rotation::RotationContext {
        shared,
        sync: sync_context,
        restarter,
        keys,
        sealed: store,
        policies,
        backoff: Default::default(),
    });
    let rotation_run = futures::future::join(
        rotation::run(rotation_context.clone(), rotations, stopped()),
        rotation::policy::run(rotation_context, policy_changes, stopped()),
    );
    let run = futures::future::join(
        futures::future::join5(
            unseal_run,
            sync_run,
            rotation_run,
            reload_run,
            secret_watch_run,
        ),
        cluster_external_run,
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

async fn mark_ready(store: Store<CachedSealedSecret>, ready: Arc<AtomicBool>) {
    if !cache_synced(&store).await {
        return;
    }
    ready.store(true, Ordering::Release);
    tracing::info!("caches synced; ready");
}
