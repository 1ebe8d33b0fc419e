//! The internal HTTP server: `/healthz` (alive), `/readyz` (caches synced and leading),
//! `/metrics` (Prometheus), and for `sigil-api`, which holds no private key,
//! `POST /internal/v1/verify` and `POST /internal/v1/reseal` of a SealedSecret: only
//! sigil-api's token opens them (see [`crate::http::caller`]), and their cryptography runs
//! off the async workers, a few at a time, so a flood slows them and nothing else. No
//! answer, error or log line of these ever holds a plaintext value.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sigil_types::SealedSecret;
use sigil_types::api::{ErrorBody, VerifyReport};

pub mod caller;

use crate::common::metrics::Metrics;
use crate::sealed::keys::{KeyState, Keys};
use crate::sealed::verify::{self, ResealError};
use caller::{INTERNAL_AUDIENCE, InternalCallers, Refusal};

/// The largest body verify and re-seal read. A SealedSecret that holds a full Secret
/// (1 MiB of data, the API server's limit) is about 1.4 MB once sealed and base64-encoded
/// (`sigil_types::MAX_SEALED_VALUE_LEN`); 2 MiB leaves room for its metadata and template
/// (labels and annotations, at most 256 KiB each), so every SealedSecret the cluster could
/// store fits, while one request still cannot make a replica buffer much more.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
// Fails the build if the CRD ever admits a value too large for this limit to carry.
const _: () = assert!(MAX_BODY_BYTES as u64 >= sigil_types::MAX_SEALED_VALUE_LEN + 512 * 1024);

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Set once this replica leads and its caches have synced.
    pub ready: Arc<AtomicBool>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The sealing keys; empty until this replica leads and has loaded them.
    pub keys: Arc<Keys>,
    /// Who may call verify and re-seal.
    pub callers: Arc<InternalCallers>,
    /// Slots for verify and re-seal work, one per core.
    pub crypto_slots: Arc<tokio::sync::Semaphore>,
}

impl HttpState {
    /// A state with one crypto slot per core.
    pub fn new(
        ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
        keys: Arc<Keys>,
        callers: Arc<InternalCallers>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            ready,
            metrics,
            keys,
            callers,
            crypto_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }
}

/// How long a verify or re-seal waits for a crypto slot before it answers 503.
const CRYPTO_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The internal router.
pub fn router(state: HttpState) -> Router {
    let internal = Router::new()
        .route("/internal/v1/verify", post(verify))
        .route("/internal/v1/reseal", post(reseal))
        // Checked before the body is read: an unauthenticated caller costs no buffering.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            only_sigil_api,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(internal)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn only_sigil_api(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.callers.check(authorization).await {
        Ok(()) => next.run(request).await,
        Err(Refusal::Unauthenticated) => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!(
                    "the internal endpoints answer sigil-api only: send its ServiceAccount's token for audience `{INTERNAL_AUDIENCE}` as `Authorization: Bearer`; everyone else calls sigil-api"
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            response
        }
        Err(Refusal::Unavailable) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the controller cannot check the caller's token with the Kubernetes API server; retry shortly",
        )
        .into_response(),
    }
}

/// Runs `work` on the blocking pool once a crypto slot is free: X25519 for a large
/// SealedSecret takes milliseconds, which on an async worker would stall the Lease
/// renewal and the probes.
async fn off_the_runtime<T: Send + 'static>(
    state: &HttpState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the controller is busy with other verify and re-seal requests; retry shortly",
        )
    };
    let permit = tokio::time::timeout(CRYPTO_WAIT, state.crypto_slots.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|err| {
        tracing::error!(error = %err, "verify or re-seal work stopped");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the work stopped unexpectedly; the controller's log says why",
        )
    })
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for leadership or for caches to sync\n",
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// An error answer: a status and the JSON body every caller reads. Messages say what to
/// fix; internals go to the log.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this controller replica has not loaded the sealing keys (it is standing by for leadership or still starting); retry against the leader",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the SealedSecret as JSON, with `Content-Type: application/json`",
            ),
            JsonRejection::JsonDataError(err) => Self::invalid_json(format!(
                "the body is not a SealedSecret: {}",
                withhold_strings(&cause(&err))
            )),
            JsonRejection::JsonSyntaxError(err) => Self::invalid_json(format!(
                "the body is not valid JSON: {}",
                withhold_strings(&cause(&err))
            )),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body is larger than {MAX_BODY_BYTES} bytes, more than any SealedSecret of one Secret (at most 1 MiB of data) needs: send one SealedSecret at a time, or split the Secret"
                ),
            ),
            other => Self::invalid_json(format!("cannot read the body: {}", other.body_text())),
        }
    }
}

/// serde's own words, with the path to the field (axum's prefix left out).
fn cause(err: &dyn std::error::Error) -> String {
    err.source()
        .map_or_else(|| err.to_string(), |source| source.to_string())
}

/// serde quotes a string it did not expect (`invalid type: string "…"`); a value put in
/// the wrong field may be a secret, so the quote is withheld.
fn withhold_strings(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let quoted = &rest[at + MARK.len()..];
        let mut escaped = false;
        let end = quoted
            .char_indices()
            .find(|&(_, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes
            })
            .map_or(quoted.len(), |(i, _)| i + 1);
        rest = &quoted[end..];
    }
    out.push_str(rest);
    out
}

/// The keys, or 503 on a replica that has not loaded them.
fn loaded_keys(state: &HttpState) -> Result<Arc<KeyState>, ApiError> {
    let keys = state.keys.current();
    if keys.active.is_none() {
        return Err(ApiError::unavailable());
    }
    Ok(keys)
}

fn required(value: Option<&str>, missing: impl FnOnce() -> String) -> Result<String, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid_json(missing()))
}

/// The SealedSecret in the body and the namespace and name its values are bound to.
fn sealed_secret(
    body: Result<Json<SealedSecret>, JsonRejection>,
) -> Result<(SealedSecret, String, String), ApiError> {
    let Json(obj) = body?;
    let namespace = required(obj.metadata.namespace.as_deref(), || {
        "the SealedSecret has no metadata.namespace: set metadata.namespace to the namespace it is applied in, since every value is bound to it".to_owned()
    })?;
    let name = required(obj.metadata.name.as_deref(), || {
        format!(
            "the SealedSecret in namespace {namespace} has no metadata.name: set metadata.name to the name it is applied under"
        )
    })?;
    Ok((obj, namespace, name))
}

async fn verify(
    State(state): State<HttpState>,
    body: Result<Json<SealedSecret>, JsonRejection>,
) -> Result<Json<VerifyReport>, ApiError> {
    let keys = loaded_keys(&state)?;
    let (obj, namespace, name) = sealed_secret(body)?;
    let report = {
        let (namespace, name) = (namespace.clone(), name.clone());
        off_the_runtime(&state, move || {
            verify::verify(&obj, &namespace, &name, &keys)
        })
        .await?
    };
    tracing::debug!(%namespace, %name, all_open = report.all_open(), "verified");
    Ok(Json(report))
}

async fn reseal(
    State(state): State<HttpState>,
    body: Result<Json<SealedSecret>, JsonRejection>,
) -> Result<Json<SealedSecret>, ApiError> {
    let keys = loaded_keys(&state)?;
    let (obj, namespace, name) = sealed_secret(body)?;
    let resealed = {
        let (namespace, name) = (namespace.clone(), name.clone());
        off_the_runtime(&state, move || {
            verify::reseal(&obj, &namespace, &name, &keys)
        })
        .await?
    };
    match resealed {
        Ok(resealed) => {
            tracing::info!(%namespace, %name, values = resealed.spec.encrypted_data.len(), "re-sealed to the active key");
            Ok(Json(resealed))
        }
        Err(err @ (ResealError::NotOpened { .. } | ResealError::OtherRecipients { .. })) => {
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("SealedSecret {namespace}/{name}: {err}"),
            ))
        }
        Err(ResealError::NoActiveKey) => Err(ApiError::unavailable()),
        Err(ResealError::Seal(err)) => {
            tracing::error!(%namespace, %name, error = %err, "re-seal failed: cannot seal a value again");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!(
                    "SealedSecret {namespace}/{name} could not be re-sealed; the controller's log says why"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::Request;
    use sigil_core::{Binding, Envelope, Keyring, PrivateKey, Scope, open, seal};
    use sigil_types::SealedSecretSpec;
    use tower::ServiceExt as _;

    use super::*;

    const NS: &str = "prod";
    const NAME: &str = "db";
    const PASSWORD: &[u8] = b"correct horse battery staple";

    fn copy(key: &PrivateKey) -> PrivateKey {
        PrivateKey::from_bytes(key.to_bytes())
    }

    /// A replica holding `keys`, the last one active (newest).
    fn state(keys: &[&PrivateKey]) -> HttpState {
        let loaded = Arc::new(Keys::default());
        loaded.replace(KeyState {
            keyring: keys.iter().map(|k| copy(k)).collect(),
            active: keys.last().map(|k| (k.id(), jiff::Timestamp::UNIX_EPOCH)),
            ..KeyState::default()
        });
        HttpState::new(
            Arc::new(AtomicBool::new(true)),
            Arc::new(Metrics::default()),
            loaded,
            Arc::new(InternalCallers::new(
                Arc::new(OnlyApiToken),
                "sigil-system/sigil-api",
            )),
        )
    }

    const API_TOKEN: &str = "api-token";

    /// Accepts [`API_TOKEN`] as sigil-api's, and nothing else.
    struct OnlyApiToken;

    impl crate::http::caller::TokenReviewer for OnlyApiToken {
        fn review<'a>(
            &'a self,
            token: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<String>, String>> {
            Box::pin(async move {
                Ok((token == API_TOKEN)
                    .then(|| "system:serviceaccount:sigil-system:sigil-api".to_owned()))
            })
        }
    }

    fn sealed_for(key: &PrivateKey, namespace: &str, data_key: &str, value: &[u8]) -> String {
        let binding = Binding::new(Scope::Strict, namespace, NAME, data_key).unwrap();
        seal(&[*key.public_key()], &binding, value).unwrap()
    }

    fn sealed_secret(data: BTreeMap<String, String>) -> SealedSecret {
        let mut obj = SealedSecret::new(
            NAME,
            SealedSecretSpec {
                encrypted_data: data,
                ..SealedSecretSpec::default()
            },
        );
        obj.metadata.namespace = Some(NS.to_owned());
        obj
    }

    async fn post(
        state: HttpState,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let response = router(state)
            .oneshot(
                Request::post(path)
                    .header("content-type", content_type)
                    .header("authorization", format!("Bearer {API_TOKEN}"))
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn post_json(state: HttpState, path: &str, obj: &SealedSecret) -> (StatusCode, Vec<u8>) {
        post(
            state,
            path,
            "application/json",
            serde_json::to_vec(obj).unwrap(),
        )
        .await
    }

    fn error(body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap()
    }

    fn holds(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// `text` with the last byte of its encrypted payload flipped.
    fn tampered(text: &str) -> String {
        let mut bytes = Envelope::decode(text).unwrap().to_bytes();
        *bytes.last_mut().unwrap() ^= 1;
        Envelope::from_bytes(&bytes).unwrap().encode()
    }

    #[tokio::test]
    async fn verify_judges_each_value_and_never_answers_with_one() {
        let cluster = PrivateKey::generate().unwrap();
        let elsewhere = PrivateKey::generate().unwrap();
        let obj = sealed_secret(BTreeMap::from([
            (
                "good".to_owned(),
                sealed_for(&cluster, NS, "good", PASSWORD),
            ),
            (
                "moved".to_owned(),
                sealed_for(&cluster, "dev", "moved", PASSWORD),
            ),
            (
                "tampered".to_owned(),
                tampered(&sealed_for(&cluster, NS, "tampered", PASSWORD)),
            ),
            (
                "unknown".to_owned(),
                sealed_for(&elsewhere, NS, "unknown", PASSWORD),
            ),
        ]));

        let (status, body) = post_json(state(&[&cluster]), "/internal/v1/verify", &obj).await;

        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert!(!holds(&body, PASSWORD));
        let report: VerifyReport = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (report.namespace.as_str(), report.name.as_str()),
            (NS, NAME)
        );
        let verdicts: Vec<(&str, bool, Option<&str>)> = report
            .keys
            .iter()
            .map(|k| (k.key.as_str(), k.opens, k.reason.as_deref()))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("good", true, None),
                ("moved", false, Some("WrongBinding")),
                ("tampered", false, Some("Tampered")),
                ("unknown", false, Some("UnknownKey")),
            ]
        );
        assert!(report.keys[0].message.is_none());
        let moved = report.keys[1].message.as_deref().unwrap();
        assert!(
            moved.starts_with(
                "key `moved`: does not authenticate for namespace `prod`, name `db`, key `moved`"
            ) && moved.contains("sigil seal -n NAMESPACE"),
            "{moved}"
        );
        let unknown = report.keys[3].message.as_deref().unwrap();
        assert!(unknown.contains(&elsewhere.id().to_string()), "{unknown}");
    }

    #[tokio::test]
    async fn reseal_seals_every_value_again_to_the_active_key_alone() {
        let old = PrivateKey::generate().unwrap();
        let new = PrivateKey::generate().unwrap();
        let mut obj = sealed_secret(BTreeMap::from([
            (
                "password".to_owned(),
                sealed_for(&old, NS, "password", PASSWORD),
            ),
            ("user".to_owned(), sealed_for(&old, NS, "user", b"admin")),
        ]));
        obj.metadata.resource_version = Some("42".to_owned());
        obj.metadata.uid = Some("0b9b1d4e".to_owned());
        obj.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "db".to_owned())]));

        let (status, body) = post_json(state(&[&old, &new]), "/internal/v1/reseal", &obj).await;

        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert!(!holds(&body, PASSWORD));
        let resealed: SealedSecret = serde_json::from_slice(&body).unwrap();
        assert_eq!(resealed.metadata.labels, obj.metadata.labels);
        assert_eq!(resealed.metadata.namespace.as_deref(), Some(NS));
        assert_eq!(
            (resealed.metadata.resource_version, resealed.metadata.uid),
            (None, None)
        );
        assert_eq!(resealed.spec.scope, obj.spec.scope);
        let only_new: Keyring = [copy(&new)].into_iter().collect();
        for (key, expected) in [("password", PASSWORD), ("user", &b"admin"[..])] {
            let text = &resealed.spec.encrypted_data[key];
            assert_ne!(text, &obj.spec.encrypted_data[key]);
            assert_eq!(Envelope::decode(text).unwrap().key_ids(), [new.id()]);
            let binding = Binding::new(Scope::Strict, NS, NAME, key).unwrap();
            assert_eq!(
                open(text, &binding, &only_new).unwrap().as_slice(),
                expected
            );
        }
    }

    #[tokio::test]
    async fn reseal_keeps_values_already_on_the_active_key_byte_for_byte() {
        let old = PrivateKey::generate().unwrap();
        let new = PrivateKey::generate().unwrap();
        let current = sealed_for(&new, NS, "user", b"admin");
        let obj = sealed_secret(BTreeMap::from([
            (
                "password".to_owned(),
                sealed_for(&old, NS, "password", PASSWORD),
            ),
            ("user".to_owned(), current.clone()),
        ]));

        let (status, body) = post_json(state(&[&old, &new]), "/internal/v1/reseal", &obj).await;

        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let resealed: SealedSecret = serde_json::from_slice(&body).unwrap();
        assert_eq!(resealed.spec.encrypted_data["user"], current);
        let password = &resealed.spec.encrypted_data["password"];
        assert_eq!(Envelope::decode(password).unwrap().key_ids(), [new.id()]);
    }

    #[tokio::test]
    async fn reseal_refuses_to_drop_recipients_this_cluster_cannot_seal_to() {
        let cluster = PrivateKey::generate().unwrap();
        let offline = PrivateKey::generate().unwrap();
        let binding = Binding::new(Scope::Strict, NS, NAME, "password").unwrap();
        let both = seal(
            &[*cluster.public_key(), *offline.public_key()],
            &binding,
            PASSWORD,
        )
        .unwrap();
        let obj = sealed_secret(BTreeMap::from([("password".to_owned(), both)]));

        let (status, body) = post_json(state(&[&cluster]), "/internal/v1/reseal", &obj).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let err = error(&body);
        assert!(
            err.message
                .contains(&format!("key `password` (also sealed to {})", offline.id()))
                && err.message.contains("sigil seal --merge-into"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn reseal_refuses_all_when_one_value_does_not_open() {
        let cluster = PrivateKey::generate().unwrap();
        let obj = sealed_secret(BTreeMap::from([
            (
                "password".to_owned(),
                sealed_for(&cluster, NS, "password", PASSWORD),
            ),
            (
                "user".to_owned(),
                sealed_for(&cluster, "dev", "user", b"admin"),
            ),
        ]));

        let (status, body) = post_json(state(&[&cluster]), "/internal/v1/reseal", &obj).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!holds(&body, PASSWORD) && !holds(&body, b"admin"));
        assert!(!holds(
            &body,
            obj.spec.encrypted_data["password"].as_bytes()
        ));
        let err = error(&body);
        assert_eq!(err.code, "invalid");
        assert!(
            err.message.starts_with("SealedSecret prod/db: 1 of 2 values did not open, so nothing was re-sealed: key `user` (WrongBinding): does not authenticate"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("`password`"), "{}", err.message);
    }

    #[tokio::test]
    async fn verify_and_reseal_refuse_every_caller_but_sigil_api_before_reading_the_body() {
        let cluster = PrivateKey::generate().unwrap();
        for path in ["/internal/v1/verify", "/internal/v1/reseal"] {
            for authorization in [None, Some("Bearer someone-else"), Some("Basic api-token")] {
                let mut request = Request::post(path).header("content-type", "application/json");
                if let Some(value) = authorization {
                    request = request.header("authorization", value);
                }
                // Larger than the body limit: refused for who sends it, not for its size.
                let response = router(state(&[&cluster]))
                    .oneshot(
                        request
                            .body(Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{path} {authorization:?}"
                );
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let err = error(&body);
                assert_eq!(err.code, "unauthenticated");
                assert!(err.message.contains("sigil-controller"), "{}", err.message);
            }
        }
        for open in ["/healthz", "/readyz", "/metrics"] {
            let response = router(state(&[&cluster]))
                .oneshot(Request::get(open).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{open}");
        }
    }

    #[tokio::test]
    async fn a_replica_without_keys_is_unavailable() {
        let cluster = PrivateKey::generate().unwrap();
        let obj = sealed_secret(BTreeMap::from([(
            "password".to_owned(),
            sealed_for(&cluster, NS, "password", PASSWORD),
        )]));
        for path in ["/internal/v1/verify", "/internal/v1/reseal"] {
            let (status, body) = post_json(state(&[]), path, &obj).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(error(&body).code, "unavailable");
        }
    }

    #[tokio::test]
    async fn bad_requests_say_what_to_fix() {
        let cluster = PrivateKey::generate().unwrap();
        let good = sealed_secret(BTreeMap::from([(
            "password".to_owned(),
            sealed_for(&cluster, NS, "password", PASSWORD),
        )]));
        let json = serde_json::to_vec(&good).unwrap();
        let mut no_namespace = good.clone();
        no_namespace.metadata.namespace = None;
        let cases: [(&str, Vec<u8>, StatusCode, &str, &str); 6] = [
            (
                "text/plain",
                json.clone(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type: application/json",
            ),
            (
                "application/json",
                b"{\"metadata\": {}".to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "not valid JSON",
            ),
            (
                "application/json",
                br#"{"metadata": {"name": "db"}, "spec": {}}"#.to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "spec: missing field `encryptedData`",
            ),
            (
                "application/json",
                br#"{"metadata": {}, "spec": {"encryptedData": "hunter2"}}"#.to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "spec.encryptedData: invalid type: a string, expected a map",
            ),
            (
                "application/json",
                serde_json::to_vec(&no_namespace).unwrap(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "set metadata.namespace",
            ),
            (
                "application/json",
                vec![b' '; MAX_BODY_BYTES + 1],
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "larger than 2097152 bytes",
            ),
        ];
        for (content_type, body, want_status, want_code, want_words) in cases {
            let (status, body) = post(
                state(&[&cluster]),
                "/internal/v1/verify",
                content_type,
                body,
            )
            .await;
            let err = error(&body);
            assert_eq!(
                (status, err.code.as_str()),
                (want_status, want_code),
                "{}",
                err.message
            );
            assert!(err.message.contains(want_words), "{}", err.message);
            assert!(!err.message.contains("hunter2"), "{}", err.message);
        }
    }

    #[test]
    fn quoted_strings_are_withheld_from_serde_messages() {
        assert_eq!(
            withhold_strings(
                r#"a: invalid type: string "p\"w\\", expected a map at line 1 column 9"#
            ),
            "a: invalid type: a string, expected a map at line 1 column 9"
        );
        assert_eq!(
            withhold_strings("missing field `spec`"),
            "missing field `spec`"
        );
    }
}
