//! Untrusted input never panics: any bytes as a sealed value, any text as a key file.
//! (Property tests stand in for fuzz targets, which need a nightly toolchain.)

use proptest::prelude::*;
use sigil_core::sealed::HEADER;
use sigil_core::{Binding, Envelope, Keyring, PrivateKey, Scope, keyfile};

fn keyring() -> Keyring {
    [PrivateKey::from_bytes(zeroize::Zeroizing::new([7u8; 32]))]
        .into_iter()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let binding = Binding::new(Scope::Strict, "ns", "name", "key").unwrap();
        if let Ok(envelope) = Envelope::from_bytes(&bytes) {
            prop_assert!(envelope.open(&binding, &keyring()).is_err());
        }
    }

    #[test]
    fn bytes_behind_a_valid_header_are_refused_without_panicking(
        count in 0u8..20,
        rest in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let mut bytes = HEADER.to_vec();
        bytes.push(count);
        bytes.extend(rest);
        let binding = Binding::new(Scope::Cluster, "", "", "key").unwrap();
        let _ = sigil_core::open(&base64_encode(&bytes), &binding, &keyring());
    }

    #[test]
    fn any_text_as_a_key_file_is_read_or_refused_without_panicking(text in "\\PC{0,400}") {
        let _ = keyfile::parse_public(&text);
        let _ = keyfile::parse_private(&text);
    }

    #[test]
    fn key_lines_with_random_fields_are_read_or_refused(
        tag in prop_oneof![Just("sigil.pub.v1".to_owned()), Just("sigil.key.v1".to_owned()), "[a-z.0-9]{0,12}"],
        id in "[0-9a-f]{0,18}",
        key in "[A-Za-z0-9+/=]{0,48}",
        extra in "[ -~]{0,40}",
    ) {
        let line = format!("{tag} {id} {key} {extra}");
        let _ = keyfile::parse_public(&line);
        let _ = keyfile::parse_private(&line);
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
