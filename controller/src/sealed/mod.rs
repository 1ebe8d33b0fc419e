//! SealedSecrets: the sealing-key lifecycle and the unseal reconcile.

pub mod keys;
pub mod unseal;
