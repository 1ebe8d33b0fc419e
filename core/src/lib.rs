//! The Sigil sealing format, version 1, and its key files.
//!
//! A value is sealed with RFC 9180 HPKE (base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305) to one or more cluster keys, and bound to the
//! namespace, Secret name and data key it belongs to, so it opens nowhere else. This
//! crate depends on neither an async runtime nor Kubernetes, so any program (and a
//! fuzzer) can use it; DESIGN.md §1 is the specification.

pub mod hpke;
pub mod keyfile;
pub mod keys;
pub mod sealed;

pub use keyfile::{KeyAttributes, PrivateKeyEntry, PublicKeyEntry};
pub use keys::{KeyId, Keyring, PrivateKey, PublicKey};
pub use sealed::{Binding, Envelope, Scope, open, seal};

use sealed::MAX_RECIPIENTS;

/// Everything that can go wrong while sealing, opening, or reading key files.
///
/// No message ever contains a secret value or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sealed value is empty.
    #[error("the sealed value is empty")]
    Empty,
    /// The sealed value is not base64.
    #[error("the sealed value is not valid base64")]
    Base64(#[source] base64::DecodeError),
    /// The bytes do not start with the `SG` magic.
    #[error("not a Sigil sealed value (it does not start with the `SG` magic)")]
    NotSealed,
    /// A format version this build does not read.
    #[error("sealed with format version {0}; this build reads version 1")]
    UnsupportedVersion(u8),
    /// The header's stanza count is 0 or more than 16.
    #[error("the header declares {0} recipient stanzas; a sealed value has 1 to {MAX_RECIPIENTS}")]
    StanzaCount(u8),
    /// Fewer bytes than the header promises.
    #[error("the sealed value is truncated: {len} bytes, at least {needed} expected")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header requires.
        needed: usize,
    },
    /// No stanza is for a key the decryptor holds.
    #[error("sealed for key ID(s) {}, and no private key with such an ID is available", join_ids(.sealed_for))]
    UnknownKey {
        /// The key IDs in the value's stanzas.
        sealed_for: Vec<KeyId>,
    },
    /// The value was sealed for the same identity under another scope.
    #[error(
        "sealed with scope {sealed}, but declared as scope {declared}; a value's scope cannot be changed after sealing"
    )]
    ScopeMismatch {
        /// The scope it was sealed with.
        sealed: Scope,
        /// The scope it was opened with.
        declared: Scope,
    },
    /// The data key did not authenticate for this identity.
    #[error(
        "does not authenticate for {binding}: it was sealed for another namespace, Secret name or data key, or its recipient stanza was altered"
    )]
    WrongBinding {
        /// The identity it was opened for.
        binding: String,
    },
    /// The data key opened but the payload did not: the value was altered.
    #[error(
        "the encrypted payload failed authentication: the value was altered or corrupted after sealing"
    )]
    Tampered,
    /// An HPKE ciphertext did not authenticate.
    #[error("the ciphertext failed authentication")]
    Unauthenticated,
    /// An X25519 public key or encapsulated key is a low-order point.
    #[error("an X25519 key in the value is a low-order point (all-zero shared secret)")]
    LowOrderPoint,
    /// An HPKE export longer than HKDF-SHA256 can produce.
    #[error("cannot derive {0} bytes; HKDF-SHA256 gives at most 8160")]
    ExportTooLong(usize),
    /// Sealing to no recipient or to more than 16.
    #[error("a value is sealed to 1 to {MAX_RECIPIENTS} distinct public keys, not {0}")]
    RecipientCount(usize),
    /// A binding field missing for its scope, or unusable.
    #[error("`{field}` {reason}")]
    InvalidBinding {
        /// The field: `namespace`, `name` or `key`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A scope name other than strict, namespace or cluster.
    #[error("unknown scope `{0}`; use strict, namespace or cluster")]
    UnknownScope(String),
    /// Text that is not 16 hex digits where a key ID belongs.
    #[error("`{0}` is not a key ID (16 hex digits)")]
    BadKeyId(String),
    /// A malformed key file line.
    #[error("line {line} {reason}")]
    KeyFileLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A key line whose key ID is not the ID of its key.
    #[error(
        "line {line} says key ID {stated} but its key has ID {actual}; the line was altered or assembled by hand"
    )]
    KeyIdMismatch {
        /// 1-based line number.
        line: usize,
        /// The ID written on the line.
        stated: KeyId,
        /// The ID computed from the key.
        actual: KeyId,
    },
    /// A key file without any key of the kind asked for.
    #[error("no `{0}` line found")]
    NoKeys(&'static str),
    /// The operating system gave no randomness.
    #[error("the system's random number generator failed")]
    Randomness,
}

impl Error {
    /// How to fix the cause, for errors a user can act on.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::UnknownKey { .. } => "open it with the private key of one of those IDs (`sigil keys backup` copies them out of the cluster that sealed it), or re-seal the Secret with the current public key".to_owned(),
            Error::WrongBinding { .. } => "a sealed value opens only in the namespace, name and key it was sealed for: move the SealedSecret back, or re-seal the Secret for its new place (`sigil seal -n NAMESPACE`)".to_owned(),
            Error::ScopeMismatch { sealed, declared } => format!("set spec.scope back to `{sealed}`, or re-seal the Secret with `--scope {declared}`"),
            Error::Empty | Error::Base64(_) | Error::NotSealed | Error::Truncated { .. } | Error::StanzaCount(_) | Error::Tampered | Error::LowOrderPoint => "the sealed value was damaged or edited: take it from Git history, or re-seal the Secret".to_owned(),
            Error::UnsupportedVersion(_) => "upgrade sigil to a version that reads this format".to_owned(),
            _ => return None,
        })
    }
}

fn join_ids(ids: &[KeyId]) -> String {
    ids.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
