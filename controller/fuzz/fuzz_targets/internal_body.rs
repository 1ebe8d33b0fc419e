//! Any body for the controller's `POST /internal/v1/verify` and `/internal/v1/reseal`,
//! sent with sigil-api's token to a replica holding one sealing key: never a panic or a
//! 500, always a JSON answer with a code, and never the plaintext of a value (the seeds
//! hold values sealed to that key whose plaintext is [`PLAINTEXT`]).
//!
//! The first byte chooses the endpoint (bit 0: re-seal); the rest is the body.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use sigil_controller::http::caller::{InternalCallers, TokenReviewer};
use sigil_controller::http::{HttpState, router};
use sigil_controller::common::metrics::Metrics;
use sigil_controller::sealed::keys::{KeyState, Keys};
use sigil_core::PrivateKey;
use tower::ServiceExt;

/// The plaintext of every value in the seeds: no answer may hold it.
const PLAINTEXT: &[u8] = b"sigil-fuzz-plaintext";
/// The sealing key of the seeds (a fixed test key, not a secret).
const KEY: [u8; 32] = [7; 32];

struct AcceptsApi;

impl TokenReviewer for AcceptsApi {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            Ok((token == "api").then(|| "system:serviceaccount:sigil-system:sigil-api".to_owned()))
        })
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    HARNESS.get_or_init(|| {
        let key = PrivateKey::from_bytes(zeroize::Zeroizing::new(KEY));
        let keys = Arc::new(Keys::default());
        keys.replace(KeyState {
            active: Some((key.id(), jiff::Timestamp::UNIX_EPOCH)),
            keyring: [key].into_iter().collect(),
            ..KeyState::default()
        });
        let state = HttpState::new(
            Arc::new(AtomicBool::new(true)),
            Arc::new(Metrics::default()),
            keys,
            Arc::new(InternalCallers::new(Arc::new(AcceptsApi), "sigil-system/sigil-api")),
        );
        Harness {
            // The blocking pool verify and re-seal run on is the runtime's own.
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime"),
            router: router(state),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let path = if flags & 1 == 0 {
        "/internal/v1/verify"
    } else {
        "/internal/v1/reseal"
    };
    let harness = harness();
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", "Bearer api")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let (status, answer) = harness.runtime.block_on(async {
        let response = harness
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, bytes)
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{}", String::from_utf8_lossy(&answer));
    // A body may spell the plaintext out itself (a key name, say), which the answer may
    // quote back to its sender; only one that holds it sealed must never reveal it.
    let holds = |bytes: &[u8]| bytes.windows(PLAINTEXT.len()).any(|w| w == PLAINTEXT);
    assert!(
        holds(body) || !holds(&answer),
        "the answer holds a plaintext: {}",
        String::from_utf8_lossy(&answer)
    );
    if status != StatusCode::OK {
        let error: serde_json::Value =
            serde_json::from_slice(&answer).expect("an error answer is JSON");
        assert!(error["code"].is_string(), "{error}");
    }
});
