//! Seal and open costs: one value, and a 5-key Secret (five values, one recipient).

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sigil_core::{Binding, Keyring, PrivateKey, Scope, open, seal};

const KEYS: [&str; 5] = ["username", "password", "host", "port", "database"];

fn benches(c: &mut Criterion) {
    let key = PrivateKey::generate().unwrap();
    let recipients = [*key.public_key()];
    let keyring: Keyring = [key].into_iter().collect();
    let value = [0x5au8; 64];
    let bindings: Vec<Binding> = KEYS
        .iter()
        .map(|k| Binding::new(Scope::Strict, "prod", "db", k).unwrap())
        .collect();
    let sealed: Vec<String> = bindings
        .iter()
        .map(|b| seal(&recipients, b, &value).unwrap())
        .collect();

    c.bench_function("seal one 64-byte value", |b| {
        b.iter(|| seal(&recipients, black_box(&bindings[0]), black_box(&value)).unwrap())
    });
    c.bench_function("open one 64-byte value", |b| {
        b.iter(|| open(black_box(&sealed[0]), &bindings[0], &keyring).unwrap())
    });
    // Beside `openssl speed`'s X25519 in bench/open-cost.sh (issue 11: ≤ 1.4 × X25519).
    common::cpu_group(c, "CPU time").bench_function("open one 64-byte value", |b| {
        common::iter_cpu(b, || {
            open(black_box(&sealed[0]), &bindings[0], &keyring).unwrap()
        })
    });
    c.bench_function("seal a 5-key Secret", |b| {
        b.iter(|| {
            for binding in &bindings {
                black_box(seal(&recipients, binding, &value).unwrap());
            }
        })
    });
    c.bench_function("open a 5-key Secret", |b| {
        b.iter(|| {
            for (text, binding) in sealed.iter().zip(&bindings) {
                black_box(open(text, binding, &keyring).unwrap());
            }
        })
    });
}

criterion_group!(seal_benches, benches);
criterion_main!(seal_benches);
