//! The parts of opening one value, each on its own: where the time goes.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sigil_core::hpke::{self, Context, ScheduleContext};
use sigil_core::sealed::{Envelope, INFO};
use sigil_core::{Binding, PrivateKey, Scope, seal};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};

fn benches(c: &mut Criterion) {
    let key = PrivateKey::generate().unwrap();
    let recipients = [*key.public_key()];
    let secret = StaticSecret::from(*key.to_bytes());
    let pk_r = *key.public_key().as_bytes();
    let binding = Binding::new(Scope::Strict, "prod", "db", "password").unwrap();
    let text = seal(&recipients, &binding, &[0x5au8; 64]).unwrap();
    let envelope = Envelope::decode(&text).unwrap();
    let enc = envelope.stanzas[0].enc;
    let shared = hpke::decap(&enc, &secret, &pk_r).unwrap();

    c.bench_function("part: decode", |b| {
        b.iter(|| Envelope::decode(black_box(&text)).unwrap())
    });
    c.bench_function("part: x25519 dh", |b| {
        b.iter(|| black_box(&secret).diffie_hellman(&DalekPublic::from(black_box(enc))))
    });
    common::cpu_group(c, "CPU time").bench_function("x25519 dh", |b| {
        common::iter_cpu(b, || {
            black_box(&secret).diffie_hellman(&DalekPublic::from(black_box(enc)))
        })
    });
    c.bench_function("part: decap", |b| {
        b.iter(|| hpke::decap(black_box(&enc), &secret, &pk_r).unwrap())
    });
    c.bench_function("part: key schedule", |b| {
        b.iter(|| Context::key_schedule(black_box(&shared), INFO))
    });
    let schedule = ScheduleContext::new(INFO);
    c.bench_function("part: key schedule, info half cached", |b| {
        b.iter(|| Context::with_schedule_context(black_box(&shared), &schedule))
    });
    let dek = [7u8; 32];
    let aad = binding.aad();
    let payload = {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        chacha20poly1305::ChaCha20Poly1305::new(&dek.into())
            .encrypt(
                &Default::default(),
                Payload {
                    msg: &[0x5a; 64],
                    aad: &aad,
                },
            )
            .unwrap()
    };
    c.bench_function("part: chacha20poly1305 open 64 bytes", |b| {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        b.iter(|| {
            chacha20poly1305::ChaCha20Poly1305::new(black_box(&dek.into()))
                .decrypt(
                    &Default::default(),
                    Payload {
                        msg: &payload,
                        aad: &aad,
                    },
                )
                .unwrap()
        })
    });
    c.bench_function("part: aad", |b| b.iter(|| black_box(&binding).aad()));
}

criterion_group!(part_benches, benches);
criterion_main!(part_benches);
