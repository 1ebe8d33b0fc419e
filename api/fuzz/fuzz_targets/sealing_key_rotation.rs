//! Any body for `POST /v1/sealingkey/rotate`: none or a valid request gets as far as the
//! API server (503 here), anything else is refused with the code its content calls
//! for; never a panic or a 500.
//!
//! The first byte chooses an `Idempotency-Key` (bit 0, which adds the replay read); the
//! rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_api::extract::parse_strict;
use sigil_api_fuzz::{UNAVAILABLE, post};
use sigil_types::api::SealingKeyRotationRequest;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let headers: &[(&str, &str)] = if flags & 1 == 0 {
        &[]
    } else {
        &[("idempotency-key", "4f0c2a8e-fuzz")]
    };
    let answer = post("/v1/sealingkey/rotate", headers, body);
    if body.is_empty() {
        return answer.assert_is(UNAVAILABLE, body);
    }
    match parse_strict::<SealingKeyRotationRequest>(body, "the request") {
        Err(err) => answer.assert_is_error(&err, body),
        Ok(_) => answer.assert_is(UNAVAILABLE, body),
    }
});
