//! RFC 9180 HPKE, base mode, for the one suite Sigil uses:
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
//!
//! Public so that conformance tests (and anyone writing a second implementation) can
//! check every intermediate value against the RFC's test vectors.

use std::sync::LazyLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ring::{hkdf, hmac};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Length of an X25519 key, an encapsulated key and every HKDF-SHA256 output used here.
pub const KEY_LEN: usize = 32;
/// ChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 12;
/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;

const KEM_SUITE_ID: &[u8] = b"KEM\x00\x20";
const HPKE_SUITE_ID: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
const MODE_BASE: u8 = 0x00;

/// A 32-byte secret that is wiped from memory when dropped.
pub type Secret32 = Zeroizing<[u8; KEY_LEN]>;

struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HMAC-SHA256 keyed with the empty salt, which every `LabeledExtract` here uses but the
/// key schedule's `secret`. An empty salt is an all-zero key of hash length (RFC 5869
/// §2.2), and HMAC pads short keys with zeros, so the empty slice is the same thing.
/// Public data, so it is keyed once per process instead of once per call.
static EMPTY_SALT: LazyLock<hmac::Key> = LazyLock::new(|| hmac::Key::new(hmac::HMAC_SHA256, b""));

fn labeled_extract(suite_id: &[u8], salt: &hmac::Key, label: &[u8], ikm: &[u8]) -> Secret32 {
    let mut ctx = hmac::Context::with_key(salt);
    for part in [b"HPKE-v1".as_slice(), suite_id, label, ikm] {
        ctx.update(part);
    }
    let mut prk = Zeroizing::new([0u8; KEY_LEN]);
    prk.copy_from_slice(ctx.sign().as_ref());
    prk
}

/// The HKDF-SHA256 PRK to expand from; build it once for several expansions.
fn prk(prk: &[u8; KEY_LEN]) -> hkdf::Prk {
    hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk)
}

fn labeled_expand(
    suite_id: &[u8],
    prk: &hkdf::Prk,
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let len = u16::try_from(out.len())
        .map_err(|_| Error::ExportTooLong(out.len()))?
        .to_be_bytes();
    let parts = [len.as_slice(), b"HPKE-v1", suite_id, label, info];
    prk.expand(&parts, OutputLen(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| Error::ExportTooLong(out.len()))
}

fn expand32(suite_id: &[u8], prk: &hkdf::Prk, label: &[u8], info: &[u8]) -> Secret32 {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    labeled_expand(suite_id, prk, label, info, out.as_mut_slice())
        .expect("32 bytes is within HKDF-SHA256's output limit");
    out
}

/// `DeriveKeyPair(ikm)` for X25519 (RFC 9180 §7.1.3): the private key derived from `ikm`.
pub fn derive_private_key(ikm: &[u8]) -> Secret32 {
    let dkp_prk = labeled_extract(KEM_SUITE_ID, &EMPTY_SALT, b"dkp_prk", ikm);
    expand32(KEM_SUITE_ID, &prk(&dkp_prk), b"sk", b"")
}

fn extract_and_expand(dh: &[u8; KEY_LEN], enc: &[u8; KEY_LEN], pk_r: &[u8; KEY_LEN]) -> Secret32 {
    let eae_prk = labeled_extract(KEM_SUITE_ID, &EMPTY_SALT, b"eae_prk", dh);
    let mut kem_context = [0u8; 2 * KEY_LEN];
    kem_context[..KEY_LEN].copy_from_slice(enc);
    kem_context[KEY_LEN..].copy_from_slice(pk_r);
    expand32(KEM_SUITE_ID, &prk(&eae_prk), b"shared_secret", &kem_context)
}

fn diffie_hellman(secret: &StaticSecret, public: &[u8; KEY_LEN]) -> Result<Secret32> {
    let shared = secret.diffie_hellman(&DalekPublic::from(*public));
    // RFC 9180 §7.1.4: an all-zero X25519 output (a low-order public key) must abort.
    if !shared.was_contributory() {
        return Err(Error::LowOrderPoint);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// `Encap(pkR)` with a caller-chosen ephemeral key: returns `(enc, shared_secret)`.
///
/// # Errors
/// [`Error::LowOrderPoint`] when `pk_r` is a low-order point.
pub fn encap(pk_r: &[u8; KEY_LEN], sk_e: &StaticSecret) -> Result<([u8; KEY_LEN], Secret32)> {
    let dh = diffie_hellman(sk_e, pk_r)?;
    let enc = DalekPublic::from(sk_e).to_bytes();
    let shared_secret = extract_and_expand(&dh, &enc, pk_r);
    Ok((enc, shared_secret))
}

/// `Decap(enc, skR)`: the shared secret the sender derived. `pk_r` is `skR`'s public
/// key, passed in because the caller already holds it and deriving it again would
/// double the cost of opening.
///
/// # Errors
/// [`Error::LowOrderPoint`] when `enc` is a low-order point.
pub fn decap(enc: &[u8; KEY_LEN], sk_r: &StaticSecret, pk_r: &[u8; KEY_LEN]) -> Result<Secret32> {
    let dh = diffie_hellman(sk_r, enc)?;
    Ok(extract_and_expand(&dh, enc, pk_r))
}

/// The base-mode `key_schedule_context` (RFC 9180 §5.1): `mode ‖ psk_id_hash ‖
/// info_hash`. It depends on `info` alone (and holds nothing secret), so a caller that
/// uses one `info` for every message computes it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleContext([u8; 1 + 2 * KEY_LEN]);

impl ScheduleContext {
    /// The context for `info`, with the empty PSK ID of base mode.
    pub fn new(info: &[u8]) -> Self {
        let psk_id_hash = labeled_extract(HPKE_SUITE_ID, &EMPTY_SALT, b"psk_id_hash", b"");
        let info_hash = labeled_extract(HPKE_SUITE_ID, &EMPTY_SALT, b"info_hash", info);
        let mut context = [0u8; 1 + 2 * KEY_LEN];
        context[0] = MODE_BASE;
        context[1..=KEY_LEN].copy_from_slice(psk_id_hash.as_slice());
        context[1 + KEY_LEN..].copy_from_slice(info_hash.as_slice());
        Self(context)
    }

    /// The bytes, as the key schedule's `LabeledExpand` calls take them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An HPKE encryption context after the base-mode key schedule.
pub struct Context {
    key: Secret32,
    base_nonce: [u8; NONCE_LEN],
    exporter_secret: Secret32,
    seq: u64,
}

impl Context {
    /// `KeySchedule(mode_base, shared_secret, info, "", "")` (RFC 9180 §5.1).
    pub fn key_schedule(shared_secret: &[u8; KEY_LEN], info: &[u8]) -> Self {
        Self::with_schedule_context(shared_secret, &ScheduleContext::new(info))
    }

    /// [`Context::key_schedule`] with the `info`-dependent half computed beforehand.
    pub fn with_schedule_context(shared_secret: &[u8; KEY_LEN], context: &ScheduleContext) -> Self {
        let salt = hmac::Key::new(hmac::HMAC_SHA256, shared_secret);
        let secret = prk(&labeled_extract(HPKE_SUITE_ID, &salt, b"secret", b""));
        let context = context.as_bytes();
        let mut base_nonce = [0u8; NONCE_LEN];
        labeled_expand(
            HPKE_SUITE_ID,
            &secret,
            b"base_nonce",
            context,
            &mut base_nonce,
        )
        .expect("12 bytes is within HKDF-SHA256's output limit");
        Self {
            key: expand32(HPKE_SUITE_ID, &secret, b"key", context),
            base_nonce,
            exporter_secret: expand32(HPKE_SUITE_ID, &secret, b"exp", context),
            seq: 0,
        }
    }

    /// The AEAD key.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The base nonce.
    pub fn base_nonce(&self) -> &[u8; NONCE_LEN] {
        &self.base_nonce
    }

    /// The exporter secret.
    pub fn exporter_secret(&self) -> &[u8; KEY_LEN] {
        &self.exporter_secret
    }

    fn nonce(&self) -> Nonce {
        let mut nonce = self.base_nonce;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        Nonce::from(nonce)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(<&Key>::from(&*self.key))
    }

    /// `ContextS.Seal(aad, pt)`: encrypts with the next sequence number.
    pub fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let ciphertext = self
            .cipher()
            .encrypt(
                &self.nonce(),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption has no failure case for in-memory input");
        self.seq += 1;
        ciphertext
    }

    /// `ContextR.Open(aad, ct)`: the sequence number advances only on success, so a
    /// failed attempt can be retried with other associated data.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when the ciphertext does not authenticate.
    pub fn open(&mut self, aad: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let plaintext = self
            .cipher()
            .decrypt(
                &self.nonce(),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| Error::Unauthenticated)?;
        self.seq += 1;
        Ok(Zeroizing::new(plaintext))
    }

    /// `Context.Export(exporter_context, L)` (RFC 9180 §5.3).
    ///
    /// # Errors
    /// [`Error::ExportTooLong`] when `len` exceeds 255 × 32 bytes.
    pub fn export(&self, exporter_context: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(vec![0u8; len]);
        labeled_expand(
            HPKE_SUITE_ID,
            &prk(&self.exporter_secret),
            b"sec",
            exporter_context,
            &mut out,
        )?;
        Ok(out)
    }
}

/// AEAD with a one-use key and the all-zero nonce (the payload of a sealed value).
pub(crate) fn seal_once(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    ChaCha20Poly1305::new(<&Key>::from(key))
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("ChaCha20-Poly1305 encryption has no failure case for in-memory input")
}

/// Opens what [`seal_once`] sealed.
pub(crate) fn open_once(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    ChaCha20Poly1305::new(<&Key>::from(key))
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::Unauthenticated)
}
