//! Any body for `POST /v1/verify` and `POST /v1/reseal`: a SealedSecret with a valid
//! namespace and name is passed to the controller (503 here), anything else is refused with the code its
//! content calls for; never a panic or a 500. The answer to a body that parses never
//! holds one of its sealed values marked as a canary (the seeds carry some): the API has
//! no reason to repeat them, and an answer that did would show where it starts copying a
//! body's values into its words. (A body that does not parse may be quoted back by the
//! parser's message; that goes to the caller who sent it.)
//!
//! The first byte chooses the endpoint (bit 0: re-seal); the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_api_fuzz::{INVALID, INVALID_JSON, UNAVAILABLE, post};
use sigil_types::SealedSecret;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let path = if flags & 1 == 0 {
        "/v1/verify"
    } else {
        "/v1/reseal"
    };
    let answer = post(path, &[], body);
    if body.is_empty() {
        return answer.assert_is(INVALID_JSON, body);
    }
    let Ok(sealed) = serde_json::from_slice::<SealedSecret>(body) else {
        return answer.assert_is(INVALID_JSON, body);
    };
    // Only a SealedSecret that names a valid namespace and name is passed on (and meets
    // the closed controller port); any other is refused before RBAC is asked.
    let addressed = sealed
        .metadata
        .namespace
        .as_deref()
        .is_some_and(sigil_types::is_dns_label)
        && sealed
            .metadata
            .name
            .as_deref()
            .is_some_and(sigil_types::is_object_name);
    let expected = if addressed { UNAVAILABLE } else { INVALID };
    answer.assert_is(expected, body);
    for value in sealed.spec.encrypted_data.values() {
        answer.assert_lacks(value, "a sealed value of the body");
    }
});
