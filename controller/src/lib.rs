//! `sigil-controller`: turns SealedSecrets into Secrets, keeps Secrets in sync with
//! Vault and AWS Secrets Manager, carries out Rotations and reloads workloads.
//! docs/design.md ("Code map") says which folder owns what.

pub mod cluster_external;
pub mod common;
pub mod http;
pub mod restart;
pub mod rotation;
pub mod run;
pub mod sealed;
pub mod sync;
