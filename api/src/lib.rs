//! `sigil-api`: rotation from a runbook. Callers authenticate with their own Kubernetes
//! token, RBAC decides what they may do, and the handlers only record the request as a
//! `Rotation` (or pass a sealed object to the controller); the controller does the work.
//! [`router`] is the whole HTTP surface, so tests drive it in-process.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod rotations;
pub mod sealed;
pub mod serve;

use auth::Reviewer;
use error::ApiError;

/// How long a read of the public key file serves `GET /v1/publickeys`: a new key shows
/// within this long (the controller seals with it from then on; older keys still open).
pub const PUBLIC_KEYS_TTL: Duration = Duration::from_secs(5);

/// How many users' worth of requests one source address may send.
pub const SOURCE_FACTOR: u32 = 5;
/// How long the readiness probe's answer is reused: probes from every kubelet and load
/// balancer cost the API server one request per this long.
const READINESS_TTL: Duration = Duration::from_secs(10);

/// How the API behaves; the command line fills it in.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Sigil's own namespace: sealing-key Rotations and the public key ConfigMap.
    pub namespace: String,
    /// Base URL of the controller's internal HTTP server.
    pub controller_url: String,
    /// A token of this API's ServiceAccount for the audience `sigil-controller`, read
    /// on every call (the kubelet renews a projected token in place): the controller's
    /// internal endpoints answer no one else.
    pub controller_token_file: Option<std::path::PathBuf>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Requests per second per user (bursts of twice that); zero turns the limit off.
    pub rate_limit: u32,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The API's own client (its ServiceAccount).
    pub client: Client,
    /// Checks tokens and requests.
    pub reviewer: Arc<dyn Reviewer>,
    /// Per-user request limit.
    pub limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    /// Per-source-address limit, checked before a token is reviewed: a flood of bad
    /// tokens from one place costs the API server a bounded number of TokenReviews.
    pub source_limiter: Option<Arc<DefaultKeyedRateLimiter<std::net::IpAddr>>>,
    /// The API server's last answer to the readiness probe, and when it was asked.
    readiness: Arc<tokio::sync::Mutex<Option<(std::time::Instant, bool)>>>,
    /// Calls the controller's internal endpoints.
    pub controller: reqwest::Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Request counts and latencies.
    pub metrics: Arc<metrics::Metrics>,
    /// The public key file, briefly: anyone may ask for it, and without this every
    /// unauthenticated request would cost the API server a read.
    pub public_keys: moka::future::Cache<(), String>,
    /// Settings.
    pub settings: Arc<Settings>,
}

impl AppState {
    /// Builds the state; `reviewer` is the real [`auth::KubeReviewer`] (cached) or a fake.
    pub fn new(client: Client, reviewer: Arc<dyn Reviewer>, settings: Settings) -> Self {
        let quota = |per_second: NonZeroU32| {
            let burst = per_second.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            Quota::per_second(per_second).allow_burst(burst)
        };
        let limiter = NonZeroU32::new(settings.rate_limit)
            .map(|per_second| Arc::new(RateLimiter::keyed(quota(per_second))));
        // One address may carry several users (a runbook host, a NAT): a few times one
        // user's rate.
        let source_limiter = NonZeroU32::new(settings.rate_limit.saturating_mul(SOURCE_FACTOR))
            .map(|per_second| Arc::new(RateLimiter::keyed(quota(per_second))));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "sigil-api".to_owned(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        let controller = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default();
        Self {
            client,
            reviewer,
            limiter,
            source_limiter,
            readiness: Arc::default(),
            controller,
            recorder,
            metrics: Arc::default(),
            public_keys: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(PUBLIC_KEYS_TTL)
                .build(),
            settings: Arc::new(settings),
        }
    }
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/publickeys", get(sealed::public_keys))
        .route(
            "/v1/namespaces/{namespace}/rotations",
            post(rotations::create).get(rotations::list),
        )
        .route(
            "/v1/namespaces/{namespace}/rotations/{name}",
            get(rotations::get),
        )
        .route("/v1/sealingkey/rotate", post(rotations::rotate_sealing_key))
        .route("/v1/verify", post(sealed::verify))
        .route("/v1/reseal", post(sealed::reseal))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::observe,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API is described at GET /v1/openapi.json".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::BadRequest(
        "this endpoint does not take that method; see GET /v1/openapi.json".to_owned(),
    )
}

/// Ready when the Kubernetes API server answers: without it no request can be served.
/// Asked at most once per [`READINESS_TTL`], however many probes come.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let answered = {
        let mut last = state.readiness.lock().await;
        match *last {
            Some((at, answered)) if at.elapsed() < READINESS_TTL => answered,
            _ => {
                let probe =
                    tokio::time::timeout(Duration::from_secs(2), state.client.apiserver_version());
                let answered = matches!(probe.await, Ok(Ok(_)));
                *last = Some((std::time::Instant::now(), answered));
                answered
            }
        }
    };
    if answered {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the Kubernetes API server does not answer\n",
        )
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document_text(),
    )
}

#[cfg(test)]
mod tests;
