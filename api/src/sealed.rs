//! Sealed values: the public keys (from the ConfigMap the controller publishes), and
//! verify and re-seal, which the controller answers through its internal endpoints
//! because only it holds private keys. Neither answer ever carries a plaintext value.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use sigil_types::SealedSecret;
use sigil_types::api::ErrorBody;
use sigil_types::keys::{PUBLIC_KEYS_CONFIGMAP, PUBLIC_KEYS_DATA};

use crate::AppState;
use crate::auth::Access;
use crate::error::{ApiError, Result};
use crate::extract::{Caller, JsonBody};

/// The cluster's public key file, for `sigil seal --cert`.
#[utoipa::path(
    get,
    operation_id = "getPublicKeys",
    path = "/v1/publickeys",
    tag = "sealing",
    responses(
        (status = 200, description = "The public key file: the active key first", content_type = "text/plain", body = String),
        (status = 503, description = "The controller has not published keys yet", body = crate::openapi::ErrorDoc),
    )
)]
pub async fn public_keys(State(state): State<AppState>) -> Result<Response> {
    let keys = state
        .public_keys
        .try_get_with((), read_public_keys(&state))
        .await
        .map_err(|err| err.as_ref().clone())?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], keys).into_response())
}

async fn read_public_keys(state: &AppState) -> Result<String> {
    let namespace = &state.settings.namespace;
    let what = format!("ConfigMap `{namespace}/{PUBLIC_KEYS_CONFIGMAP}`");
    let config_map = Api::<ConfigMap>::namespaced(state.client.clone(), namespace)
        .get_opt(PUBLIC_KEYS_CONFIGMAP)
        .await
        .map_err(|err| ApiError::from_kube(err, &what))?;
    config_map
        .and_then(|cm| cm.data?.remove(PUBLIC_KEYS_DATA))
        .ok_or_else(|| {
            ApiError::Unavailable(format!(
                "no public keys yet: the controller publishes them in {what} once it has started"
            ))
        })
}

/// Reports, per key, whether a SealedSecret's values open in this cluster.
#[utoipa::path(
    post,
    operation_id = "verifySealedSecret",
    path = "/v1/verify",
    tag = "sealing",
    request_body(content = crate::openapi::SealedSecretDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "One verdict per key; never a value", body = crate::openapi::VerifyReportDoc),
        (status = "4XX", description = "Refused", body = crate::openapi::ErrorDoc),
        (status = 503, description = "The controller is not reachable", body = crate::openapi::ErrorDoc),
    ),
    security(("bearer" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    through_controller(&state, &caller, body, "get", "verify").await
}

/// Seals a SealedSecret's values again to the newest key, inside the controller.
#[utoipa::path(
    post,
    operation_id = "resealSealedSecret",
    path = "/v1/reseal",
    tag = "sealing",
    request_body(content = crate::openapi::SealedSecretDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The same SealedSecret sealed to the newest key", body = crate::openapi::SealedSecretDoc),
        (status = "4XX", description = "Refused, or a value that does not open", body = crate::openapi::ErrorDoc),
        (status = 503, description = "The controller is not reachable", body = crate::openapi::ErrorDoc),
    ),
    security(("bearer" = []))
)]
pub async fn reseal(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    through_controller(&state, &caller, body, "update", "reseal").await
}

async fn through_controller(
    state: &AppState,
    caller: &Caller,
    body: Bytes,
    verb: &'static str,
    endpoint: &str,
) -> Result<Response> {
    if body.is_empty() {
        return Err(ApiError::InvalidJson(
            "the body must be a SealedSecret object as JSON".to_owned(),
        ));
    }
    let sealed: SealedSecret = serde_json::from_slice(&body)
        .map_err(|err| ApiError::InvalidJson(format!("the body is not a SealedSecret: {err}")))?;
    let namespace = sealed.metadata.namespace.clone().ok_or_else(|| {
        ApiError::Invalid(
            "the SealedSecret has no `metadata.namespace`: set the namespace it was sealed for"
                .to_owned(),
        )
    })?;
    // An empty namespace or name would make the access review cover every namespace or
    // every SealedSecret of one; the controller refuses both anyway.
    if !sigil_types::is_dns_label(&namespace) {
        return Err(ApiError::Invalid(format!(
            "`metadata.namespace` `{namespace}` is not a namespace name: set the namespace the SealedSecret was sealed for"
        )));
    }
    if !sealed
        .metadata
        .name
        .as_deref()
        .is_some_and(sigil_types::is_object_name)
    {
        return Err(ApiError::Invalid(
            "`metadata.name` is missing or not an object name: set the name the SealedSecret was sealed for".to_owned(),
        ));
    }
    caller
        .authorize(
            state,
            Access {
                verb,
                resource: "sealedsecrets",
                namespace,
                name: sealed.metadata.name.clone(),
            },
        )
        .await?;
    let url = format!("{}/internal/v1/{endpoint}", state.settings.controller_url);
    let unreachable = |err: reqwest::Error| {
        tracing::warn!(error = %err, %url, "cannot reach the controller");
        ApiError::Unavailable("the sigil controller is not reachable; retry shortly".to_owned())
    };
    let mut request = state
        .controller
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(path) = &state.settings.controller_token_file {
        let token = tokio::fs::read_to_string(path).await.map_err(|err| {
            tracing::error!(error = %err, path = %path.display(), "cannot read the token for the controller (--controller-token-file)");
            ApiError::Unavailable(
                "sigil-api cannot prove itself to the controller (its token file is unreadable); the API's log says why".to_owned(),
            )
        })?;
        request = request.bearer_auth(token.trim());
    }
    let response = request.body(body).send().await.map_err(unreachable)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(unreachable)?;
    if status.is_success() {
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response());
    }
    // The controller's refusals speak about the caller's object; pass their words on.
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|body| body.message)
        .unwrap_or_default();
    Err(match status {
        StatusCode::BAD_REQUEST => ApiError::InvalidJson(message),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge(state.settings.max_body_bytes),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid(message),
        StatusCode::UNAUTHORIZED => {
            tracing::error!(%url, "the controller refused sigil-api's token: check --controller-token-file (audience sigil-controller) and the controller's --api-service-account");
            ApiError::Unavailable(
                "the sigil controller refused sigil-api's own credentials; the API's log says why".to_owned(),
            )
        }
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(
            "the sigil controller has not loaded its keys yet (starting, or no leader); retry shortly"
                .to_owned(),
        ),
        _ => ApiError::Internal(format!("the controller answered {status} to {url}: {message}")),
    })
}
