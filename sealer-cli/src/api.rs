//! Talking to sigil-api: the server URL, the bearer token (flag, environment or the
//! kubeconfig user's), retries that never create a Rotation twice, and every API error
//! turned into a message with the fix.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::config::{AuthInfo, Context, Kubeconfig, KubeconfigError};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_types::api::ErrorBody;
use zeroize::Zeroizing;

use crate::document::SealedName;
use crate::failure::{EXIT_USAGE, Failure};

/// Where sigil-api is and who is calling it.
#[derive(Args, Debug, Clone)]
pub(crate) struct ApiArgs {
    /// URL of sigil-api, e.g. https://sigil-api.example.com:8443.
    #[arg(long, env = "SIGIL_SERVER", value_name = "URL", hide_env_values = true)]
    pub(crate) server: Option<String>,
    /// Bearer token for sigil-api (default: the kubeconfig user's token or tokenFile).
    /// Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "SIGIL_TOKEN", value_name = "TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub(crate) token: Option<SecretString>,
    /// PEM file of the CA certificates that sign sigil-api's certificate (instead of the
    /// system's).
    #[arg(
        long,
        env = "SIGIL_CA_FILE",
        value_name = "FILE",
        hide_env_values = true
    )]
    pub(crate) ca_file: Option<PathBuf>,
    /// Kubeconfig for the default token and namespace (default: $KUBECONFIG, then
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,
}

fn parse_token(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text))
}

const SERVER_HINT: &str =
    "give the base URL of sigil-api, e.g. --server https://sigil-api.example.com:8443";
const TOKEN_HINT: &str = "pass --token (or set SIGIL_TOKEN) with a token sigil-api accepts, e.g. `export SIGIL_TOKEN=$(kubectl create token SERVICEACCOUNT -n NAMESPACE)`";
/// Attempts of one request when sigil-api is unreachable, busy or rate-limiting.
const ATTEMPTS: u32 = 4;
/// The longest `Retry-After` honoured; a server asking for more is treated as down.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `--server` URL, checked before anything else so that a missing one is a usage
/// error however the rest of the command line looks.
pub(crate) fn server(args: &ApiArgs) -> anyhow::Result<Url> {
    let usage = |message: String| -> anyhow::Error {
        Failure::new(message)
            .with_hint(SERVER_HINT)
            .with_exit(EXIT_USAGE)
            .into()
    };
    let Some(text) = args.server.as_deref().filter(|s| !s.trim().is_empty()) else {
        return Err(usage(
            "no sigil-api URL: pass --server URL or set SIGIL_SERVER".to_owned(),
        ));
    };
    // The text is echoed only once it is known to hold no credentials.
    let url =
        Url::parse(text.trim()).map_err(|err| usage(format!("--server is not a URL ({err})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::new("--server has credentials in it")
            .with_hint("give the token with --token or SIGIL_TOKEN, never in the URL")
            .with_exit(EXIT_USAGE)
            .into());
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err(usage(format!(
            "--server `{url}` is not an https:// (or, for local use, http://) URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage(format!(
            "--server `{url}` has a query or fragment; give the base URL of sigil-api"
        )));
    }
    Ok(url)
}

/// The kubeconfig, or `None` when there is none to read.
fn load_kubeconfig(args: &ApiArgs) -> anyhow::Result<Option<Kubeconfig>> {
    let read = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map(Some),
        None => match Kubeconfig::read() {
            Err(KubeconfigError::FindPath) => Ok(None),
            Err(KubeconfigError::ReadConfig(err, _)) if err.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other.map(Some),
        },
    };
    let config = read.map_err(|err| {
        let detail = match &err {
            // A YAML error may quote the file, and a kubeconfig holds credentials.
            KubeconfigError::Parse(_) => "it is not valid kubeconfig YAML".to_owned(),
            other => other.to_string(),
        };
        let which = args.kubeconfig.as_ref().map_or_else(
            || "the kubeconfig".to_owned(),
            |path| format!("kubeconfig {}", path.display()),
        );
        Failure::new(format!("cannot read {which}: {detail}"))
            .with_hint("pass --kubeconfig FILE (or set KUBECONFIG); or pass --token and -n, which need no kubeconfig")
    })?;
    if config.is_none()
        && let Some(context) = &args.context
    {
        return Err(Failure::new(format!(
            "--context {context} names a kubeconfig context, and there is no kubeconfig"
        ))
        .with_hint("pass --kubeconfig FILE (or set KUBECONFIG), or drop --context")
        .into());
    }
    Ok(config)
}

/// The context `--context` names, else the current one; `None` when neither is set.
fn select_context<'a>(
    config: &'a Kubeconfig,
    wanted: Option<&'a str>,
) -> anyhow::Result<Option<(&'a str, &'a Context)>> {
    let Some(name) = wanted.or(config.current_context.as_deref()) else {
        return Ok(None);
    };
    let found = config
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.as_ref());
    match found {
        Some(context) => Ok(Some((name, context))),
        None => Err(Failure::new(format!("kubeconfig context `{name}` does not exist"))
            .with_hint("list the contexts with `kubectl config get-contexts`, and pick one with --context NAME")
            .into()),
    }
}

/// The namespace of the kubeconfig context, else `default`, as kubectl does.
pub(crate) fn default_namespace(args: &ApiArgs) -> anyhow::Result<String> {
    let Some(config) = load_kubeconfig(args)? else {
        return Ok("default".to_owned());
    };
    let namespace = select_context(&config, args.context.as_deref())?
        .and_then(|(_, context)| context.namespace.clone())
        .filter(|ns| !ns.is_empty());
    Ok(namespace.unwrap_or_else(|| "default".to_owned()))
}

/// A bearer token, and where it came from (for messages; never the token itself).
pub(crate) struct Token {
    secret: SecretString,
    source: String,
}

/// The token from `--token`/`SIGIL_TOKEN`, else from the kubeconfig user.
pub(crate) fn token(args: &ApiArgs) -> anyhow::Result<Token> {
    if let Some(secret) = &args.token {
        if secret.expose_secret().trim().is_empty() {
            return Err(Failure::new("--token (or SIGIL_TOKEN) is empty")
                .with_hint(TOKEN_HINT)
                .with_exit(EXIT_USAGE)
                .into());
        }
        return Ok(Token {
            secret: SecretString::from(secret.expose_secret().trim()),
            source: "--token or SIGIL_TOKEN".to_owned(),
        });
    }
    let no_token =
        |why: String| -> anyhow::Error { Failure::new(why).with_hint(TOKEN_HINT).into() };
    let Some(config) = load_kubeconfig(args)? else {
        return Err(no_token(
            "no token for sigil-api: no --token, no SIGIL_TOKEN and no kubeconfig".to_owned(),
        ));
    };
    let Some((context_name, context)) = select_context(&config, args.context.as_deref())? else {
        return Err(no_token(
            "no token for sigil-api: no --token, no SIGIL_TOKEN, and the kubeconfig has no current context"
                .to_owned(),
        ));
    };
    let Some(user_name) = context.user.as_deref() else {
        return Err(no_token(format!(
            "no token for sigil-api: kubeconfig context `{context_name}` names no user"
        )));
    };
    let user = config
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_ref());
    let Some(user) = user else {
        return Err(no_token(format!(
            "no token for sigil-api: kubeconfig user `{user_name}` (of context `{context_name}`) does not exist"
        )));
    };
    let source = format!("kubeconfig user `{user_name}`");
    if let Some(secret) = &user.token
        && !secret.expose_secret().trim().is_empty()
    {
        return Ok(Token {
            secret: SecretString::from(secret.expose_secret().trim()),
            source,
        });
    }
    if let Some(file) = &user.token_file {
        let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|err| {
            Failure::new(format!(
                "cannot read the tokenFile {file} of kubeconfig user `{user_name}`: {err}"
            ))
            .with_hint(TOKEN_HINT)
        })?);
        if text.trim().is_empty() {
            return Err(no_token(format!(
                "the tokenFile {file} of kubeconfig user `{user_name}` is empty"
            )));
        }
        return Ok(Token {
            secret: SecretString::from(text.trim()),
            source: format!("{source} (tokenFile {file})"),
        });
    }
    Err(no_token(format!(
        "kubeconfig user `{user_name}` signs in with {}, and sigil-api takes bearer tokens only",
        sign_in_method(user)
    )))
}

fn sign_in_method(user: &AuthInfo) -> String {
    if let Some(exec) = &user.exec {
        format!(
            "an exec plugin (`{}`)",
            exec.command.as_deref().unwrap_or("?")
        )
    } else if let Some(provider) = &user.auth_provider {
        format!("the auth provider `{}`", provider.name)
    } else if user.client_certificate.is_some() || user.client_certificate_data.is_some() {
        "a client certificate".to_owned()
    } else if user.username.is_some() {
        "a username and password".to_owned()
    } else {
        "no credentials".to_owned()
    }
}

/// A fresh `Idempotency-Key`: 128 random bits, so that two invocations never share one.
pub(crate) fn fresh_idempotency_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("cannot read random bytes for the Idempotency-Key"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The RBAC permission a request needs in group `sigil.dev`, for the hint when it is
/// missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Permission {
    verb: &'static str,
    resource: &'static str,
    /// `None`: Sigil's own namespace, which the CLI does not know.
    namespace: Option<String>,
}

impl Permission {
    fn hint(&self) -> String {
        let (verb, resource) = (self.verb, self.resource);
        let (namespace, flag) = match &self.namespace {
            Some(ns) => (format!("namespace {ns}"), ns.as_str()),
            None => (
                "Sigil's namespace (sigil-system unless installed elsewhere)".to_owned(),
                "sigil-system",
            ),
        };
        format!(
            "you need `{verb} {resource}.sigil.dev` in {namespace}: check with `kubectl auth can-i {verb} {resource}.sigil.dev -n {flag}`, and ask a cluster admin for a Role and RoleBinding that grant it"
        )
    }
}

/// One request to sigil-api, and what it is for (for messages and hints).
#[derive(Debug)]
pub(crate) struct Call {
    method: Method,
    path: Vec<String>,
    body: Option<Vec<u8>>,
    idempotency_key: Option<String>,
    /// What the request does, e.g. "create a Rotation in namespace prod".
    action: String,
    permission: Option<Permission>,
    /// The namespace an ExternalSecret is looked up in, for its hint.
    namespace: Option<String>,
    /// For a create that may have taken effect without an answer: how to pick up what it
    /// made instead of making another.
    resume: Option<String>,
}

fn json(body: &impl Serialize) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(Some(
        serde_json::to_vec(body).context("cannot encode the request")?,
    ))
}

fn segments(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

impl Call {
    pub(crate) fn create_rotation(
        namespace: &str,
        idempotency_key: &str,
        spec: &sigil_types::RotationSpec,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            method: Method::POST,
            path: segments(&["v1", "namespaces", namespace, "rotations"]),
            body: json(spec)?,
            idempotency_key: Some(idempotency_key.to_owned()),
            action: format!("create a Rotation in namespace {namespace}"),
            permission: Some(Permission {
                verb: "create",
                resource: "rotations",
                namespace: Some(namespace.to_owned()),
            }),
            namespace: Some(namespace.to_owned()),
            resume: Some(format!(
                "the Rotation may have been created all the same: run the same command with `--idempotency-key {idempotency_key}` to follow it instead of making another"
            )),
        })
    }

    /// `GET /v1/publickeys`: the cluster's public key lines, which anyone may read.
    pub(crate) fn public_keys() -> Self {
        Self {
            method: Method::GET,
            path: segments(&["v1", "publickeys"]),
            body: None,
            idempotency_key: None,
            action: "read the cluster's public keys".to_owned(),
            permission: None,
            namespace: None,
            resume: None,
        }
    }

    pub(crate) fn get_rotation(namespace: &str, name: &str) -> Self {
        Self {
            method: Method::GET,
            path: segments(&["v1", "namespaces", namespace, "rotations", name]),
            body: None,
            idempotency_key: None,
            action: format!("read Rotation {namespace}/{name}"),
            permission: Some(Permission {
                verb: "get",
                resource: "rotations",
                namespace: Some(namespace.to_owned()),
            }),
            namespace: Some(namespace.to_owned()),
            resume: None,
        }
    }

    pub(crate) fn rotate_sealing_key(
        idempotency_key: &str,
        request: &sigil_types::api::SealingKeyRotationRequest,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            method: Method::POST,
            path: segments(&["v1", "sealingkey", "rotate"]),
            body: json(request)?,
            idempotency_key: Some(idempotency_key.to_owned()),
            action: "rotate the sealing key".to_owned(),
            permission: Some(Permission {
                verb: "create",
                resource: "rotations",
                namespace: None,
            }),
            namespace: None,
            resume: None,
        })
    }

    /// `POST /v1/verify`: may the caller read the SealedSecret.
    pub(crate) fn verify(object: &SealedName, sealed: &serde_json::Value) -> anyhow::Result<Self> {
        Self::sealed_secret("verify", "get", object, sealed)
    }

    /// `POST /v1/reseal`: may the caller update the SealedSecret.
    pub(crate) fn reseal(object: &SealedName, sealed: &serde_json::Value) -> anyhow::Result<Self> {
        Self::sealed_secret("reseal", "update", object, sealed)
    }

    fn sealed_secret(
        endpoint: &str,
        verb: &'static str,
        object: &SealedName,
        sealed: &serde_json::Value,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            method: Method::POST,
            path: segments(&["v1", endpoint]),
            body: json(sealed)?,
            idempotency_key: None,
            action: format!("{endpoint} {object}"),
            permission: object.namespace.as_ref().map(|ns| Permission {
                verb,
                resource: "sealedsecrets",
                namespace: Some(ns.clone()),
            }),
            namespace: None,
            resume: None,
        })
    }

    fn describe(&self) -> String {
        format!("{} /{}", self.method, self.path.join("/"))
    }
}

/// A successful answer: its status (201 created, or 200 for an idempotent replay) and
/// its body.
pub(crate) struct Reply<T> {
    pub(crate) status: StatusCode,
    pub(crate) body: T,
}

/// A client of one sigil-api.
pub(crate) struct Api {
    base: Url,
    http: reqwest::Client,
    token: Token,
}

impl Api {
    /// Finds the token and builds the HTTPS client; nothing is sent yet.
    pub(crate) fn connect(args: &ApiArgs, base: Url) -> anyhow::Result<Self> {
        let token = token(args)?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("sigil/", env!("CARGO_PKG_VERSION")));
        if base.scheme() == "http" {
            // No TLS: skip loading the platform's roots (reqwest#2988).
            builder = builder.tls_certs_only(Vec::new());
            let loopback = match base.host_str() {
                Some("localhost") => true,
                Some(host) => host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()),
                None => false,
            };
            if !loopback {
                eprintln!(
                    "warning: --server is plain http://, so the token crosses the network unencrypted; use https://"
                );
            }
        } else if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path).map_err(|err| {
                Failure::new(format!("cannot read --ca-file {}: {err}", path.display()))
                    .with_hint("pass the PEM file of the CA that signs sigil-api's certificate")
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    Failure::new(format!(
                        "--ca-file {} holds no PEM certificate",
                        path.display()
                    ))
                    .with_hint("pass a file with -----BEGIN CERTIFICATE----- blocks")
                })?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("cannot set up the HTTPS client")?;
        Ok(Self { base, http, token })
    }

    fn url(&self, call: &Call) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--server `{}` cannot take a path", self.base))?
            .pop_if_empty()
            .extend(&call.path);
        Ok(url)
    }

    /// Sends `call`, retrying while sigil-api is unreachable, slow, unavailable or
    /// rate-limiting. Every call is safe to repeat: reads and verify/reseal change
    /// nothing, and creates carry the same Idempotency-Key on every attempt, so a retry
    /// of a request that did arrive returns the first answer instead of acting twice.
    pub(crate) async fn send<T: DeserializeOwned>(&self, call: &Call) -> anyhow::Result<Reply<T>> {
        let Reply { status, body } = self.send_raw(call).await?;
        let body = serde_json::from_slice(&body).map_err(|err| {
            Failure::new(format!(
                "sigil-api at {} answered {} with an unexpected body: {err}",
                self.base,
                call.describe()
            ))
            .with_hint("check that --server is sigil-api, and that sigil and sigil-api are the same version (`sigil --version`)")
        })?;
        Ok(Reply { status, body })
    }

    /// Sends `call` as [`send`](Self::send) does, for an answer in plain text.
    pub(crate) async fn text(&self, call: &Call) -> anyhow::Result<String> {
        let Reply { body, .. } = self.send_raw(call).await?;
        String::from_utf8(body).map_err(|_| {
            Failure::new(format!(
                "sigil-api at {} answered {} with a body that is not UTF-8 text",
                self.base,
                call.describe()
            ))
            .into()
        })
    }

    async fn send_raw(&self, call: &Call) -> anyhow::Result<Reply<Vec<u8>>> {
        let url = self.url(call)?;
        let mut attempt = 1;
        loop {
            let mut request = self
                .http
                .request(call.method.clone(), url.clone())
                .bearer_auth(self.token.secret.expose_secret())
                .header(ACCEPT, "application/json");
            if let Some(key) = &call.idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = &call.body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let retry = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let wait = retry_after(&response);
                    let retryable = matches!(
                        status,
                        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                    ) && wait.is_none_or(|w| w <= MAX_RETRY_AFTER);
                    if !retryable || attempt == ATTEMPTS {
                        return self.reply(call, response).await;
                    }
                    wait
                }
                Err(err) => {
                    let transient = err.is_connect() || err.is_timeout();
                    if !transient || certificate_problem(&err) || attempt == ATTEMPTS {
                        return Err(self.unreachable(call, err));
                    }
                    None
                }
            };
            tokio::time::sleep(retry.unwrap_or_else(|| backoff(attempt))).await;
            attempt += 1;
        }
    }

    async fn reply(
        &self,
        call: &Call,
        response: reqwest::Response,
    ) -> anyhow::Result<Reply<Vec<u8>>> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(call, err))?;
        if !status.is_success() {
            return Err(api_failure(status, &bytes, call, &self.token.source).into());
        }
        Ok(Reply {
            status,
            body: bytes.to_vec(),
        })
    }

    fn unreachable(&self, call: &Call, err: reqwest::Error) -> anyhow::Error {
        let hint = if certificate_problem(&err) {
            "sigil-api's certificate is not trusted: pass --ca-file (or set SIGIL_CA_FILE) with the CA that signs it".to_owned()
        } else if err.is_timeout() {
            call.resume.clone().unwrap_or_else(|| {
                "sigil-api did not answer in time; check that it is running and reachable, then try again".to_owned()
            })
        } else {
            "check --server (or SIGIL_SERVER) and that sigil-api is running and reachable from here"
                .to_owned()
        };
        let failure = Failure::new(format!(
            "cannot {} through sigil-api at {}",
            call.action, self.base
        ))
        .with_hint(hint);
        anyhow::Error::new(err.without_url()).context(failure)
    }
}

/// How long sigil-api asked to wait before trying again, in whole seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// 0.5 s, 1 s, 2 s: long enough for a restarting API pod, short enough for a person.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500) * 2u32.pow(attempt.saturating_sub(1).min(4))
}

/// Whether the TLS handshake failed on the server's certificate: retrying cannot help.
fn certificate_problem(err: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(cause) = source {
        if cause.to_string().contains("certificate") {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error answer as the user sees it: sigil-api's message, and a hint per code.
pub(crate) fn api_failure(
    status: StatusCode,
    body: &[u8],
    call: &Call,
    token_source: &str,
) -> Failure {
    let Ok(ErrorBody { code, message }) = serde_json::from_slice::<ErrorBody>(body) else {
        return Failure::new(format!(
            "sigil-api answered {status} to {}, without an error body",
            call.describe()
        ))
        .with_hint(
            "check that --server is the URL of sigil-api itself, not of a proxy or another service",
        );
    };
    let hint = match code.as_str() {
        "unauthenticated" => Some(format!(
            "sigil-api did not accept the token from {token_source}: it may have expired or be meant for another cluster; {TOKEN_HINT}"
        )),
        "forbidden" => Some(match &call.permission {
            Some(permission) => permission.hint(),
            None => "ask a cluster admin for the RBAC permission the message names".to_owned(),
        }),
        "rate_limited" => Some(
            "sigil-api limits the requests of each user, and sigil's retries ran out: wait a little and run the command again"
                .to_owned(),
        ),
        "timeout" if call.resume.is_some() => call.resume.clone(),
        "unavailable" | "timeout" => Some(
            "sigil-api or sigil-controller is not ready, and sigil's retries ran out; try again shortly, and check their pods with `kubectl get pods -n sigil-system`"
                .to_owned(),
        ),
        "not_found" => Some("check the namespace (-n) and the name".to_owned()),
        "unknown_external_secret" => Some(match &call.namespace {
            Some(ns) => format!(
                "list the ExternalSecrets with `kubectl get externalsecrets.sigil.dev -n {ns}`, or pick the namespace with -n"
            ),
            None => "check the ExternalSecret's name and namespace".to_owned(),
        }),
        "idempotency_conflict" => Some(
            "that Idempotency-Key was used for a different request: pass a new --idempotency-key, or none for a fresh one"
                .to_owned(),
        ),
        "body_too_large" => {
            Some("the object is larger than sigil-api accepts (its --max-body-bytes)".to_owned())
        }
        "invalid_json" | "unknown_field" | "bad_request" | "unsupported_media_type" => Some(
            "sigil and sigil-api may be different versions: compare `sigil --version` with the API's image"
                .to_owned(),
        ),
        "internal" => Some("sigil-api's log has the details".to_owned()),
        _ => None,
    };
    let failure = Failure::new(message);
    match hint {
        Some(hint) => failure.with_hint(hint),
        None => failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kubeconfig: &std::path::Path) -> ApiArgs {
        ApiArgs {
            server: Some("https://sigil-api.example:8443".to_owned()),
            token: None,
            ca_file: None,
            kubeconfig: Some(kubeconfig.to_owned()),
            context: None,
        }
    }

    const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c
  cluster: {server: 'https://127.0.0.1:6443'}
contexts:
- name: dev
  context: {cluster: c, user: alice, namespace: team-a}
- name: ops
  context: {cluster: c, user: robot}
- name: certs
  context: {cluster: c, user: carol}
- name: cloud
  context: {cluster: c, user: eks}
users:
- name: alice
  user: {token: alice-token}
- name: robot
  user: {tokenFile: robot.token}
- name: carol
  user: {client-certificate-data: Zm9v, client-key-data: YmFy}
- name: eks
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws, args: [eks, get-token]}
";

    fn kubeconfig_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config"), KUBECONFIG).unwrap();
        std::fs::write(dir.path().join("robot.token"), "robot-token\n").unwrap();
        dir
    }

    fn message(err: &anyhow::Error) -> (String, String) {
        let failure = err.downcast_ref::<Failure>().expect("a Failure");
        (failure.to_string(), failure.hint().unwrap_or("").to_owned())
    }

    #[test]
    fn token_of_the_current_context_user() {
        let dir = kubeconfig_dir();
        let token = token(&args(&dir.path().join("config"))).unwrap();
        assert_eq!(token.secret.expose_secret(), "alice-token");
        assert_eq!(token.source, "kubeconfig user `alice`");
    }

    #[test]
    fn token_file_is_read_relative_to_the_kubeconfig_and_trimmed() {
        let dir = kubeconfig_dir();
        let mut args = args(&dir.path().join("config"));
        args.context = Some("ops".to_owned());
        let token = token(&args).unwrap();
        assert_eq!(token.secret.expose_secret(), "robot-token");
        assert!(
            token
                .source
                .starts_with("kubeconfig user `robot` (tokenFile ")
        );
    }

    #[test]
    fn the_flag_wins_over_the_kubeconfig() {
        let dir = kubeconfig_dir();
        let mut args = args(&dir.path().join("config"));
        args.token = Some(SecretString::from(" flag-token\n"));
        let token = token(&args).unwrap();
        assert_eq!(token.secret.expose_secret(), "flag-token");
        assert_eq!(token.source, "--token or SIGIL_TOKEN");
    }

    #[test]
    fn users_without_a_bearer_token_are_told_to_pass_one() {
        let dir = kubeconfig_dir();
        let mut args = args(&dir.path().join("config"));
        for (context, how) in [
            ("certs", "signs in with a client certificate"),
            ("cloud", "signs in with an exec plugin (`aws`)"),
        ] {
            args.context = Some(context.to_owned());
            let err = token(&args).err().expect("no token");
            let (message, hint) = message(&err);
            assert!(message.contains(how), "{message}");
            assert!(hint.contains("--token") && hint.contains("kubectl create token"));
        }
        args.context = Some("nope".to_owned());
        let (message, _) = message(&token(&args).err().unwrap());
        assert_eq!(message, "kubeconfig context `nope` does not exist");
    }

    #[test]
    fn errors_never_show_the_token() {
        let dir = kubeconfig_dir();
        // A broken kubeconfig that holds a token: its parse error must not quote it.
        let path = dir.path().join("broken");
        std::fs::write(&path, "users:\n- name: x\n  user: {token: hunter2\n").unwrap();
        let err = token(&args(&path)).err().unwrap();
        assert!(!format!("{err:#}").contains("hunter2"), "{err:#}");
        let debug = format!("{:?}", args(&path));
        assert!(!debug.contains("alice-token"));
        let mut with_token = args(&path);
        with_token.token = Some(SecretString::from("hunter2"));
        assert!(!format!("{with_token:?}").contains("hunter2"));
    }

    #[test]
    fn namespace_comes_from_the_context_else_default() {
        let dir = kubeconfig_dir();
        let mut args = args(&dir.path().join("config"));
        assert_eq!(default_namespace(&args).unwrap(), "team-a");
        args.context = Some("ops".to_owned());
        assert_eq!(default_namespace(&args).unwrap(), "default");
    }

    #[test]
    fn server_url_is_checked() {
        let dir = kubeconfig_dir();
        let mut args = args(&dir.path().join("config"));
        assert_eq!(
            server(&args).unwrap().as_str(),
            "https://sigil-api.example:8443/"
        );
        for (bad, expected) in [
            (
                None,
                "no sigil-api URL: pass --server URL or set SIGIL_SERVER",
            ),
            (
                Some("https://me:hunter2@x"),
                "--server has credentials in it",
            ),
            (
                Some("ftp://x"),
                "--server `ftp://x/` is not an https:// (or, for local use, http://) URL",
            ),
        ] {
            args.server = bad.map(str::to_owned);
            let err = server(&args).err().unwrap();
            assert_eq!(message(&err).0, expected);
            assert_eq!(crate::failure::exit_code(&err), EXIT_USAGE);
        }
    }

    #[test]
    fn paths_are_joined_to_the_base_and_escaped() {
        let dir = kubeconfig_dir();
        let mut args = args(&dir.path().join("config"));
        args.token = Some(SecretString::from("t"));
        let base = Url::parse("https://gw.example/sigil/").unwrap();
        let api = Api::connect(&args, base).unwrap();
        let call = Call::get_rotation("prod", "a/b");
        assert_eq!(
            api.url(&call).unwrap().as_str(),
            "https://gw.example/sigil/v1/namespaces/prod/rotations/a%2Fb"
        );
    }

    #[test]
    fn api_errors_get_a_hint_per_code() {
        let create =
            Call::create_rotation("prod", "k", &sigil_types::RotationSpec::default()).unwrap();
        let body = |code: &str| {
            serde_json::to_vec(&ErrorBody {
                code: code.to_owned(),
                message: format!("the {code} message"),
            })
            .unwrap()
        };
        let forbidden = api_failure(StatusCode::FORBIDDEN, &body("forbidden"), &create, "x");
        assert_eq!(forbidden.to_string(), "the forbidden message");
        assert_eq!(
            forbidden.hint().unwrap(),
            "you need `create rotations.sigil.dev` in namespace prod: check with `kubectl auth can-i create rotations.sigil.dev -n prod`, and ask a cluster admin for a Role and RoleBinding that grant it"
        );
        let unauthenticated = api_failure(
            StatusCode::UNAUTHORIZED,
            &body("unauthenticated"),
            &create,
            "kubeconfig user `alice`",
        );
        assert!(
            unauthenticated
                .hint()
                .unwrap()
                .starts_with("sigil-api did not accept the token from kubeconfig user `alice`")
        );
        let timeout = api_failure(
            StatusCode::SERVICE_UNAVAILABLE,
            &body("timeout"),
            &create,
            "x",
        );
        assert_eq!(
            timeout.hint().unwrap(),
            "the Rotation may have been created all the same: run the same command with `--idempotency-key k` to follow it instead of making another"
        );
        for code in ["rate_limited", "unavailable", "unknown_external_secret"] {
            let failure = api_failure(StatusCode::BAD_REQUEST, &body(code), &create, "x");
            assert_eq!(failure.to_string(), format!("the {code} message"));
            assert!(failure.hint().is_some(), "{code}");
        }
        let proxy = api_failure(StatusCode::BAD_GATEWAY, b"<html>", &create, "x");
        assert_eq!(
            proxy.to_string(),
            "sigil-api answered 502 Bad Gateway to POST /v1/namespaces/prod/rotations, without an error body"
        );
        let sealing = Call::rotate_sealing_key("k", &Default::default()).unwrap();
        let forbidden = api_failure(StatusCode::FORBIDDEN, &body("forbidden"), &sealing, "x");
        assert!(forbidden.hint().unwrap().contains("in Sigil's namespace"));
        let object = SealedName {
            namespace: Some("prod".to_owned()),
            name: "db".to_owned(),
        };
        let reseal = Call::reseal(&object, &serde_json::json!({})).unwrap();
        let forbidden = api_failure(StatusCode::FORBIDDEN, &body("forbidden"), &reseal, "x");
        assert!(
            forbidden
                .hint()
                .unwrap()
                .starts_with("you need `update sealedsecrets.sigil.dev` in namespace prod")
        );
    }

    #[test]
    fn idempotency_keys_are_fresh() {
        let (a, b) = (
            fresh_idempotency_key().unwrap(),
            fresh_idempotency_key().unwrap(),
        );
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn backoff_grows() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
    }
}
