//! Harness for integration tests against real servers on loopback.
//!
//! [`Env::get`] starts the project's test environment (`scripts/env up`: etcd,
//! kube-apiserver, kube-controller-manager, OpenBao and moto) once per test process, or
//! joins one that is already running, and reads its env file. [`TestContext::new`] gives
//! each test its own Kubernetes namespace, Vault path prefix and AWS name prefix, and
//! removes what the test left there when it is dropped, also when the test panics. The
//! environment is stopped when the test process exits, but only if this harness started
//! it: a reaper started by `scripts/env up --until-exit PID` waits for the process to end.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// Errors of the test harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `scripts/env up` could not be run or did not succeed.
    #[error("starting the test environment with `{command}` failed: {detail}")]
    EnvStart {
        /// The command line that was run.
        command: String,
        /// Its exit status and error output.
        detail: String,
    },
    /// The env file written by `scripts/env up` could not be read.
    #[error("reading the env file {path}")]
    EnvFile {
        /// Path of the env file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The env file lacks a variable the harness needs.
    #[error("the env file {path} has no `{key}`; re-run `scripts/env up`")]
    MissingVar {
        /// Path of the env file.
        path: PathBuf,
        /// The missing variable.
        key: String,
    },
    /// The kubeconfig could not be loaded or used.
    #[error("loading the kubeconfig of the test environment (context `{context}`)")]
    KubeConfig {
        /// The kubeconfig context.
        context: String,
        /// The kube error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Kubernetes API request of the harness failed.
    #[error("Kubernetes request of the harness failed: {what}")]
    Kube {
        /// What the harness was doing.
        what: String,
        /// The kube error.
        #[source]
        source: kube::Error,
    },
    /// The chart's CRD file could not be read or parsed.
    #[error("reading the CRDs in {path}")]
    CrdFile {
        /// Path of the CRD file.
        path: PathBuf,
        /// The I/O or YAML error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The apiserver did not establish a CRD in time.
    #[error("CRD {name} was not Established within {timeout:?}")]
    CrdNotEstablished {
        /// The CRD's name.
        name: String,
        /// How long the harness waited.
        timeout: Duration,
    },
    /// A Vault client could not be built.
    #[error("building a Vault client for {addr}")]
    Vault {
        /// The Vault address.
        addr: String,
        /// The vaultrs error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request of the harness to moto failed.
    #[error("{0}")]
    Aws(String),
}

/// Result of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The running test environment, as described by its env file.
#[derive(Debug)]
pub struct Env {
    dir: PathBuf,
    vars: HashMap<String, String>,
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of the chart's CRDs, generated from `sigil-types`.
pub fn chart_crds_path() -> PathBuf {
    repo_root().join("charts/sigil/crds/sigil.dev.yaml")
}

/// Installs (or updates) the chart's CRDs with server-side apply and waits until the
/// apiserver has established each. Idempotent, and shared by every test.
pub async fn install_crds(client: &Client) -> Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(20);
    let path = chart_crds_path();
    let file_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::CrdFile {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(e.into()))?;
    let crds: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&text).map_err(|e| file_err(e.into()))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("sigil-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|source| Error::Kube {
            what: format!("applying CRD {name}"),
            source,
        })?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let established = api.get(&name).await.ok().and_then(|crd| {
                Some(
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True"),
                )
            });
            if established == Some(true) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::CrdNotEstablished {
                    name,
                    timeout: TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Sigil's namespaced custom resources, which the harness deletes from a test's
/// namespace itself, dropping finalizers whose controller is gone: the namespace
/// controller would wait for those forever.
fn namespaced_sigil_resources() -> [ApiResource; 3] {
    [
        ApiResource::erase::<sigil_types::SealedSecret>(&()),
        ApiResource::erase::<sigil_types::ExternalSecret>(&()),
        ApiResource::erase::<sigil_types::SecretStore>(&()),
    ]
}

impl Env {
    /// Starts the environment once per process (or joins a running one) and returns it.
    ///
    /// # Panics
    /// Panics with the script's error output if the environment cannot be started, so
    /// that a test never passes without its servers.
    pub fn get() -> &'static Env {
        match ENV.get_or_init(|| Env::start().map_err(|e| format!("{}", Report(&e)))) {
            Ok(env) => env,
            Err(msg) => panic!("{msg}"),
        }
    }

    fn start() -> Result<Env> {
        let script = repo_root().join("scripts/env");
        let pid = std::process::id().to_string();
        let command = format!("{} up --until-exit {pid}", script.display());
        let out = Command::new(&script)
            .args(["up", "--until-exit", &pid])
            .output()
            .map_err(|e| Error::EnvStart {
                command: command.clone(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(Error::EnvStart {
                command,
                detail: format!("{}\n{}", out.status, String::from_utf8_lossy(&out.stderr)),
            });
        }
        let dir = std::env::var_os("SIGIL_ENV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".env"));
        Env::load(&dir)
    }

    /// Reads the env file in `dir` of an environment that is already up.
    pub fn load(dir: &Path) -> Result<Env> {
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::EnvFile {
            path: path.clone(),
            source,
        })?;
        let vars = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Env {
            dir: dir.to_path_buf(),
            vars,
        })
    }

    /// The value of `key` in the env file (e.g. `VAULT_ADDR`, `AWS_ENDPOINT_URL`).
    pub fn var(&self, key: &str) -> Result<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::MissingVar {
                path: self.dir.join("env"),
                key: key.to_owned(),
            })
    }

    /// All variables of the env file, e.g. to pass to a child process.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    /// The state directory (env file, kubeconfig, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the kubeconfig, with contexts `sigil` (admin) and `sigil-unprivileged`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A Kubernetes client for the kubeconfig context `context`.
    pub async fn kube_client_for(&self, context: &str) -> Result<Client> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| Error::KubeConfig {
            context: context.to_owned(),
            source,
        };
        let kubeconfig =
            Kubeconfig::read_from(self.kubeconfig_path()).map_err(|e| err(e.into()))?;
        let options = KubeConfigOptions {
            context: Some(context.to_owned()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| err(e.into()))?;
        Client::try_from(config).map_err(|e| err(e.into()))
    }

    /// A Kubernetes client authenticated as the admin (group `system:masters`).
    pub async fn kube_admin(&self) -> Result<Client> {
        self.kube_client_for("sigil").await
    }

    /// A Kubernetes client authenticated as the user that RBAC grants nothing.
    pub async fn kube_unprivileged(&self) -> Result<Client> {
        self.kube_client_for("sigil-unprivileged").await
    }

    /// A Vault (OpenBao) client with `token`, or with the root token when `None`.
    pub fn vault_client(&self, token: Option<&str>) -> Result<VaultClient> {
        let addr = self.var("VAULT_ADDR")?.to_owned();
        let token = match token {
            Some(t) => t.to_owned(),
            None => self.var("VAULT_TOKEN")?.to_owned(),
        };
        let err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Vault {
            addr: addr.clone(),
            source,
        };
        let settings = VaultClientSettingsBuilder::default()
            .address(&addr)
            .token(token)
            .build()
            .map_err(|e| err(e.into()))?;
        VaultClient::new(settings).map_err(|e| err(e.into()))
    }

    /// OpenBao's audit log entries (`SIGIL_VAULT_AUDIT_LOG`), one JSON value a line.
    pub fn vault_audit(&self) -> Result<Vec<serde_json::Value>> {
        let path = PathBuf::from(self.var("SIGIL_VAULT_AUDIT_LOG")?);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::EnvFile {
            path: path.clone(),
            source,
        })?;
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// Successful responses in the audit log to `path` whose token metadata has `key` =
    /// `value`, e.g. `auth/approle/login` with `role_name` = a test's own role. Only
    /// successful logins and renewals carry metadata.
    pub fn vault_audited_responses(&self, path: &str, key: &str, value: &str) -> Result<usize> {
        Ok(self
            .vault_audit()?
            .iter()
            .filter(|entry| entry["type"] == "response")
            .filter(|entry| entry["request"]["path"] == path)
            .filter(|entry| entry["auth"]["metadata"][key] == value)
            .count())
    }

    /// Requests in the audit log whose path starts with `prefix`.
    pub fn vault_audited_requests(&self, prefix: &str) -> Result<usize> {
        Ok(self
            .vault_audit()?
            .iter()
            .filter(|entry| entry["type"] == "request")
            .filter(|entry| {
                entry["request"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(prefix))
            })
            .count())
    }

    /// An AWS Secrets Manager client pointed at the moto server.
    pub fn secretsmanager(&self) -> Result<aws_sdk_secretsmanager::Client> {
        self.secretsmanager_with(None)
    }

    /// Credentials of moto's account `account` (12 digits), from STS AssumeRole of a
    /// role there: moto keeps each account's secrets apart and tells them by the key.
    /// `(access key id, secret access key, session token)`.
    pub async fn account_credentials(&self, account: &str) -> Result<(String, String, String)> {
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new(
                self.var("AWS_REGION")?.to_owned(),
            ))
            .endpoint_url(self.var("AWS_ENDPOINT_URL")?)
            .credentials_provider(self.credentials(None)?)
            .build();
        let assumed = aws_sdk_sts::Client::from_conf(config)
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/sigil-tests"))
            .role_session_name("sigil-tests")
            .send()
            .await
            .map_err(|e| Error::Aws(format!("AssumeRole in account {account}: {}", Report(&e))))?;
        let c = assumed
            .credentials
            .ok_or_else(|| Error::Aws("AssumeRole returned no credentials".to_owned()))?;
        Ok((c.access_key_id, c.secret_access_key, c.session_token))
    }

    /// An AWS Secrets Manager client of moto with the given credentials (the
    /// environment's when `None`).
    pub fn secretsmanager_with(
        &self,
        credentials: Option<(&str, &str, &str)>,
    ) -> Result<aws_sdk_secretsmanager::Client> {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.var("AWS_REGION")?.to_owned()))
            .endpoint_url(self.var("AWS_ENDPOINT_URL")?)
            .credentials_provider(self.credentials(credentials)?)
            .build();
        Ok(aws_sdk_secretsmanager::Client::from_conf(config))
    }

    fn credentials(&self, given: Option<(&str, &str, &str)>) -> Result<Credentials> {
        Ok(match given {
            Some((id, secret, token)) => {
                Credentials::new(id, secret, Some(token.to_owned()), None, "sigil-tests")
            }
            None => Credentials::new(
                self.var("AWS_ACCESS_KEY_ID")?,
                self.var("AWS_SECRET_ACCESS_KEY")?,
                None,
                None,
                "sigil-tests",
            ),
        })
    }
}

/// Formats an error with its chain of sources.
struct Report<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this test in this run: lowercase, digits and `-`.
fn unique_id(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = (std::process::id() ^ nanos ^ n.wrapping_mul(0x9e37_79b9)) & 0xff_ffff;
    let mut base: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    format!("t-{base}-{salt:06x}")
}

/// One test's own corner of every server, cleaned up on drop.
///
/// The namespace is created by [`TestContext::new`]. On drop the harness deletes the
/// SealedSecrets, ExternalSecrets and SecretStores in it, dropping finalizers no
/// controller is left to remove, then the namespace (kube-controller-manager's namespace
/// controller deletes the rest of its content; the harness does not wait), every CRD
/// registered with [`TestContext::track_crd`], every ClusterSecretStore registered with
/// [`TestContext::track_cluster_store`], every ClusterExternalSecret registered with
/// [`TestContext::track_cluster_external_secret`], every KV v2 secret under
/// [`TestContext::vault_prefix`] and every AWS secret whose name starts with
/// [`TestContext::aws_prefix`].
pub struct TestContext {
    /// The environment.
    pub env: &'static Env,
    /// Unique id of this test in this run (also the namespace name).
    pub id: String,
    /// The test's own Kubernetes namespace.
    pub namespace: String,
    /// The test's own path prefix in the KV v2 mount `secret` (no trailing `/`).
    pub vault_prefix: String,
    /// The test's own name prefix for AWS Secrets Manager (ends with `/`).
    pub aws_prefix: String,
    /// An admin Kubernetes client.
    pub kube: Client,
    crds: Mutex<Vec<String>>,
    cluster_stores: Mutex<Vec<String>>,
    cluster_external_secrets: Mutex<Vec<String>>,
}

impl std::fmt::Debug for TestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestContext")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .field("vault_prefix", &self.vault_prefix)
            .field("aws_prefix", &self.aws_prefix)
            .finish_non_exhaustive()
    }
}

impl TestContext {
    /// Starts (or joins) the environment and creates the test's namespace.
    pub async fn new(test: &str) -> Result<TestContext> {
        let env = Env::get();
        let id = unique_id(test);
        let kube = env.kube_admin().await?;
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(id.clone()),
                labels: Some(BTreeMap::from([(
                    "sigil.dev/test".to_owned(),
                    "true".to_owned(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(kube.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| Error::Kube {
                what: format!("creating namespace {id}"),
                source,
            })?;
        Ok(TestContext {
            env,
            namespace: id.clone(),
            vault_prefix: format!("sigil-tests/{id}"),
            aws_prefix: format!("sigil-tests/{id}/"),
            id,
            kube,
            crds: Mutex::new(Vec::new()),
            cluster_stores: Mutex::new(Vec::new()),
            cluster_external_secrets: Mutex::new(Vec::new()),
        })
    }

    /// Registers a cluster-scoped CRD (by name) to delete when the context drops.
    pub fn track_crd(&self, name: &str) {
        self.crds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_owned());
    }

    /// Registers a ClusterSecretStore (by name) to delete when the context drops.
    pub fn track_cluster_store(&self, name: &str) {
        self.cluster_stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_owned());
    }

    /// Registers a ClusterExternalSecret (by name) to delete when the context drops; the
    /// garbage collector then deletes the ExternalSecrets it owns.
    pub fn track_cluster_external_secret(&self, name: &str) {
        self.cluster_external_secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_owned());
    }

    /// Creates the ServiceAccount `name` with `annotations` in the test's namespace.
    pub async fn create_service_account(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> Result<ServiceAccount> {
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.kube.clone(), &self.namespace)
            .create(&PostParams::default(), &sa)
            .await
            .map_err(|source| Error::Kube {
                what: format!("creating ServiceAccount {name}"),
                source,
            })
    }

    /// Creates the ServiceAccount `name` in the test's namespace and returns an hour's
    /// token for it (the API server's audience), to act as that account.
    pub async fn service_account_token(&self, name: &str) -> Result<String> {
        self.create_service_account(name, &[]).await?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let minted = Api::<ServiceAccount>::namespaced(self.kube.clone(), &self.namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|source| Error::Kube {
                what: format!("requesting a token for ServiceAccount {name}"),
                source,
            })?;
        // The API server always answers a TokenRequest with its status.
        Ok(minted.status.map(|s| s.token).unwrap_or_default())
    }

    /// A name for a test's own API group, e.g. for a CRD: `<id>.sigil.test`.
    pub fn api_group(&self) -> String {
        format!("{}.sigil.test", self.id)
    }

    async fn cleanup(
        env: &Env,
        namespace: &str,
        vault_prefix: &str,
        aws_prefix: &str,
        crds: &[String],
        cluster_stores: &[String],
        cluster_external_secrets: &[String],
    ) {
        let warn = |what: &str, e: &dyn std::error::Error| {
            eprintln!("sigil-tests cleanup: {what}: {}", Report(e));
        };
        match env.kube_admin().await {
            Ok(client) => {
                for crd in crds {
                    let api = Api::<CustomResourceDefinition>::all(client.clone());
                    if let Err(e) = api.delete(crd, &DeleteParams::default()).await {
                        warn(&format!("deleting CRD {crd}"), &e);
                    }
                }
                for resource in namespaced_sigil_resources() {
                    let api =
                        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
                    if let Err(e) = delete_all(&api, &[]).await {
                        warn(&format!("deleting {} in {namespace}", resource.plural), &e);
                    }
                }
                if !cluster_stores.is_empty() {
                    let resource = ApiResource::erase::<sigil_types::ClusterSecretStore>(&());
                    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                    if let Err(e) = delete_all(&api, cluster_stores).await {
                        warn("deleting ClusterSecretStores", &e);
                    }
                }
                if !cluster_external_secrets.is_empty() {
                    let resource = ApiResource::erase::<sigil_types::ClusterExternalSecret>(&());
                    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                    if let Err(e) = delete_all(&api, cluster_external_secrets).await {
                        warn("deleting ClusterExternalSecrets", &e);
                    }
                }
                // The namespace controller empties the namespace, then removes it.
                let nss = Api::<Namespace>::all(client);
                if let Err(e) = nss.delete(namespace, &DeleteParams::default()).await {
                    warn(&format!("deleting namespace {namespace}"), &e);
                }
            }
            Err(e) => warn("connecting to kube-apiserver", &e),
        }
        match env.vault_client(None) {
            Ok(vault) => {
                let mut stack = vec![format!("{vault_prefix}/")];
                while let Some(dir) = stack.pop() {
                    let Ok(keys) = vaultrs::kv2::list(&vault, "secret", &dir).await else {
                        continue;
                    };
                    for key in keys {
                        let path = format!("{dir}{key}");
                        if key.ends_with('/') {
                            stack.push(path);
                        } else if let Err(e) =
                            vaultrs::kv2::delete_metadata(&vault, "secret", &path).await
                        {
                            warn(&format!("deleting Vault secret {path}"), &e);
                        }
                    }
                }
            }
            Err(e) => warn("connecting to OpenBao", &e),
        }
        match env.secretsmanager() {
            Ok(sm) => {
                let filter = aws_sdk_secretsmanager::types::Filter::builder()
                    .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                    .values(aws_prefix)
                    .build();
                let mut next = None;
                loop {
                    let page = match sm
                        .list_secrets()
                        .filters(filter.clone())
                        .set_next_token(next.take())
                        .send()
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            warn("listing AWS secrets", &e);
                            break;
                        }
                    };
                    for s in page.secret_list() {
                        let Some(name) = s.name().filter(|n| n.starts_with(aws_prefix)) else {
                            continue;
                        };
                        if let Err(e) = sm
                            .delete_secret()
                            .secret_id(name)
                            .force_delete_without_recovery(true)
                            .send()
                            .await
                        {
                            warn(&format!("deleting AWS secret {name}"), &e);
                        }
                    }
                    next = page.next_token().map(str::to_owned);
                    if next.is_none() {
                        break;
                    }
                }
            }
            Err(e) => warn("connecting to moto", &e),
        }
    }
}

/// Deletes the custom resources `names` of `api` (all of them when `names` is empty,
/// with one delete-collection), then drops the finalizers of any left behind, since the
/// controller that would remove them may be gone. A CRD that is not installed, or an
/// object already gone, is not an error.
async fn delete_all(api: &Api<DynamicObject>, names: &[String]) -> Result<(), kube::Error> {
    let absent = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    let dp = DeleteParams::default();
    let left: Vec<String> = if names.is_empty() {
        let lp = ListParams::default();
        match api.delete_collection(&dp, &lp).await {
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let list = api.list_metadata(&lp).await?;
        list.items.iter().map(ResourceExt::name_any).collect()
    } else {
        for name in names {
            match api.delete(name, &dp).await {
                Err(e) if !absent(&e) => return Err(e),
                _ => {}
            }
        }
        names.to_vec()
    };
    let no_finalizers = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
    for name in &left {
        match api
            .patch(name, &PatchParams::default(), &no_finalizers)
            .await
        {
            Err(e) if !absent(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl Drop for TestContext {
    fn drop(&mut self) {
        let env = self.env;
        let namespace = self.namespace.clone();
        let vault_prefix = self.vault_prefix.clone();
        let aws_prefix = self.aws_prefix.clone();
        let crds = std::mem::take(&mut *self.crds.lock().unwrap_or_else(|e| e.into_inner()));
        let cluster_stores = std::mem::take(
            &mut *self
                .cluster_stores
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let cluster_external_secrets = std::mem::take(
            &mut *self
                .cluster_external_secrets
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        // Drop cannot await, and the test's runtime may be single-threaded or shutting
        // down: clean up on a thread with a runtime of its own, and wait for it.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for cleanup");
            rt.block_on(TestContext::cleanup(
                env,
                &namespace,
                &vault_prefix,
                &aws_prefix,
                &crds,
                &cluster_stores,
                &cluster_external_secrets,
            ));
        })
        .join();
        if joined.is_err() {
            eprintln!("sigil-tests cleanup of {} panicked", self.id);
        }
    }
}

/// A loopback address with a port free at the time of asking.
pub fn free_addr() -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// GET on a plain-HTTP server: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}
