//! Vault (and OpenBao) KV version 2: one long-lived session per store.
//!
//! A session logs in lazily on first use and shares its token with every caller.
//! Before the token gets old (at two thirds of its lease) it is renewed with
//! `auth/token/renew-self`; only when renewal is refused, the token is not renewable,
//! or it reached its maximum TTL does the session log in again. Logins are
//! single-flight: callers that arrive while one is under way wait for it and use its
//! token (or its error). A read refused with 403 on a token from a login retries once
//! after a fresh login, since the token may have been revoked. A static token is used
//! as given and never logs in.
//!
//! For rotation a session also writes: [`VaultSession::write`] adds a version with
//! check-and-set, [`VaultSession::metadata`] and [`VaultSession::mark`] read and merge
//! a secret's `custom_metadata`, where a rotation records its progress.
//!
//! The session's behaviour depends only on [`VaultConfig`]: none of vaultrs' defaults
//! from `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT` or `VAULT_SKIP_VERIFY` apply. The
//! HTTP client is built here from the configured CA bundle, without temporary files.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Url;
use rustify::endpoint::{Endpoint, MiddleWare};
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use rustify::errors::ClientError as RestError;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use vaultrs::api::kv2::requests::{
    ListSecretsRequest, ReadSecretMetadataRequest, ReadSecretRequest,
};
use vaultrs::api::{EndpointError, EndpointMiddleware};
use vaultrs::client::{VaultClient, VaultClientSettings};
use vaultrs::error::ClientError;
use zeroize::{Zeroize, Zeroizing};

use crate::versioned::{Mark, VersionError, Versioned, doing};
use crate::{Error, ErrorKind, Observer, Operation, Provider, RemoteValue, Result, TokenSource};

const VAULT: Provider = Provider::Vault;

/// How long a token may be used before it is renewed: this fraction of its lease.
const REFRESH_NUM: u32 = 2;
const REFRESH_DEN: u32 = 3;

/// What rotation needs from a KV v2 secret's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMetadata {
    /// The latest version's number (0 for a secret with metadata but no version yet).
    pub current_version: u64,
    /// The secret's `custom_metadata`: labels, never secret values.
    pub custom_metadata: BTreeMap<String, String>,
}

/// How a session connects to Vault.
#[derive(Clone)]
pub struct VaultConfig {
    /// The server's base URL, `http://` or `https://` (e.g. `https://vault.example:8200`).
    pub server: String,
    /// The path of the KV version 2 mount (e.g. `secret`).
    pub mount: String,
    /// The Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM certificates to trust for an `https` server instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// How the session authenticates.
    pub auth: VaultAuth,
    /// Timeout of each HTTP request (connect included).
    pub timeout: Duration,
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConfig")
            .field("server", &self.server)
            .field("mount", &self.mount)
            .field("namespace", &self.namespace)
            .field("ca_pem_len", &self.ca_pem.as_ref().map(Vec::len))
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How a session authenticates to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    /// A token used as given; the session never logs in (nor renews it).
    Token(SecretString),
    /// The Kubernetes auth method: log in with a fresh ServiceAccount JWT each time.
    Kubernetes {
        /// The auth mount's path, without `auth/` (e.g. `kubernetes`).
        mount_path: String,
        /// The Vault role to log in as.
        role: String,
        /// Produces the JWT for each login.
        jwt: TokenSource,
    },
    /// The AppRole auth method.
    AppRole {
        /// The auth mount's path, without `auth/` (e.g. `approle`).
        mount_path: String,
        /// The role's RoleID.
        role_id: String,
        /// The SecretID.
        secret_id: SecretString,
    },
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("Token(..)"),
            VaultAuth::Kubernetes {
                mount_path, role, ..
            } => f
                .debug_struct("Kubernetes")
                .field("mount_path", mount_path)
                .field("role", role)
                .finish_non_exhaustive(),
            VaultAuth::AppRole {
                mount_path,
                role_id,
                ..
            } => f
                .debug_struct("AppRole")
                .field("mount_path", mount_path)
                .field("role_id", role_id)
                .finish_non_exhaustive(),
        }
    }
}

/// How the session logs in (validated form of [`VaultAuth`]).
enum Login {
    Static,
    Kubernetes {
        mount: String,
        role: String,
        jwt: TokenSource,
    },
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretString,
    },
}

/// A vaultrs client bound to one token; the token is zeroized on drop.
struct TokenClient(VaultClient);

impl Drop for TokenClient {
    fn drop(&mut self) {
        self.0.middle.token.zeroize();
        self.0.settings.token.zeroize();
    }
}

/// The token in use and when to renew it.
struct Held {
    client: Arc<TokenClient>,
    /// Which login produced it (0 for a static token).
    generation: u64,
    /// When to renew or log in again; `None`: never.
    refresh_at: Option<Instant>,
    /// When the token stops working; `None`: never.
    expires_at: Option<Instant>,
    /// Whether renew-self may extend it further.
    renewable: bool,
    /// The lease the login granted: a renewal granting less has hit the maximum TTL.
    granted: Duration,
}

impl Held {
    fn fresh(&self, now: Instant) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }

    fn usable(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    fn handle(&self) -> (Arc<TokenClient>, u64) {
        (self.client.clone(), self.generation)
    }

    /// Sets the lease from a login or renewal answer received at `now`.
    fn set_lease(&mut self, now: Instant, lease: Duration) {
        if lease.is_zero() {
            self.refresh_at = None;
            self.expires_at = None;
        } else {
            self.refresh_at = Some(now + lease * REFRESH_NUM / REFRESH_DEN);
            self.expires_at = Some(now + lease);
        }
    }

    /// Keeps the token a little longer after a renewal or login that could not
    /// reach Vault, and tries again soon.
    fn postpone(&mut self, now: Instant) {
        let remaining = self
            .expires_at
            .map_or(Duration::MAX, |at| at.saturating_duration_since(now));
        self.refresh_at = Some(now + (remaining / 2).min(Duration::from_secs(5)));
    }
}

struct State {
    held: Option<Held>,
    /// The error of the last login, for callers that waited for it.
    last_failure: Option<Error>,
}

/// A long-lived session with one Vault server and KV v2 mount.
///
/// `Send + Sync`: share it behind an `Arc`. Every login, renewal, read and check is
/// reported to the session's [`Observer`].
pub struct VaultSession {
    http: reqwest::Client,
    base: String,
    settings: VaultClientSettings,
    namespace: Option<String>,
    mount: String,
    login: Login,
    /// An unauthenticated client for logins.
    anonymous: TokenClient,
    state: tokio::sync::Mutex<State>,
    observer: Arc<dyn Observer>,
    logins: AtomicU64,
    generations: AtomicU64,
    /// Login attempts finished, to tell waiters that one happened while they waited.
    attempts: AtomicU64,
}

impl fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSession")
            .field("server", &self.base)
            .field("mount", &self.mount)
            .field("namespace", &self.namespace)
            .field("logins", &self.logins())
            .finish_non_exhaustive()
    }
}

impl VaultSession {
    /// Validates `config` and builds the HTTP client; no network I/O happens here.
    ///
    /// Fails with [`Error::InvalidConfig`] naming the field for a server that is not
    /// an `http`/`https` URL, a CA bundle without a PEM certificate, an empty mount,
    /// role or RoleID, or a token or namespace that cannot be sent in an HTTP header.
    pub fn new(config: VaultConfig, observer: Arc<dyn Observer>) -> Result<Self> {
        let address = parse_server(&config.server)?;
        let mount = clean_path(&config.mount);
        if mount.is_empty() {
            return Err(invalid(
                "path",
                "is empty; name the KV v2 mount, e.g. `secret`",
            ));
        }
        let namespace = match config.namespace.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(ns) if header_safe(ns) => Some(ns.to_owned()),
            Some(_) => {
                return Err(invalid(
                    "namespace",
                    "contains a character that cannot be sent in an HTTP header",
                ));
            }
        };
        if config.timeout.is_zero() {
            return Err(invalid("timeout", "is zero; give a positive duration"));
        }
        let http = http_client(&address, config.ca_pem.as_deref(), config.timeout)?;
        let mut base = address.as_str().to_owned();
        if address.path() != "/" {
            while base.ends_with('/') {
                base.pop();
            }
        }
        // Every field is set here: no default is read from VAULT_* variables.
        let settings = VaultClientSettings {
            address,
            ca_certs: Vec::new(),
            identity: None,
            timeout: Some(config.timeout),
            token: String::new(),
            verify: true,
            version: 1,
            wrapping: false,
            namespace: namespace.clone(),
            proxy: None,
        };
        let (login, static_token) = match config.auth {
            VaultAuth::Token(token) => {
                let token = Zeroizing::new(token.expose_secret().trim().to_owned());
                if token.is_empty() {
                    return Err(invalid("auth.tokenSecretRef", "is empty"));
                }
                if !header_safe(&token) {
                    return Err(invalid(
                        "auth.tokenSecretRef",
                        "contains a character that cannot be sent in an HTTP header",
                    ));
                }
                (Login::Static, Some(token))
            }
            VaultAuth::Kubernetes {
                mount_path,
                role,
                jwt,
            } => {
                let mount = auth_mount(&mount_path, "auth.kubernetes.mountPath")?;
                if role.trim().is_empty() {
                    return Err(invalid(
                        "auth.kubernetes.role",
                        "is empty; name the Vault role",
                    ));
                }
                let role = role.trim().to_owned();
                (Login::Kubernetes { mount, role, jwt }, None)
            }
            VaultAuth::AppRole {
                mount_path,
                role_id,
                secret_id,
            } => {
                let mount = auth_mount(&mount_path, "auth.appRole.path")?;
                if role_id.trim().is_empty() {
                    return Err(invalid("auth.appRole.roleId", "is empty"));
                }
                if secret_id.expose_secret().is_empty() {
                    return Err(invalid("auth.appRole.secretRef", "is empty"));
                }
                let role_id = role_id.trim().to_owned();
                (
                    Login::AppRole {
                        mount,
                        role_id,
                        secret_id,
                    },
                    None,
                )
            }
        };
        let mut session = VaultSession {
            anonymous: TokenClient(VaultClient {
                http: rustify::clients::reqwest::Client::new(&base, http.clone()),
                middle: middleware(String::new(), &namespace),
                settings: settings.clone(),
            }),
            http,
            base,
            settings,
            namespace,
            mount,
            login,
            state: tokio::sync::Mutex::new(State {
                held: None,
                last_failure: None,
            }),
            observer,
            logins: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        };
        if let Some(token) = static_token {
            let client = Arc::new(session.client_with(token));
            session.state.get_mut().held = Some(Held {
                client,
                generation: 0,
                refresh_at: None,
                expires_at: None,
                renewable: false,
                granted: Duration::ZERO,
            });
        }
        Ok(session)
    }

    /// Makes sure a valid token is held, logging in or renewing if needed, and proves
    /// it with `auth/token/lookup-self` (reported as [`Operation::Check`]).
    ///
    /// For a store's Ready condition.
    pub async fn check(&self) -> Result<()> {
        self.with_token(Operation::Check, |client| async move {
            vaultrs::token::lookup_self(&client.0)
                .await
                .map(|mut answer| answer.id.zeroize())
                .map_err(|e| map_client_error(e, Operation::Check, "", None))
        })
        .await
    }

    /// Reads `key` (a path below the mount) from KV v2, at `version` or the latest.
    ///
    /// The value is the version's `data` object serialized as JSON and the version
    /// is KV's version number. A missing key, a missing version and a deleted or
    /// destroyed version are [`Error::NotFound`].
    pub async fn read(&self, key: &str, version: Option<u64>) -> Result<RemoteValue> {
        let key = remote_key(key)?;
        let key = key.as_str();
        self.with_token(Operation::Read, |client| async move {
            self.kv_get(&client, key, version).await
        })
        .await
    }

    /// Reads `key`'s KV v2 metadata (`GET <mount>/metadata/<key>`, reported as
    /// [`Operation::Describe`]): its latest version and its `custom_metadata`.
    ///
    /// A key that does not exist is [`Error::NotFound`].
    pub async fn metadata(&self, key: &str) -> Result<KvMetadata> {
        let key = remote_key(key)?;
        let key = key.as_str();
        self.with_token(Operation::Describe, |client| async move {
            let endpoint = ReadSecretMetadataRequest::builder()
                .mount(self.mount.as_str())
                .path(key)
                .build()
                .map_err(unformable)?;
            let answer = vaultrs::api::exec_with_result(&client.0, endpoint)
                .await
                .map_err(|e| map_client_error(e, Operation::Describe, key, None))?;
            Ok(KvMetadata {
                current_version: answer.current_version,
                custom_metadata: answer
                    .custom_metadata
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })
        })
        .await
    }

    /// Every key below `path` (below the mount; all of them when empty), folders walked
    /// recursively, one `LIST <mount>/metadata/<folder>` each (reported as
    /// [`Operation::List`]); stops once more than `limit` are found. A folder that does
    /// not exist has no keys.
    pub async fn list(&self, path: &str, limit: usize) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut folders = vec![clean_path(path)];
        while let Some(folder) = folders.pop() {
            let listed = self
                .with_token(Operation::List, |client| {
                    let folder = folder.clone();
                    async move {
                        let endpoint = ListSecretsRequest::builder()
                            .mount(self.mount.as_str())
                            .path(folder.as_str())
                            .build()
                            .map_err(unformable)?;
                        vaultrs::api::exec_with_result(&client.0, endpoint)
                            .await
                            .map(|answer| answer.keys)
                            .map_err(|e| map_client_error(e, Operation::List, &folder, None))
                    }
                })
                .await;
            let entries = match listed {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let full = if folder.is_empty() {
                    entry
                } else {
                    format!("{folder}/{entry}")
                };
                match full.strip_suffix('/') {
                    Some(sub) => folders.push(sub.to_owned()),
                    None => found.push(full),
                }
                if found.len() > limit {
                    return Ok(found);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Sets `entries` in `key`'s `custom_metadata` and keeps every other entry
    /// (reported as [`Operation::Write`]).
    ///
    /// One JSON merge patch (`PATCH <mount>/metadata/<key>`), which OpenBao 2.x and
    /// Vault 1.9+ apply atomically, so concurrent marks of different entries do not
    /// lose each other; the token needs the `patch` capability on the metadata path.
    /// A key that does not exist is [`Error::NotFound`]; no entries is no request.
    /// Entries are labels, not secrets: they may appear in errors.
    pub async fn mark(&self, key: &str, entries: &[(&str, &str)]) -> Result<()> {
        let key = remote_key(key)?;
        if entries.is_empty() {
            return Ok(());
        }
        let custom: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Value::from(*value)))
            .collect();
        let body = serde_json::json!({ "custom_metadata": custom }).to_string();
        let (key, body) = (key.as_str(), body.as_bytes());
        self.with_token(Operation::Write, |client| async move {
            RawJson {
                method: RequestMethod::PATCH,
                path: format!("{}/metadata/{key}", self.mount),
                body,
            }
            .with_middleware(&MergePatch(&client.0.middle))
            .exec(&client.0.http)
            .await
            .map(drop)
            .map_err(|e| map_client_error(api_error(e), Operation::Write, key, None))
        })
        .await
    }

    /// Writes `data` as a new version of `key` with check-and-set `cas`
    /// (`POST <mount>/data/<key>`, reported as [`Operation::Write`]) and returns the
    /// new version's number.
    ///
    /// `data` is a JSON object, e.g. [`RemoteValue::bytes`] of a read, and is sent as
    /// given, not re-serialized. `cas` is the version the caller read (0: the key must
    /// not exist yet); when it is no longer the latest, Vault refuses, nothing is
    /// written and the result is [`Error::Conflict`]. `data` that is not a JSON object
    /// is [`Error::InvalidConfig`] for `value`, without a request.
    ///
    /// Memory: `data` is checked and framed in zeroizing buffers, but rustify's
    /// `Endpoint::body` hands the HTTP stack an owned copy of the request body, which
    /// reqwest and hyper drop without zeroizing (one copy per attempt).
    pub async fn write(&self, key: &str, data: &[u8], cas: u64) -> Result<u64> {
        let key = remote_key(key)?;
        json_object(data)?;
        let head = format!(r#"{{"options":{{"cas":{cas}}},"data":"#);
        let mut body = Zeroizing::new(Vec::with_capacity(head.len() + data.len() + 1));
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(data);
        body.push(b'}');
        let cas = cas.to_string();
        let (key, body, cas) = (key.as_str(), body.as_slice(), cas.as_str());
        self.with_token(Operation::Write, |client| async move {
            let endpoint = RawJson {
                method: RequestMethod::POST,
                path: format!("{}/data/{key}", self.mount),
                body,
            };
            let answer = vaultrs::api::exec_with_result(&client.0, endpoint)
                .await
                .map_err(|e| map_client_error(e, Operation::Write, key, Some(cas)))?;
            answer
                .get("version")
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::Unavailable {
                    provider: VAULT,
                    operation: Operation::Write,
                    detail: "the answer carries no version number".to_owned(),
                })
        })
        .await
    }

    /// Logins this session has attempted so far (requests to a login endpoint).
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// Runs one request with the current token, reporting it as `operation`; when it
    /// is refused with 403 and the token came from a login, logs in again and retries
    /// once.
    async fn with_token<T, F, Fut>(&self, operation: Operation, request: F) -> Result<T>
    where
        F: Fn(Arc<TokenClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let (client, generation) = self.token().await?;
        let started = Instant::now();
        let result = crate::report(
            &*self.observer,
            VAULT,
            operation,
            started,
            request(client).await,
        );
        match result {
            Err(Error::AuthFailed { .. }) if !matches!(self.login, Login::Static) => {
                tracing::debug!(
                    server = %self.base,
                    "Vault refused the token from a login; logging in again"
                );
                let (client, _) = self.relogin(generation).await?;
                let started = Instant::now();
                crate::report(
                    &*self.observer,
                    VAULT,
                    operation,
                    started,
                    request(client).await,
                )
            }
            other => other,
        }
    }

    async fn kv_get(
        &self,
        client: &TokenClient,
        key: &str,
        version: Option<u64>,
    ) -> Result<RemoteValue> {
        let asked = version.map(|v| v.to_string());
        let not_found = || Error::NotFound {
            provider: VAULT,
            key: key.to_owned(),
            version: asked.clone(),
        };
        let endpoint = ReadSecretRequest::builder()
            .mount(self.mount.as_str())
            .path(key)
            .version(version)
            .build()
            .map_err(unformable)?;
        let mut answer = vaultrs::api::exec_with_result(&client.0, endpoint)
            .await
            .map_err(|e| map_client_error(e, Operation::Read, key, asked.as_deref()))?;
        let meta = &answer.metadata;
        if answer.data.is_null() || meta.destroyed || !meta.deletion_time.is_empty() {
            scrub(&mut answer.data);
            return Err(not_found());
        }
        let bytes = serde_json::to_vec(&answer.data);
        scrub(&mut answer.data);
        let bytes = bytes.map_err(|_| Error::Unavailable {
            provider: VAULT,
            operation: Operation::Read,
            detail: "the secret's data could not be serialized as JSON".to_owned(),
        })?;
        Ok(RemoteValue::new(bytes, answer.metadata.version.to_string()))
    }

    /// The token to use now, logging in or renewing first when it is missing or old.
    async fn token(&self) -> Result<(Arc<TokenClient>, u64)> {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(held) = &state.held
            && held.fresh(now)
        {
            return Ok(held.handle());
        }
        // A login finished (and failed) while we waited: share its outcome.
        if self.attempts.load(Ordering::Acquire) != seen
            && let Some(err) = &state.last_failure
        {
            return match &state.held {
                Some(held) if held.usable(now) => Ok(held.handle()),
                _ => Err(err.clone()),
            };
        }
        if let Some(held) = state.held.as_mut()
            && held.renewable
            && held.usable(now)
        {
            match self.renew(held).await {
                Ok(()) => return Ok(held.handle()),
                Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Throttled) => {
                    // Vault is busy or away: keep the token while it lasts.
                    held.postpone(Instant::now());
                    return Ok(held.handle());
                }
                Err(_) => {}
            }
        }
        self.login_locked(&mut state).await
    }

    /// Logs in again after the token of login `generation` was refused, unless another
    /// caller already did.
    async fn relogin(&self, generation: u64) -> Result<(Arc<TokenClient>, u64)> {
        let mut state = self.state.lock().await;
        if let Some(held) = &state.held
            && held.generation != generation
            && held.usable(Instant::now())
        {
            return Ok(held.handle());
        }
        state.held = None;
        self.login_locked(&mut state).await
    }

    async fn login_locked(&self, state: &mut State) -> Result<(Arc<TokenClient>, u64)> {
        let result = self.login().await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(held) => {
                let handle = held.handle();
                state.held = Some(held);
                state.last_failure = None;
                Ok(handle)
            }
            Err(e) => {
                state.last_failure = Some(e.clone());
                let now = Instant::now();
                match state.held.as_mut() {
                    // Could not reach Vault, but the old token still works for a while.
                    Some(held)
                        if held.usable(now)
                            && matches!(
                                e.kind(),
                                ErrorKind::Unavailable | ErrorKind::Throttled
                            ) =>
                    {
                        held.postpone(now);
                        Ok(held.handle())
                    }
                    _ => {
                        state.held = None;
                        Err(e)
                    }
                }
            }
        }
    }

    /// One login request; reported as [`Operation::Login`].
    async fn login(&self) -> Result<Held> {
        let started = Instant::now();
        let answer = match &self.login {
            Login::Static => {
                return Err(invalid(
                    "auth.tokenSecretRef",
                    "a static token cannot log in",
                ));
            }
            Login::Kubernetes { mount, role, jwt } => {
                let token = match jwt().await {
                    Ok(token) => token,
                    Err(detail) => {
                        let e = Error::AuthFailed {
                            provider: VAULT,
                            operation: Operation::Login,
                            detail: format!(
                                "the ServiceAccount token could not be obtained: {detail}"
                            ),
                        };
                        return crate::report(
                            &*self.observer,
                            VAULT,
                            Operation::Login,
                            started,
                            Err(e),
                        );
                    }
                };
                self.logins.fetch_add(1, Ordering::Relaxed);
                vaultrs::auth::kubernetes::login(
                    &self.anonymous.0,
                    mount,
                    role,
                    token.expose_secret(),
                )
                .await
            }
            Login::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                self.logins.fetch_add(1, Ordering::Relaxed);
                vaultrs::auth::approle::login(
                    &self.anonymous.0,
                    mount,
                    role_id,
                    secret_id.expose_secret(),
                )
                .await
            }
        };
        let result = answer
            .map_err(|e| map_client_error(e, Operation::Login, "", None))
            .and_then(|mut auth| {
                let token = Zeroizing::new(std::mem::take(&mut auth.client_token));
                if token.is_empty() || !header_safe(&token) {
                    return Err(Error::AuthFailed {
                        provider: VAULT,
                        operation: Operation::Login,
                        detail: "the login answer carries no usable token".to_owned(),
                    });
                }
                let now = Instant::now();
                let lease = Duration::from_secs(auth.lease_duration);
                let mut held = Held {
                    client: Arc::new(self.client_with(token)),
                    generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
                    refresh_at: None,
                    expires_at: None,
                    renewable: auth.renewable,
                    granted: lease,
                };
                held.set_lease(now, lease);
                tracing::debug!(
                    server = %self.base,
                    lease_secs = auth.lease_duration,
                    renewable = auth.renewable,
                    "logged in to Vault"
                );
                Ok(held)
            });
        crate::report(&*self.observer, VAULT, Operation::Login, started, result)
    }

    /// One renew-self request for `held`; reported as [`Operation::Renew`].
    async fn renew(&self, held: &mut Held) -> Result<()> {
        let started = Instant::now();
        let result = vaultrs::token::renew_self(&held.client.0, None)
            .await
            .map_err(|e| map_client_error(e, Operation::Renew, "", None));
        let result = crate::report(&*self.observer, VAULT, Operation::Renew, started, result);
        let mut auth = result?;
        auth.client_token.zeroize();
        let lease = Duration::from_secs(auth.lease_duration);
        held.set_lease(Instant::now(), lease);
        // Granted clearly less than at login: the token hit its maximum TTL; log in
        // next time instead of renewing an ever shorter lease.
        let slack = (held.granted / 10).max(Duration::from_secs(1));
        held.renewable = auth.renewable && !lease.is_zero() && lease + slack >= held.granted;
        tracing::debug!(
            server = %self.base,
            lease_secs = auth.lease_duration,
            renewable = held.renewable,
            "renewed the Vault token"
        );
        Ok(())
    }

    fn client_with(&self, token: Zeroizing<String>) -> TokenClient {
        TokenClient(VaultClient {
            http: rustify::clients::reqwest::Client::new(&self.base, self.http.clone()),
            middle: middleware(token.as_str().to_owned(), &self.namespace),
            settings: self.settings.clone(),
        })
    }
}

/// A KV v2 request whose JSON body is given as bytes, so that a secret's data is
/// sent as the caller holds it rather than copied into a [`Value`] and re-serialized.
/// Its answer's `data` is returned as a [`Value`] (only metadata, never a secret).
struct RawJson<'a> {
    method: RequestMethod,
    /// `<mount>/data/<key>` or `<mount>/metadata/<key>`.
    path: String,
    body: &'a [u8],
}

impl Endpoint for RawJson<'_> {
    type Response = Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn body(&self) -> std::result::Result<Option<Vec<u8>>, RestError> {
        // rustify wants an owned body; the HTTP stack drops it without zeroizing.
        Ok(Some(self.body.to_vec()))
    }
}

/// vaultrs' middleware (API version, token, namespace) plus the Content-Type that a
/// JSON merge patch needs: Vault answers a PATCH without it with 415.
struct MergePatch<'a>(&'a EndpointMiddleware);

impl MiddleWare for MergePatch<'_> {
    fn request<E: Endpoint>(
        &self,
        endpoint: &E,
        req: &mut http::Request<Vec<u8>>,
    ) -> std::result::Result<(), RestError> {
        self.0.request(endpoint, req)?;
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/merge-patch+json"),
        );
        Ok(())
    }

    fn response<E: Endpoint>(
        &self,
        endpoint: &E,
        resp: &mut http::Response<Vec<u8>>,
    ) -> std::result::Result<(), RestError> {
        self.0.response(endpoint, resp)
    }
}

/// A rustify error as vaultrs reports one: an error answer's `errors` strings become
/// an [`ClientError::APIError`].
fn api_error(err: RestError) -> ClientError {
    if let RestError::ServerResponseError {
        code,
        content: Some(content),
    } = &err
        && let Ok(answer) = serde_json::from_str::<EndpointError>(content)
    {
        return ClientError::APIError {
            code: *code,
            errors: answer.errors,
        };
    }
    ClientError::RestClientError { source: err }
}

fn middleware(token: String, namespace: &Option<String>) -> EndpointMiddleware {
    EndpointMiddleware {
        token,
        version: "v1".to_owned(),
        wrap: None,
        namespace: namespace.clone(),
    }
}

fn invalid(field: &'static str, detail: &str) -> Error {
    Error::InvalidConfig {
        field,
        detail: detail.to_owned(),
    }
}

fn parse_server(server: &str) -> Result<Url> {
    let server = server.trim();
    if server.is_empty() {
        return Err(invalid(
            "server",
            "is empty; give the Vault URL, e.g. https://vault.example:8200",
        ));
    }
    let url = Url::parse(server).map_err(|e| {
        invalid(
            "server",
            &format!("`{server}` is not a URL ({e}); give e.g. https://vault.example:8200"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            "server",
            &format!("`{server}` is not an http:// or https:// URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "server",
            &format!("`{server}` has a query or fragment"),
        ));
    }
    Ok(url)
}

fn http_client(address: &Url, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client> {
    http_client_builder(address, ca_pem, timeout)?
        .build()
        .map_err(|e| invalid("caBundle", &format!("cannot build the HTTPS client: {e}")))
}

/// An HTTP client for `address`, trusting `ca_pem` only when given (else the platform's
/// roots), not yet built.
pub(crate) fn http_client_builder(
    address: &Url,
    ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_rustls()
        .timeout(timeout)
        .connect_timeout(timeout);
    if address.scheme() == "http" {
        // No TLS: do not load the platform's roots (see reqwest#2988, as vaultrs does).
        builder = builder.tls_certs_only(Vec::new());
    } else if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| invalid("caBundle", &format!("is not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(
                "caBundle",
                "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            ));
        }
        builder = builder.tls_certs_only(certs);
    }
    Ok(builder)
}

fn auth_mount(path: &str, field: &'static str) -> Result<String> {
    let path = clean_path(path);
    let path = path.strip_prefix("auth/").unwrap_or(&path).to_owned();
    if path.is_empty() {
        return Err(invalid(
            field,
            "is empty; name the auth mount, e.g. `kubernetes`",
        ));
    }
    Ok(path)
}

/// A path without surrounding whitespace and slashes.
fn clean_path(path: &str) -> String {
    path.trim().trim_matches('/').to_owned()
}

/// A secret's path below the mount, cleaned; an empty one is refused.
fn remote_key(key: &str) -> Result<String> {
    let key = clean_path(key);
    if key.is_empty() {
        return Err(invalid(
            "remoteRef.key",
            "is empty; name the secret's path below the mount",
        ));
    }
    Ok(key)
}

/// A request vaultrs' builder refused to form (a missing field).
fn unformable(err: impl fmt::Display) -> Error {
    invalid("remoteRef.key", &format!("cannot form the request: {err}"))
}

/// Checks that `data` is one JSON object. The parsed copy is scrubbed at once and no
/// error quotes the data: a syntax error names only its line and column.
fn json_object(data: &[u8]) -> Result<()> {
    let mut value: Value = serde_json::from_slice(data).map_err(|e| {
        invalid(
            "value",
            &format!(
                "is not JSON (error at line {}, column {}); KV v2 data is a JSON object",
                e.line(),
                e.column()
            ),
        )
    })?;
    let kind = match &value {
        Value::Object(_) => None,
        Value::Null => Some("null"),
        Value::Bool(_) => Some("a boolean"),
        Value::Number(_) => Some("a number"),
        Value::String(_) => Some("a string"),
        Value::Array(_) => Some("an array"),
    };
    scrub(&mut value);
    match kind {
        None => Ok(()),
        Some(kind) => Err(invalid(
            "value",
            &format!("is {kind}, not a JSON object of fields as KV v2 stores"),
        )),
    }
}

/// Whether `value` can be sent as an HTTP header value (visible ASCII and spaces).
fn header_safe(value: &str) -> bool {
    value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// Zeroizes every string in a JSON value.
fn scrub(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => map.values_mut().for_each(scrub),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    *value = Value::Null;
}

/// Maps a vaultrs error of `operation` to an [`Error`]; never includes a response body.
fn map_client_error(
    err: ClientError,
    operation: Operation,
    key: &str,
    version: Option<&str>,
) -> Error {
    use rustify::errors::ClientError as Rest;
    match err {
        ClientError::APIError { code, errors } => {
            map_status(code, &errors, operation, key, version)
        }
        ClientError::RestClientError { source } => match source {
            Rest::ServerResponseError { code, .. } => {
                map_status(code, &[], operation, key, version)
            }
            Rest::RequestError { source, .. } => Error::Unavailable {
                provider: VAULT,
                operation,
                detail: format!("{source:#}"),
            },
            Rest::ResponseError { source } => Error::Unavailable {
                provider: VAULT,
                operation,
                detail: format!("reading the answer failed: {source:#}"),
            },
            // Parse errors may quote the answer, which may hold secret data.
            _ => Error::Unavailable {
                provider: VAULT,
                operation,
                detail: "the answer could not be understood".to_owned(),
            },
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            Error::Unavailable {
                provider: VAULT,
                operation,
                detail: "the answer was empty".to_owned(),
            }
        }
        _ => Error::Unavailable {
            provider: VAULT,
            operation,
            detail: "the answer could not be understood".to_owned(),
        },
    }
}

/// Maps an HTTP error status (with Vault's `errors` strings) to an [`Error`].
fn map_status(
    code: u16,
    errors: &[String],
    operation: Operation,
    key: &str,
    version: Option<&str>,
) -> Error {
    let detail = if errors.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {}", errors.join("; "))
    };
    let kind = match code {
        429 => ErrorKind::Throttled,
        401 | 403 => ErrorKind::AuthFailed,
        404 if matches!(
            operation,
            Operation::Read | Operation::Describe | Operation::Write
        ) =>
        {
            if errors.iter().any(|e| e.contains("no handler for route")) {
                return invalid_owned(
                    "path",
                    format!("names no KV v2 mount on this server ({detail})"),
                );
            }
            ErrorKind::NotFound
        }
        // A refused login answers 400 (bad SecretID or JWT) or 404 (no such mount).
        400 | 404 if operation == Operation::Login => ErrorKind::AuthFailed,
        // A write's `version` is its check-and-set version.
        400 if operation == Operation::Write
            && errors.iter().any(|e| e.contains("check-and-set")) =>
        {
            let detail = match version {
                Some("0") => format!("it exists now, but check-and-set 0 expects none ({detail})"),
                Some(cas) => format!("version {cas} is no longer the latest ({detail})"),
                None => detail,
            };
            return Error::Conflict {
                provider: VAULT,
                key: key.to_owned(),
                detail,
            };
        }
        400 if operation == Operation::Write => {
            return invalid_owned("value", format!("was refused ({detail})"));
        }
        _ => ErrorKind::Unavailable,
    };
    Error::of_kind(kind, VAULT, operation, key, version, "remoteRef", detail)
}

fn invalid_owned(field: &'static str, detail: String) -> Error {
    Error::InvalidConfig { field, detail }
}

/// KV v2 has no staged versions: a write is current at once, so `stage` writes with
/// check-and-set on the base after claiming the next version in `custom_metadata`,
/// and `promote` has nothing left to do.
impl Versioned for VaultSession {
    fn values_are_objects(&self) -> bool {
        true
    }

    async fn current_version(&self, key: &str) -> Result<String, VersionError> {
        let meta = self
            .metadata(key)
            .await
            .map_err(doing("read the remote key's metadata"))?;
        Ok(meta.current_version.to_string())
    }

    async fn read_version(&self, key: &str, version: &str) -> Result<RemoteValue, VersionError> {
        let number = kv_version(version)?;
        self.read(key, Some(number))
            .await
            .map_err(doing("read a version back"))
    }

    async fn stage<E: Send>(
        &self,
        key: &str,
        base: &str,
        mark: Mark<'_>,
        make: impl FnOnce(&[u8]) -> Result<Zeroizing<Vec<u8>>, E> + Send,
    ) -> Result<String, VersionError<E>> {
        let base = kv_version(base)?;
        let base_text = base.to_string();
        let meta = self
            .metadata(key)
            .await
            .map_err(doing("read the remote key's metadata"))?;
        let entry = |name: &str| meta.custom_metadata.get(name).map(String::as_str);
        let claimed = entry(mark.token_entry) == Some(mark.token)
            && entry(mark.base_entry) == Some(&base_text);
        if meta.current_version == base + 1 && claimed {
            // A write of an earlier attempt whose answer was lost: it is this stage's.
            return Ok((base + 1).to_string());
        }
        if meta.current_version != base {
            return Err(VersionError::Moved {
                now: meta.current_version.to_string(),
            });
        }
        if !claimed {
            self.mark(
                key,
                &[
                    (mark.token_entry, mark.token),
                    (mark.base_entry, &base_text),
                ],
            )
            .await
            .map_err(doing("claim the next version in custom_metadata"))?;
        }
        let current = self
            .read(key, Some(base))
            .await
            .map_err(doing("read the base version"))?;
        let value = make(current.bytes()).map_err(VersionError::Value)?;
        let written = self
            .write(key, &value, base)
            .await
            .map_err(|error| match error.kind() {
                ErrorKind::Conflict => VersionError::Moved {
                    now: "a newer one".to_owned(),
                },
                _ => VersionError::Store {
                    doing: "write the new version",
                    error,
                },
            })?;
        Ok(written.to_string())
    }

    async fn promote(&self, _key: &str, _base: &str, _new: &str) -> Result<(), VersionError> {
        Ok(())
    }

    async fn clear_staged(&self, _key: &str, _new: &str) -> Result<(), VersionError> {
        Ok(())
    }

    async fn withdraw(
        &self,
        key: &str,
        base: &str,
        new: &str,
        mark: Mark<'_>,
    ) -> Result<String, VersionError> {
        let old = self.read_version(key, base).await?;
        let bytes = Zeroizing::new(old.bytes().to_vec());
        let written = self
            .stage(key, new, mark, |_| Ok::<_, std::convert::Infallible>(bytes))
            .await
            .map_err(|e| match e {
                VersionError::Moved { now } => VersionError::Moved { now },
                VersionError::NoCurrent => VersionError::NoCurrent,
                VersionError::NotAVersion { version } => VersionError::NotAVersion { version },
                VersionError::Store { doing, error } => VersionError::Store { doing, error },
                VersionError::Value(never) => match never {},
            })?;
        Ok(format!(
            "version {written} holds version {base}'s data again, written with check-and-set on version {new}"
        ))
    }
}

/// A KV v2 version number, from the text a [`Versioned`] caller holds.
fn kv_version<E>(version: &str) -> Result<u64, VersionError<E>> {
    version.parse().map_err(|_| VersionError::NotAVersion {
        version: version.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoObserver;

    fn config(auth: VaultAuth) -> VaultConfig {
        VaultConfig {
            server: "http://127.0.0.1:8200".into(),
            mount: "secret".into(),
            namespace: None,
            ca_pem: None,
            auth,
            timeout: Duration::from_secs(5),
        }
    }

    fn token(t: &str) -> VaultAuth {
        VaultAuth::Token(SecretString::from(t))
    }

    fn field_of(r: Result<VaultSession>) -> &'static str {
        match r {
            Err(Error::InvalidConfig { field, .. }) => field,
            Err(other) => panic!("not InvalidConfig: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    fn new(c: VaultConfig) -> Result<VaultSession> {
        VaultSession::new(c, Arc::new(NoObserver))
    }

    #[test]
    fn valid_config_builds_without_io() {
        let s = new(config(token("s.abc"))).expect("valid");
        assert_eq!(s.logins(), 0);
        assert_eq!(s.base, "http://127.0.0.1:8200/");
        let mut c = config(token("t"));
        c.server = "https://vault.example/prefix/".into();
        c.namespace = Some("team-a".into());
        let s = new(c).expect("valid");
        assert_eq!(s.base, "https://vault.example/prefix");
        assert_eq!(s.settings.namespace.as_deref(), Some("team-a"));
        // Nothing is taken from VAULT_* variables.
        assert!(s.settings.verify);
        assert!(s.settings.ca_certs.is_empty());
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut c = config(token("t"));
        c.server = "not a url".into();
        assert_eq!(field_of(new(c)), "server");
        let mut c = config(token("t"));
        c.server = "ftp://vault".into();
        assert_eq!(field_of(new(c)), "server");
        let mut c = config(token("t"));
        c.mount = " / ".into();
        assert_eq!(field_of(new(c)), "path");
        let mut c = config(token("t"));
        c.server = "https://vault.example".into();
        c.ca_pem = Some(b"not a certificate".to_vec());
        assert_eq!(field_of(new(c)), "caBundle");
        let mut c = config(token("t"));
        c.namespace = Some("bad\nns".into());
        assert_eq!(field_of(new(c)), "namespace");
        let mut c = config(token("t"));
        c.timeout = Duration::ZERO;
        assert_eq!(field_of(new(c)), "timeout");
        assert_eq!(field_of(new(config(token("  \n")))), "auth.tokenSecretRef");
        assert_eq!(field_of(new(config(token("a\tb")))), "auth.tokenSecretRef");
        let jwt: TokenSource = Arc::new(|| Box::pin(async { Err("unused".to_owned()) }));
        let kube = VaultAuth::Kubernetes {
            mount_path: "kubernetes".into(),
            role: " ".into(),
            jwt: jwt.clone(),
        };
        assert_eq!(field_of(new(config(kube))), "auth.kubernetes.role");
        let kube = VaultAuth::Kubernetes {
            mount_path: "/".into(),
            role: "r".into(),
            jwt,
        };
        assert_eq!(field_of(new(config(kube))), "auth.kubernetes.mountPath");
        let approle = VaultAuth::AppRole {
            mount_path: "approle".into(),
            role_id: "".into(),
            secret_id: SecretString::from("s"),
        };
        assert_eq!(field_of(new(config(approle))), "auth.appRole.roleId");
        let approle = VaultAuth::AppRole {
            mount_path: "approle".into(),
            role_id: "r".into(),
            secret_id: SecretString::from(""),
        };
        assert_eq!(field_of(new(config(approle))), "auth.appRole.secretRef");
    }

    #[test]
    fn trailing_newline_of_a_token_is_trimmed() {
        new(config(token("s.abc\n"))).expect("a token read from a file may end in a newline");
    }

    /// A self-signed P-256 CA certificate (valid until 2126), for parsing only.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUZVofccvLKd3XQO+Nkjnm4bsQUkEwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXc2lnaWwtcHJvdmlkZXJzLXRlc3QtY2EwIBcNMjYxMTI1MTEw
NDI0WhgPMjEyNjExMDExMTA0MjRaMCIxIDAeBgNVBAMMF3NpZ2lsLXByb3ZpZGVy
cy10ZXN0LWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjkFqV8zprWomVq2h
wRN0MxeY9DBR2e/+03ZJh7TcMAgPiFnaDLqCaJelPldjgsfjF2DJFY+f18ePzDgA
PRRwdKNTMFEwHQYDVR0OBBYEFOPLZ9K4AwCpo4C1CW0OpdN3R0AkMB8GA1UdIwQY
MBaAFOPLZ9K4AwCpo4C1CW0OpdN3R0AkMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSAAwRQIgdiOmfZTgVCpVkm/PGe+U4AnigGSowJurIfTqYKi0ryECIQDa
aQnQh6l5a14ZjV9A55tisSCoPFy2Xkj5aLFq9N0uEA==
-----END CERTIFICATE-----
";

    #[test]
    fn a_ca_bundle_is_accepted() {
        let mut c = config(token("t"));
        c.server = "https://vault.example".into();
        c.ca_pem = Some(CA_PEM.as_bytes().to_vec());
        new(c).expect("a PEM CA bundle is accepted");
        // Only the bundle matters for http:// servers not at all.
        let mut c = config(token("t"));
        c.ca_pem = Some(CA_PEM.as_bytes().to_vec());
        new(c).expect("a CA bundle with an http:// server is ignored");
    }

    #[test]
    fn status_mapping() {
        let denied = vec!["permission denied".to_owned()];
        let e = map_status(403, &denied, Operation::Read, "k", None);
        assert_eq!(e.kind(), ErrorKind::AuthFailed);
        assert!(e.to_string().contains("permission denied"), "{e}");
        assert_eq!(
            map_status(404, &[], Operation::Read, "k", Some("3")).kind(),
            ErrorKind::NotFound
        );
        match map_status(404, &[], Operation::Read, "app/db", Some("3")) {
            Error::NotFound { key, version, .. } => {
                assert_eq!(key, "app/db");
                assert_eq!(version.as_deref(), Some("3"));
            }
            other => panic!("{other}"),
        }
        let route = vec!["no handler for route \"nope/data/x\". route entry not found.".to_owned()];
        match map_status(404, &route, Operation::Read, "x", None) {
            Error::InvalidConfig { field, .. } => assert_eq!(field, "path"),
            other => panic!("{other}"),
        }
        assert_eq!(
            map_status(400, &[], Operation::Login, "", None).kind(),
            ErrorKind::AuthFailed
        );
        assert_eq!(
            map_status(404, &[], Operation::Login, "", None).kind(),
            ErrorKind::AuthFailed
        );
        assert_eq!(
            map_status(429, &[], Operation::Read, "k", None).kind(),
            ErrorKind::Throttled
        );
        let sealed = vec!["Vault is sealed".to_owned()];
        assert_eq!(
            map_status(503, &sealed, Operation::Read, "k", None).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            map_status(500, &[], Operation::Renew, "", None).kind(),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn cas_mismatch_is_a_conflict() {
        let cas = vec!["check-and-set parameter did not match the current version".to_owned()];
        match map_status(400, &cas, Operation::Write, "app/db", Some("3")) {
            Error::Conflict { key, detail, .. } => {
                assert_eq!(key, "app/db");
                assert!(
                    detail.starts_with("version 3 is no longer the latest"),
                    "{detail}"
                );
            }
            other => panic!("{other}"),
        }
        let e = map_status(400, &cas, Operation::Write, "app/db", Some("0"));
        assert!(
            e.to_string().contains("check-and-set 0 expects none"),
            "{e}"
        );
        assert_eq!(
            map_status(400, &["bad".to_owned()], Operation::Write, "k", None).kind(),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            map_status(404, &[], Operation::Describe, "k", None).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            map_status(400, &cas, Operation::Read, "k", None).kind(),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn data_must_be_a_json_object_and_errors_do_not_quote_it() {
        json_object(br#"{"password":"hunter2","n":1,"nested":{"a":[1]}}"#).expect("an object");
        for bad in [
            &br#""hunter2""#[..],
            br#"["hunter2"]"#,
            b"42",
            b"null",
            br#"{"password":"hunter2""#,
            br#"{"password":hunter2}"#,
            b"hunter2",
        ] {
            match json_object(bad) {
                Err(e @ Error::InvalidConfig { field: "value", .. }) => {
                    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn api_errors_keep_vaults_messages() {
        let err = RestError::ServerResponseError {
            code: 404,
            content: Some(r#"{"errors":[]}"#.to_owned()),
        };
        match api_error(err) {
            ClientError::APIError { code, errors } => {
                assert_eq!(code, 404);
                assert!(errors.is_empty());
            }
            other => panic!("{other}"),
        }
        let err = RestError::ServerResponseError {
            code: 502,
            content: Some("<html>bad gateway</html>".to_owned()),
        };
        let e = map_client_error(api_error(err), Operation::Write, "k", None);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn parse_errors_do_not_quote_the_answer() {
        let body = r#"{"data":{"data":{"password":"hunter2"}}}"#.to_owned();
        let source = serde_json::from_str::<u64>(&body).unwrap_err();
        let err = ClientError::RestClientError {
            source: rustify::errors::ClientError::ResponseParseError {
                source: source.into(),
                content: Some(body),
            },
        };
        let e = map_client_error(err, Operation::Read, "k", None);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }

    #[test]
    fn scrub_clears_strings() {
        let mut v = serde_json::json!({"a": "secret", "b": ["x", {"c": "y"}], "n": 1});
        scrub(&mut v);
        assert!(v.is_null());
    }

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path(" /app/db/ "), "app/db");
        assert_eq!(auth_mount("auth/kubernetes/", "f").unwrap(), "kubernetes");
        assert!(header_safe("s.abc-DEF_123"));
        assert!(!header_safe("a\nb"));
    }

    #[test]
    fn lease_arithmetic() {
        let now = Instant::now();
        let mut held = Held {
            client: Arc::new(
                new(config(token("t")))
                    .unwrap()
                    .client_with(Zeroizing::new("x".into())),
            ),
            generation: 1,
            refresh_at: None,
            expires_at: None,
            renewable: true,
            granted: Duration::from_secs(6),
        };
        held.set_lease(now, Duration::from_secs(6));
        assert!(held.fresh(now + Duration::from_millis(3900)));
        assert!(!held.fresh(now + Duration::from_millis(4100)));
        assert!(held.usable(now + Duration::from_millis(5900)));
        assert!(!held.usable(now + Duration::from_secs(6)));
        held.set_lease(now, Duration::ZERO);
        assert!(held.fresh(now + Duration::from_secs(1_000_000)));
    }
}
