//! The new remote value a rotation writes: a fresh value (generated, or supplied sealed
//! by a person and opened only for this Rotation's ExternalSecret and key) in the
//! property the ExternalSecret reads, every other property of the old value kept.

use kube::ResourceExt;
use rand::Rng;
use sigil_core::Binding;
use sigil_types::{Generate, Rotation, RotationPolicy};
use zeroize::Zeroizing;

use super::{Stop, fail};
use crate::sealed::keys::Keys;

/// The value this Rotation writes: `spec.value` opened, or one generated as the
/// Rotation, else its policy, asks.
pub(super) fn fresh_value(
    obj: &Rotation,
    policy: Option<&RotationPolicy>,
    keys: &Keys,
) -> Result<Zeroizing<String>, Stop> {
    match &obj.spec.value {
        Some(sealed) => supplied_value(obj, sealed, keys),
        None => Ok(generate_value(
            &obj.spec
                .generate
                .clone()
                .or_else(|| policy.and_then(|p| p.spec.generate.clone()))
                .unwrap_or_default(),
        )),
    }
}

/// `spec.value` opened with the cluster's keys, for this Rotation's namespace,
/// ExternalSecret and `secretKey` only: a SealedSecret's ciphertext, or one sealed for
/// another ExternalSecret or key, does not open.
fn supplied_value(obj: &Rotation, sealed: &str, keys: &Keys) -> Result<Zeroizing<String>, Stop> {
    let namespace = obj.namespace().unwrap_or_default();
    let reference = obj.spec.external_secret_ref.as_ref();
    let (Some(name), Some(key)) = (
        reference.map(|r| r.name.as_str()),
        reference.and_then(|r| r.secret_key.as_deref()),
    ) else {
        return Err(fail(
            "InvalidSpec",
            "spec.value is sealed for one key of an ExternalSecret: set spec.externalSecretRef.name and .secretKey (sigil rotate --key)",
        ));
    };
    let binding = Binding::for_rotation(&namespace, name, key)
        .map_err(|err| fail("InvalidSpec", format!("spec.externalSecretRef: {err}")))?;
    let opened = sigil_core::open(sealed, &binding, &keys.current().keyring).map_err(|err| {
        fail(
            "InvalidValue",
            format!(
                "spec.value does not open as {binding}: {err}. Seal it for this ExternalSecret and key with `sigil rotate -n {namespace} {name} --key {key} --value-from-file FILE`; nothing was written"
            ),
        )
    })?;
    let text = std::str::from_utf8(&opened).map_err(|_| {
        fail(
            "InvalidValue",
            "spec.value is not UTF-8 text; stores hold the new value as a string; nothing was written",
        )
    })?;
    if text.is_empty() {
        return Err(fail(
            "InvalidValue",
            "spec.value opens to an empty value; nothing was written",
        ));
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// The whole new remote value: `current` with `property` set to `fresh` (and, with a
/// policy, the `username` property pair set too), every other property kept; without a
/// property, the fresh value alone, or, where values are always JSON objects
/// (`objects`: Vault), the value's only property.
pub(super) fn new_value(
    current: &[u8],
    property: Option<&str>,
    fresh: Zeroizing<String>,
    objects: bool,
    username: Option<(&str, String)>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(current).ok();
    let property = match (property, &parsed) {
        (Some(p), _) => Some(p.to_owned()),
        (None, Some(map)) if objects && map.len() == 1 => map.keys().next().cloned(),
        (None, Some(_)) => {
            return Err("the value is a JSON object with several properties; set remoteRef.property in the ExternalSecret to the one to rotate".to_owned());
        }
        (None, None) if objects => return Err("the KV data is not a JSON object".to_owned()),
        (None, None) => None,
    };
    let Some(property) = property else {
        return Ok(Zeroizing::new(fresh.as_bytes().to_vec()));
    };
    let mut map = parsed.ok_or_else(|| {
        format!("the value is not a JSON object, so it has no property `{property}`; remove remoteRef.property to rotate the whole value")
    })?;
    set_property(&mut map, &property, fresh.to_string())?;
    if let Some((username_property, username)) = username {
        set_property(&mut map, username_property, username)?;
    }
    let bytes =
        serde_json::to_vec(&map).map_err(|e| format!("cannot serialize the new value: {e}"))?;
    // serde_json's tree is not zeroizable; its strings are dropped here, and what
    // leaves is zeroized.
    drop(map);
    Ok(Zeroizing::new(bytes))
}

/// Sets `property` to `fresh` the way sync reads it: a key that itself contains dots
/// first, else a dotted path through nested objects. A new property is added only at
/// the top level; the value replaced must be a string.
fn set_property(
    map: &mut serde_json::Map<String, serde_json::Value>,
    property: &str,
    fresh: String,
) -> Result<(), String> {
    let slot = if map.contains_key(property) || !property.contains('.') {
        map.entry(property.to_owned())
            .or_insert(serde_json::Value::String(String::new()))
    } else {
        let mut parts = property.split('.');
        let first = parts.next().unwrap_or_default();
        let mut node = map.get_mut(first);
        for part in parts {
            node = node.and_then(|n| n.get_mut(part));
        }
        node.ok_or_else(|| {
            format!("the value has no property `{property}`; add it in the store first (a rotation creates only top-level properties)")
        })?
    };
    if !slot.is_string() {
        return Err(format!(
            "property `{property}` is not a string; only string properties are rotated"
        ));
    }
    *slot = serde_json::Value::String(fresh);
    Ok(())
}

/// A fresh random value with at least one character of each class its alphabet has.
pub(super) fn generate_value(generate: &Generate) -> Zeroizing<String> {
    let alphabet = generate.alphabet();
    let length = generate.length_or_default() as usize;
    let classes: Vec<fn(&char) -> bool> = [
        char::is_ascii_alphabetic,
        char::is_ascii_digit,
        |c: &char| !c.is_ascii_alphanumeric(),
    ]
    .into_iter()
    .filter(|class| alphabet.iter().any(class))
    .collect();
    let mut rng = rand::rng();
    loop {
        let value: Zeroizing<String> = Zeroizing::new(
            (0..length)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
        );
        if classes.iter().all(|class| value.chars().any(|c| class(&c))) {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Zeroizing<String> {
        generate_value(&Generate::default())
    }

    #[test]
    fn generated_values_use_only_and_all_asked_classes() {
        let letters_digits = Generate {
            length: Some(12),
            symbols: Some(false),
            ..Generate::default()
        };
        for _ in 0..200 {
            let v = generate_value(&letters_digits);
            assert_eq!(v.chars().count(), 12);
            assert!(v.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(v.chars().any(|c| c.is_ascii_digit()));
        }
        // Symbols asked for, but none usable: letters and digits, without hanging.
        let no_symbols = Generate {
            symbol_characters: Some("abc \t".to_owned()),
            ..Generate::default()
        };
        let value = generate_value(&no_symbols);
        assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
        let a = generate_value(&Generate::default());
        let b = generate_value(&Generate::default());
        assert_eq!(a.len(), 32);
        assert_ne!(*a, *b);
    }

    #[test]
    fn the_property_is_replaced_and_every_other_kept() {
        let out = new_value(
            br#"{"user":"app","password":"old","port":5432}"#,
            Some("password"),
            fresh(),
            false,
            None,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user"], "app");
        assert_eq!(v["port"], 5432);
        assert_ne!(v["password"], "old");
        assert_eq!(v["password"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn a_policy_writes_the_role_and_its_password_in_one_version() {
        let out = new_value(
            br#"{"username":"app","password":"old","host":"db"}"#,
            Some("password"),
            fresh(),
            true,
            Some(("username", "app_clone".to_owned())),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["username"], "app_clone");
        assert_eq!(v["host"], "db");
        assert_ne!(v["password"], "old");
    }

    #[test]
    fn values_without_a_property() {
        let whole = new_value(b"plain-old", None, fresh(), false, None).unwrap();
        assert_eq!(whole.len(), 32);
        let only = new_value(br#"{"token":"x"}"#, None, fresh(), true, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&only).unwrap();
        assert_ne!(v["token"], "x");
        let err = new_value(br#"{"a":"1","b":"2"}"#, None, fresh(), false, None).unwrap_err();
        assert!(err.contains("remoteRef.property"), "{err}");
        let err = new_value(b"not json", Some("password"), fresh(), false, None).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let nested = new_value(
            br#"{"db":{"password":"old","host":"h"},"a.b":"x"}"#,
            Some("db.password"),
            fresh(),
            false,
            None,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&nested).unwrap();
        assert_eq!(v["db"]["host"], "h");
        assert_ne!(v["db"]["password"], "old");
        assert!(v.get("db.password").is_none());
        let err =
            new_value(br#"{"db":{}}"#, Some("db.password"), fresh(), false, None).unwrap_err();
        assert!(err.contains("no property `db.password`"), "{err}");
        let err = new_value(
            br#"{"password":{"nested":1}}"#,
            Some("password"),
            fresh(),
            false,
            None,
        )
        .unwrap_err();
        assert!(err.contains("not a string"), "{err}");
    }
}
