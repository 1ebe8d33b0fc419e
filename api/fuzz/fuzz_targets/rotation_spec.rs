//! Any body for `POST /v1/namespaces/{namespace}/rotations`: refused with the code its
//! content calls for, never a panic or a 500, and only a fully valid spec (its target a
//! DNS-1123 name, since it goes into a URL) gets as far as the API server (503 here).
//! A spec that parses must also survive its own round trip, since the request hash and
//! the Rotation sent to the API server are its re-encoding.
//!
//! The first byte chooses `?dryRun=true` (bit 0) and an `Idempotency-Key` (bit 1, which
//! adds the replay read); the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_api::extract::parse_strict;
use sigil_api_fuzz::{BAD_REQUEST, INVALID, INVALID_JSON, UNAVAILABLE, post};
use sigil_types::{RotationSpec, is_object_name};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let path = if flags & 1 == 0 {
        "/v1/namespaces/prod/rotations"
    } else {
        "/v1/namespaces/prod/rotations?dryRun=true"
    };
    let headers: &[(&str, &str)] = if flags & 2 == 0 {
        &[]
    } else {
        &[("idempotency-key", "4f0c2a8e-fuzz")]
    };
    let answer = post(path, headers, body);
    if body.is_empty() {
        return answer.assert_is(INVALID_JSON, body);
    }
    match parse_strict::<RotationSpec>(body, "the Rotation spec") {
        Err(err) => answer.assert_is_error(&err, body),
        Ok(spec) => {
            let encoded = serde_json::to_vec(&spec).expect("a spec encodes");
            let again: RotationSpec = parse_strict(&encoded, "the re-encoded spec")
                .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&encoded)));
            assert_eq!(again, spec, "the round trip changed the spec");
            let expected = match &spec.external_secret_ref {
                _ if spec.requested_by.is_some() || spec.sealing_key.is_some() => INVALID,
                None => INVALID,
                Some(target) if !is_object_name(&target.name) => BAD_REQUEST,
                Some(_) => UNAVAILABLE,
            };
            answer.assert_is(expected, body);
        }
    }
});
