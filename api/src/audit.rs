//! One JSON line per call on the `audit` target (stdout), allowed or not: who, from
//! where, what, the decision and the result. Handlers and extractors fill in what they
//! learn through the request's [`Audit`] handle; the middleware writes the line when the
//! response is ready, so a refused, failed or timed-out call is recorded too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// What a handler learned about the call, for its audit line.
#[derive(Clone, Debug, Default)]
pub struct Audit(Arc<Mutex<AuditEntry>>);

#[derive(Debug, Default)]
struct AuditEntry {
    user: Option<String>,
    groups: Vec<String>,
    resource: Option<String>,
    decision: Option<&'static str>,
    rotation: Option<String>,
}

impl Audit {
    fn with<T>(&self, f: impl FnOnce(&mut AuditEntry) -> T) -> T {
        // A poisoned entry only means a handler panicked mid-update; record what is there.
        let mut entry = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut entry)
    }

    /// The caller, once authenticated.
    pub fn user(&self, user: &str, groups: &[String]) {
        self.with(|e| {
            e.user = Some(user.to_owned());
            e.groups = groups.to_vec();
        });
    }

    /// What the call is about and whether RBAC allowed it.
    pub fn decision(&self, resource: String, allowed: bool) {
        self.with(|e| {
            e.resource = Some(resource);
            e.decision = Some(if allowed { "allow" } else { "deny" });
        });
    }

    /// The Rotation the call created or read.
    pub fn rotation(&self, name: &str) {
        self.with(|e| e.rotation = Some(name.to_owned()));
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts.extensions.get::<Audit>().cloned().unwrap_or_default())
    }
}

/// Paths probed by kubelet and Prometheus every few seconds: measured, not audited.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Times the call, bounds it by `--request-timeout`, counts it and writes its audit line.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let audit = Audit::default();
    request.extensions_mut().insert(audit.clone());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let timeout = state.settings.request_timeout;
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout).into_response(),
    };
    let status = response.status();
    state
        .metrics
        .observe(&route, method.as_str(), status.as_u16(), started.elapsed());
    if !is_probe(&path) {
        let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
        audit.with(|entry| {
            tracing::info!(
                target: "audit",
                user = entry.user.as_deref().unwrap_or(""),
                groups = %entry.groups.join(","),
                source = source.as_deref().unwrap_or(""),
                method = %method,
                path = %path,
                resource = entry.resource.as_deref().unwrap_or(""),
                decision = entry.decision.unwrap_or("none"),
                result = status.as_u16(),
                code = code.unwrap_or(""),
                rotation = entry.rotation.as_deref().unwrap_or(""),
                duration_ms = started.elapsed().as_millis() as u64,
                "api call"
            );
        });
    }
    response
}
