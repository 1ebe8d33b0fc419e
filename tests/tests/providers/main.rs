//! `sigil-providers` against the real servers: OpenBao (KV v2, token, kubernetes and
//! AppRole auth, renewal, the audit log) and moto (Secrets Manager reads, batch reads,
//! version stages, web identity through moto's STS).

mod aws;
mod common;
mod vault;
