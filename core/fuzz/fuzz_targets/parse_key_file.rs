//! Any text as a key file: read or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sigil_core::keyfile::parse_public(text);
        let _ = sigil_core::keyfile::parse_private(text);
    }
});
