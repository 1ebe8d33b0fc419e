//! `SecretStore` and `ClusterSecretStore`: where `ExternalSecret`s read from, a HashiCorp
//! Vault (or OpenBao) KV v2 mount or AWS Secrets Manager, and how Sigil logs in there.
//!
//! Field names and enum spellings are those of External Secrets Operator's
//! `external-secrets.io/v1`, so that an ESO manifest moves over by changing its
//! `apiVersion` to `sigil.dev/v1`. The schema carries no defaults (they would show up as
//! GitOps diffs): the controller applies them, and each field's doc says which.

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The KV v2 mount a Vault store reads when `path` is unset.
pub const DEFAULT_VAULT_MOUNT: &str = "secret";
/// The Vault auth mount of the Kubernetes method when `mountPath` is unset.
pub const DEFAULT_VAULT_KUBERNETES_MOUNT: &str = "kubernetes";
/// The Vault auth mount of the AppRole method when `path` is unset.
pub const DEFAULT_VAULT_APPROLE_MOUNT: &str = "approle";

/// Where ExternalSecrets in this namespace read from: one Vault KV v2 mount or one AWS
/// Secrets Manager region, and the credentials to log in with.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1",
    kind = "SecretStore",
    namespaced,
    shortname = "sss",
    category = "sigil",
    status = "SecretStoreStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Capabilities","type":"string","jsonPath":".status.capabilities"}"#,
    printcolumn = r#"{"name":"Vault","type":"string","priority":1,"jsonPath":".spec.provider.vault.server"}"#,
    printcolumn = r#"{"name":"Region","type":"string","priority":1,"jsonPath":".spec.provider.aws.region"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.conditions) || size(self.conditions) == 0",
        "message": "`conditions` choose the namespaces a ClusterSecretStore serves; a SecretStore serves only its own namespace: remove `conditions`, or make this a ClusterSecretStore"
    }
]))]
pub struct SecretStoreSpec {
    /// ESO compatibility: the controller class that should handle this store. Accepted
    /// and ignored: every Sigil controller serves every store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The secret store to read from: exactly one of `vault` or `aws`.
    pub provider: StoreProvider,
    /// ESO compatibility: how often (seconds) ESO re-validates the store. Accepted and
    /// ignored: Sigil checks a store whenever it uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<i64>,
    /// Only meaningful on a ClusterSecretStore; rejected on a SecretStore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterSecretStoreCondition>,
}

/// Like a SecretStore, but cluster-wide: ExternalSecrets in any namespace that the
/// `conditions` allow (every namespace when there are none) may read from it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1",
    kind = "ClusterSecretStore",
    shortname = "scss",
    category = "sigil",
    status = "SecretStoreStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Capabilities","type":"string","jsonPath":".status.capabilities"}"#,
    printcolumn = r#"{"name":"Vault","type":"string","priority":1,"jsonPath":".spec.provider.vault.server"}"#,
    printcolumn = r#"{"name":"Region","type":"string","priority":1,"jsonPath":".spec.provider.aws.region"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.provider.vault) || !has(self.provider.vault.caProvider) || has(self.provider.vault.caProvider.namespace)",
        "message": "a ClusterSecretStore belongs to no namespace: set `provider.vault.caProvider.namespace` to the namespace of the CA's Secret or ConfigMap"
    }
]))]
pub struct ClusterSecretStoreSpec {
    /// ESO compatibility: the controller class that should handle this store. Accepted
    /// and ignored: every Sigil controller serves every store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// The secret store to read from: exactly one of `vault` or `aws`.
    pub provider: StoreProvider,
    /// ESO compatibility: how often (seconds) ESO re-validates the store. Accepted and
    /// ignored: Sigil checks a store whenever it uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<i64>,
    /// Which namespaces may use this store. A namespace may when any one condition
    /// matches it; with no conditions, every namespace may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterSecretStoreCondition>,
}

impl ClusterSecretStoreSpec {
    /// The same store as a [`SecretStoreSpec`], so that one code path serves both kinds.
    pub fn as_store_spec(&self) -> SecretStoreSpec {
        SecretStoreSpec::from(self)
    }
}

impl From<&ClusterSecretStoreSpec> for SecretStoreSpec {
    fn from(spec: &ClusterSecretStoreSpec) -> Self {
        SecretStoreSpec {
            controller: spec.controller.clone(),
            provider: spec.provider.clone(),
            refresh_interval: spec.refresh_interval,
            conditions: spec.conditions.clone(),
        }
    }
}

/// The secret store behind a SecretStore: exactly one of `vault` or `aws`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.vault) || has(self.aws)",
        "message": "set a provider: `vault` (HashiCorp Vault or OpenBao, KV v2) or `aws` (AWS Secrets Manager)"
    },
    {
        "rule": "!(has(self.vault) && has(self.aws))",
        "message": "set only one provider, `vault` or `aws`; to read from both, make one store for each"
    }
]))]
pub struct StoreProvider {
    /// HashiCorp Vault or OpenBao, KV version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    /// AWS Secrets Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
}

/// Which provider a store uses, borrowed from its [`StoreProvider`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProviderRef<'a> {
    /// `provider.vault`.
    Vault(&'a VaultProvider),
    /// `provider.aws`.
    Aws(&'a AwsProvider),
}

impl StoreProvider {
    /// The one provider that is set. The CRD enforces exactly one; the error covers
    /// objects that did not pass through the apiserver.
    pub fn which(&self) -> Result<ProviderRef<'_>, String> {
        match (&self.vault, &self.aws) {
            (Some(vault), None) => Ok(ProviderRef::Vault(vault)),
            (None, Some(aws)) => Ok(ProviderRef::Aws(aws)),
            (Some(_), Some(_)) => Err(
                "spec.provider sets both `vault` and `aws`: keep one, and make a second store for the other"
                    .to_owned(),
            ),
            (None, None) => {
                Err("spec.provider sets no provider: add `vault` or `aws`".to_owned())
            }
        }
    }
}

/// A HashiCorp Vault (or OpenBao) KV version 2 mount.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    /// Address of the Vault server, e.g. `https://vault.example.com:8200`.
    #[schemars(length(min = 1))]
    pub server: String,
    /// The KV v2 mount path; `secret` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The KV engine version; only `v2` is supported, and it is what an unset field means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VaultKvVersion>,
    /// The Vault Enterprise / OpenBao namespace to send requests to (`X-Vault-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM CA certificates to trust for the server, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "base64_schema")]
    pub ca_bundle: Option<ByteString>,
    /// A Secret or ConfigMap key holding PEM CA certificates to trust for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_provider: Option<CaProvider>,
    /// How to log in to Vault: exactly one method.
    pub auth: VaultAuth,
}

impl VaultProvider {
    /// The KV v2 mount, `secret` when `path` is unset.
    pub fn mount(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_VAULT_MOUNT)
    }
}

fn base64_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "format": "byte",
        "nullable": true
    })
}

/// Vault KV engine versions. Sigil reads KV version 2 only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum VaultKvVersion {
    /// KV version 2 (versioned secrets).
    #[default]
    #[serde(rename = "v2")]
    V2,
}

/// Where to find CA certificates: a key of a Secret or ConfigMap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaProvider {
    /// The kind of object: `Secret` or `ConfigMap`.
    #[serde(rename = "type")]
    pub type_: CaProviderType,
    /// The object's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key whose value holds the PEM certificates.
    #[schemars(length(min = 1))]
    pub key: String,
    /// The object's namespace: required on a ClusterSecretStore; on a SecretStore the
    /// store's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The kind of object a [`CaProvider`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CaProviderType {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// How to log in to Vault: exactly one of `tokenSecretRef`, `kubernetes` or `appRole`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.tokenSecretRef) ? 1 : 0) + (has(self.kubernetes) ? 1 : 0) + (has(self.appRole) ? 1 : 0) == 1",
        "message": "set exactly one Vault auth method: `tokenSecretRef`, `kubernetes` or `appRole` (other ESO methods are not supported)"
    }
]))]
pub struct VaultAuth {
    /// A Vault token, read from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    /// Vault's Kubernetes auth method, with a ServiceAccount token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    /// Vault's AppRole auth method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRoleAuth>,
}

/// Which Vault auth method a store uses, borrowed from its [`VaultAuth`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VaultAuthMethod<'a> {
    /// `auth.tokenSecretRef`.
    Token(&'a SecretKeySelector),
    /// `auth.kubernetes`.
    Kubernetes(&'a VaultKubernetesAuth),
    /// `auth.appRole`.
    AppRole(&'a VaultAppRoleAuth),
}

impl VaultAuth {
    /// The one auth method that is set. The CRD enforces exactly one; the error covers
    /// objects that did not pass through the apiserver.
    pub fn method(&self) -> Result<VaultAuthMethod<'_>, String> {
        match (&self.token_secret_ref, &self.kubernetes, &self.app_role) {
            (Some(token), None, None) => Ok(VaultAuthMethod::Token(token)),
            (None, Some(k8s), None) => Ok(VaultAuthMethod::Kubernetes(k8s)),
            (None, None, Some(app_role)) => Ok(VaultAuthMethod::AppRole(app_role)),
            _ => Err(
                "spec.provider.vault.auth must set exactly one of `tokenSecretRef`, `kubernetes` or `appRole`"
                    .to_owned(),
            ),
        }
    }
}

/// Vault's Kubernetes auth method: Vault checks a ServiceAccount token with the
/// cluster's TokenReview API and maps it to a Vault role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// Where the method is mounted in Vault; `kubernetes` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// The Vault role to log in as.
    #[schemars(length(min = 1))]
    pub role: String,
    /// The ServiceAccount whose token (from the TokenRequest API) logs in. Takes
    /// precedence over `secretRef`; when neither is set, the controller's own token is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// A Secret key holding a ServiceAccount token to log in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
}

impl VaultKubernetesAuth {
    /// The auth mount, `kubernetes` when `mountPath` is unset.
    pub fn mount(&self) -> &str {
        self.mount_path
            .as_deref()
            .unwrap_or(DEFAULT_VAULT_KUBERNETES_MOUNT)
    }
}

/// Vault's AppRole auth method: a role ID (inline or from a Secret) and a secret ID.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.roleId) != has(self.roleRef)",
        "message": "set the AppRole role ID exactly once: inline as `roleId`, or from a Secret as `roleRef`"
    }
]))]
pub struct VaultAppRoleAuth {
    /// Where the method is mounted in Vault; `approle` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The role ID (not secret). Exactly one of `roleId` and `roleRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// A Secret key holding the role ID. Exactly one of `roleId` and `roleRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<SecretKeySelector>,
    /// A Secret key holding the secret ID.
    pub secret_ref: SecretKeySelector,
}

impl VaultAppRoleAuth {
    /// The auth mount, `approle` when `path` is unset.
    pub fn mount(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_VAULT_APPROLE_MOUNT)
    }
}

/// AWS Secrets Manager in one region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    /// The AWS service; only `SecretsManager` is supported.
    pub service: AwsService,
    /// The AWS region, e.g. `eu-west-1`.
    #[schemars(length(min = 1))]
    pub region: String,
    /// Sigil extension: the Secrets Manager endpoint URL, e.g. for a VPC endpoint or a
    /// test server; the region's public endpoint when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// ARN of an IAM role to assume after logging in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// How to log in; the controller's default AWS credential chain when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
}

/// AWS services. Sigil reads Secrets Manager only (not Parameter Store).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AwsService {
    /// AWS Secrets Manager.
    #[default]
    SecretsManager,
}

/// How to log in to AWS: static keys from a Secret, or a ServiceAccount's web identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.secretRef) && has(self.jwt))",
        "message": "set at most one AWS auth method, `secretRef` or `jwt`; remove `auth` to use the controller's default credentials"
    }
]))]
pub struct AwsAuth {
    /// Static access keys read from Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsAuthSecretRef>,
    /// Web identity (IRSA): a ServiceAccount token exchanged for credentials of the
    /// role the ServiceAccount is annotated with (`eks.amazonaws.com/role-arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<AwsJwtAuth>,
}

/// Static AWS access keys read from Secrets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsAuthSecretRef {
    /// The access key ID.
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id_secret_ref: SecretKeySelector,
    /// The secret access key.
    pub secret_access_key_secret_ref: SecretKeySelector,
    /// A session token, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_secret_ref: Option<SecretKeySelector>,
}

/// AWS web identity with a ServiceAccount token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsJwtAuth {
    /// The ServiceAccount whose token is exchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
}

/// A key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The data key within the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The Secret's namespace: required in a ClusterSecretStore (one set of credentials
    /// serves every namespace it allows); a SecretStore may only name its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A ServiceAccount whose token the controller requests (TokenRequest API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    /// The ServiceAccount's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The ServiceAccount's namespace: required in a ClusterSecretStore; a SecretStore
    /// may only name its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Audiences of the requested token; the provider's usual audience when empty
    /// (`sts.amazonaws.com` for AWS, `vault` for Vault). Never one the Kubernetes API
    /// server accepts: such a token would let the store's server act as the account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// One rule for which namespaces may use a ClusterSecretStore. A namespace matches when
/// it matches the selector, is listed, or matches one of the regular expressions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Namespaces whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces whose name matches one of these regular expressions (RE2 syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_regexes: Vec<String>,
}

/// What the controller last found out about a store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct SecretStoreStatus {
    /// The generation the status describes; 0 (filled in by the API server) until the
    /// controller first reports, so that kstatus, Flux and Argo CD see work to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready` says whether the store could be logged in to; `Stalled` is
    /// present (True) while it cannot (checked again with backoff).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What Sigil may do with the store, as ESO spells it: `ReadOnly` or `ReadWrite`
    /// (rotation writes new versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> VaultProvider {
        VaultProvider {
            server: "https://vault:8200".to_owned(),
            auth: VaultAuth {
                token_secret_ref: Some(SecretKeySelector {
                    name: "t".to_owned(),
                    ..SecretKeySelector::default()
                }),
                ..VaultAuth::default()
            },
            ..VaultProvider::default()
        }
    }

    #[test]
    fn defaults_are_applied_by_helpers() {
        let v = vault();
        assert_eq!(v.mount(), "secret");
        assert_eq!(VaultKubernetesAuth::default().mount(), "kubernetes");
        assert_eq!(VaultAppRoleAuth::default().mount(), "approle");
        let custom = VaultProvider {
            path: Some("kv".to_owned()),
            ..vault()
        };
        assert_eq!(custom.mount(), "kv");
    }

    #[test]
    fn exactly_one_provider_and_auth_method() {
        let mut p = StoreProvider {
            vault: Some(vault()),
            aws: None,
        };
        assert!(matches!(p.which(), Ok(ProviderRef::Vault(_))));
        p.aws = Some(AwsProvider::default());
        assert!(p.which().unwrap_err().contains("both"));
        p.vault = None;
        assert!(matches!(p.which(), Ok(ProviderRef::Aws(_))));
        p.aws = None;
        assert!(p.which().unwrap_err().contains("add `vault` or `aws`"));

        let mut auth = vault().auth;
        assert!(matches!(auth.method(), Ok(VaultAuthMethod::Token(_))));
        auth.app_role = Some(VaultAppRoleAuth::default());
        assert!(auth.method().is_err());
        auth.token_secret_ref = None;
        assert!(matches!(auth.method(), Ok(VaultAuthMethod::AppRole(_))));
    }

    #[test]
    fn cluster_store_converts_to_store() {
        let cluster = ClusterSecretStoreSpec {
            provider: StoreProvider {
                vault: Some(vault()),
                aws: None,
            },
            conditions: vec![ClusterSecretStoreCondition {
                namespaces: vec!["a".to_owned()],
                ..ClusterSecretStoreCondition::default()
            }],
            ..ClusterSecretStoreSpec::default()
        };
        let store = cluster.as_store_spec();
        assert_eq!(store.provider, cluster.provider);
        assert_eq!(store.conditions, cluster.conditions);
    }

    #[test]
    fn eso_spellings() {
        let json = serde_json::json!({
            "service": "SecretsManager",
            "region": "eu-west-1",
            "auth": {"secretRef": {
                "accessKeyIDSecretRef": {"name": "c", "key": "id"},
                "secretAccessKeySecretRef": {"name": "c", "key": "secret"}
            }}
        });
        let aws: AwsProvider = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(aws.service, AwsService::SecretsManager);
        assert_eq!(serde_json::to_value(&aws).unwrap(), json);
        let version: VaultKvVersion = serde_json::from_str("\"v2\"").unwrap();
        assert_eq!(version, VaultKvVersion::V2);
        assert!(serde_json::from_str::<VaultKvVersion>("\"v1\"").is_err());
        assert!(serde_json::from_str::<AwsService>("\"ParameterStore\"").is_err());
        let ca: CaProvider = serde_json::from_value(
            serde_json::json!({"type": "ConfigMap", "name": "ca", "key": "ca.crt"}),
        )
        .unwrap();
        assert_eq!(ca.type_, CaProviderType::ConfigMap);
    }
}
