//! Every error the API returns: a stable `code`, the right status and a message that
//! says what was wrong and how to fix it. Internals (apiserver failures, controller
//! outages) are logged here and answered in general terms.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sigil_types::api::ErrorBody;

/// The `code` of an error response, kept in the response's extensions so that the audit
/// line can record it.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

/// Why a request was refused or failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON, or does not have the expected shape.
    #[error("{0}")]
    InvalidJson(String),
    /// The body has a field the API does not know (a typo would otherwise be ignored).
    #[error("{0}")]
    UnknownField(String),
    /// A header, query parameter or path segment is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No bearer token, or one the API server does not accept.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's RBAC does not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// The object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The `Idempotency-Key` was used before with another request body.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// The body is larger than `--max-body-bytes`.
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well-formed but not acceptable (validation).
    #[error("{0}")]
    Invalid(String),
    /// The Rotation names an ExternalSecret that does not exist.
    #[error("{0}")]
    UnknownExternalSecret(String),
    /// The caller sent more requests than `--rate-limit` allows.
    #[error("too many requests from this user; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after_secs: u64,
    },
    /// A server the API depends on (kube-apiserver, the controller) is not answering.
    #[error("{0}")]
    Unavailable(String),
    /// The request took longer than `--request-timeout`.
    #[error(
        "the request did not finish within {0:?}; it may still take effect, retry with the same Idempotency-Key"
    )]
    Timeout(std::time::Duration),
    /// A bug or a misconfiguration; the detail is in the log only.
    #[error("internal error; the details are in the sigil-api log")]
    Internal(String),
}

/// Shorthand for handler results.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::UnknownField(_) => "unknown_field",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::IdempotencyConflict(_) => "idempotency_conflict",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Invalid(_) => "invalid",
            ApiError::UnknownExternalSecret(_) => "unknown_external_secret",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Timeout(_) => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::UnknownField(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::IdempotencyConflict(_) => StatusCode::CONFLICT,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) | ApiError::UnknownExternalSecret(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps an API server error on behalf of a caller: what the request was about
    /// (`Rotation prod/db`) names the object in the message.
    pub fn from_kube(err: kube::Error, what: &str) -> Self {
        match &err {
            kube::Error::Api(status) if status.code == 404 => {
                ApiError::NotFound(format!("{what} not found"))
            }
            // Validation (CEL rules, schema) speaks about the caller's input: pass it on.
            kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                ApiError::Invalid(format!("{what}: {}", status.message))
            }
            kube::Error::Api(status) if status.code == 429 || status.code >= 500 => {
                tracing::warn!(error = %err, "{what}: the Kubernetes API server is overloaded or failing");
                ApiError::Unavailable(
                    "the Kubernetes API server is busy or failing; retry shortly".to_owned(),
                )
            }
            // The caller was authorized, so a refusal means sigil-api's own RBAC is narrower
            // (a namespaced install): say so rather than hide it as an internal error.
            kube::Error::Api(status) if status.code == 403 => {
                tracing::warn!(error = %err, "{what}: sigil-api's ServiceAccount was refused");
                ApiError::Forbidden(format!(
                    "sigil-api itself may not access {what}: the chart grants it Rotations only in the namespaces Sigil serves"
                ))
            }
            kube::Error::Api(_) => ApiError::Internal(format!("{what}: {err}")),
            _ => {
                tracing::warn!(error = %err, "{what}: cannot reach the Kubernetes API server");
                ApiError::Unavailable(
                    "the Kubernetes API server is not reachable; retry shortly".to_owned(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(detail = %detail, "internal error");
        }
        let status = self.status();
        let code = self.code();
        let body = ErrorBody {
            code: code.to_owned(),
            message: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}
