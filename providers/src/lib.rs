//! Long-lived sessions with the secret stores Sigil reads: Vault (and OpenBao) KV v2
//! and AWS Secrets Manager.
//!
//! A session is built once per store and shared by every reconcile that reads from it:
//! it logs in lazily, keeps its token (Vault) or credentials (AWS web identity) and
//! renews them before they expire, so a busy controller makes one login per store
//! rather than one per read. Every request is reported to an [`Observer`] (the
//! controller turns the reports into metrics), every failure is an [`Error`] whose
//! [`ErrorKind`] tells the caller whether to back off, fix its configuration or give
//! up, and secret values are held in zeroizing buffers that are never printed. The
//! crate knows nothing of Kubernetes: a Kubernetes ServiceAccount token reaches it
//! through a [`TokenSource`].
//!
//! For credential rotation the sessions also write, always conditionally so that a
//! crashed or concurrent rotation cannot overwrite what it did not see: Vault writes
//! with check-and-set and marks progress in a secret's `custom_metadata`; AWS writes
//! an `AWSPENDING` version under a ClientRequestToken (idempotent) and moves staging
//! labels only from the version the caller names. A write that finds the secret
//! changed is an [`ErrorKind::Conflict`]. [`versioned::Versioned`] is that protocol as
//! a rotation speaks it, the same for every store; [`Session`] is either store behind
//! it.

pub mod aws;
pub mod credential;
mod error;
mod session;
pub mod vault;
pub mod versioned;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

pub use error::{Error, ErrorKind, Result};
pub use session::Session;

/// Which provider a session talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// HashiCorp Vault or OpenBao, KV version 2.
    Vault,
    /// AWS Secrets Manager.
    Aws,
}

impl Provider {
    /// A stable lowercase name, e.g. for a metric label: `"vault"` or `"aws"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Vault => "vault",
            Provider::Aws => "aws",
        }
    }

    /// The provider [`as_str`](Self::as_str) names, e.g. as a Rotation's status recorded it.
    pub fn named(name: &str) -> Option<Self> {
        [Provider::Vault, Provider::Aws]
            .into_iter()
            .find(|p| p.as_str() == name)
    }

    /// How messages name the provider's keys: `"Vault"` or `"AWS"`.
    pub fn short_name(self) -> &'static str {
        match self {
            Provider::Vault => "Vault",
            Provider::Aws => "AWS",
        }
    }

    /// Whether a reader that holds version `held` holds `new` or a version written after
    /// it: KV v2 versions count up, AWS VersionIds are only the same or not.
    pub fn holds_at_least(self, held: &str, new: &str) -> bool {
        held == new
            || (self == Provider::Vault
                && matches!((held.parse::<u64>(), new.parse::<u64>()), (Ok(h), Ok(n)) if h >= n))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Vault => "Vault",
            Provider::Aws => "AWS Secrets Manager",
        })
    }
}

/// What a session asked of its provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Obtaining a token or credentials (Vault login, STS AssumeRoleWithWebIdentity).
    Login,
    /// Extending a Vault token (`auth/token/renew-self`).
    Renew,
    /// Reading one secret.
    Read,
    /// Reading many secrets in one request (AWS BatchGetSecretValue).
    BatchRead,
    /// Proving that the held token or credentials work (Vault `auth/token/lookup-self`,
    /// AWS ListSecrets with one result), for a store's Ready condition.
    Check,
    /// Reading what a rotation needs to know about a secret's versions: Vault KV v2
    /// metadata (`<mount>/metadata/<key>`), AWS ListSecretVersionIds.
    Describe,
    /// Writing a new version of a secret (Vault KV v2 with check-and-set, AWS
    /// PutSecretValue) or a Vault secret's `custom_metadata`.
    Write,
    /// Moving an AWS staging label from one version to another
    /// (UpdateSecretVersionStage).
    Stage,
    /// Listing the secrets a `find` may match (Vault `LIST <mount>/metadata/<path>`, one
    /// per folder; AWS ListSecrets, one per page).
    List,
}

impl Operation {
    /// A stable lowercase name, e.g. for a metric label: `"login"`, `"renew"`,
    /// `"read"`, `"batch_read"`, `"check"`, `"describe"`, `"write"`, `"stage"` or
    /// `"list"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Login => "login",
            Operation::Renew => "renew",
            Operation::Read => "read",
            Operation::BatchRead => "batch_read",
            Operation::Check => "check",
            Operation::Describe => "describe",
            Operation::Write => "write",
            Operation::Stage => "stage",
            Operation::List => "list",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Login => "login",
            Operation::Renew => "token renewal",
            Operation::Read => "read",
            Operation::BatchRead => "batch read",
            Operation::Check => "credentials check",
            Operation::Describe => "metadata read",
            Operation::Write => "write",
            Operation::Stage => "stage move",
            Operation::List => "list",
        })
    }
}

/// A secret as read from its store: the whole value and the version it came from.
///
/// For Vault KV v2 the value is the version's `data` object serialized as JSON and
/// the version is the KV version number in decimal; for AWS it is the bytes of
/// `SecretString` (or of `SecretBinary`) and the version is the `VersionId`. The bytes
/// are zeroized on drop and `Debug` shows only the version and the length.
#[derive(Clone)]
pub struct RemoteValue {
    bytes: Zeroizing<Vec<u8>>,
    version: String,
}

impl RemoteValue {
    /// Wraps a value read from a store; `bytes` is zeroized when the value drops.
    pub fn new(bytes: Vec<u8>, version: String) -> Self {
        RemoteValue {
            bytes: Zeroizing::new(bytes),
            version,
        }
    }

    /// The whole value.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The version it was read at (KV v2 version number or AWS VersionId).
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl fmt::Debug for RemoteValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteValue")
            .field("version", &self.version)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Told about every request a session makes, when it has finished.
///
/// The controller turns these reports into Prometheus metrics; tests count logins.
/// Implementations must be cheap and must not block: they run on the request's task.
pub trait Observer: Send + Sync + 'static {
    /// One request to `provider` for `operation` ended with `outcome` after `elapsed`.
    fn observe(
        &self,
        provider: Provider,
        operation: Operation,
        outcome: std::result::Result<(), ErrorKind>,
        elapsed: Duration,
    );
}

/// An [`Observer`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn observe(
        &self,
        _: Provider,
        _: Operation,
        _: std::result::Result<(), ErrorKind>,
        _: Duration,
    ) {
    }
}

/// Produces a fresh JWT each time a login needs one, e.g. a Kubernetes TokenRequest
/// token for a ServiceAccount.
///
/// The error `String` describes what went wrong and must not contain a secret.
pub type TokenSource = Arc<
    dyn Fn() -> BoxFuture<'static, std::result::Result<secrecy::SecretString, String>>
        + Send
        + Sync,
>;

/// Reports the outcome of one request to `observer` and passes the result on.
pub(crate) fn report<T>(
    observer: &dyn Observer,
    provider: Provider,
    operation: Operation,
    started: std::time::Instant,
    result: Result<T>,
) -> Result<T> {
    let outcome = match &result {
        Ok(_) => Ok(()),
        Err(e) => Err(e.kind()),
    };
    observer.observe(provider, operation, outcome, started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_value_debug_shows_no_value() {
        let v = RemoteValue::new(b"hunter2-password".to_vec(), "7".to_owned());
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"7\""), "{shown}");
        assert!(shown.contains("16"), "{shown}");
        assert_eq!(v.bytes(), b"hunter2-password");
        assert_eq!(v.version(), "7");
    }

    #[test]
    fn versions_held_count_up_on_vault_only() {
        assert!(Provider::Vault.holds_at_least("7", "7"));
        assert!(Provider::Vault.holds_at_least("8", "7"));
        assert!(!Provider::Vault.holds_at_least("6", "7"));
        assert!(Provider::Aws.holds_at_least("v-1", "v-1"));
        assert!(!Provider::Aws.holds_at_least("v-2", "v-1"));
        assert!(!Provider::Aws.holds_at_least("8", "7"));
    }

    #[test]
    fn stable_names() {
        assert_eq!(Provider::Vault.as_str(), "vault");
        assert_eq!(Provider::Aws.as_str(), "aws");
        for p in [Provider::Vault, Provider::Aws] {
            assert_eq!(Provider::named(p.as_str()), Some(p));
        }
        assert_eq!(Provider::named("Vault"), None);
        let ops = [
            Operation::Login,
            Operation::Renew,
            Operation::Read,
            Operation::BatchRead,
            Operation::Check,
            Operation::Describe,
            Operation::Write,
            Operation::Stage,
        ];
        let names: Vec<_> = ops.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            names,
            [
                "login",
                "renew",
                "read",
                "batch_read",
                "check",
                "describe",
                "write",
                "stage"
            ]
        );
    }
}
