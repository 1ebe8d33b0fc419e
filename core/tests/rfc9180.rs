//! RFC 9180 conformance: every entry of the suite's test vectors, plus a differential
//! test against the independent `hpke` crate.

use serde::Deserialize;
use sigil_core::hpke::{self, Context};
use sigil_core::sealed::{Envelope, INFO, Stanza};
use sigil_core::{Binding, Keyring, PrivateKey, Scope};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

#[derive(Deserialize)]
struct Vector {
    mode: u8,
    kem_id: u16,
    kdf_id: u16,
    aead_id: u16,
    #[serde(with = "hex::serde")]
    info: Vec<u8>,
    #[serde(with = "hex::serde", rename = "ikmR")]
    ikm_r: Vec<u8>,
    #[serde(with = "hex::serde", rename = "skRm")]
    sk_r: Vec<u8>,
    #[serde(with = "hex::serde", rename = "skEm")]
    sk_e: Vec<u8>,
    #[serde(with = "hex::serde", rename = "pkRm")]
    pk_r: Vec<u8>,
    #[serde(with = "hex::serde")]
    enc: Vec<u8>,
    #[serde(with = "hex::serde")]
    shared_secret: Vec<u8>,
    #[serde(with = "hex::serde")]
    key: Vec<u8>,
    #[serde(with = "hex::serde")]
    base_nonce: Vec<u8>,
    #[serde(with = "hex::serde")]
    exporter_secret: Vec<u8>,
    encryptions: Vec<Encryption>,
    exports: Vec<Export>,
}

#[derive(Deserialize)]
struct Encryption {
    #[serde(with = "hex::serde")]
    aad: Vec<u8>,
    #[serde(with = "hex::serde")]
    ct: Vec<u8>,
    #[serde(with = "hex::serde")]
    pt: Vec<u8>,
}

#[derive(Deserialize)]
struct Export {
    #[serde(with = "hex::serde")]
    exporter_context: Vec<u8>,
    #[serde(rename = "L")]
    len: usize,
    #[serde(with = "hex::serde")]
    exported_value: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("../testdata/hpke/rfc9180-base-x25519-sha256-chacha20poly1305.json");
    serde_json::from_str(text).expect("vector file parses")
}

fn array(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().expect("32-byte field")
}

#[test]
fn every_vector_matches_key_schedule_encryptions_and_exports() {
    let vectors = vectors();
    assert!(!vectors.is_empty());
    let mut encryptions = 0;
    for v in &vectors {
        assert_eq!((v.mode, v.kem_id, v.kdf_id, v.aead_id), (0, 0x20, 1, 3));
        assert_eq!(hpke::derive_private_key(&v.ikm_r).as_slice(), v.sk_r);

        let sk_e = StaticSecret::from(array(&v.sk_e));
        let (enc, shared_secret) = hpke::encap(&array(&v.pk_r), &sk_e).unwrap();
        assert_eq!(enc.as_slice(), v.enc, "enc");
        assert_eq!(shared_secret.as_slice(), v.shared_secret, "shared_secret");

        let sk_r = StaticSecret::from(array(&v.sk_r));
        let decapped = hpke::decap(&array(&v.enc), &sk_r, &array(&v.pk_r)).unwrap();
        assert_eq!(decapped.as_slice(), v.shared_secret, "decap");

        let mut sender = Context::key_schedule(&shared_secret, &v.info);
        let mut receiver = Context::key_schedule(&decapped, &v.info);
        assert_eq!(sender.key().as_slice(), v.key, "key");
        assert_eq!(sender.base_nonce().as_slice(), v.base_nonce, "base_nonce");
        assert_eq!(sender.exporter_secret().as_slice(), v.exporter_secret);

        for (seq, e) in v.encryptions.iter().enumerate() {
            assert_eq!(sender.seal(&e.aad, &e.pt), e.ct, "encryption {seq}");
            assert_eq!(receiver.open(&e.aad, &e.ct).unwrap().as_slice(), e.pt);
            encryptions += 1;
        }
        for x in &v.exports {
            let exported = sender.export(&x.exporter_context, x.len).unwrap();
            assert_eq!(exported.as_slice(), x.exported_value);
        }
    }
    assert_eq!(encryptions, 257, "the vector file holds 257 encryptions");
}

type Kem = ::hpke::kem::X25519HkdfSha256;
type Kdf = ::hpke::kdf::HkdfSha256;
type Aead = ::hpke::aead::ChaCha20Poly1305;
use ::hpke::{Deserializable, OpModeR, OpModeS, Serializable};

fn binding() -> Binding {
    Binding::new(Scope::Strict, "prod", "db", "password").unwrap()
}

#[test]
fn values_sealed_here_open_with_the_hpke_crate() {
    let key = PrivateKey::generate().unwrap();
    let sealed = sigil_core::seal(&[*key.public_key()], &binding(), b"hunter2").unwrap();
    let envelope = Envelope::decode(&sealed).unwrap();
    let stanza = &envelope.stanzas[0];

    let sk = <Kem as ::hpke::Kem>::PrivateKey::from_bytes(key.to_bytes().as_slice()).unwrap();
    let enc = <Kem as ::hpke::Kem>::EncappedKey::from_bytes(&stanza.enc).unwrap();
    let aad = binding().aad();
    let dek = ::hpke::single_shot_open::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        INFO,
        &stanza.wrapped_dek,
        &aad,
    )
    .expect("the hpke crate opens our stanza");
    let dek: [u8; 32] = dek.as_slice().try_into().unwrap();

    use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
    let value = chacha20poly1305::ChaCha20Poly1305::new(&dek.into())
        .decrypt(
            &chacha20poly1305::Nonce::default(),
            Payload {
                msg: &envelope.payload,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(value, b"hunter2");
}

#[test]
fn values_sealed_by_the_hpke_crate_open_here() {
    let key = PrivateKey::generate().unwrap();
    let pk = <Kem as ::hpke::Kem>::PublicKey::from_bytes(key.public_key().as_bytes()).unwrap();
    let aad = binding().aad();
    let dek = Zeroizing::new([7u8; 32]);
    let (enc, wrapped) =
        ::hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, INFO, dek.as_slice(), &aad)
            .unwrap();

    use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
    let payload = chacha20poly1305::ChaCha20Poly1305::new(&(*dek).into())
        .encrypt(
            &chacha20poly1305::Nonce::default(),
            Payload {
                msg: b"s3cret",
                aad: &aad,
            },
        )
        .unwrap();
    let envelope = Envelope {
        stanzas: vec![Stanza {
            key_id: key.id(),
            enc: enc.to_bytes().as_slice().try_into().unwrap(),
            wrapped_dek: wrapped.as_slice().try_into().unwrap(),
        }],
        payload,
    };
    let keyring: Keyring = [key].into_iter().collect();
    let value = sigil_core::open(&envelope.encode(), &binding(), &keyring).unwrap();
    assert_eq!(value.as_slice(), b"s3cret");
}

#[test]
fn the_hpke_crate_agrees_on_the_vector_shared_secret() {
    let v = &vectors()[0];
    let sk_r = <Kem as ::hpke::Kem>::PrivateKey::from_bytes(&v.sk_r).unwrap();
    let pk_r = <Kem as ::hpke::Kem>::sk_to_pk(&sk_r);
    assert_eq!(pk_r.to_bytes().as_slice(), v.pk_r);
}
