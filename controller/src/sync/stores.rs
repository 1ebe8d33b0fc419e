//! SecretStores and ClusterSecretStores: one long-lived provider session per store
//! (built once from the store and the credentials it points to, rebuilt when the store
//! changes or its credentials are refused), who may use a ClusterSecretStore, and the
//! stores' `Ready` condition.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use secrecy::SecretString;
use sigil_providers::aws::{AwsAuth, AwsConfig, AwsSession};
use sigil_providers::vault::{VaultAuth, VaultConfig, VaultSession};
use sigil_providers::{Error as ProviderError, ErrorKind, Observer, Session, TokenSource};
use sigil_types::store::{
    AwsProvider, CaProviderType, ClusterSecretStoreCondition, ProviderRef, SecretKeySelector,
    SecretStoreSpec, SecretStoreStatus, ServiceAccountSelector, VaultAuthMethod, VaultProvider,
};
use sigil_types::{ALLOW_STORE_TOKENS_ANNOTATION, ClusterSecretStore, SecretStore, StoreKind};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::common::error::{Error, KubeContext, Result};
use crate::common::status::{self, Health};
use crate::sync::SyncContext;

/// How long a provider request may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a store's credentials are checked again when nothing else happens.
const STORE_RECHECK: Duration = Duration::from_secs(300);
/// How long a namespace's labels are trusted for `namespaceSelector`.
const NAMESPACE_LABELS_TTL: Duration = Duration::from_secs(10);
/// The annotation EKS uses for the role a ServiceAccount's web identity assumes.
const IRSA_ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The audience of tokens minted for Vault's Kubernetes auth unless the store names one
/// (the Vault role's `audience` must match it).
const VAULT_AUDIENCE: &str = "vault";
/// The audience AWS STS expects of a web identity token.
const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// A store as an ExternalSecret refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StoreRef {
    pub kind: StoreKind,
    /// Empty for a ClusterSecretStore.
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for StoreRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            StoreKind::ClusterSecretStore => write!(f, "ClusterSecretStore {}", self.name),
            _ => write!(f, "SecretStore {}/{}", self.namespace, self.name),
        }
    }
}

/// A store object, either kind, as read from the watch cache.
pub(crate) struct StoreObject {
    pub store: StoreRef,
    pub uid: String,
    pub generation: i64,
    pub spec: SecretStoreSpec,
}

impl StoreObject {
    /// Where the store's remote keys live: stores with equal servers name the same
    /// remote secret by the same key, whoever owns them and however they log in.
    pub(crate) fn server(&self) -> Result<String, String> {
        Ok(match self.spec.provider.which()? {
            ProviderRef::Vault(vault) => format!(
                "vault {} namespace {} mount {}",
                vault.server.trim_end_matches('/'),
                vault.namespace.as_deref().unwrap_or("-").trim_matches('/'),
                vault.mount().trim_matches('/'),
            ),
            ProviderRef::Aws(aws) => format!(
                "aws {} endpoint {}",
                aws.region,
                aws.endpoint
                    .as_deref()
                    .map_or("default", |e| e.trim_end_matches('/')),
            ),
        })
    }

    fn identity(&self) -> Arc<str> {
        format!(
            "{}/{}/{}/{}/{}",
            self.store.kind.as_str(),
            self.store.namespace,
            self.store.name,
            self.uid,
            self.generation
        )
        .into()
    }
}

impl From<&SecretStore> for StoreObject {
    fn from(obj: &SecretStore) -> Self {
        StoreObject {
            store: StoreRef {
                kind: StoreKind::SecretStore,
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
            },
            uid: obj.uid().unwrap_or_default(),
            generation: obj.metadata.generation.unwrap_or_default(),
            spec: obj.spec.clone(),
        }
    }
}

impl From<&ClusterSecretStore> for StoreObject {
    fn from(obj: &ClusterSecretStore) -> Self {
        StoreObject {
            store: StoreRef {
                kind: StoreKind::ClusterSecretStore,
                namespace: String::new(),
                name: obj.name_any(),
            },
            uid: obj.uid().unwrap_or_default(),
            generation: obj.metadata.generation.unwrap_or_default(),
            spec: obj.spec.as_store_spec(),
        }
    }
}

/// Why a store cannot be used.
#[derive(Clone, Debug)]
pub(crate) enum StoreProblem {
    /// The store or what it points to is wrong or missing; the message says what.
    Config(String),
    /// The provider refused the credentials.
    Auth(String),
    /// The provider did not answer.
    Unavailable(String),
}

impl StoreProblem {
    pub(crate) fn message(&self) -> &str {
        match self {
            StoreProblem::Config(m) | StoreProblem::Auth(m) | StoreProblem::Unavailable(m) => m,
        }
    }

    fn from_provider(store: &StoreRef, err: &ProviderError) -> Self {
        let message = format!("{store}: {err}");
        match err.kind() {
            ErrorKind::AuthFailed => StoreProblem::Auth(message),
            ErrorKind::InvalidConfig => StoreProblem::Config(message),
            _ => StoreProblem::Unavailable(message),
        }
    }
}

type Labels = BTreeMap<String, String>;
type Built = Result<(Arc<str>, Arc<Session>), StoreProblem>;

struct Entry {
    identity: Arc<str>,
    cell: Arc<OnceCell<Built>>,
}

/// Every store's session, built on first use.
pub(crate) struct Stores {
    client: Client,
    observer: Arc<dyn Observer>,
    store_tokens_need_opt_in: bool,
    /// The audiences the API server accepts, learnt once: no store token may carry one.
    apiserver_audiences: OnceCell<Vec<String>>,
    sessions: Mutex<HashMap<StoreRef, Entry>>,
    namespace_labels: Mutex<HashMap<String, (Instant, Labels)>>,
}

impl Stores {
    pub(crate) fn new(
        client: Client,
        observer: Arc<dyn Observer>,
        store_tokens_need_opt_in: bool,
    ) -> Self {
        Self {
            client,
            observer,
            store_tokens_need_opt_in,
            apiserver_audiences: OnceCell::new(),
            sessions: Mutex::default(),
            namespace_labels: Mutex::default(),
        }
    }

    /// The session of `store` (and its identity, for the read cache), built once per
    /// store generation; concurrent callers share one build.
    pub(crate) async fn session(&self, store: &StoreObject) -> Built {
        let identity = store.identity();
        let cell = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let entry = sessions
                .entry(store.store.clone())
                .or_insert_with(|| Entry {
                    identity: identity.clone(),
                    cell: Arc::default(),
                });
            if entry.identity != identity {
                *entry = Entry {
                    identity: identity.clone(),
                    cell: Arc::default(),
                };
            }
            entry.cell.clone()
        };
        let built = cell
            .get_or_init(|| async {
                self.build(store)
                    .await
                    .map(|session| (identity.clone(), Arc::new(session)))
            })
            .await
            .clone();
        if built.is_err() {
            // Problems are not kept: the next use tries again with what is there then.
            self.forget_if(&store.store, &identity);
        }
        built
    }

    /// Drops the session of `store` if it is still the one of `identity`, so that the
    /// next use builds a new one (the credentials were refused, or have changed).
    pub(crate) fn forget_if(&self, store: &StoreRef, identity: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions
            .get(store)
            .is_some_and(|entry| &*entry.identity == identity)
        {
            sessions.remove(store);
        }
    }

    /// Whether a session of this identity is still in use (for the read cache's sweep).
    pub(crate) fn is_live(&self, identity: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|entry| &*entry.identity == identity)
    }

    /// Forgets stores that no longer exist.
    pub(crate) fn retain(&self, exists: impl Fn(&StoreRef) -> bool) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|store, _| exists(store));
    }

    /// Where the store's remote keys live ([`StoreObject::server`]) and, for AWS, the
    /// account its credentials act in (asked once per session): two AWS stores on one
    /// region and endpoint name the same secrets only within one account.
    pub(crate) async fn server_of(&self, store: &StoreObject) -> Result<String, StoreProblem> {
        let server = store
            .server()
            .map_err(|m| StoreProblem::Config(format!("{}: {m}", store.store)))?;
        if !matches!(store.spec.provider.which(), Ok(ProviderRef::Aws(_))) {
            return Ok(server);
        }
        let (_, session) = self.session(store).await?;
        match session.account().await {
            Ok(Some(account)) => Ok(format!("{server} account {account}")),
            Ok(None) => Ok(server),
            Err(err) => Err(StoreProblem::from_provider(&store.store, &err)),
        }
    }

    async fn build(&self, store: &StoreObject) -> Result<Session, StoreProblem> {
        let config = |message: String| StoreProblem::Config(format!("{}: {message}", store.store));
        let provider = store.spec.provider.which().map_err(config)?;
        let session = match provider {
            ProviderRef::Vault(vault) => {
                let config = self.vault_config(store, vault).await?;
                VaultSession::new(config, self.observer.clone())
                    .map(|s| Session::Vault(Box::new(s)))
            }
            ProviderRef::Aws(aws) => {
                let config = self.aws_config(store, aws).await?;
                AwsSession::new(config, self.observer.clone())
                    .await
                    .map(Session::Aws)
            }
        };
        session.map_err(|err| StoreProblem::from_provider(&store.store, &err))
    }

    /// The namespace of an object a store names in `field`: a SecretStore's own, always;
    /// a ClusterSecretStore's reference must say which. Both names go into a URL, so
    /// they must be names the API server could hold (`a/../b` would address another
    /// object).
    fn namespace_of(
        store: &StoreObject,
        field: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<String, StoreProblem> {
        if let Some(ns) = namespace.filter(|ns| !sigil_types::is_dns_label(ns)) {
            return Err(StoreProblem::Config(format!(
                "{}: {field}.namespace `{ns}` is not a namespace name",
                store.store
            )));
        }
        if !sigil_types::is_object_name(name) {
            return Err(StoreProblem::Config(format!(
                "{}: {field}.name `{name}` is not an object name (lowercase letters, digits, `-` and `.`)",
                store.store
            )));
        }
        match (store.store.kind, namespace) {
            (StoreKind::ClusterSecretStore, Some(ns)) => Ok(ns.to_owned()),
            (StoreKind::ClusterSecretStore, None) => Err(StoreProblem::Config(format!(
                "{}: {field}.namespace is required in a ClusterSecretStore; set the namespace that holds it",
                store.store
            ))),
            (_, Some(ns)) if ns != store.store.namespace => Err(StoreProblem::Config(format!(
                "{}: {field}.namespace is `{ns}`, but a SecretStore may only use objects of its own namespace `{}`; move the object there, or use a ClusterSecretStore",
                store.store, store.store.namespace
            ))),
            _ => Ok(store.store.namespace.clone()),
        }
    }

    async fn secret_value(
        &self,
        store: &StoreObject,
        field: &str,
        selector: &SecretKeySelector,
    ) -> Result<Zeroizing<String>, StoreProblem> {
        let namespace =
            Self::namespace_of(store, field, selector.namespace.as_deref(), &selector.name)?;
        let key = selector.key.as_deref().ok_or_else(|| {
            StoreProblem::Config(format!(
                "{}: {field}.key is not set; name the key of Secret {namespace}/{} to use",
                store.store, selector.name
            ))
        })?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let secret = api.get_opt(&selector.name).await.map_err(|err| {
            StoreProblem::Unavailable(format!(
                "{}: cannot read Secret {namespace}/{} ({field}): {err}",
                store.store, selector.name
            ))
        })?;
        let missing = || {
            StoreProblem::Config(format!(
                "{}: {field} names Secret {namespace}/{} key `{key}`, which does not exist; create it",
                store.store, selector.name
            ))
        };
        let bytes = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(key))
            .ok_or_else(missing)?;
        let text = String::from_utf8(bytes.0).map_err(|_| {
            StoreProblem::Config(format!(
                "{}: Secret {namespace}/{} key `{key}` ({field}) is not UTF-8 text",
                store.store, selector.name
            ))
        })?;
        Ok(Zeroizing::new(text.trim().to_owned()))
    }

    /// Mints tokens of `account` for a store's server. A token the Kubernetes API server
    /// accepts would let that server act as the account, so the audiences (the
    /// provider's usual one unless the store names others) never include one of the API
    /// server's own; with `--store-tokens-need-opt-in`, the account must also carry
    /// [`ALLOW_STORE_TOKENS_ANNOTATION`].
    async fn token_source(
        &self,
        store: &StoreObject,
        field: &str,
        account: &ServiceAccountSelector,
        default_audience: &str,
    ) -> Result<TokenSource, StoreProblem> {
        let namespace =
            Self::namespace_of(store, field, account.namespace.as_deref(), &account.name)?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let name = account.name.clone();
        if self.store_tokens_need_opt_in {
            self.check_opt_in(store, field, &api, &namespace, &name)
                .await?;
        }
        let audiences = if account.audiences.is_empty() {
            vec![default_audience.to_owned()]
        } else {
            account.audiences.clone()
        };
        let refused = self
            .apiserver_audiences
            .get_or_try_init(|| learn_apiserver_audiences(&api, &name))
            .await
            .map_err(|err| {
                StoreProblem::Unavailable(format!(
                    "{}: cannot learn the Kubernetes API server's token audiences from a TokenRequest for ServiceAccount {namespace}/{name} ({field}): {err}",
                    store.store
                ))
            })?
            .clone();
        if let Some(audience) = audiences.iter().find(|a| refused.contains(a)) {
            return Err(StoreProblem::Config(format!(
                "{}: {field}.audiences includes `{audience}`, an audience the Kubernetes API server accepts: the store's server could use such a token as ServiceAccount {namespace}/{name}. Use the audience the provider checks (e.g. `{default_audience}`)",
                store.store
            )));
        }
        Ok(Arc::new(move || {
            let api = api.clone();
            let name = name.clone();
            let refused = refused.clone();
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: audiences.clone(),
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            };
            async move {
                let issued = api
                    .create_token_request(&name, &PostParams::default(), &request)
                    .await
                    .map_err(|err| format!("TokenRequest for ServiceAccount {name}: {err}"))?;
                let token = issued
                    .status
                    .map(|s| s.token)
                    .ok_or_else(|| {
                        format!("TokenRequest for ServiceAccount {name} returned no token")
                    })?;
                // The API server may have been restarted with other audiences since
                // they were learnt: a token it would accept is never sent.
                if token_audiences(&token).iter().any(|a| refused.contains(a)) {
                    return Err(format!(
                        "the token minted for ServiceAccount {name} carries an audience the Kubernetes API server accepts; it was not sent"
                    ));
                }
                Ok(SecretString::from(token))
            }
            .boxed()
        }))
    }

    async fn check_opt_in(
        &self,
        store: &StoreObject,
        field: &str,
        api: &Api<ServiceAccount>,
        namespace: &str,
        name: &str,
    ) -> Result<(), StoreProblem> {
        let account = api.get_opt(name).await.map_err(|err| {
            StoreProblem::Unavailable(format!(
                "{}: cannot read ServiceAccount {namespace}/{name} ({field}): {err}",
                store.store
            ))
        })?;
        let opted_in = account.is_some_and(|sa| {
            sa.annotations()
                .get(ALLOW_STORE_TOKENS_ANNOTATION)
                .map(String::as_str)
                == Some("true")
        });
        if opted_in {
            Ok(())
        } else {
            Err(StoreProblem::Config(format!(
                "{}: {field} names ServiceAccount {namespace}/{name}, which has not opted in to tokens for stores; annotate it `{ALLOW_STORE_TOKENS_ANNOTATION}: \"true\"` if its owner agrees",
                store.store
            )))
        }
    }

    async fn vault_config(
        &self,
        store: &StoreObject,
        vault: &VaultProvider,
    ) -> Result<VaultConfig, StoreProblem> {
        let field = "spec.provider.vault.auth";
        let method = vault
            .auth
            .method()
            .map_err(|m| StoreProblem::Config(format!("{}: {m}", store.store)))?;
        let auth = match method {
            VaultAuthMethod::Token(selector) => VaultAuth::Token(SecretString::from(
                self.secret_value(store, &format!("{field}.tokenSecretRef"), selector)
                    .await?
                    .to_string(),
            )),
            VaultAuthMethod::Kubernetes(k8s) => {
                let jwt = match (&k8s.service_account_ref, &k8s.secret_ref) {
                    (Some(account), _) => {
                        self.token_source(
                            store,
                            &format!("{field}.kubernetes.serviceAccountRef"),
                            account,
                            VAULT_AUDIENCE,
                        )
                        .await?
                    }
                    (None, Some(selector)) => {
                        let jwt = self
                            .secret_value(store, &format!("{field}.kubernetes.secretRef"), selector)
                            .await?
                            .to_string();
                        Arc::new(move || {
                            let jwt = SecretString::from(jwt.clone());
                            async move { Ok(jwt) }.boxed()
                        })
                    }
                    (None, None) if store.store.kind == StoreKind::ClusterSecretStore => {
                        own_service_account_token()
                    }
                    (None, None) => {
                        return Err(StoreProblem::Config(format!(
                            "{}: {field}.kubernetes names no credentials: set `serviceAccountRef` (a ServiceAccount of namespace {}) or `secretRef`. Only a ClusterSecretStore may log in as the controller itself",
                            store.store, store.store.namespace
                        )));
                    }
                };
                VaultAuth::Kubernetes {
                    mount_path: k8s.mount().to_owned(),
                    role: k8s.role.clone(),
                    jwt,
                }
            }
            VaultAuthMethod::AppRole(app_role) => {
                let role_id = match (&app_role.role_id, &app_role.role_ref) {
                    (Some(id), _) => id.clone(),
                    (None, Some(selector)) => self
                        .secret_value(store, &format!("{field}.appRole.roleRef"), selector)
                        .await?
                        .to_string(),
                    (None, None) => {
                        return Err(StoreProblem::Config(format!(
                            "{}: {field}.appRole needs `roleId` or `roleRef`",
                            store.store
                        )));
                    }
                };
                VaultAuth::AppRole {
                    mount_path: app_role.mount().to_owned(),
                    role_id,
                    secret_id: SecretString::from(
                        self.secret_value(
                            store,
                            &format!("{field}.appRole.secretRef"),
                            &app_role.secret_ref,
                        )
                        .await?
                        .to_string(),
                    ),
                }
            }
        };
        let ca_pem = match (&vault.ca_bundle, &vault.ca_provider) {
            (Some(bundle), _) => Some(bundle.0.clone()),
            (None, Some(provider)) => {
                let field = "spec.provider.vault.caProvider";
                let namespace = Self::namespace_of(
                    store,
                    field,
                    provider.namespace.as_deref(),
                    &provider.name,
                )?;
                let missing = || {
                    StoreProblem::Config(format!(
                        "{}: {field} names {:?} {namespace}/{} key `{}`, which does not exist",
                        store.store, provider.type_, provider.name, provider.key
                    ))
                };
                let unavailable = |err: kube::Error| {
                    StoreProblem::Unavailable(format!(
                        "{}: cannot read {field} {namespace}/{}: {err}",
                        store.store, provider.name
                    ))
                };
                Some(match provider.type_ {
                    CaProviderType::Secret => {
                        Api::<Secret>::namespaced(self.client.clone(), &namespace)
                            .get_opt(&provider.name)
                            .await
                            .map_err(unavailable)?
                            .and_then(|s| s.data)
                            .and_then(|mut d| d.remove(&provider.key))
                            .map(|b| b.0)
                            .ok_or_else(missing)?
                    }
                    CaProviderType::ConfigMap => {
                        Api::<ConfigMap>::namespaced(self.client.clone(), &namespace)
                            .get_opt(&provider.name)
                            .await
                            .map_err(unavailable)?
                            .and_then(|c| c.data)
                            .and_then(|mut d| d.remove(&provider.key))
                            .map(String::into_bytes)
                            .ok_or_else(missing)?
                    }
                })
            }
            (None, None) => None,
        };
        Ok(VaultConfig {
            server: vault.server.clone(),
            mount: vault.mount().to_owned(),
            namespace: vault.namespace.clone(),
            ca_pem,
            auth,
            timeout: PROVIDER_TIMEOUT,
        })
    }

    async fn aws_config(
        &self,
        store: &StoreObject,
        aws: &AwsProvider,
    ) -> Result<AwsConfig, StoreProblem> {
        let field = "spec.provider.aws.auth";
        let auth = aws.auth.as_ref();
        let auth = match (
            auth.and_then(|a| a.secret_ref.as_ref()),
            auth.and_then(|a| a.jwt.as_ref()),
        ) {
            (Some(_), Some(_)) => {
                return Err(StoreProblem::Config(format!(
                    "{}: {field} sets both `secretRef` and `jwt`; keep one",
                    store.store
                )));
            }
            (Some(keys), None) => {
                if aws.role.is_some() {
                    return Err(StoreProblem::Config(format!(
                        "{}: spec.provider.aws.role with static keys is not supported; use `jwt` (web identity) to assume a role, or drop `role`",
                        store.store
                    )));
                }
                let session_token = match &keys.session_token_secret_ref {
                    Some(selector) => Some(SecretString::from(
                        self.secret_value(
                            store,
                            &format!("{field}.secretRef.sessionTokenSecretRef"),
                            selector,
                        )
                        .await?
                        .to_string(),
                    )),
                    None => None,
                };
                AwsAuth::Static {
                    access_key_id: self
                        .secret_value(
                            store,
                            &format!("{field}.secretRef.accessKeyIDSecretRef"),
                            &keys.access_key_id_secret_ref,
                        )
                        .await?
                        .to_string(),
                    secret_access_key: SecretString::from(
                        self.secret_value(
                            store,
                            &format!("{field}.secretRef.secretAccessKeySecretRef"),
                            &keys.secret_access_key_secret_ref,
                        )
                        .await?
                        .to_string(),
                    ),
                    session_token,
                }
            }
            (None, Some(jwt)) => {
                let Some(account) = &jwt.service_account_ref else {
                    return Err(StoreProblem::Config(format!(
                        "{}: {field}.jwt.serviceAccountRef is required: name the ServiceAccount whose token assumes the role",
                        store.store
                    )));
                };
                let account_field = format!("{field}.jwt.serviceAccountRef");
                let role_arn = match &aws.role {
                    Some(role) => role.clone(),
                    None => self.irsa_role(store, &account_field, account).await?,
                };
                AwsAuth::WebIdentity {
                    role_arn,
                    token: self
                        .token_source(store, &account_field, account, STS_AUDIENCE)
                        .await?,
                }
            }
            (None, None) => {
                if aws.role.is_some() {
                    return Err(StoreProblem::Config(format!(
                        "{}: spec.provider.aws.role with the default credential chain is not supported; use `jwt` (web identity) to assume a role, or drop `role`",
                        store.store
                    )));
                }
                if store.store.kind != StoreKind::ClusterSecretStore {
                    return Err(StoreProblem::Config(format!(
                        "{}: {field} is not set: set `secretRef` (access keys in a Secret of namespace {}) or `jwt.serviceAccountRef` (web identity). Only a ClusterSecretStore may use the controller's own AWS credentials",
                        store.store, store.store.namespace
                    )));
                }
                AwsAuth::DefaultChain
            }
        };
        Ok(AwsConfig {
            region: aws.region.clone(),
            endpoint: aws.endpoint.clone(),
            auth,
            timeout: PROVIDER_TIMEOUT,
        })
    }

    async fn irsa_role(
        &self,
        store: &StoreObject,
        field: &str,
        account: &ServiceAccountSelector,
    ) -> Result<String, StoreProblem> {
        let namespace =
            Self::namespace_of(store, field, account.namespace.as_deref(), &account.name)?;
        let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), &namespace)
            .get_opt(&account.name)
            .await
            .map_err(|err| {
                StoreProblem::Unavailable(format!(
                    "{}: cannot read ServiceAccount {namespace}/{}: {err}",
                    store.store, account.name
                ))
            })?
            .ok_or_else(|| {
                StoreProblem::Config(format!(
                    "{}: {field} names ServiceAccount {namespace}/{}, which does not exist",
                    store.store, account.name
                ))
            })?;
        sa.annotations()
            .get(IRSA_ROLE_ANNOTATION)
            .cloned()
            .ok_or_else(|| {
                StoreProblem::Config(format!(
                    "{}: ServiceAccount {namespace}/{} has no {IRSA_ROLE_ANNOTATION} annotation and the store sets no spec.provider.aws.role; set one of them to the role to assume",
                    store.store, account.name
                ))
            })
    }

    /// Whether an ExternalSecret in `namespace` may use a store with `conditions`
    /// (none: everyone may).
    pub(crate) async fn allows(
        &self,
        conditions: &[ClusterSecretStoreCondition],
        namespace: &str,
    ) -> Result<bool> {
        if conditions.is_empty() {
            return Ok(true);
        }
        let needs_labels = conditions.iter().any(|c| c.namespace_selector.is_some());
        let labels = if needs_labels {
            self.labels_of(namespace).await?
        } else {
            BTreeMap::new()
        };
        Ok(conditions
            .iter()
            .any(|condition| condition_matches(condition, namespace, &labels)))
    }

    async fn labels_of(&self, namespace: &str) -> Result<BTreeMap<String, String>> {
        if let Some((at, labels)) = self
            .namespace_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            && at.elapsed() < NAMESPACE_LABELS_TTL
        {
            return Ok(labels.clone());
        }
        let labels = Api::<Namespace>::all(self.client.clone())
            .get_opt(namespace)
            .await
            .during(|| format!("read Namespace {namespace}"))?
            .map(|ns| ns.labels().clone())
            .unwrap_or_default();
        self.namespace_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_owned(), (Instant::now(), labels.clone()));
        Ok(labels)
    }
}

/// The controller's own ServiceAccount token, for a ClusterSecretStore's Vault Kubernetes
/// auth without a `serviceAccountRef` (as ESO does): the cluster admin's choice, never a
/// tenant's.
fn own_service_account_token() -> TokenSource {
    const PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    Arc::new(|| {
        async {
            tokio::fs::read_to_string(PATH)
                .await
                .map(|t| SecretString::from(t.trim().to_owned()))
                .map_err(|err| {
                    format!("no serviceAccountRef or secretRef is set, and the controller's own token {PATH} cannot be read: {err}")
                })
        }
        .boxed()
    })
}

/// The API server's own audiences: those of a token requested without any.
async fn learn_apiserver_audiences(
    api: &Api<ServiceAccount>,
    name: &str,
) -> Result<Vec<String>, String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let issued = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(|err| err.to_string())?;
    let audiences: std::collections::BTreeSet<String> = issued
        .spec
        .audiences
        .into_iter()
        .chain(
            issued
                .status
                .map(|s| token_audiences(&s.token))
                .unwrap_or_default(),
        )
        .collect();
    if audiences.is_empty() {
        return Err("the token names no audience".to_owned());
    }
    Ok(audiences.into_iter().collect())
}

/// The `aud` claim of a JWT (a string or a list), unverified: only to compare audiences
/// of a token the API server just issued.
fn token_audiences(token: &str) -> Vec<String> {
    use base64::Engine as _;
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok());
    match claims.as_ref().and_then(|c| c.get("aud")) {
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        Some(serde_json::Value::Array(many)) => many
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn condition_matches(
    condition: &ClusterSecretStoreCondition,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    condition.namespaces.iter().any(|n| n == namespace)
        || condition.namespace_regexes.iter().any(|pattern| {
            regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(namespace))
        })
        || condition
            .namespace_selector
            .as_ref()
            .is_some_and(|selector| selector_matches(selector, labels))
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Reconciles a SecretStore or ClusterSecretStore: builds its session, proves the
/// credentials work, and says so in its `Ready` condition.
pub(crate) async fn reconcile_store<K>(obj: Arc<K>, ctx: Arc<SyncContext>) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    for<'a> &'a K: Into<StoreObject>,
    K: HasStoreStatus,
{
    let store: StoreObject = obj.as_ref().into();
    let problem = match ctx.stores.session(&store).await {
        Ok((identity, session)) => match session.check().await {
            Ok(()) => None,
            Err(err) => {
                if err.kind() == ErrorKind::AuthFailed {
                    ctx.stores.forget_if(&store.store, &identity);
                }
                Some(StoreProblem::from_provider(&store.store, &err))
            }
        },
        Err(problem) => Some(problem),
    };
    let (reason, message) = match &problem {
        None => (
            "Valid",
            format!("{}: the provider accepted the credentials", store.store),
        ),
        Some(p @ StoreProblem::Config(_)) => ("InvalidConfig", p.message().to_owned()),
        Some(p @ StoreProblem::Auth(_)) => ("AuthFailed", p.message().to_owned()),
        Some(p @ StoreProblem::Unavailable(_)) => ("ProviderUnavailable", p.message().to_owned()),
    };
    let previous = obj.store_status();
    let conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let status = SecretStoreStatus {
        observed_generation: obj.meta().generation,
        // A store that cannot be used fails every ExternalSecret that reads it, whether
        // its settings are wrong or its provider is down (checked again with backoff).
        conditions: status::conditions(
            conditions,
            obj.meta().generation,
            if problem.is_none() {
                Health::Ready
            } else {
                Health::Failed
            },
            reason,
            &message,
            &[],
        ),
        capabilities: Some("ReadOnly".to_owned()),
    };
    status::patch_status(
        K::api(&ctx.client, &store.store),
        obj.as_ref(),
        previous,
        &status,
    )
    .await?;
    if problem.is_some() && status::reason_of(conditions, status::READY) != Some(reason) {
        status::publish(
            &ctx.events,
            obj.as_ref(),
            true,
            reason,
            "Validate",
            &message,
        );
    }
    let key = (
        store.store.kind.as_str(),
        store.store.namespace.clone(),
        store.store.name.clone(),
    );
    Ok(match problem {
        None => {
            ctx.store_backoff.succeeded(&key);
            Action::requeue(STORE_RECHECK)
        }
        Some(_) => Action::requeue(ctx.store_backoff.failed(key, STORE_RECHECK)),
    })
}

/// Transient failures of a store reconcile (API errors) back off like everything else.
pub(crate) fn store_error_policy<K>(obj: Arc<K>, err: &Error, ctx: Arc<SyncContext>) -> Action
where
    for<'a> &'a K: Into<StoreObject>,
{
    let store: StoreObject = obj.as_ref().into();
    let key = (
        store.store.kind.as_str(),
        store.store.namespace,
        store.store.name,
    );
    let delay = ctx.store_backoff.failed(key, STORE_RECHECK);
    tracing::warn!(error = %err, ?delay, "store reconcile failed; retrying");
    Action::requeue(delay)
}

/// What both store kinds share: their status, and an API of their scope.
pub(crate) trait HasStoreStatus: Sized {
    fn store_status(&self) -> Option<&SecretStoreStatus>;
    fn api(client: &Client, store: &StoreRef) -> Api<Self>;
}

impl HasStoreStatus for SecretStore {
    fn store_status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
    fn api(client: &Client, store: &StoreRef) -> Api<Self> {
        Api::namespaced(client.clone(), &store.namespace)
    }
}

impl HasStoreStatus for ClusterSecretStore {
    fn store_status(&self) -> Option<&SecretStoreStatus> {
        self.status.as_ref()
    }
    fn api(client: &Client, _: &StoreRef) -> Api<Self> {
        Api::all(client.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn a_namespace_is_allowed_by_any_one_condition() {
        let by_label = ClusterSecretStoreCondition {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("vault-access", "true")])),
                ..LabelSelector::default()
            }),
            ..ClusterSecretStoreCondition::default()
        };
        let by_name = ClusterSecretStoreCondition {
            namespaces: vec!["payments".into(), "billing".into()],
            ..ClusterSecretStoreCondition::default()
        };
        let by_regex = ClusterSecretStoreCondition {
            namespace_regexes: vec!["team-.*".into()],
            ..ClusterSecretStoreCondition::default()
        };
        let none = labels(&[]);
        assert!(condition_matches(
            &by_label,
            "x",
            &labels(&[("vault-access", "true")])
        ));
        assert!(!condition_matches(&by_label, "x", &none));
        assert!(condition_matches(&by_name, "billing", &none));
        assert!(!condition_matches(&by_name, "billing-dev", &none));
        assert!(condition_matches(&by_regex, "team-a", &none));
        assert!(!condition_matches(&by_regex, "x-team-a", &none));
    }

    #[test]
    fn token_audiences_are_read_from_a_string_or_a_list() {
        use base64::Engine as _;
        let jwt = |claims: &str| {
            let encode = |part: &str| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(part.as_bytes())
            };
            format!("{}.{}.sig", encode(r#"{"alg":"RS256"}"#), encode(claims))
        };
        assert_eq!(
            token_audiences(&jwt(r#"{"aud":"https://kubernetes.default.svc"}"#)),
            ["https://kubernetes.default.svc"]
        );
        assert_eq!(
            token_audiences(&jwt(r#"{"aud":["vault","api"],"sub":"x"}"#)),
            ["vault", "api"]
        );
        assert!(token_audiences(&jwt(r#"{"sub":"x"}"#)).is_empty());
        assert!(token_audiences("not a token").is_empty());
    }

    #[test]
    fn label_selector_expressions() {
        let selector = LabelSelector {
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "staging".into()]),
                },
                LabelSelectorRequirement {
                    key: "quarantine".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
            ..LabelSelector::default()
        };
        assert!(selector_matches(&selector, &labels(&[("env", "prod")])));
        assert!(!selector_matches(&selector, &labels(&[("env", "dev")])));
        assert!(!selector_matches(
            &selector,
            &labels(&[("env", "prod"), ("quarantine", "yes")])
        ));
    }
}
