//! What every kind's reconcilers share: the client, the controller's configuration,
//! its metrics, its Event recorder and how its watches start. Each kind's own context
//! holds this once and adds only what is its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use super::metrics::Metrics;
use super::status::Events;
use super::watch::InitialList;

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
    /// Whether ClusterExternalSecrets are served, reported as not served, or not watched.
    pub cluster_external_secrets: ClusterExternalSecrets,
    /// How long a Rotation waits for every mirror to hold the new version.
    pub rotation_propagation_timeout: Duration,
    /// Rollouts started and not yet complete, at most.
    pub max_concurrent_restarts: usize,
    /// How long a rollout may hold its slot before the next one starts anyway.
    pub rollout_deadline: Duration,
    /// How long a Rotation waits for the rollouts it started to complete (unless its
    /// policy says).
    pub rollout_timeout: Duration,
    /// The shortest `schedule.every` a RotationPolicy may ask for.
    pub min_rotation_interval: Duration,
    /// The most remote keys one `dataFrom.find` may copy.
    pub max_keys_per_find: usize,
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

/// What the controller does with ClusterExternalSecrets (`--cluster-external-secrets`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterExternalSecrets {
    /// Serve them unless `--watch-namespace` is set; with it, say in their status that
    /// they are not served (needs cluster-wide read of them and `patch` of their status).
    #[default]
    Auto,
    /// Serve them, writing ExternalSecrets into every namespace they choose, even with
    /// `--watch-namespace` (other controllers then sync those ExternalSecrets).
    Serve,
    /// Do not watch them (a namespaced install has no permission to).
    Off,
}

/// Shared by every reconciler of every kind.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: Events,
    /// How watches start: [`Config::initial_list`], or as the API server's version allows.
    pub(crate) initial_list: InitialList,
}

/// Lets a kind's own context read the shared [`Context`]'s fields as its own
/// (`ctx.client`), through its `shared` field.
macro_rules! shares_context {
    ($kind:ty) => {
        impl std::ops::Deref for $kind {
            type Target = $crate::common::Context;

            fn deref(&self) -> &Self::Target {
                &self.shared
            }
        }
    };
}
pub(crate) use shares_context;
