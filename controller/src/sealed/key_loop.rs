//! The sealing-key loop: the key Secrets watched, the keyring rebuilt on every change,
//! the public keys published, a new key made when one falls due; and SealedSecrets
//! counted by the key that opens them.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::cached::CachedSealedSecret;
use super::{keys, unseal};
use crate::common::metrics::{self, Metrics};
use crate::common::{Config, Result};

/// Counts SealedSecrets by the key that opens them, every ten seconds; and, on the same
/// walk, lets the unseal context forget objects that are gone.
pub(crate) async fn count_by_key(
    store: Store<CachedSealedSecret>,
    metrics: Arc<Metrics>,
    context: Arc<unseal::UnsealContext>,
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
pub(crate) async fn keep_keys(
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
