//! The protocol a rotation speaks to a store, whatever the store: a remote key whose
//! value has versions, one of them current. A new version is staged on top of the
//! base version the caller read, marked so that a retried stage finds it instead of
//! writing another, read back, then promoted to current.
//!
//! Each store keeps the promise its own way (AWS: `ClientRequestToken` and staging
//! labels; Vault KV v2: check-and-set and a claim in `custom_metadata`); the caller
//! never asks which store it has.

use std::future::Future;

use zeroize::Zeroizing;

use crate::{Error, RemoteValue};

/// How a staged version is marked so that a retry of the same stage finds it.
#[derive(Clone, Copy, Debug)]
pub struct Mark<'a> {
    /// The same on every attempt of one stage and different for any other, e.g. a
    /// Rotation's UID; AWS's `ClientRequestToken`, so 32 to 64 characters.
    pub token: &'a str,
    /// The `custom_metadata` entry in which a store without request tokens (Vault)
    /// records the token.
    pub token_entry: &'a str,
    /// The entry beside it that records the base version the token wrote on.
    pub base_entry: &'a str,
}

/// Why a versioned operation did not happen. `E` is the caller's own error, from
/// making the new value.
#[derive(Debug)]
pub enum VersionError<E = std::convert::Infallible> {
    /// The current version is no longer the base the caller read: someone else wrote,
    /// and nothing was written over it.
    Moved {
        /// The version current now, or words for it.
        now: String,
    },
    /// The key has no current version to write on.
    NoCurrent,
    /// A version this store could not have (Vault: not a number).
    NotAVersion {
        /// The text given as a version.
        version: String,
    },
    /// The caller could not make the new value from the base.
    Value(E),
    /// The store refused or failed.
    Store {
        /// What was being done, e.g. "read the base version".
        doing: &'static str,
        /// The store's answer.
        error: Error,
    },
}

/// What fails inside a stage with the store's error and what it was doing.
pub(crate) fn doing<E>(doing: &'static str) -> impl FnOnce(Error) -> VersionError<E> {
    move |error| VersionError::Store { doing, error }
}

/// A store whose values are versioned and may be written by a rotation.
pub trait Versioned: Send + Sync {
    /// Whether every value is a JSON object (Vault KV v2's `data`), so a value is never
    /// a bare string and one without a named property is its only entry.
    fn values_are_objects(&self) -> bool;

    /// The version current now.
    fn current_version(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<String, VersionError>> + Send;

    /// The value of `version`, as [`current_version`](Self::current_version) or
    /// [`stage`](Self::stage) named it.
    fn read_version(
        &self,
        key: &str,
        version: &str,
    ) -> impl Future<Output = Result<RemoteValue, VersionError>> + Send;

    /// Writes the value `make` builds from version `base`'s bytes as a new version,
    /// marked by `mark`, and returns its version. Written only while `base` is still
    /// current (else [`VersionError::Moved`]); when `mark` shows that an earlier attempt
    /// wrote it, that version is returned and `make` is not called. Stores where a
    /// write is current at once (Vault) have nothing left for [`promote`](Self::promote).
    fn stage<E: Send>(
        &self,
        key: &str,
        base: &str,
        mark: Mark<'_>,
        make: impl FnOnce(&[u8]) -> Result<Zeroizing<Vec<u8>>, E> + Send,
    ) -> impl Future<Output = Result<String, VersionError<E>>> + Send;

    /// Makes `new` the current version, only from `base` (else
    /// [`VersionError::Moved`]); done already is success.
    fn promote(
        &self,
        key: &str,
        base: &str,
        new: &str,
    ) -> impl Future<Output = Result<(), VersionError>> + Send;

    /// Removes what marked `new` as staged once it is current (AWS: `AWSPENDING`).
    fn clear_staged(
        &self,
        key: &str,
        new: &str,
    ) -> impl Future<Output = Result<(), VersionError>> + Send;

    /// Takes back `new`, staged on `base` and never promoted, so that the current value
    /// is `base`'s again; returns what was done, in words. AWS removes `AWSPENDING`
    /// (the current version never moved); Vault, where the write became current, writes
    /// `base`'s data again on top of `new` with check-and-set, marked by `mark` (so a
    /// retry finds it).
    fn withdraw(
        &self,
        key: &str,
        base: &str,
        new: &str,
        mark: Mark<'_>,
    ) -> impl Future<Output = Result<String, VersionError>> + Send;
}
