//! Prometheus metrics. Label values come from fixed sets (enum names) or key IDs, never
//! from object content.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::unseal::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyLabel {
    pub(crate) key_id: String,
}

impl EncodeLabelValue for Reason {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Every metric the controller exports.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) unseal_total: Family<ResultLabel, Counter>,
    pub(crate) reconcile_duration: Histogram,
    pub(crate) sealed_secrets_by_key: Family<KeyLabel, Gauge>,
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
        Self {
            registry,
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
