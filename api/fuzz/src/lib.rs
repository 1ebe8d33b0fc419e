//! The harness of sigil-api's fuzz targets: the real [`sigil_api::router`] in-process,
//! with a reviewer that accepts one token and allows everything (so that every body
//! reaches its parser) and a Kubernetes API server and controller on a port where
//! nothing listens (so that a body that passes validation ends at once with 503).
//! Each target computes from the body alone what the answer must be, and [`post`]
//! checks what holds for every answer: a JSON error with a code, never a 500, never the
//! bearer token.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use sigil_api::auth::{Access, Decision, Reviewer, UserInfo};
use sigil_api::error::{ApiError, Result};
use sigil_api::{AppState, Settings};
use sigil_types::api::ErrorBody;
use tower::ServiceExt;

/// The one bearer token the fake reviewer accepts. It is a secret: no answer may hold it.
pub const TOKEN: &str = "sigil-fuzz-token-7c1e5a93d2b04f68";
/// A marker for the values a target treats as secrets when it finds them in a body (the
/// seeds put it in sealed values): the API's own words never contain it, so an answer
/// that does copied it from the body.
pub const CANARY: &str = "sigil-fuzz-canary";
/// A loopback port where nothing listens: a connection is refused at once, so a request
/// that gets as far as the API server or the controller ends in microseconds.
const CLOSED: &str = "127.0.0.1:9";

/// Accepts [`TOKEN`] and allows every request, so refusals never hide the body's parser.
struct AllowAll;

impl Reviewer for AllowAll {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<UserInfo>>> {
        Box::pin(async move {
            Ok(same(token, TOKEN).then(|| UserInfo {
                username: "fuzz-admin".to_owned(),
                uid: None,
                groups: vec!["system:authenticated".to_owned()],
                extra: BTreeMap::new(),
            }))
        })
    }

    fn authorize<'a>(
        &'a self,
        _user: &'a UserInfo,
        _access: &'a Access,
    ) -> BoxFuture<'a, Result<Decision>> {
        Box::pin(async {
            Ok(Decision {
                allowed: true,
                reason: String::new(),
            })
        })
    }
}

/// Compares with neither `memcmp` nor a branch per byte: libFuzzer watches those, would
/// learn the token and write it into bodies, whose parse errors quote it back.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The router and the runtime it runs on, built once per process.
struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

impl Harness {
    fn new() -> Self {
        let closed: SocketAddr = CLOSED.parse().expect("a socket address");
        assert!(
            TcpStream::connect_timeout(&closed, Duration::from_secs(1)).is_err(),
            "something listens on {CLOSED}; the harness needs that port closed so that \
             requests to the API server and the controller fail at once"
        );
        // One thread: libFuzzer calls the target from one thread, and no work must be
        // left running between two inputs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // kube's client spawns its buffer task, so it is built inside the runtime.
        let _entered = runtime.enter();
        let mut config = kube::Config::new(format!("http://{CLOSED}").parse().expect("a URL"));
        // A refused connection fails at once; these only bound the unexpected case.
        config.connect_timeout = Some(Duration::from_secs(1));
        config.read_timeout = Some(Duration::from_secs(1));
        config.write_timeout = Some(Duration::from_secs(1));
        let client = kube::Client::try_from(config).expect("a Kubernetes client");
        let settings = Settings {
            namespace: "sigil-system".to_owned(),
            controller_url: format!("http://{CLOSED}"),
            controller_token_file: None,
            // The production default: every input libFuzzer makes is parsed, not refused
            // for its size (the limit has its own unit test).
            max_body_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            // Off: a per-user limit would answer 429 to nearly every input.
            rate_limit: 0,
        };
        let router = sigil_api::router(AppState::new(client, Arc::new(AllowAll), settings));
        Self { runtime, router }
    }
}

thread_local! {
    static HARNESS: Harness = Harness::new();
}

/// What an endpoint answered, once [`post`] has checked what every answer must satisfy.
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error body (every answer these targets can get is a refusal).
    pub error: ErrorBody,
    /// The raw body, for [`Answer::assert_lacks`] and for failure messages.
    pub raw: Vec<u8>,
}

impl Answer {
    /// Panics unless the answer is `expected`'s status and code.
    pub fn assert_is(&self, expected: (StatusCode, &str), input: &[u8]) {
        assert!(
            (self.status, self.error.code.as_str()) == expected,
            "expected {} {}, got {} {}: {}\ninput: {:?}",
            expected.0,
            expected.1,
            self.status,
            self.error.code,
            self.error.message,
            String::from_utf8_lossy(input)
        );
    }

    /// Panics unless the answer is exactly `err` as the API renders it.
    pub fn assert_is_error(&self, err: &ApiError, input: &[u8]) {
        self.assert_is((err.status(), err.code()), input);
        assert_eq!(self.error.message, err.to_string(), "input: {input:?}");
    }

    /// Panics if the body holds `secret`, when it carries the [`CANARY`] marker (without
    /// it, a short value could be a word of the API's own message by chance).
    pub fn assert_lacks(&self, secret: &str, what: &str) {
        assert!(
            !secret.contains(CANARY) || !contains(&self.raw, secret.as_bytes()),
            "the answer holds {what} `{secret}`: {}",
            String::from_utf8_lossy(&self.raw)
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends `body` as JSON to `path` with the accepted token and `headers`, and checks what
/// holds for every answer: a JSON error body with a code and a message, a 4xx or 503
/// (a 500 is a bug), and no trace of the bearer token in the headers or body unless the
/// body itself holds it (a parse error may quote the caller's own body).
pub fn post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut request = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Body::from(body.to_vec()))
        .expect("a request the harness builds is valid");
    let (status, response_headers, raw) = HARNESS.with(|harness| {
        harness.runtime.block_on(async {
            let response = harness
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.expect("a body in memory").to_bytes();
            (parts.status, parts.headers, bytes.to_vec())
        })
    });
    let echoed = contains(&raw, TOKEN.as_bytes())
        || (response_headers.values()).any(|v| contains(v.as_bytes(), TOKEN.as_bytes()));
    assert!(
        !echoed || contains(body, TOKEN.as_bytes()),
        "the answer holds the bearer token"
    );
    let error: ErrorBody = serde_json::from_slice(&raw).unwrap_or_else(|err| {
        panic!(
            "{status}: not an error body ({err}): {}",
            String::from_utf8_lossy(&raw)
        )
    });
    assert!(
        (status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE)
            && !error.code.is_empty()
            && !error.message.is_empty(),
        "{status} {}: {}\ninput: {:?}",
        error.code,
        error.message,
        String::from_utf8_lossy(body)
    );
    Answer { status, error, raw }
}

/// What an API server or controller that does not answer comes to: `503 unavailable`.
pub const UNAVAILABLE: (StatusCode, &str) = (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
/// A body that is not the JSON the endpoint takes.
pub const INVALID_JSON: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "invalid_json");
/// A name that is not DNS-1123 (it would go into a URL).
pub const BAD_REQUEST: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "bad_request");
/// A body that parses but is refused by validation.
pub const INVALID: (StatusCode, &str) = (StatusCode::UNPROCESSABLE_ENTITY, "invalid");
