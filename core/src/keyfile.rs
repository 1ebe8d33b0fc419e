//! Key files (DESIGN.md §1): text, one key per line, `#` starts a comment.
//!
//! ```text
//! sigil.pub.v1 <key-id> <base64 32-byte X25519 public key> [cluster=<name>] [created=<RFC 3339>]
//! sigil.key.v1 <key-id> <base64 32-byte X25519 private key> [cluster=<name>] [created=<RFC 3339>]
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::hpke::KEY_LEN;
use crate::keys::{KeyId, PrivateKey, PublicKey};
use crate::{Error, Result};

const PUBLIC_TAG: &str = "sigil.pub.v1";
const PRIVATE_TAG: &str = "sigil.key.v1";

/// The optional attributes of a key line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyAttributes {
    /// The cluster the key belongs to.
    pub cluster: Option<String>,
    /// When the key was made, RFC 3339.
    pub created: Option<String>,
}

impl KeyAttributes {
    fn suffix(&self) -> String {
        let mut out = String::new();
        for (name, value) in [("cluster", &self.cluster), ("created", &self.created)] {
            if let Some(value) = value {
                out.push_str(&format!(" {name}={value}"));
            }
        }
        out
    }
}

/// A public key read from a key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyEntry {
    /// The key.
    pub key: PublicKey,
    /// Its attributes.
    pub attributes: KeyAttributes,
}

/// A private key read from a key file.
#[derive(Debug)]
pub struct PrivateKeyEntry {
    /// The key.
    pub key: PrivateKey,
    /// Its attributes.
    pub attributes: KeyAttributes,
}

impl PublicKeyEntry {
    /// The line that stores this key (no trailing newline).
    pub fn to_line(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}{}",
            self.key.id(),
            STANDARD.encode(self.key.as_bytes()),
            self.attributes.suffix()
        )
    }
}

impl PrivateKeyEntry {
    /// The line that stores this key (no trailing newline); wiped when dropped.
    pub fn to_line(&self) -> Zeroizing<String> {
        let encoded = Zeroizing::new(STANDARD.encode(self.key.to_bytes().as_slice()));
        Zeroizing::new(format!(
            "{PRIVATE_TAG} {} {}{}",
            self.key.id(),
            encoded.as_str(),
            self.attributes.suffix()
        ))
    }
}

struct RawLine<'a> {
    number: usize,
    tag: &'a str,
    key_id: KeyId,
    key: Zeroizing<[u8; KEY_LEN]>,
    attributes: KeyAttributes,
}

fn bad(line: usize, reason: impl Into<String>) -> Error {
    Error::KeyFileLine {
        line,
        reason: reason.into(),
    }
}

/// What a line that is not a key line seems to be, in words that quote none of it: the
/// file may be a secret given by mistake (a bare key, a `.env`), and the message goes
/// to a terminal, a CI log or a ticket.
fn looks_like(content: &str) -> &'static str {
    let first = content.split(' ').next().unwrap_or_default();
    let base64_like = |s: &str| {
        s.len() >= 16
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    if content.starts_with("-----BEGIN") {
        "it looks like PEM, e.g. a certificate or a Bitnami key: `sigil migrate bitnami` reads those"
    } else if first.starts_with("ssh-") || first.starts_with("ecdsa-") {
        "it looks like an SSH key"
    } else if first.contains('=') && !first.starts_with('=') && !base64_like(first) {
        "it looks like a `NAME=value` line of an environment file"
    } else if base64_like(first) && content.split(' ').count() == 1 {
        "it looks like a bare base64 key without its `sigil.*.v1 <key-id>` prefix"
    } else if first.starts_with('{') || first.starts_with("apiVersion:") || first.ends_with(':') {
        "it looks like JSON or YAML"
    } else {
        "its first field is not a key line's tag"
    }
}

fn parse_lines(text: &str) -> Result<Vec<RawLine<'_>>> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let mut fields = content.split(' ').filter(|f| !f.is_empty());
        let tag = fields.next().unwrap_or_default();
        if tag != PUBLIC_TAG && tag != PRIVATE_TAG {
            return Err(bad(
                number,
                format!(
                    "is not a key line ({}): key lines start with `{PUBLIC_TAG}` or `{PRIVATE_TAG}`",
                    looks_like(content)
                ),
            ));
        }
        let key_id = fields
            .next()
            .ok_or_else(|| bad(number, "has no key ID"))
            .and_then(|id| {
                KeyId::parse(id).map_err(|_| bad(number, "key ID is not 16 hex digits"))
            })?;
        let encoded = fields.next().ok_or_else(|| bad(number, "has no key"))?;
        let decoded = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| bad(number, "key is not valid base64"))?,
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if decoded.len() != KEY_LEN {
            return Err(bad(
                number,
                format!("key is {} bytes, an X25519 key is 32", decoded.len()),
            ));
        }
        key.copy_from_slice(&decoded);
        let mut attributes = KeyAttributes::default();
        for field in fields {
            match field.split_once('=') {
                Some(("cluster", value)) => attributes.cluster = Some(value.to_owned()),
                Some(("created", value)) => attributes.created = Some(value.to_owned()),
                // Attributes a later version adds are carried by that version's readers.
                Some(_) => {}
                None => {
                    return Err(bad(
                        number,
                        "has a field after the key that is not `name=value`",
                    ));
                }
            }
        }
        out.push(RawLine {
            number,
            tag,
            key_id,
            key,
            attributes,
        });
    }
    Ok(out)
}

fn check_id(line: &RawLine<'_>, actual: KeyId) -> Result<()> {
    if line.key_id == actual {
        Ok(())
    } else {
        Err(Error::KeyIdMismatch {
            line: line.number,
            stated: line.key_id,
            actual,
        })
    }
}

/// Reads every public key line.
///
/// # Errors
/// [`Error::KeyFileLine`] for a malformed line or a private key line (a public key file
/// must never hold one), [`Error::KeyIdMismatch`], or [`Error::NoKeys`].
pub fn parse_public(text: &str) -> Result<Vec<PublicKeyEntry>> {
    let mut keys = Vec::new();
    for line in parse_lines(text)? {
        if line.tag == PRIVATE_TAG {
            return Err(bad(
                line.number,
                "holds a private key; give the public key file (`sigil.pub.v1` lines) instead",
            ));
        }
        let key = PublicKey::from_bytes(*line.key);
        check_id(&line, key.id())?;
        keys.push(PublicKeyEntry {
            key,
            attributes: line.attributes,
        });
    }
    if keys.is_empty() {
        return Err(Error::NoKeys(PUBLIC_TAG));
    }
    Ok(keys)
}

/// Reads every private key line; public key lines beside them are skipped.
///
/// # Errors
/// [`Error::KeyFileLine`], [`Error::KeyIdMismatch`], or [`Error::NoKeys`].
pub fn parse_private(text: &str) -> Result<Vec<PrivateKeyEntry>> {
    let mut keys = Vec::new();
    for line in parse_lines(text)? {
        if line.tag != PRIVATE_TAG {
            continue;
        }
        let key = PrivateKey::from_bytes(line.key.clone());
        check_id(&line, key.id())?;
        keys.push(PrivateKeyEntry {
            key,
            attributes: line.attributes,
        });
    }
    if keys.is_empty() {
        return Err(Error::NoKeys(PRIVATE_TAG));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> PrivateKeyEntry {
        PrivateKeyEntry {
            key: PrivateKey::generate().unwrap(),
            attributes: KeyAttributes {
                cluster: Some("prod-eu".into()),
                created: Some("2026-11-24T12:00:00Z".into()),
            },
        }
    }

    #[test]
    fn lines_round_trip_with_comments_and_attributes() {
        let private = entry();
        let public = PublicKeyEntry {
            key: *private.key.public_key(),
            attributes: private.attributes.clone(),
        };
        let text = format!("# sealing keys\n\n{}  # prod\n", public.to_line());
        assert_eq!(parse_public(&text).unwrap(), vec![public.clone()]);
        let both = format!("{}\n{}\n", public.to_line(), private.to_line().as_str());
        let read = parse_private(&both).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].key.id(), private.key.id());
        assert_eq!(read[0].attributes, private.attributes);
    }

    #[test]
    fn a_line_whose_id_is_not_its_keys_is_refused() {
        let private = entry();
        let line = private.to_line();
        let other = KeyId([0xab; 8]).to_string();
        let forged = line.replacen(&private.key.id().to_string(), &other, 1);
        let err = parse_private(&forged).unwrap_err();
        assert!(matches!(err, Error::KeyIdMismatch { line: 1, .. }), "{err}");
    }

    #[test]
    fn a_public_file_holding_a_private_key_is_refused() {
        let err = parse_public(entry().to_line().as_str()).unwrap_err();
        assert!(err.to_string().contains("holds a private key"), "{err}");
    }

    #[test]
    fn a_line_that_is_not_a_key_line_is_described_never_quoted() {
        let canary = "hunter2-canary-0123456789";
        let bare = STANDARD.encode([0x5a; 32]);
        let cases = [
            (format!("DB_PASSWORD={canary}"), "environment file"),
            (format!("export TOKEN={canary}"), "not a key line's tag"),
            (bare.clone(), "bare base64 key"),
            (format!("-----BEGIN PRIVATE KEY-----\n{canary}"), "PEM"),
            (format!("password: {canary}"), "JSON or YAML"),
            (format!("{canary} {canary}"), "not a key line's tag"),
        ];
        for (text, words) in cases {
            let err = parse_private(&text).unwrap_err().to_string();
            assert!(err.contains(words), "{err}");
            assert!(!err.contains(canary) && !err.contains(&bare[..8]), "{err}");
            let err = parse_public(&text).unwrap_err().to_string();
            assert!(!err.contains(canary) && !err.contains(&bare[..8]), "{err}");
        }
    }

    #[test]
    fn malformed_lines_name_their_number() {
        let cases = [
            (
                "ssh-ed25519 AAAA",
                "line 1 is not a key line (it looks like an SSH key)",
            ),
            ("sigil.pub.v1", "line 1 has no key ID"),
            ("\nsigil.pub.v1 0011", "line 2 key ID is not 16 hex digits"),
            ("sigil.pub.v1 0011223344556677", "line 1 has no key"),
            (
                "sigil.pub.v1 0011223344556677 !!!",
                "line 1 key is not valid base64",
            ),
            (
                "sigil.pub.v1 0011223344556677 AAAA",
                "line 1 key is 3 bytes",
            ),
            ("", "no `sigil.pub.v1` line found"),
        ];
        for (text, expected) in cases {
            let err = parse_public(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }
}
