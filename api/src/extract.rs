//! Request extractors: the authenticated, rate-limited caller and a bounded JSON body,
//! each failing with the API's own error so that every refusal has a code.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::audit::Audit;
use crate::auth::{Access, UserInfo};
use crate::error::{ApiError, Result};

/// The authenticated caller of a request that needs a bearer token.
pub struct Caller {
    /// Who the API server says the token belongs to.
    pub user: UserInfo,
    audit: Audit,
}

const TOKEN_HINT: &str = "send `Authorization: Bearer <token>` with a Kubernetes token: \
    the one in your kubeconfig, or `kubectl create token <serviceaccount>`";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let audit = parts.extensions.get::<Audit>().cloned().unwrap_or_default();
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let (Some(limiter), Some(source)) = (&state.source_limiter, source)
            && let Err(not_until) = limiter.check_key(&source)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            });
        }
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated(format!(
                "this request needs a bearer token: {TOKEN_HINT}"
            )));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated(format!(
                    "the Authorization header is not a bearer token: {TOKEN_HINT}"
                ))
            })?;
        let user = state.reviewer.authenticate(token).await?.ok_or_else(|| {
            ApiError::Unauthenticated(
                "the Kubernetes API server did not accept the bearer token (TokenReview): it is \
                 expired, revoked or from another cluster; get a fresh one"
                    .to_owned(),
            )
        })?;
        audit.user(&user.username, &user.groups);
        if let Some(limiter) = &state.limiter
            && let Err(not_until) = limiter.check_key(&user.username)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            });
        }
        Ok(Caller { user, audit })
    }
}

impl Caller {
    /// Asks RBAC whether the caller may do `access`; the answer goes into the audit line.
    pub async fn authorize(&self, state: &AppState, access: Access) -> Result<()> {
        let decision = state.reviewer.authorize(&self.user, &access).await?;
        self.audit.decision(access.describe(), decision.allowed);
        if decision.allowed {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "user `{}` may not {}: RBAC must grant verb `{}` on resource `{}` in API group `{}` \
             (a Role and RoleBinding in that namespace)",
            self.user.username,
            access.describe(),
            access.verb,
            access.resource,
            sigil_types::GROUP,
        )))
    }

    /// The audit handle of this request.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }
}

/// A request body of at most `--max-body-bytes` (and at most `MAX` bytes when `MAX` is not
/// zero), which must be JSON unless it is empty.
pub struct JsonBody<const MAX: usize = 0>(pub Bytes);

/// The most a Rotation's spec needs (its longest field, `reason`, is 1 KiB): a caller
/// with a valid token cannot make the API buffer `--max-body-bytes` per request here.
pub const SPEC_BODY_LIMIT: usize = 16 * 1024;

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn unsupported(content_type: &str) -> ApiError {
    ApiError::UnsupportedMediaType(format!(
        "the body must be JSON sent with `Content-Type: application/json` (got `{content_type}`)"
    ))
}

impl<const MAX: usize> FromRequest<AppState> for JsonBody<MAX> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let limit = match MAX {
            0 => state.settings.max_body_bytes,
            max => max.min(state.settings.max_body_bytes),
        };
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
        if let Some(content_type) = &content_type
            && !is_json(content_type)
        {
            return Err(unsupported(content_type));
        }
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(ApiError::BodyTooLarge(limit));
        }
        let bytes = Limited::new(request.into_body(), limit)
            .collect()
            .await
            .map_err(|err| {
                if err.downcast_ref::<LengthLimitError>().is_some() {
                    ApiError::BodyTooLarge(limit)
                } else {
                    ApiError::BadRequest("the request body could not be read".to_owned())
                }
            })?
            .to_bytes();
        if content_type.is_none() && !bytes.is_empty() {
            return Err(unsupported("none"));
        }
        Ok(JsonBody(bytes))
    }
}

/// Parses `bytes` as `T`, refusing fields `T` does not have: a misspelt `restart` would
/// otherwise be dropped silently and the Rotation would do what the caller did not ask.
pub fn parse_strict<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let mut unknown = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_ignored::deserialize(&mut deserializer, |path| {
        // `?` marks an Option's Some, which means nothing to the caller.
        let path = path.to_string().replace(".?", "").replace("?.", "");
        unknown.push(format!("`{path}`"));
    })
    .map_err(|err| ApiError::InvalidJson(format!("{what} is not valid: {err}")))?;
    deserializer
        .end()
        .map_err(|err| ApiError::InvalidJson(format!("{what} is not valid: {err}")))?;
    if !unknown.is_empty() {
        return Err(ApiError::UnknownField(format!(
            "{what} has unknown field(s) {}: check the spelling against GET /v1/openapi.json",
            unknown.join(", ")
        )));
    }
    Ok(value)
}
