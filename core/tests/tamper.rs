//! A sealed value opens only where it was sealed for, and every alteration is refused
//! with a typed error and never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sigil_core::{Binding, Envelope, Error, Keyring, PrivateKey, Scope, open, seal};

struct Fixture {
    keyring: Keyring,
    sealed: String,
}

fn strict(namespace: &str, name: &str, key: &str) -> Binding {
    Binding::new(Scope::Strict, namespace, name, key).unwrap()
}

fn fixture(binding: &Binding) -> Fixture {
    let key = PrivateKey::generate().unwrap();
    let sealed = seal(&[*key.public_key()], binding, b"correct horse").unwrap();
    Fixture {
        keyring: [key].into_iter().collect(),
        sealed,
    }
}

fn open_as(f: &Fixture, binding: &Binding) -> Result<Vec<u8>, Error> {
    open(&f.sealed, binding, &f.keyring).map(|v| v.to_vec())
}

#[test]
fn opens_where_it_was_sealed_for() {
    let b = strict("prod", "db", "password");
    assert_eq!(open_as(&fixture(&b), &b).unwrap(), b"correct horse");
}

#[test]
fn moved_to_another_namespace_name_or_key_is_refused() {
    let f = fixture(&strict("prod", "db", "password"));
    for moved in [
        strict("dev", "db", "password"),
        strict("prod", "db2", "password"),
        strict("prod", "db", "username"),
    ] {
        match open_as(&f, &moved) {
            Err(Error::WrongBinding { binding }) => assert_eq!(binding, moved.to_string()),
            other => panic!("{moved}: expected WrongBinding, got {other:?}"),
        }
    }
}

#[test]
fn a_rotation_value_and_a_secret_value_never_open_as_each_other() {
    let rotation = Binding::for_rotation("prod", "db", "password").unwrap();
    let f = fixture(&rotation);
    assert_eq!(open_as(&f, &rotation).unwrap(), b"correct horse");
    for scope in Scope::ALL {
        let b = Binding::new(scope, "prod", "db", "password").unwrap();
        assert!(
            matches!(open_as(&f, &b), Err(Error::WrongBinding { .. })),
            "{b}"
        );
    }
    // A SealedSecret's value copied from Git, replayed into a Rotation of the same names.
    let f = fixture(&strict("prod", "db", "password"));
    match open_as(&f, &rotation) {
        Err(Error::WrongBinding { binding }) => {
            assert_eq!(
                binding,
                "a Rotation of ExternalSecret prod/db, key `password`"
            )
        }
        other => panic!("expected WrongBinding, got {other:?}"),
    }
    let moved = Binding::for_rotation("prod", "db", "username").unwrap();
    let f = fixture(&rotation);
    assert!(matches!(
        open_as(&f, &moved),
        Err(Error::WrongBinding { .. })
    ));
}

#[test]
fn a_widened_scope_is_refused_and_named() {
    let f = fixture(&strict("prod", "db", "password"));
    for wider in [Scope::Namespace, Scope::Cluster] {
        let b = Binding::new(wider, "prod", "db", "password").unwrap();
        assert!(matches!(
            open_as(&f, &b),
            Err(Error::ScopeMismatch { sealed: Scope::Strict, declared }) if declared == wider
        ));
    }
    let ns = Binding::new(Scope::Namespace, "prod", "", "password").unwrap();
    let f = fixture(&ns);
    let widened = Binding::new(Scope::Cluster, "", "", "password").unwrap();
    // Cluster scope cannot name the namespace, so this is only "another identity".
    assert!(matches!(
        open_as(&f, &widened),
        Err(Error::WrongBinding { .. })
    ));
    let renamed = Binding::new(Scope::Namespace, "prod", "other-name", "password").unwrap();
    assert_eq!(open_as(&f, &renamed).unwrap(), b"correct horse");
}

#[test]
fn every_truncation_is_refused() {
    let b = strict("prod", "db", "password");
    let f = fixture(&b);
    let bytes = STANDARD.decode(&f.sealed).unwrap();
    for len in 0..bytes.len() {
        let cut = STANDARD.encode(&bytes[..len]);
        let err = open(&cut, &b, &f.keyring).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Empty | Error::NotSealed | Error::Truncated { .. } | Error::Tampered
            ),
            "length {len}: {err:?}"
        );
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    let b = strict("prod", "db", "password");
    let f = fixture(&b);
    let bytes = STANDARD.decode(&f.sealed).unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let err = open(&STANDARD.encode(&flipped), &b, &f.keyring).unwrap_err();
        let byte = bit / 8;
        let expected = match byte {
            0 | 1 => matches!(err, Error::NotSealed),
            2 => matches!(err, Error::UnsupportedVersion(_)),
            3 => matches!(
                err,
                Error::StanzaCount(_) | Error::Truncated { .. } | Error::Tampered
            ),
            4..=11 => matches!(err, Error::UnknownKey { .. }),
            12..=91 => matches!(err, Error::WrongBinding { .. } | Error::LowOrderPoint),
            _ => matches!(err, Error::Tampered),
        };
        assert!(expected, "bit {bit} (byte {byte}): {err:?}");
    }
}

#[test]
fn unknown_key_and_wrong_private_key_are_refused_by_id() {
    let b = strict("prod", "db", "password");
    let f = fixture(&b);
    let other: Keyring = [PrivateKey::generate().unwrap()].into_iter().collect();
    let sealed_for = Envelope::decode(&f.sealed).unwrap().key_ids();
    match open(&f.sealed, &b, &other) {
        Err(Error::UnknownKey { sealed_for: ids }) => assert_eq!(ids, sealed_for),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    let message = open(&f.sealed, &b, &Keyring::new())
        .unwrap_err()
        .to_string();
    assert!(message.contains(&sealed_for[0].to_string()), "{message}");
}

#[test]
fn empty_and_garbage_input_is_refused() {
    let b = strict("prod", "db", "password");
    let f = fixture(&b);
    assert!(matches!(open("", &b, &f.keyring), Err(Error::Empty)));
    assert!(matches!(open("  \n", &b, &f.keyring), Err(Error::Empty)));
    assert!(matches!(
        open("not base64!", &b, &f.keyring),
        Err(Error::Base64(_))
    ));
    assert!(matches!(
        open("aGVsbG8=", &b, &f.keyring),
        Err(Error::NotSealed)
    ));
}

#[test]
fn stanza_counts_outside_1_to_16_are_refused() {
    let b = strict("prod", "db", "password");
    let f = fixture(&b);
    let mut bytes = STANDARD.decode(&f.sealed).unwrap();
    for count in [0u8, 17, 255] {
        bytes[3] = count;
        let err = open(&STANDARD.encode(&bytes), &b, &f.keyring).unwrap_err();
        assert!(
            matches!(err, Error::StanzaCount(c) if c == count),
            "{err:?}"
        );
    }
    let keys: Vec<_> = (0..17)
        .map(|_| *PrivateKey::generate().unwrap().public_key())
        .collect();
    assert!(matches!(
        seal(&keys, &b, b"x"),
        Err(Error::RecipientCount(17))
    ));
    assert!(matches!(seal(&[], &b, b"x"), Err(Error::RecipientCount(0))));
}

#[test]
fn each_of_several_recipients_opens_by_its_own_stanza() {
    let b = strict("prod", "db", "password");
    let keys: Vec<_> = (0..3).map(|_| PrivateKey::generate().unwrap()).collect();
    let publics: Vec<_> = keys.iter().map(|k| *k.public_key()).collect();
    let sealed = seal(&publics, &b, b"multi").unwrap();
    assert_eq!(Envelope::decode(&sealed).unwrap().stanzas.len(), 3);
    for key in keys {
        let ring: Keyring = [key].into_iter().collect();
        assert_eq!(open(&sealed, &b, &ring).unwrap().as_slice(), b"multi");
    }
}

#[test]
fn errors_never_contain_the_value() {
    let b = strict("prod", "db", "password");
    let f = fixture(&b);
    let moved = strict("dev", "db", "password");
    let text = format!(
        "{:?} {}",
        open_as(&f, &moved),
        open_as(&f, &moved).unwrap_err()
    );
    assert!(!text.contains("correct horse"), "{text}");
}

#[test]
fn bindings_missing_what_their_scope_needs_are_refused() {
    assert!(Binding::new(Scope::Strict, "", "db", "k").is_err());
    assert!(Binding::new(Scope::Strict, "ns", "", "k").is_err());
    assert!(Binding::new(Scope::Namespace, "", "", "k").is_err());
    assert!(Binding::new(Scope::Cluster, "", "", "").is_err());
    assert!(Binding::new(Scope::Strict, "ns", "a\nb", "k").is_err());
    assert!(Binding::new(Scope::Cluster, "", "", "k").is_ok());
}
