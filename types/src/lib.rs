//! The custom resources of group `sigil.dev`, version `v1`: the single source from which
//! the chart's CRD YAML is generated, shared by the CLI, the controller and the API.

use std::collections::BTreeMap;

pub mod api;
pub mod cluster_external;
pub mod external;
pub mod keys;
pub mod names;
pub mod policy;
pub mod rotation;
pub mod store;

pub use cluster_external::{
    ClusterExternalSecret, ClusterExternalSecretNamespaceFailure, ClusterExternalSecretSpec,
    ClusterExternalSecretStatus, ExternalSecretMetadata,
};
pub use external::{
    ConversionStrategy, CreationPolicy, DecodingStrategy, DeletionPolicy, ExternalSecret,
    ExternalSecretData, ExternalSecretDataFrom, ExternalSecretSpec, ExternalSecretStatus,
    ExternalSecretTarget, ExternalSecretTemplate, ExtractRef, FindName, FindRef, RefreshPolicy,
    RemoteRef, Rewrite, RewriteRegexp, RewriteTransform, SecretBinding, SecretStoreRef, StoreKind,
    TemplateFrom, TemplateItem, TemplateMergePolicy, TemplateScope, TemplateSource, TemplateTarget,
};
pub use names::*;
pub use policy::{
    LocalSecretRef, PolicyTarget, PostgresTarget, RotationPolicy, RotationPolicySpec,
    RotationPolicyStatus, Schedule, SecretKeyRef, SslMode, Strategy, WebhookTarget,
};
pub use rotation::{
    CredentialStatus, ExternalSecretRef, Generate, Rotation, RotationPhase, RotationSpec,
    RotationStatus, RotationStep, RotationTarget, SealingKeyTarget, SealingKeyUse, WorkloadRef,
};
pub use store::{
    AwsAuth, AwsAuthSecretRef, AwsJwtAuth, AwsProvider, AwsService, CaProvider, CaProviderType,
    ClusterSecretStore, ClusterSecretStoreCondition, ClusterSecretStoreSpec, ProviderRef,
    SecretKeySelector, SecretStore, SecretStoreSpec, SecretStoreStatus, ServiceAccountSelector,
    StoreProvider, VaultAppRoleAuth, VaultAuth, VaultAuthMethod, VaultKubernetesAuth,
    VaultKvVersion, VaultProvider,
};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Sigil resource.
pub const GROUP: &str = "sigil.dev";
/// `apiVersion` of every Sigil resource.
pub const API_VERSION: &str = "sigil.dev/v1";

/// Whether `name` is a DNS-1123 subdomain, as the API server requires of object names
/// (lowercase letters, digits, `-` and `.`, at most 253). Checked before a name read from
/// a request or an object goes into a URL: `a/../b` would otherwise address another
/// object.
pub fn is_object_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// Whether `name` is a DNS-1123 label, as namespace names are (at most 63).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// How much of its identity a sealed value is bound to (see `sigil_core::Scope`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Bound to namespace, Secret name and data key.
    #[default]
    Strict,
    /// Bound to namespace and data key.
    Namespace,
    /// Bound to the data key only.
    Cluster,
}

impl Scope {
    fn is_default(&self) -> bool {
        *self == Scope::Strict
    }
}

impl From<Scope> for sigil_core::Scope {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Strict => sigil_core::Scope::Strict,
            Scope::Namespace => sigil_core::Scope::Namespace,
            Scope::Cluster => sigil_core::Scope::Cluster,
        }
    }
}

impl From<sigil_core::Scope> for Scope {
    fn from(scope: sigil_core::Scope) -> Self {
        match scope {
            sigil_core::Scope::Strict => Scope::Strict,
            sigil_core::Scope::Namespace => Scope::Namespace,
            sigil_core::Scope::Cluster => Scope::Cluster,
        }
    }
}

/// A Kubernetes Secret encrypted so that only the cluster can open it, and only under
/// the namespace, name and keys it was sealed for. Safe to commit to Git.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1",
    kind = "SealedSecret",
    namespaced,
    shortname = "sls",
    category = "sigil",
    status = "SealedSecretStatus",
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].reason"}"#,
    printcolumn = r#"{"name":"Keys","type":"string","priority":1,"jsonPath":".status.keyIds"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretSpec {
    /// What each value is bound to; `strict` unless set.
    #[serde(default, skip_serializing_if = "Scope::is_default")]
    pub scope: Scope,
    /// Data key → sealed value (base64 of the v1 binary format).
    #[schemars(schema_with = "encrypted_data_schema")]
    pub encrypted_data: BTreeMap<String, String>,
    /// What the unsealed Secret looks like besides its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplate>,
}

/// The most characters one sealed value may have: a Secret holds at most 1 MiB, which
/// sealed to 16 recipients and base64-encoded is just under 1,400,000 characters.
pub const MAX_SEALED_VALUE_LEN: u64 = 1_400_000;
/// The most keys one SealedSecret may hold.
pub const MAX_KEYS: u64 = 1024;

fn encrypted_data_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": MAX_KEYS,
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))",
            "message": "data keys are 1 to 253 letters, digits, '-', '.' or '_'"
        }],
        "additionalProperties": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SEALED_VALUE_LEN,
            "pattern": "^[A-Za-z0-9+/]+=*$"
        }
    })
}

/// The Secret's type, immutability, labels and annotations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// The Secret `type`; `Opaque` when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Whether the Secret is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Labels and annotations of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
}

/// Labels and annotations carried onto the Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the controller last did with a SealedSecret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct SealedSecretStatus {
    /// The generation the status describes; 0 (filled in by the API server) until the
    /// controller first reports, so that kstatus, Flux and Argo CD see work to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The key IDs that opened the values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ids: Vec<String>,
    /// Conditions: `Ready` says whether the Secret matches, and `Synced` (its twin, kept
    /// for compatibility) says the same; `Stalled` is present (True) while a failure
    /// waits for a person: re-seal, import a key, free the Secret's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// Drops a type's own description from its schema, for enums used as `Option<Enum>`
/// fields: kube merges the enum's schema into the field's and would otherwise replace the
/// field's documentation (which says what an unset field means) with the enum's.
pub(crate) fn drop_description(schema: &mut schemars::Schema) {
    schema.remove("description");
}

/// The CRD manifests of every Sigil resource, as YAML documents.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crds = [
        SealedSecret::crd(),
        SecretStore::crd(),
        ClusterSecretStore::crd(),
        ExternalSecret::crd(),
        ClusterExternalSecret::crd(),
        Rotation::crd(),
        RotationPolicy::crd(),
    ];
    let documents: Vec<String> = crds
        .iter()
        .map(|crd| {
            let value = serde_json::to_value(crd).expect("a CRD serializes");
            serde_saphyr::to_string(&value).expect("a CRD serializes to YAML")
        })
        .collect();
    documents.join("---\n")
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::Value;

    use crate::{is_dns_label, is_object_name};

    /// Every CRD, as JSON.
    fn crds() -> Vec<Value> {
        [
            crate::SealedSecret::crd(),
            crate::SecretStore::crd(),
            crate::ClusterSecretStore::crd(),
            crate::RotationPolicy::crd(),
            crate::ExternalSecret::crd(),
            crate::ClusterExternalSecret::crd(),
            crate::Rotation::crd(),
        ]
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("a CRD serializes"))
        .collect()
    }

    /// Paths of every `default` keyword in a schema.
    fn defaults(schema: &Value, path: &str, found: &mut Vec<String>) {
        match schema {
            Value::Object(map) => {
                for (key, value) in map {
                    let here = format!("{path}.{key}");
                    // `properties` holds field names, not keywords: a field may be
                    // called `default`.
                    if key == "default" && !path.ends_with(".properties") {
                        found.push(here.clone());
                    }
                    defaults(value, &here, found);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    defaults(item, &format!("{path}[{i}]"), found);
                }
            }
            _ => {}
        }
    }

    /// Defaults in the schema show up as diffs in GitOps tools; the controller applies them.
    /// The one exception is in status, which no manifest holds: `observedGeneration: 0`
    /// until the controller first reports, because kstatus compares it with the object's
    /// generation only when it is there, and would call a new object Current.
    #[test]
    fn object_names_are_dns_subdomains_and_nothing_that_walks_a_path() {
        for good in ["db", "db-1", "a.b.c", &"a".repeat(63)] {
            assert!(is_object_name(good), "{good}");
        }
        for bad in [
            "",
            "Db",
            "a/b",
            "..",
            "a/../b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a b",
            "a%2Fb",
            &"a".repeat(64),
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn schemas_carry_no_defaults_but_an_unobserved_generation() {
        let mut found = Vec::new();
        for crd in crds() {
            let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
            defaults(&crd["spec"]["versions"], &name, &mut found);
            let status =
                &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
            assert_eq!(
                status["default"],
                serde_json::json!({"observedGeneration": 0}),
                "{name}"
            );
        }
        found.retain(|path| !path.ends_with("].schema.openAPIV3Schema.properties.status.default"));
        assert!(found.is_empty(), "schema defaults: {found:?}");
    }

    #[test]
    fn every_crd_has_status_category_and_ready_columns() {
        for crd in crds() {
            let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
            assert_eq!(
                crd["spec"]["names"]["categories"],
                serde_json::json!(["sigil"]),
                "{name}"
            );
            let version = &crd["spec"]["versions"][0];
            assert!(version["subresources"]["status"].is_object(), "{name}");
            let columns = version["additionalPrinterColumns"].to_string();
            assert!(columns.contains("creationTimestamp"), "{name}: {columns}");
            if name != "sealedsecrets.sigil.dev" {
                assert!(
                    columns.contains(r#".status.conditions[?(@.type==\"Ready\")].status"#),
                    "{name}: {columns}"
                );
            }
        }
    }
}
