//! Rotations: the handlers authenticate, authorize, validate and record a `Rotation`;
//! the controller does the work. `requestedBy` comes from the TokenReview, never from
//! the body. An `Idempotency-Key` names the Rotation after the caller and the key, so a
//! retry (even a concurrent one) meets the Rotation the first attempt made instead of
//! making a second.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Deserialize;
use sigil_types::api::{RotationList, SealingKeyRotationRequest};
use sigil_types::{ExternalSecret, Rotation, RotationSpec, SealingKeyTarget};

use crate::AppState;
use crate::auth::Access;
use crate::error::{ApiError, Result};
use crate::extract::{Caller, JsonBody, SPEC_BODY_LIMIT, parse_strict};

use sigil_types::REQUEST_HASH_ANNOTATION;
/// The request header that makes a create safe to retry.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const FIELD_MANAGER: &str = "sigil-api";

/// Query parameters of `POST .../rotations`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Plan only: the Rotation records what it would change and changes nothing.
    dry_run: Option<bool>,
}

/// A namespace name: a DNS-1123 label.
fn check_namespace(namespace: &str) -> Result<()> {
    if sigil_types::is_dns_label(namespace) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{namespace}` is not a namespace name (lowercase letters, digits and `-`, at most 63)"
        )))
    }
}

/// An object name: a DNS-1123 subdomain, checked before it goes into a URL.
fn check_name(name: &str) -> Result<()> {
    if sigil_types::is_object_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{name}` is not an object name (lowercase letters, digits, `-` and `.`, at most 253)"
        )))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= 255)
        .map(|key| Some(key.to_owned()))
        .ok_or_else(|| {
            ApiError::BadRequest(
                "the Idempotency-Key header must be 1 to 255 visible ASCII characters, e.g. a UUID"
                    .to_owned(),
            )
        })
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    hex::encode(context.finish())
}

/// A name prefix from `base`: short enough to leave room for a suffix, and still a valid
/// DNS subdomain once cut.
fn name_prefix(base: &str) -> String {
    let cut: String = base.chars().take(40).collect();
    cut.trim_end_matches(['-', '.']).to_owned()
}

/// Creates a Rotation for an ExternalSecret's remote key.
#[utoipa::path(
    post,
    operation_id = "createRotation",
    path = "/v1/namespaces/{namespace}/rotations",
    tag = "rotations",
    params(
        ("namespace" = String, Path, description = "Namespace of the ExternalSecret"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body from the same user return the same Rotation"),
        CreateQuery,
    ),
    request_body(content = crate::openapi::RotationSpecDoc, content_type = "application/json",
        description = "The Rotation's spec; `requestedBy` is set from the caller's token"),
    responses(
        (status = 201, description = "Rotation created", body = crate::openapi::RotationDoc),
        (status = 200, description = "The Rotation an earlier request with this Idempotency-Key created", body = crate::openapi::RotationDoc),
        (status = "4XX", description = "Refused", body = crate::openapi::ErrorDoc),
        (status = "5XX", description = "Unavailable or failed", body = crate::openapi::ErrorDoc),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: HeaderMap,
    caller: Caller,
    JsonBody(body): JsonBody<SPEC_BODY_LIMIT>,
) -> Result<(StatusCode, Json<Rotation>)> {
    check_namespace(&namespace)?;
    let Query(query) = query.map_err(|err| {
        ApiError::BadRequest(format!(
            "{}; the only query parameter is `dryRun=true|false`",
            err.body_text()
        ))
    })?;
    let idempotency_key = idempotency_key(&headers)?;
    caller
        .authorize(&state, Access::rotations("create", &namespace, None))
        .await?;
    if body.is_empty() {
        return Err(ApiError::InvalidJson(
            "the body must be a Rotation spec, e.g. {\"externalSecretRef\": {\"name\": \"db\"}, \"reason\": \"INC-123\"}"
                .to_owned(),
        ));
    }
    let mut spec: RotationSpec = parse_strict(&body, "the Rotation spec")?;
    if spec.requested_by.is_some() {
        return Err(ApiError::Invalid(
            "`requestedBy` is set by sigil-api from your token; remove it from the body".to_owned(),
        ));
    }
    if spec.sealing_key.is_some() {
        return Err(ApiError::Invalid(
            "this endpoint rotates an ExternalSecret's remote key; rotate the sealing key with POST /v1/sealingkey/rotate"
                .to_owned(),
        ));
    }
    let Some(target) = spec.external_secret_ref.clone() else {
        return Err(ApiError::Invalid(
            "`externalSecretRef.name` is required: the ExternalSecret whose remote key to rotate"
                .to_owned(),
        ));
    };
    check_name(&target.name)?;
    if spec.value.is_some() && spec.generate.is_some() {
        return Err(ApiError::Invalid(
            "set `generate` or `value`, not both: `value` is the new value itself".to_owned(),
        ));
    }
    if spec.value.is_some() && target.secret_key.is_none() {
        return Err(ApiError::Invalid(
            "`value` is sealed for one key of the ExternalSecret: set `externalSecretRef.secretKey` (sigil rotate --key)"
                .to_owned(),
        ));
    }
    if query.dry_run == Some(true) {
        spec.dry_run = Some(true);
    }
    let planned = Planned::new(&caller, &namespace, spec, idempotency_key, &target.name)?;
    // A retry costs one read: the Rotation its first attempt made.
    if let Some(answer) = planned.replay(&state, &caller).await? {
        return Ok(answer);
    }
    let externals = Api::<ExternalSecret>::namespaced(state.client.clone(), &namespace);
    let what = format!("ExternalSecret `{namespace}/{}`", target.name);
    if externals
        .get_opt(&target.name)
        .await
        .map_err(|err| ApiError::from_kube(err, &what))?
        .is_none()
    {
        return Err(ApiError::UnknownExternalSecret(format!(
            "{what} does not exist; list them with `kubectl get externalsecrets.sigil.dev -n {namespace}`"
        )));
    }
    planned.create(&state, &caller).await
}

/// Rotates the sealing key: a Rotation in Sigil's own namespace.
#[utoipa::path(
    post,
    operation_id = "rotateSealingKey",
    path = "/v1/sealingkey/rotate",
    tag = "sealing",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body(content = crate::openapi::SealingKeyRotationRequestDoc, content_type = "application/json",
        description = "Optional"),
    responses(
        (status = 201, description = "Rotation created", body = crate::openapi::RotationDoc),
        (status = 200, description = "The Rotation an earlier request with this Idempotency-Key created", body = crate::openapi::RotationDoc),
        (status = "4XX", description = "Refused", body = crate::openapi::ErrorDoc),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_sealing_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
    JsonBody(body): JsonBody<SPEC_BODY_LIMIT>,
) -> Result<(StatusCode, Json<Rotation>)> {
    let idempotency_key = idempotency_key(&headers)?;
    let namespace = state.settings.namespace.clone();
    caller
        .authorize(&state, Access::rotations("create", &namespace, None))
        .await?;
    let request: SealingKeyRotationRequest = if body.is_empty() {
        SealingKeyRotationRequest::default()
    } else {
        parse_strict(&body, "the request")?
    };
    let spec = RotationSpec {
        sealing_key: Some(SealingKeyTarget {}),
        reason: request.reason,
        ..RotationSpec::default()
    };
    let planned = Planned::new(&caller, &namespace, spec, idempotency_key, "sealing-key")?;
    if let Some(answer) = planned.replay(&state, &caller).await? {
        return Ok(answer);
    }
    planned.create(&state, &caller).await
}

/// A Rotation about to be created: named after the caller and the `Idempotency-Key`
/// when there is one, and stamped with a hash of its spec to tell a replay from a
/// different request.
struct Planned {
    namespace: String,
    rotation: Rotation,
    request_hash: String,
    idempotent_name: Option<String>,
}

type Answer = (StatusCode, Json<Rotation>);

impl Planned {
    fn new(
        caller: &Caller,
        namespace: &str,
        mut spec: RotationSpec,
        idempotency_key: Option<String>,
        name_base: &str,
    ) -> Result<Self> {
        let user = &caller.user.username;
        spec.requested_by = Some(user.clone());
        // A supplied value is sealed afresh on every attempt (new ephemeral keys), so a
        // retry of the same request carries another ciphertext: the request is the same
        // when it supplies a value at all.
        let hashed = RotationSpec {
            value: spec.value.as_ref().map(|_| "supplied".to_owned()),
            ..spec.clone()
        };
        let encoded = serde_json::to_vec(&hashed)
            .map_err(|err| ApiError::Internal(format!("cannot encode a Rotation spec: {err}")))?;
        let request_hash = sha256_hex(&[&encoded]);
        let mut rotation = Rotation::new("", spec);
        rotation.metadata.name = None;
        rotation.metadata.namespace = Some(namespace.to_owned());
        rotation.metadata.annotations = Some(BTreeMap::from([(
            REQUEST_HASH_ANNOTATION.to_owned(),
            request_hash.clone(),
        )]));
        let prefix = name_prefix(name_base);
        let idempotent_name = idempotency_key.as_ref().map(|key| {
            let hash = sha256_hex(&[user.as_bytes(), key.as_bytes()]);
            format!("{prefix}-{}", &hash[..16])
        });
        match &idempotent_name {
            Some(name) => rotation.metadata.name = Some(name.clone()),
            None => rotation.metadata.generate_name = Some(format!("{prefix}-")),
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            rotation,
            request_hash,
            idempotent_name,
        })
    }

    fn api(&self, state: &AppState) -> Api<Rotation> {
        Api::namespaced(state.client.clone(), &self.namespace)
    }

    fn what(&self) -> String {
        format!("Rotation in namespace `{}`", self.namespace)
    }

    /// The answer to a retry: the Rotation an earlier request with the same
    /// `Idempotency-Key` made, if there is one.
    async fn replay(&self, state: &AppState, caller: &Caller) -> Result<Option<Answer>> {
        let Some(name) = &self.idempotent_name else {
            return Ok(None);
        };
        let existing = self
            .api(state)
            .get_opt(name)
            .await
            .map_err(|err| ApiError::from_kube(err, &self.what()))?;
        existing
            .map(|found| self.replayed(caller, found))
            .transpose()
    }

    /// The same request again gets the same Rotation; another one under the same key is
    /// a mistake worth stopping.
    fn replayed(&self, caller: &Caller, existing: Rotation) -> Result<Answer> {
        let name = existing.name_any();
        caller.audit().rotation(&name);
        if existing.annotations().get(REQUEST_HASH_ANNOTATION) == Some(&self.request_hash) {
            return Ok((StatusCode::OK, Json(existing)));
        }
        Err(ApiError::IdempotencyConflict(format!(
            "this Idempotency-Key was used for a different request (Rotation `{}/{name}`); use a new key for a new request",
            self.namespace
        )))
    }

    /// Creates the Rotation and announces it; a concurrent twin that won the race is
    /// answered as a replay.
    async fn create(self, state: &AppState, caller: &Caller) -> Result<Answer> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match self.api(state).create(&params, &self.rotation).await {
            Ok(created) => {
                caller.audit().rotation(&created.name_any());
                announce(state, &created, &caller.user.username).await;
                Ok((StatusCode::CREATED, Json(created)))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.replay(state, caller).await?.ok_or_else(|| {
                    ApiError::Unavailable(
                        "the Rotation was created and deleted at the same moment; retry".to_owned(),
                    )
                })
            }
            Err(err) => Err(ApiError::from_kube(err, &self.what())),
        }
    }
}

/// The Event on an accepted Rotation: who asked and why, beside the controller's Events
/// for each step.
async fn announce(state: &AppState, rotation: &Rotation, user: &str) {
    let why = rotation
        .spec
        .reason
        .as_deref()
        .map(|reason| format!(" (reason: {reason})"))
        .unwrap_or_default();
    let mode = if rotation.spec.is_dry_run() {
        "dry run "
    } else {
        ""
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "RotationRequested".to_owned(),
        note: Some(format!("{mode}requested by {user} through sigil-api{why}")),
        action: "Request".to_owned(),
        secondary: None,
    };
    if let Err(err) = state
        .recorder
        .publish(&event, &rotation.object_ref(&()))
        .await
    {
        tracing::warn!(error = %err, rotation = %rotation.name_any(), "cannot publish Event");
    }
}

/// Reads one Rotation.
#[utoipa::path(
    get,
    operation_id = "getRotation",
    path = "/v1/namespaces/{namespace}/rotations/{name}",
    tag = "rotations",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The Rotation, with its status", body = crate::openapi::RotationDoc),
        (status = "4XX", description = "Refused or not found", body = crate::openapi::ErrorDoc),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Rotation>> {
    check_namespace(&namespace)?;
    check_name(&name)?;
    caller
        .authorize(&state, Access::rotations("get", &namespace, Some(&name)))
        .await?;
    caller.audit().rotation(&name);
    let rotation = Api::<Rotation>::namespaced(state.client.clone(), &namespace)
        .get(&name)
        .await
        .map_err(|err| ApiError::from_kube(err, &format!("Rotation `{namespace}/{name}`")))?;
    Ok(Json(rotation))
}

/// Lists a namespace's Rotations, newest first.
#[utoipa::path(
    get,
    operation_id = "listRotations",
    path = "/v1/namespaces/{namespace}/rotations",
    tag = "rotations",
    params(("namespace" = String, Path)),
    responses(
        (status = 200, description = "Newest first", body = crate::openapi::RotationListDoc),
        (status = "4XX", description = "Refused", body = crate::openapi::ErrorDoc),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    caller: Caller,
) -> Result<Json<RotationList>> {
    check_namespace(&namespace)?;
    caller
        .authorize(&state, Access::rotations("list", &namespace, None))
        .await?;
    let mut items = Api::<Rotation>::namespaced(state.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(|err| ApiError::from_kube(err, &format!("Rotations in `{namespace}`")))?
        .items;
    items.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    Ok(Json(RotationList { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_to_a_valid_prefix() {
        assert_eq!(name_prefix("db"), "db");
        let long = format!("{}-x", "a".repeat(39));
        assert_eq!(name_prefix(&long), "a".repeat(39));
        assert!(name_prefix(&"b.".repeat(30)).ends_with('b'));
    }

    #[test]
    fn names_that_would_walk_the_url_are_refused() {
        assert!(check_name("db.prod").is_ok());
        for bad in ["../../secrets/x", "a/b", "A", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(check_namespace("prod-1").is_ok());
        for bad in ["", "Prod", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }
}
