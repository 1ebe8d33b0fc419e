//! `ClusterExternalSecret`: one `ExternalSecret` kept in every namespace that a set of
//! label selectors or names chooses, as External Secrets Operator's
//! `external-secrets.io/v1` kind of the same name does.
//!
//! Field names are ESO's, so that an ESO manifest moves over by changing its
//! `apiVersion` to `sigil.dev/v1`. The schema carries no defaults (they would show up as
//! GitOps diffs): the controller applies them through the helpers here.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::external::{ExternalSecretSpec, GO_DURATION_PATTERN, parse_go_duration};

/// How often a ClusterExternalSecret is looked at again when `refreshTime` is unset,
/// besides every change of it, of a Namespace or of an ExternalSecret it owns.
pub const DEFAULT_CES_REFRESH_TIME: Duration = Duration::from_secs(3600);

/// An ExternalSecret, the same in every namespace chosen by `namespaceSelectors`,
/// `namespaceSelector` or `namespaces` (any one matching is enough).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1",
    kind = "ClusterExternalSecret",
    shortname = "ces",
    category = "sigil",
    status = "ClusterExternalSecretStatus",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.externalSecretSpec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Refresh Interval","type":"string","jsonPath":".spec.refreshTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Provisioned","type":"string","priority":1,"jsonPath":".status.provisionedNamespaces"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterExternalSecretSpec {
    /// The spec of the ExternalSecret written into each chosen namespace.
    pub external_secret_spec: ExternalSecretSpec,
    /// The name of each ExternalSecret; the ClusterExternalSecret's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "external_secret_name_schema")]
    pub external_secret_name: Option<String>,
    /// Labels and annotations of each ExternalSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_metadata: Option<ExternalSecretMetadata>,
    /// Namespaces whose labels match any one of these selectors. An empty selector
    /// (`{}`) matches every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Deprecated in ESO, kept for its manifests: one more selector, ORed with the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name, ORed with the selectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// How often to look at the namespaces again, as a Go duration; `1h` when unset.
    /// Sigil watches Namespaces, so a namespace that starts or stops matching is seen
    /// within seconds whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "refresh_time_schema")]
    pub refresh_time: Option<String>,
}

/// Labels and annotations set on every ExternalSecret a ClusterExternalSecret writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExternalSecretMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn external_secret_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 253,
        "x-kubernetes-validations": [{
            "rule": "self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
            "message": "externalSecretName must be an object name: lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"
        }]
    })
}

fn refresh_time_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 64,
        "pattern": GO_DURATION_PATTERN,
    })
}

impl ClusterExternalSecret {
    /// The name of each ExternalSecret: `spec.externalSecretName`, or the
    /// ClusterExternalSecret's own.
    pub fn external_secret_name(&self) -> String {
        self.spec
            .external_secret_name
            .clone()
            .unwrap_or_else(|| self.name_any())
    }

    /// Every selector, the deprecated `namespaceSelector` last.
    pub fn selectors(&self) -> impl Iterator<Item = &LabelSelector> {
        self.spec
            .namespace_selectors
            .iter()
            .chain(self.spec.namespace_selector.as_ref())
    }
}

impl ClusterExternalSecretSpec {
    /// How often to look again: one hour when unset; a zero duration is taken as unset
    /// (a reconcile per instant would only load the API server).
    pub fn refresh_time_duration(&self) -> Result<Duration, String> {
        let Some(text) = self.refresh_time.as_deref() else {
            return Ok(DEFAULT_CES_REFRESH_TIME);
        };
        let duration = parse_go_duration(text).map_err(|why| {
            format!(
                "spec.refreshTime `{text}` is not a duration ({why}); write a Go duration such as `1h` or `15m`"
            )
        })?;
        Ok(if duration.is_zero() {
            DEFAULT_CES_REFRESH_TIME
        } else {
            duration
        })
    }
}

/// What the controller last did with a ClusterExternalSecret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct ClusterExternalSecretStatus {
    /// The generation the status describes; 0 (filled in by the API server) until the
    /// controller first reports, so that kstatus, Flux and Argo CD see work to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The name the ExternalSecrets were written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_name: Option<String>,
    /// The namespaces that hold this ClusterExternalSecret's ExternalSecret, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisioned_namespaces: Vec<String>,
    /// The chosen namespaces where it could not be written, sorted, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_namespaces: Vec<ClusterExternalSecretNamespaceFailure>,
    /// Conditions: `Ready` is True when every chosen namespace holds the ExternalSecret;
    /// `Stalled` is present (True) while one does not, or the spec cannot be carried out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A chosen namespace where the ExternalSecret could not be written.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct ClusterExternalSecretNamespaceFailure {
    /// The namespace.
    pub namespace: String,
    /// Why, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eso_manifest_reads_and_defaults_apply() {
        let ces: ClusterExternalSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "sigil.dev/v1",
            "kind": "ClusterExternalSecret",
            "metadata": {"name": "hello"},
            "spec": {
                "externalSecretSpec": {"secretStoreRef": {"name": "vault"},
                    "data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]},
                "namespaceSelector": {"matchLabels": {"old": "style"}},
                "namespaceSelectors": [{"matchLabels": {"team": "a"}}],
                "namespaces": ["billing"],
                "refreshTime": "1m"
            }
        }))
        .unwrap();
        assert_eq!(ces.external_secret_name(), "hello");
        assert_eq!(ces.selectors().count(), 2);
        assert_eq!(
            ces.spec.refresh_time_duration(),
            Ok(Duration::from_secs(60))
        );
        let unset = ClusterExternalSecretSpec::default();
        assert_eq!(unset.refresh_time_duration(), Ok(DEFAULT_CES_REFRESH_TIME));
        let bad = ClusterExternalSecretSpec {
            refresh_time: Some("soon".to_owned()),
            ..ClusterExternalSecretSpec::default()
        };
        assert!(
            bad.refresh_time_duration()
                .unwrap_err()
                .contains("refreshTime")
        );
    }
}
