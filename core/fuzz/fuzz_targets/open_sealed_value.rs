//! Any bytes as a sealed value: decoding and opening must refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_core::{Binding, Envelope, Keyring, PrivateKey, Scope};

fuzz_target!(|data: &[u8]| {
    let keyring: Keyring = [PrivateKey::from_bytes(zeroize::Zeroizing::new([7u8; 32]))]
        .into_iter()
        .collect();
    let binding = Binding::new(Scope::Strict, "ns", "name", "key").expect("a valid binding");
    if let Ok(envelope) = Envelope::from_bytes(data) {
        assert!(envelope.open(&binding, &keyring).is_err());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sigil_core::open(text, &binding, &keyring);
    }
});
