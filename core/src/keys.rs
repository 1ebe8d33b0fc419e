//! Sealing keys: X25519 key pairs, their key IDs, and a keyring to open values with.

use std::collections::BTreeMap;
use std::fmt;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::hpke::KEY_LEN;
use crate::{Error, Result};

/// The first 8 bytes of SHA-256(public key); shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The key ID of an X25519 public key.
    pub fn of(public_key: &[u8; KEY_LEN]) -> Self {
        let digest = digest::digest(&digest::SHA256, public_key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        Self(id)
    }

    /// Parses 16 hex digits.
    ///
    /// # Errors
    /// [`Error::BadKeyId`] when `text` is not 16 hex digits.
    pub fn parse(text: &str) -> Result<Self> {
        let mut id = [0u8; 8];
        if text.len() != 16 || hex::decode_to_slice(text, &mut id).is_err() {
            return Err(Error::BadKeyId(text.chars().take(40).collect()));
        }
        Ok(Self(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// An X25519 public sealing key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; KEY_LEN],
    id: KeyId,
}

impl PublicKey {
    /// Wraps the 32 bytes of an X25519 public key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes,
            id: KeyId::of(&bytes),
        }
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The key ID.
    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// An X25519 private sealing key; wiped from memory when dropped.
pub struct PrivateKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl PrivateKey {
    /// A fresh key from the system's randomness.
    ///
    /// # Errors
    /// [`Error::Randomness`] when the system has no randomness to give.
    pub fn generate() -> Result<Self> {
        Ok(Self::from_bytes(random_secret()?))
    }

    /// Wraps the 32 bytes of an X25519 private key.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let secret = StaticSecret::from(*bytes);
        let public = PublicKey::from_bytes(DalekPublic::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The raw private key.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key ID (of the public key).
    pub fn id(&self) -> KeyId {
        self.public.id
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, redacted)", self.public.id)
    }
}

/// 32 random bytes from the operating system, wiped when dropped.
pub(crate) fn random_secret() -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(bytes.as_mut_slice())
        .map_err(|_| Error::Randomness)?;
    Ok(bytes)
}

/// The private keys a decryptor holds, found by key ID (never by trial).
#[derive(Default, Debug)]
pub struct Keyring {
    keys: BTreeMap<KeyId, PrivateKey>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key, replacing one with the same ID.
    pub fn insert(&mut self, key: PrivateKey) {
        self.keys.insert(key.id(), key);
    }

    /// Removes a key (for example once it is revoked).
    pub fn remove(&mut self, id: &KeyId) -> Option<PrivateKey> {
        self.keys.remove(id)
    }

    /// The key with this ID.
    pub fn get(&self, id: &KeyId) -> Option<&PrivateKey> {
        self.keys.get(id)
    }

    /// The IDs held, in order.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl FromIterator<PrivateKey> for Keyring {
    fn from_iter<I: IntoIterator<Item = PrivateKey>>(iter: I) -> Self {
        let mut ring = Self::new();
        for key in iter {
            ring.insert(key);
        }
        ring
    }
}
