//! Prometheus metrics. Label values come from fixed sets (each kind's reasons, as
//! their `as_str()`) or key IDs, never from object content.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    /// A SealedSecret's `Ready` reason.
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyLabel {
    pub(crate) key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SyncLabel {
    /// An ExternalSecret's `Ready` reason.
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProviderRequestLabel {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProviderLabel {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
}

/// How the read cache answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    /// A fresh value was in the cache.
    Hit,
    /// The provider was asked.
    Miss,
    /// A read already in flight was joined.
    Coalesced,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheLabel {
    pub(crate) outcome: CacheOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RotationLabel {
    /// `completed`, `failed` or `dry_run`.
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RolloutLabel {
    /// `rotation` or `reload`.
    pub(crate) trigger: &'static str,
    /// `rolled`, `already_rolled`, `gone` or `error`.
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReadyLabel {
    pub(crate) condition: &'static str,
}

impl EncodeLabelValue for CacheOutcome {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let text = match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Coalesced => "coalesced",
        };
        EncodeLabelValue::encode(&text, encoder)
    }
}

/// Every metric the controller exports.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) unseal_total: Family<ResultLabel, Counter>,
    pub(crate) reconcile_duration: Histogram,
    pub(crate) sealed_secrets_by_key: Family<KeyLabel, Gauge>,
    pub(crate) provider_requests: Family<ProviderRequestLabel, Counter>,
    pub(crate) provider_request_duration: Family<ProviderLabel, Histogram>,
    pub(crate) sync_total: Family<SyncLabel, Counter>,
    pub(crate) read_cache: Family<CacheLabel, Counter>,
    pub(crate) externalsecrets: Family<ReadyLabel, Gauge>,
    pub(crate) rotations: Family<RotationLabel, Counter>,
    pub(crate) rollouts: Family<RolloutLabel, Counter>,
    pub(crate) reload_workloads: Gauge,
    pub(crate) events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sigil");
        let unseal_total = Family::<ResultLabel, Counter>::default();
        registry.register(
            "unseal",
            "SealedSecret reconciles by result (Unsealed or the failure reason)",
            unseal_total.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one SealedSecret",
            reconcile_duration.clone(),
        );
        let sealed_secrets_by_key = Family::<KeyLabel, Gauge>::default();
        registry.register(
            "sealedsecrets_by_key",
            "SealedSecrets whose values were opened with each sealing key",
            sealed_secrets_by_key.clone(),
        );
        let provider_requests = Family::<ProviderRequestLabel, Counter>::default();
        registry.register(
            "provider_requests",
            "Requests to Vault and AWS Secrets Manager by provider, operation and result",
            provider_requests.clone(),
        );
        let provider_request_duration =
            Family::<ProviderLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            });
        registry.register(
            "provider_request_duration_seconds",
            "Time of one request to a provider",
            provider_request_duration.clone(),
        );
        let sync_total = Family::<SyncLabel, Counter>::default();
        registry.register(
            "sync",
            "ExternalSecret syncs by result (SecretSynced or the failure reason)",
            sync_total.clone(),
        );
        let read_cache = Family::<CacheLabel, Counter>::default();
        registry.register(
            "read_cache",
            "Remote reads asked of the shared cache, by outcome (hit, miss, coalesced)",
            read_cache.clone(),
        );
        let externalsecrets = Family::<ReadyLabel, Gauge>::default();
        registry.register(
            "externalsecrets",
            "ExternalSecrets by the reason of their Ready condition",
            externalsecrets.clone(),
        );
        let rotations = Family::<RotationLabel, Counter>::default();
        registry.register(
            "rotations",
            "Rotations finished, by result (completed, failed, dry_run)",
            rotations.clone(),
        );
        let rollouts = Family::<RolloutLabel, Counter>::default();
        registry.register(
            "rollouts",
            "Workload rollouts asked for, by trigger (rotation, reload) and result (rolled, already_rolled, gone, error)",
            rollouts.clone(),
        );
        let reload_workloads = Gauge::default();
        registry.register(
            "reload_workloads",
            "Deployments, StatefulSets and DaemonSets opted in to reload (sigil.dev/reload: \"true\")",
            reload_workloads.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not published because more were waiting than the queue holds",
            events_dropped.clone(),
        );
        Self {
            events_dropped,
            rollouts,
            reload_workloads,
            rotations,
            registry,
            provider_requests,
            provider_request_duration,
            sync_total,
            read_cache,
            externalsecrets,
            unseal_total,
            reconcile_duration,
            sealed_secrets_by_key,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
