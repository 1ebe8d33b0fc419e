//! The router in-process with a fake reviewer and a Kubernetes client that points at a
//! closed port: every refusal below must happen before the API server would be asked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use sigil_types::api::ErrorBody;
use tower::ServiceExt;

use super::*;
use crate::auth::{Access, Decision, UserInfo};

/// `admin` may do anything, `nobody` is a valid token with no rights, `slow` takes 5 s
/// to refuse, anything else is not a token.
struct FakeReviewer;

impl Reviewer for FakeReviewer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, error::Result<Option<UserInfo>>> {
        Box::pin(async move {
            if token == "slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(matches!(token, "admin" | "nobody").then(|| UserInfo {
                username: token.to_owned(),
                uid: None,
                groups: vec!["system:authenticated".to_owned()],
                extra: BTreeMap::new(),
            }))
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        _access: &'a Access,
    ) -> BoxFuture<'a, error::Result<Decision>> {
        Box::pin(async move {
            Ok(Decision {
                allowed: user.username == "admin",
                reason: String::new(),
            })
        })
    }
}

fn settings() -> Settings {
    Settings {
        namespace: "sigil-system".to_owned(),
        controller_url: "http://127.0.0.1:9".to_owned(),
        controller_token_file: None,
        max_body_bytes: 1024,
        request_timeout: Duration::from_secs(5),
        rate_limit: 100,
    }
}

fn app(settings: Settings) -> Router {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    router(AppState::new(client, Arc::new(FakeReviewer), settings))
}

fn create(token: Option<&str>, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post("/v1/namespaces/prod/rotations");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.body(body.into()).unwrap()
}

async fn call(app: Router, request: Request<Body>) -> (StatusCode, ErrorBody) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "not an error body ({err}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

const GOOD: &str = r#"{"externalSecretRef": {"name": "db"}, "reason": "INC-123"}"#;
const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn no_token_is_401() {
    let (status, body) = call(app(settings()), create(None, JSON, GOOD)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    assert!(
        body.message.contains("Authorization: Bearer"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn a_token_the_cluster_does_not_know_is_401() {
    let (status, body) = call(app(settings()), create(Some("forged"), JSON, GOOD)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    assert!(body.message.contains("TokenReview"), "{}", body.message);
}

#[tokio::test]
async fn a_valid_token_without_rbac_is_403_naming_the_permission() {
    let (status, body) = call(app(settings()), create(Some("nobody"), JSON, GOOD)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert!(
        body.message
            .contains("create rotations.sigil.dev in namespace `prod`"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn a_rotation_spec_has_its_own_small_limit_whatever_max_body_bytes_allows() {
    let app = app(Settings {
        max_body_bytes: 2 * 1024 * 1024,
        ..settings()
    });
    let large = format!(
        r#"{{"reason": "{}"}}"#,
        "x".repeat(extract::SPEC_BODY_LIMIT)
    );
    let (status, body) = call(app, create(Some("admin"), JSON, large)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    assert!(body.message.contains("16384"), "{}", body.message);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(4096));
    let (status, body) = call(app(settings()), create(Some("admin"), JSON, huge.clone())).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    // Without a Content-Length (chunked), the limit still holds while reading.
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(huge.into_bytes())]);
    let request = create(Some("admin"), JSON, Body::from_stream(stream));
    let (status, _) = call(app(settings()), request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn bad_json_is_400_with_the_position() {
    let (status, body) = call(
        app(settings()),
        create(Some("admin"), JSON, "{\"externalSecretRef\": "),
    )
    .await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    assert!(body.message.contains("line 1"), "{}", body.message);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let (status, body) = call(
        app(settings()),
        create(Some("admin"), Some("application/yaml"), "a: b"),
    )
    .await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (status, _) = call(app(settings()), create(Some("admin"), None, GOOD)).await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a body without a content type"
    );
}

#[tokio::test]
async fn unknown_fields_are_named() {
    let typo =
        r#"{"externalSecretRef": {"name": "db", "secretkey": "password"}, "restrat": false}"#;
    let (status, body) = call(app(settings()), create(Some("admin"), JSON, typo)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::BAD_REQUEST, "unknown_field")
    );
    assert!(
        body.message.contains("`externalSecretRef.secretkey`"),
        "{}",
        body.message
    );
    assert!(body.message.contains("`restrat`"), "{}", body.message);
}

#[tokio::test]
async fn requested_by_comes_from_the_token_never_the_body() {
    let spoof = r#"{"externalSecretRef": {"name": "db"}, "requestedBy": "the-ceo"}"#;
    let (status, body) = call(app(settings()), create(Some("admin"), JSON, spoof)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
    );
    assert!(body.message.contains("requestedBy"), "{}", body.message);
}

#[tokio::test]
async fn a_supplied_value_needs_its_key_and_no_generate() {
    for (spec, named) in [
        (
            r#"{"externalSecretRef": {"name": "db", "secretKey": "k"}, "value": "SG", "generate": {"length": 20}}"#,
            "not both",
        ),
        (
            r#"{"externalSecretRef": {"name": "db"}, "value": "SG"}"#,
            "externalSecretRef.secretKey",
        ),
    ] {
        let (status, body) = call(app(settings()), create(Some("admin"), JSON, spec)).await;
        assert_eq!(
            (status, body.code.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        );
        assert!(body.message.contains(named), "{}", body.message);
    }
}

#[tokio::test]
async fn a_missing_target_is_422() {
    let (status, body) = call(
        app(settings()),
        create(Some("admin"), JSON, r#"{"reason": "x"}"#),
    )
    .await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
    );
    assert!(
        body.message.contains("externalSecretRef.name"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn an_unreachable_api_server_is_503_without_internals() {
    let (status, body) = call(app(settings()), create(Some("admin"), JSON, GOOD)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(!body.message.contains("127.0.0.1"), "{}", body.message);
}

#[tokio::test]
async fn each_user_is_rate_limited_with_retry_after() {
    let app = app(Settings {
        rate_limit: 1,
        ..settings()
    });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let request = Request::get("/v1/namespaces/prod/rotations/x")
            .header(header::AUTHORIZATION, "Bearer nobody")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key(header::RETRY_AFTER));
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn bad_tokens_from_one_address_are_limited_before_they_are_reviewed() {
    let app = app(Settings {
        rate_limit: 1,
        ..settings()
    });
    let from =
        |addr: [u8; 4]| {
            let mut request = Request::get("/v1/namespaces/prod/rotations/x")
                .header(header::AUTHORIZATION, "Bearer stolen-or-guessed")
                .body(Body::empty())
                .unwrap();
            request.extensions_mut().insert(axum::extract::ConnectInfo(
                std::net::SocketAddr::from((addr, 40000)),
            ));
            request
        };
    let mut statuses = Vec::new();
    for _ in 0..(2 * SOURCE_FACTOR + 1) {
        statuses.push(
            app.clone()
                .oneshot(from([10, 0, 0, 1]))
                .await
                .unwrap()
                .status(),
        );
    }
    // A burst of twice the source's rate is reviewed (and refused); the next is not.
    let burst = 2 * SOURCE_FACTOR as usize;
    assert!(
        statuses[..burst]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(statuses[burst], StatusCode::TOO_MANY_REQUESTS);
    // Another address is not held back by the first.
    assert_eq!(
        app.oneshot(from([10, 0, 0, 2])).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_malformed_idempotency_key_or_query_is_400() {
    let mut request = create(Some("admin"), JSON, GOOD);
    request.headers_mut().insert(
        "idempotency-key",
        "é".parse().unwrap_or(header::HeaderValue::from_static("")),
    );
    let (status, body) = call(app(settings()), request).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    let request = Request::post("/v1/namespaces/prod/rotations?dryRun=maybe")
        .header(header::AUTHORIZATION, "Bearer admin")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(GOOD))
        .unwrap();
    let (status, body) = call(app(settings()), request).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    assert!(body.message.contains("dryRun"), "{}", body.message);
}

#[tokio::test]
async fn unknown_paths_answer_json() {
    let request = Request::get("/v2/anything").body(Body::empty()).unwrap();
    let (status, body) = call(app(settings()), request).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

/// `POST path` with `body` as JSON, as the admin.
fn admin_post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::AUTHORIZATION, "Bearer admin")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn verify_needs_the_namespace_it_was_sealed_for() {
    let sealed = r#"{"apiVersion": "sigil.dev/v1", "kind": "SealedSecret", "metadata": {"name": "db"},
        "spec": {"encryptedData": {}}}"#;
    let (status, body) = call(app(settings()), admin_post("/v1/verify", sealed)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
    );
    assert!(
        body.message.contains("metadata.namespace"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn verify_refuses_an_empty_namespace_or_name_before_asking_rbac() {
    for (metadata, field) in [
        (r#"{"name": "db", "namespace": ""}"#, "metadata.namespace"),
        (r#"{"namespace": "prod"}"#, "metadata.name"),
        (r#"{"name": "../x", "namespace": "prod"}"#, "metadata.name"),
    ] {
        let sealed = format!(
            r#"{{"apiVersion": "sigil.dev/v1", "kind": "SealedSecret", "metadata": {metadata}, "spec": {{"encryptedData": {{}}}}}}"#
        );
        let (status, body) = call(app(settings()), admin_post("/v1/reseal", sealed)).await;
        assert_eq!(
            (status, body.code.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            "{metadata}"
        );
        assert!(body.message.contains(field), "{}", body.message);
    }
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_one() {
    let request = Request::get("/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let response = app(settings()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let served = response.into_body().collect().await.unwrap().to_bytes();
    let checked_in = include_str!("../openapi.json");
    assert!(
        served == checked_in.as_bytes(),
        "api/openapi.json differs from the served document: regenerate it with \
         `cargo run -p sigil-api -- --print-openapi > api/openapi.json` and review the diff"
    );
}

#[tokio::test]
async fn a_request_over_the_time_limit_is_503_and_says_how_to_retry() {
    let app = app(Settings {
        request_timeout: Duration::from_millis(200),
        ..settings()
    });
    let (status, body) = call(app, create(Some("slow"), JSON, GOOD)).await;
    assert_eq!(
        (status, body.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "timeout")
    );
    assert!(body.message.contains("Idempotency-Key"), "{}", body.message);
}

#[tokio::test]
async fn readiness_asks_the_api_server_at_most_once_per_window() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    // An API server that answers /version and counts the questions.
    let service = tower::service_fn(move |_: Request<kube::client::Body>| {
        counter.fetch_add(1, Ordering::Relaxed);
        async {
            Ok::<_, std::convert::Infallible>(
                axum::http::Response::builder()
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        br#"{"major":"1","minor":"34","gitVersion":"v1.34.4","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#.to_vec(),
                    ))
                    .unwrap(),
            )
        }
    });
    let client = kube::Client::new(service, "default");
    let app = router(AppState::new(client, Arc::new(FakeReviewer), settings()));
    for _ in 0..5 {
        let response = app
            .clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(asked.load(Ordering::Relaxed), 1);
}
