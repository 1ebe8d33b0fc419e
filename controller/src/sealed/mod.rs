//! SealedSecrets: the sealing-key lifecycle, the unseal reconcile, and verify and re-seal
//! for the internal HTTP endpoints.

pub mod cached;
pub mod keys;
pub mod unseal;
pub(crate) mod verify;
