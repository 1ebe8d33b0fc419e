//! Sealing format v1 (DESIGN.md §1): one value, sealed to up to 16 recipients and bound
//! to the namespace, Secret name and data key it was sealed for.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::hpke::{self, Context, KEY_LEN, ScheduleContext, TAG_LEN};
use crate::keys::{KeyId, Keyring, PublicKey, random_secret};
use crate::{Error, Result};

/// HPKE `info` for every sealed value.
pub const INFO: &[u8] = b"sigil.dev/v1/seal";
/// First bytes of every sealed value: the magic `SG` and format version 1.
pub const HEADER: [u8; 3] = [b'S', b'G', 0x01];
/// The most recipients one value may be sealed to.
pub const MAX_RECIPIENTS: usize = 16;
const WRAPPED_DEK_LEN: usize = KEY_LEN + TAG_LEN;
const STANZA_LEN: usize = 8 + KEY_LEN + WRAPPED_DEK_LEN;
/// The `info` half of the HPKE key schedule, the same for every value.
static SCHEDULE: LazyLock<ScheduleContext> = LazyLock::new(|| ScheduleContext::new(INFO));

/// How much of its identity a sealed value is bound to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Bound to namespace, Secret name and data key.
    #[default]
    Strict,
    /// Bound to namespace and data key; the Secret may be renamed.
    Namespace,
    /// Bound to the data key only; usable in any namespace.
    Cluster,
}

impl Scope {
    /// Every scope, narrowest first.
    pub const ALL: [Scope; 3] = [Scope::Strict, Scope::Namespace, Scope::Cluster];

    /// The name used in the AAD and in `spec.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::Namespace => "namespace",
            Scope::Cluster => "cluster",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| Error::UnknownScope(text.chars().take(40).collect()))
    }
}

/// Where a value belongs: the identity it is sealed for and checked against on opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    scope: Scope,
    purpose: Purpose,
    namespace: String,
    name: String,
    key: String,
}

/// What a sealed value is for. A value sealed for one purpose never opens for another,
/// whatever the names: its AAD names the purpose where a Secret value's names its scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A value of a Secret (a SealedSecret's `encryptedData`).
    SecretValue,
    /// The new value of one ExternalSecret key, supplied to a Rotation.
    Rotation,
}

/// The AAD field of a rotation value where a Secret value has its scope; no scope is
/// spelled so.
const ROTATION_PURPOSE: &str = "rotation";

impl Binding {
    /// A binding; the fields a scope does not bind may be empty.
    ///
    /// # Errors
    /// [`Error::InvalidBinding`] when the scope needs a field that is empty, or a field
    /// holds a newline (which would make two bindings share one AAD).
    pub fn new(scope: Scope, namespace: &str, name: &str, key: &str) -> Result<Self> {
        let invalid = |field, reason| Err(Error::InvalidBinding { field, reason });
        for (field, value) in [("namespace", namespace), ("name", name), ("key", key)] {
            if value.contains('\n') {
                return invalid(field, "contains a newline");
            }
        }
        if key.is_empty() {
            return invalid("key", "is empty");
        }
        if scope != Scope::Cluster && namespace.is_empty() {
            return invalid("namespace", "is required by this scope");
        }
        if scope == Scope::Strict && name.is_empty() {
            return invalid("name", "is required by scope strict");
        }
        Ok(Self {
            scope,
            purpose: Purpose::SecretValue,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The binding of a new value supplied to a Rotation of ExternalSecret
    /// `external_secret` in `namespace`, for its `secretKey` `key`. No SealedSecret value
    /// opens under it, and no value sealed under it opens as a SealedSecret's, so a
    /// ciphertext copied from Git cannot be replayed into a store.
    ///
    /// # Errors
    /// As [`Binding::new`] with scope strict.
    pub fn for_rotation(namespace: &str, external_secret: &str, key: &str) -> Result<Self> {
        let mut binding = Self::new(Scope::Strict, namespace, external_secret, key)?;
        binding.purpose = Purpose::Rotation;
        Ok(binding)
    }

    /// The scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The data key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The same identity under another scope, if that scope can hold it.
    fn with_scope(&self, scope: Scope) -> Option<Self> {
        Self::new(scope, &self.namespace, &self.name, &self.key).ok()
    }

    /// The associated data: `sigil.dev/v1\nSCOPE\nNAMESPACE\nNAME\nKEY`, with the
    /// fields the scope does not bind left empty; a rotation value has `rotation` where a
    /// Secret value has its scope.
    pub fn aad(&self) -> Vec<u8> {
        let (namespace, name) = match self.scope {
            Scope::Strict => (self.namespace.as_str(), self.name.as_str()),
            Scope::Namespace => (self.namespace.as_str(), ""),
            Scope::Cluster => ("", ""),
        };
        let second = match self.purpose {
            Purpose::SecretValue => self.scope.as_str(),
            Purpose::Rotation => ROTATION_PURPOSE,
        };
        ["sigil.dev/v1", second, namespace, name, &self.key]
            .join("\n")
            .into_bytes()
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.purpose == Purpose::Rotation {
            return write!(
                f,
                "a Rotation of ExternalSecret {}/{}, key `{}`",
                self.namespace, self.name, self.key
            );
        }
        match self.scope {
            Scope::Strict => write!(
                f,
                "namespace `{}`, name `{}`, key `{}` (scope strict)",
                self.namespace, self.name, self.key
            ),
            Scope::Namespace => write!(
                f,
                "namespace `{}`, key `{}` (scope namespace)",
                self.namespace, self.key
            ),
            Scope::Cluster => write!(f, "key `{}` (scope cluster)", self.key),
        }
    }
}

/// One recipient's copy of the data key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    /// Which public key this copy was sealed to.
    pub key_id: KeyId,
    /// The HPKE encapsulated key.
    pub enc: [u8; KEY_LEN],
    /// The data key, sealed with HPKE.
    pub wrapped_dek: [u8; WRAPPED_DEK_LEN],
}

/// A decoded sealed value: the recipient stanzas and the encrypted payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// One stanza per recipient.
    pub stanzas: Vec<Stanza>,
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Decodes the base64 text form.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::Base64`], or any error of [`Envelope::from_bytes`].
    pub fn decode(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::Empty);
        }
        let bytes = STANDARD.decode(text).map_err(Error::Base64)?;
        Self::from_bytes(&bytes)
    }

    /// Parses the binary form.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::NotSealed`], [`Error::UnsupportedVersion`],
    /// [`Error::StanzaCount`] or [`Error::Truncated`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::Empty);
        }
        if bytes.len() < 2 || bytes[..2] != HEADER[..2] {
            return Err(Error::NotSealed);
        }
        let truncated = |needed| Error::Truncated {
            len: bytes.len(),
            needed,
        };
        let version = *bytes.get(2).ok_or(truncated(HEADER.len() + 1))?;
        if version != HEADER[2] {
            return Err(Error::UnsupportedVersion(version));
        }
        let count = *bytes.get(3).ok_or(truncated(HEADER.len() + 1))?;
        if count == 0 || usize::from(count) > MAX_RECIPIENTS {
            return Err(Error::StanzaCount(count));
        }
        let payload_start = 4 + usize::from(count) * STANZA_LEN;
        if bytes.len() < payload_start + TAG_LEN {
            return Err(truncated(payload_start + TAG_LEN));
        }
        let stanzas = bytes[4..payload_start]
            .chunks_exact(STANZA_LEN)
            .map(|chunk| {
                let mut stanza = Stanza {
                    key_id: KeyId([0; 8]),
                    enc: [0; KEY_LEN],
                    wrapped_dek: [0; WRAPPED_DEK_LEN],
                };
                stanza.key_id.0.copy_from_slice(&chunk[..8]);
                stanza.enc.copy_from_slice(&chunk[8..8 + KEY_LEN]);
                stanza.wrapped_dek.copy_from_slice(&chunk[8 + KEY_LEN..]);
                stanza
            })
            .collect();
        Ok(Self {
            stanzas,
            payload: bytes[payload_start..].to_vec(),
        })
    }

    /// The binary form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.stanzas.len() * STANZA_LEN + self.payload.len());
        out.extend_from_slice(&HEADER);
        out.push(u8::try_from(self.stanzas.len()).expect("at most 16 stanzas"));
        for stanza in &self.stanzas {
            out.extend_from_slice(&stanza.key_id.0);
            out.extend_from_slice(&stanza.enc);
            out.extend_from_slice(&stanza.wrapped_dek);
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// The base64 text form.
    pub fn encode(&self) -> String {
        STANDARD.encode(self.to_bytes())
    }

    /// The key IDs this value was sealed to, in stanza order.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.stanzas.iter().map(|s| s.key_id).collect()
    }
}

/// Seals `value` for `binding` to every recipient (duplicates are sealed once) and
/// returns the base64 text form.
///
/// # Errors
/// [`Error::RecipientCount`], [`Error::LowOrderPoint`] for an invalid public key, or
/// [`Error::Randomness`].
pub fn seal(recipients: &[PublicKey], binding: &Binding, value: &[u8]) -> Result<String> {
    let mut unique: Vec<&PublicKey> = Vec::with_capacity(recipients.len());
    for key in recipients {
        if !unique.iter().any(|k| k.id() == key.id()) {
            unique.push(key);
        }
    }
    if unique.is_empty() || unique.len() > MAX_RECIPIENTS {
        return Err(Error::RecipientCount(unique.len()));
    }
    let dek = random_secret()?;
    let aad = binding.aad();
    let stanzas = unique
        .into_iter()
        .map(|recipient| {
            let ephemeral = StaticSecret::from(*random_secret()?);
            let (enc, shared_secret) = hpke::encap(recipient.as_bytes(), &ephemeral)?;
            let wrapped = Context::with_schedule_context(&shared_secret, &SCHEDULE)
                .seal(&aad, dek.as_slice());
            let mut wrapped_dek = [0u8; WRAPPED_DEK_LEN];
            wrapped_dek.copy_from_slice(&wrapped);
            Ok(Stanza {
                key_id: recipient.id(),
                enc,
                wrapped_dek,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let payload = hpke::seal_once(&dek, &aad, value);
    Ok(Envelope { stanzas, payload }.encode())
}

/// Opens a base64 sealed value for `binding` with a key from `keyring`.
///
/// # Errors
/// Any decoding error of [`Envelope::decode`]; [`Error::UnknownKey`] when no stanza is
/// for a key in the keyring; [`Error::ScopeMismatch`] when the value was sealed with
/// another scope for the same identity; [`Error::WrongBinding`] when it was sealed for
/// another identity (or its stanza was altered); [`Error::Tampered`] when the payload
/// was altered.
pub fn open(text: &str, binding: &Binding, keyring: &Keyring) -> Result<Zeroizing<Vec<u8>>> {
    Envelope::decode(text)?.open(binding, keyring)
}

impl Envelope {
    /// Opens this value for `binding` with a key from `keyring`; see [`open`].
    ///
    /// # Errors
    /// As [`open`].
    pub fn open(&self, binding: &Binding, keyring: &Keyring) -> Result<Zeroizing<Vec<u8>>> {
        let (stanza, key) = self
            .stanzas
            .iter()
            .find_map(|s| keyring.get(&s.key_id).map(|k| (s, k)))
            .ok_or_else(|| Error::UnknownKey {
                sealed_for: self.key_ids(),
            })?;
        let shared_secret = hpke::decap(&stanza.enc, key.secret(), key.public_key().as_bytes())?;
        let mut context = Context::with_schedule_context(&shared_secret, &SCHEDULE);
        let aad = binding.aad();
        let dek = match context.open(&aad, &stanza.wrapped_dek) {
            Ok(dek) => dek,
            Err(_) => return Err(diagnose(&mut context, &stanza.wrapped_dek, binding)),
        };
        let dek: &[u8; KEY_LEN] = dek.as_slice().try_into().map_err(|_| Error::Tampered)?;
        hpke::open_once(dek, &aad, &self.payload).map_err(|_| Error::Tampered)
    }
}

/// Why a data key did not open: the same identity under another scope, or not at all.
fn diagnose(context: &mut Context, wrapped_dek: &[u8], binding: &Binding) -> Error {
    // Another scope of a rotation value is no narrower or wider binding: a SealedSecret's.
    let scopes = match binding.purpose {
        Purpose::SecretValue => Scope::ALL.as_slice(),
        Purpose::Rotation => &[],
    };
    scopes
        .iter()
        .copied()
        .filter(|scope| *scope != binding.scope())
        .filter_map(|scope| binding.with_scope(scope))
        .find(|other| context.open(&other.aad(), wrapped_dek).is_ok())
        .map_or_else(
            || Error::WrongBinding {
                binding: binding.to_string(),
            },
            |other| Error::ScopeMismatch {
                sealed: other.scope(),
                declared: binding.scope(),
            },
        )
}
