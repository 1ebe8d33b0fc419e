//! Property: whatever the bytes, names and scope, a sealed value opens to those bytes.

use proptest::prelude::*;
use sigil_core::{Binding, Keyring, PrivateKey, Scope, open, seal};

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Strict),
        Just(Scope::Namespace),
        Just(Scope::Cluster)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn seal_then_open_round_trips(
        value in proptest::collection::vec(any::<u8>(), 0..2048),
        namespace in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
        name in "[a-z0-9]([-.a-z0-9]{0,61}[a-z0-9])?",
        key in "[-._a-zA-Z0-9]{1,253}",
        scope in scope(),
        recipients in 1usize..4,
    ) {
        let keys: Vec<_> = (0..recipients).map(|_| PrivateKey::generate().unwrap()).collect();
        let publics: Vec<_> = keys.iter().map(|k| *k.public_key()).collect();
        let binding = Binding::new(scope, &namespace, &name, &key).unwrap();
        let sealed = seal(&publics, &binding, &value).unwrap();
        let keyring: Keyring = keys.into_iter().rev().take(1).collect();
        let opened = open(&sealed, &binding, &keyring).unwrap();
        prop_assert_eq!(opened.as_slice(), value.as_slice());
    }
}
