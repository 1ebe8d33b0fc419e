//! SealedSecrets: the sealing-key lifecycle, the unseal reconcile, and verify and re-seal
//! for the internal HTTP endpoints.

pub mod cached;
pub(crate) mod key_loop;
pub mod keys;
pub mod unseal;
pub(crate) mod verify;
