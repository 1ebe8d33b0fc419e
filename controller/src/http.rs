//! The internal HTTP server: `/healthz` (alive), `/readyz` (caches synced and leading),
//! `/metrics` (Prometheus).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Set once this replica leads and its caches have synced.
    pub ready: Arc<AtomicBool>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

/// The internal router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
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
