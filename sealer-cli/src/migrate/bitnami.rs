//! Bitnami Sealed Secrets' value format, read only (v0.36, `pkg/crypto/crypto.go`).
//!
//! One value is `len ‖ rsa ‖ aes`: `len` a big-endian u16, the length of `rsa`;
//! `rsa` the RSA-OAEP (SHA-256, MGF1-SHA-256) encryption of a 32-byte session key under
//! the controller's key, with the scope's label; `aes` the value under AES-256-GCM with
//! that session key, a zero nonce and no associated data. The label is
//! `namespace/name` (strict), `namespace` (namespace-wide) or empty (cluster-wide), so
//! a value opens only under the identity it was sealed for.
//!
//! RSA lives here, in the CLI, for this offline command only: the controller and the
//! API never see an RSA key.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{
    KeyPair, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use zeroize::Zeroizing;

/// Length of the AES-256-GCM session key inside the RSA ciphertext.
const SESSION_KEY_LEN: usize = 32;
/// Length of the AES-GCM tag at the end of every value.
const TAG_LEN: usize = 16;

/// Annotation that makes a SealedSecret namespace-wide when `"true"`.
pub(crate) const NAMESPACE_WIDE: &str = "sealedsecrets.bitnami.com/namespace-wide";
/// Annotation that makes a SealedSecret cluster-wide when `"true"` (it wins over
/// namespace-wide, as in Bitnami's controller).
pub(crate) const CLUSTER_WIDE: &str = "sealedsecrets.bitnami.com/cluster-wide";

/// Bitnami's sealing scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Bound to namespace and name.
    Strict,
    /// Bound to the namespace.
    NamespaceWide,
    /// Bound to nothing.
    ClusterWide,
}

impl Scope {
    /// The scope a SealedSecret's annotations give it, read as Bitnami's controller reads
    /// them: only the value `"true"` counts, and cluster-wide wins.
    pub(crate) fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let set = |key: &str| annotations.get(key).is_some_and(|v| v == "true");
        if set(CLUSTER_WIDE) {
            Self::ClusterWide
        } else if set(NAMESPACE_WIDE) {
            Self::NamespaceWide
        } else {
            Self::Strict
        }
    }

    /// The RSA-OAEP label a value of this scope was sealed with.
    pub(crate) fn label(self, namespace: &str, name: &str) -> Vec<u8> {
        match self {
            Self::Strict => format!("{namespace}/{name}").into_bytes(),
            Self::NamespaceWide => namespace.as_bytes().to_vec(),
            Self::ClusterWide => Vec::new(),
        }
    }

    /// Sigil's scope of the same reach.
    pub(crate) fn to_sigil(self) -> sigil_core::Scope {
        match self {
            Self::Strict => sigil_core::Scope::Strict,
            Self::NamespaceWide => sigil_core::Scope::Namespace,
            Self::ClusterWide => sigil_core::Scope::Cluster,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::NamespaceWide => "namespace-wide",
            Self::ClusterWide => "cluster-wide",
        })
    }
}

/// One of Bitnami's RSA private sealing keys.
pub(crate) struct PrivateKey {
    key: OaepPrivateDecryptingKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(RSA-{}, redacted)", self.bits())
    }
}

impl PrivateKey {
    /// The key's size in bits.
    pub(crate) fn bits(&self) -> usize {
        self.key.key_size_bits()
    }
}

/// Why a key file could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The PEM text is malformed (the message names the problem, never key bytes).
    Pem(String),
    /// A private key section holds something other than an RSA key aws-lc accepts.
    Rejected {
        /// The PEM section kind: `RSA PRIVATE KEY`, `PRIVATE KEY` or `EC PRIVATE KEY`.
        kind: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// No private key section at all.
    NoKey,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem(reason) => write!(f, "invalid PEM: {reason}"),
            Self::Rejected { kind, reason } => {
                write!(f, "the {kind} is not a usable RSA key: {reason}")
            }
            Self::NoKey => f.write_str("holds no PEM private key"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Every private key in PEM text (`RSA PRIVATE KEY`, i.e. PKCS#1 as Bitnami's controller
/// writes it, or PKCS#8 `PRIVATE KEY`); certificates and other sections are skipped.
pub(crate) fn keys_from_pem(pem: &[u8]) -> Result<Vec<PrivateKey>, KeyError> {
    let mut keys = Vec::new();
    for section in PrivateKeyDer::pem_slice_iter(pem) {
        let der = Zeroizing::new(section.map_err(|err| KeyError::Pem(err.to_string()))?);
        let rejected = |kind, err: &dyn fmt::Display| KeyError::Rejected {
            kind,
            reason: err.to_string(),
        };
        let key = match &*der {
            PrivateKeyDer::Pkcs1(pkcs1) => {
                // aws-lc reads PKCS#1 as a key pair; its PKCS#8 form (a buffer wiped on
                // drop) makes the decrypting key.
                let pair = KeyPair::from_der(pkcs1.secret_pkcs1_der())
                    .map_err(|err| rejected("RSA PRIVATE KEY", &err))?;
                let pkcs8 = pair
                    .as_der()
                    .map_err(|err| rejected("RSA PRIVATE KEY", &err))?;
                PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref())
                    .map_err(|err| rejected("RSA PRIVATE KEY", &err))?
            }
            PrivateKeyDer::Pkcs8(pkcs8) => {
                PrivateDecryptingKey::from_pkcs8(pkcs8.secret_pkcs8_der())
                    .map_err(|err| rejected("PRIVATE KEY", &err))?
            }
            PrivateKeyDer::Sec1(_) => {
                return Err(rejected(
                    "EC PRIVATE KEY",
                    &"an EC key; Bitnami seals with RSA",
                ));
            }
            _ => return Err(rejected("PRIVATE KEY", &"an unknown key type")),
        };
        let key =
            OaepPrivateDecryptingKey::new(key).map_err(|err| rejected("PRIVATE KEY", &err))?;
        keys.push(PrivateKey { key });
    }
    if keys.is_empty() {
        return Err(KeyError::NoKey);
    }
    Ok(keys)
}

/// Why a value did not open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Shorter than its framing says it must be.
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the framing needs at least.
        needed: usize,
    },
    /// The length prefix names an RSA ciphertext of a size none of the keys has.
    NoKeyOfSize {
        /// The RSA ciphertext length the prefix gives, in bytes.
        rsa_len: usize,
        /// The sizes of the keys given, in bits.
        key_bits: Vec<usize>,
    },
    /// None of the keys (of the right size) opens the session key under this label.
    NoKeyOpens {
        /// How many keys were tried.
        tried: usize,
    },
    /// The session key is not 32 bytes: not a value kubeseal wrote.
    SessionKeyLength(usize),
    /// The session key opened, but the value fails authentication: it was altered.
    Altered,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { len, needed } => write!(
                f,
                "the value is truncated: {len} bytes, its framing needs at least {needed}"
            ),
            Self::NoKeyOfSize { rsa_len, key_bits } => {
                let bits: Vec<String> = key_bits.iter().map(|b| format!("{b}-bit")).collect();
                write!(
                    f,
                    "the value was sealed with a {}-bit key, and the --bitnami-key keys are {}",
                    rsa_len * 8,
                    bits.join(", ")
                )
            }
            Self::NoKeyOpens { tried: 1 } => f.write_str("the --bitnami-key does not open it"),
            Self::NoKeyOpens { tried } => {
                write!(f, "none of the {tried} --bitnami-key keys opens it")
            }
            Self::SessionKeyLength(len) => write!(
                f,
                "its session key is {len} bytes where kubeseal writes {SESSION_KEY_LEN}"
            ),
            Self::Altered => f.write_str(
                "the value was altered: its session key opens but its data fails authentication",
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// Opens one value (the bytes under the base64 of `spec.encryptedData`) with whichever
/// key sealed it, under `label`.
pub(crate) fn open(
    value: &[u8],
    label: &[u8],
    keys: &[PrivateKey],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let Some((prefix, rest)) = value.split_first_chunk::<2>() else {
        return Err(OpenError::Truncated {
            len: value.len(),
            needed: 2,
        });
    };
    let rsa_len = usize::from(u16::from_be_bytes(*prefix));
    let needed = 2 + rsa_len + TAG_LEN;
    if value.len() < needed {
        return Err(OpenError::Truncated {
            len: value.len(),
            needed,
        });
    }
    let (rsa, aes) = rest.split_at(rsa_len);
    let candidates: Vec<&PrivateKey> = keys
        .iter()
        .filter(|key| key.key.key_size_bytes() == rsa_len)
        .collect();
    if candidates.is_empty() {
        return Err(OpenError::NoKeyOfSize {
            rsa_len,
            key_bits: keys.iter().map(PrivateKey::bits).collect(),
        });
    }
    // Bitnami's controller tries every key too: v0.36 values do not name theirs.
    let session_key = candidates
        .iter()
        .find_map(|key| {
            let mut out = Zeroizing::new(vec![0u8; key.key.min_output_size()]);
            let len = key
                .key
                .decrypt(&OAEP_SHA256_MGF1SHA256, rsa, &mut out, Some(label))
                .ok()?
                .len();
            out.truncate(len);
            Some(out)
        })
        .ok_or(OpenError::NoKeyOpens {
            tried: candidates.len(),
        })?;
    if session_key.len() != SESSION_KEY_LEN {
        return Err(OpenError::SessionKeyLength(session_key.len()));
    }
    let key = UnboundKey::new(&AES_256_GCM, &session_key)
        .map(LessSafeKey::new)
        .map_err(|_| OpenError::SessionKeyLength(session_key.len()))?;
    let mut in_out = Zeroizing::new(aes.to_vec());
    // The session key is used once, so the zero nonce is safe (as Bitnami says).
    let nonce = Nonce::assume_unique_for_key([0u8; NONCE_LEN]);
    let len = key
        .open_in_place(nonce, Aad::empty(), &mut in_out)
        .map_err(|_| OpenError::Altered)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::aead::NONCE_LEN;
    use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
    use aws_lc_rs::rsa::{KeySize, OaepPublicEncryptingKey};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    /// A value framed as Bitnami's `HybridEncrypt` frames it.
    fn seal(key: &PrivateDecryptingKey, plaintext: &[u8], label: &[u8]) -> Vec<u8> {
        let mut session_key = [0u8; SESSION_KEY_LEN];
        SystemRandom::new().fill(&mut session_key).unwrap();
        let public = OaepPublicEncryptingKey::new(key.public_key()).unwrap();
        let mut rsa = vec![0u8; public.ciphertext_size()];
        let rsa = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, &session_key, &mut rsa, Some(label))
            .unwrap()
            .to_vec();
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &session_key).unwrap());
        let mut aes = plaintext.to_vec();
        aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
            Aad::empty(),
            &mut aes,
        )
        .unwrap();
        let mut value = u16::try_from(rsa.len()).unwrap().to_be_bytes().to_vec();
        value.extend(rsa);
        value.extend(aes);
        value
    }

    fn generated() -> (PrivateDecryptingKey, PrivateKey) {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = key.as_der().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        let mut keys = keys_from_pem(pem.as_bytes()).unwrap();
        (key, keys.remove(0))
    }

    #[test]
    fn a_value_opens_under_its_label_only() {
        let (raw, key) = generated();
        let plaintext = b"\x00\xffbinary\xc3\x28 value";
        let value = seal(&raw, plaintext, b"prod/db");
        let keys = [key];
        assert_eq!(
            open(&value, b"prod/db", &keys).unwrap().as_slice(),
            plaintext
        );
        assert_eq!(
            open(&value, b"prod/other", &keys).unwrap_err(),
            OpenError::NoKeyOpens { tried: 1 }
        );
        assert_eq!(
            open(&value, b"", &keys).unwrap_err(),
            OpenError::NoKeyOpens { tried: 1 }
        );
    }

    #[test]
    fn an_empty_label_is_cluster_wide() {
        let (raw, key) = generated();
        let value = seal(&raw, b"v", b"");
        assert_eq!(open(&value, b"", &[key]).unwrap().as_slice(), b"v");
    }

    #[test]
    fn every_key_is_tried() {
        let (_, other) = generated();
        let (raw, key) = generated();
        let value = seal(&raw, b"v", b"ns");
        assert_eq!(open(&value, b"ns", &[other, key]).unwrap().as_slice(), b"v");
    }

    #[test]
    fn a_wrong_key_does_not_open() {
        let (_, other) = generated();
        let (raw, _) = generated();
        let value = seal(&raw, b"v", b"ns");
        assert_eq!(
            open(&value, b"ns", &[other]).unwrap_err(),
            OpenError::NoKeyOpens { tried: 1 }
        );
    }

    #[test]
    fn an_altered_payload_is_refused() {
        let (raw, key) = generated();
        let mut value = seal(&raw, b"password", b"ns/db");
        let last = value.len() - 1;
        value[last] ^= 1;
        assert_eq!(
            open(&value, b"ns/db", &[key]).unwrap_err(),
            OpenError::Altered
        );
    }

    #[test]
    fn truncated_values_are_refused() {
        let (raw, key) = generated();
        let keys = [key];
        let value = seal(&raw, b"v", b"ns/db");
        for len in [0, 1] {
            assert_eq!(
                open(&value[..len], b"ns/db", &keys).unwrap_err(),
                OpenError::Truncated { len, needed: 2 }
            );
        }
        // The prefix says 256 bytes of RSA, then a 16-byte tag must follow.
        for len in [2, 100, 257, 2 + 256 + 15] {
            assert_eq!(
                open(&value[..len], b"ns/db", &keys).unwrap_err(),
                OpenError::Truncated {
                    len,
                    needed: 2 + 256 + 16
                }
            );
        }
    }

    #[test]
    fn a_length_prefix_that_fits_no_key_is_named() {
        let (raw, key) = generated();
        let mut value = seal(&raw, b"v", b"ns/db");
        // 0x0200: a 4096-bit ciphertext; the value is long enough to hold one.
        value[..2].copy_from_slice(&512u16.to_be_bytes());
        value.extend([0u8; 512]);
        assert_eq!(
            open(&value, b"ns/db", &[key]).unwrap_err(),
            OpenError::NoKeyOfSize {
                rsa_len: 512,
                key_bits: vec![2048]
            }
        );
        assert_eq!(
            OpenError::NoKeyOfSize {
                rsa_len: 512,
                key_bits: vec![2048]
            }
            .to_string(),
            "the value was sealed with a 4096-bit key, and the --bitnami-key keys are 2048-bit"
        );
    }

    #[test]
    fn a_prefix_shorter_than_the_key_does_not_open() {
        let (raw, key) = generated();
        let mut value = seal(&raw, b"v", b"ns/db");
        value[..2].copy_from_slice(&255u16.to_be_bytes());
        assert!(matches!(
            open(&value, b"ns/db", &[key]).unwrap_err(),
            OpenError::NoKeyOfSize { rsa_len: 255, .. }
        ));
    }

    #[test]
    fn scopes_and_labels_follow_bitnami() {
        let annotations = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(Scope::from_annotations(&annotations(&[])), Scope::Strict);
        assert_eq!(
            Scope::from_annotations(&annotations(&[(NAMESPACE_WIDE, "true")])),
            Scope::NamespaceWide
        );
        assert_eq!(
            Scope::from_annotations(&annotations(&[(NAMESPACE_WIDE, "yes")])),
            Scope::Strict
        );
        assert_eq!(
            Scope::from_annotations(&annotations(&[
                (NAMESPACE_WIDE, "true"),
                (CLUSTER_WIDE, "true")
            ])),
            Scope::ClusterWide
        );
        assert_eq!(Scope::Strict.label("prod", "db"), b"prod/db");
        assert_eq!(Scope::NamespaceWide.label("prod", "db"), b"prod");
        assert_eq!(Scope::ClusterWide.label("prod", "db"), b"");
    }

    #[test]
    fn key_files_without_a_usable_key_are_refused() {
        assert_eq!(keys_from_pem(b"").err(), Some(KeyError::NoKey));
        let cert_only = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            keys_from_pem(cert_only.as_bytes()).err(),
            Some(KeyError::NoKey)
        );
        let garbage = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            keys_from_pem(garbage.as_bytes()).err(),
            Some(KeyError::Rejected {
                kind: "RSA PRIVATE KEY",
                ..
            })
        ));
    }
}
