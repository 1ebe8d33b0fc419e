//! Where a rotated credential is checked: the system that accepts or refuses it (a
//! PostgreSQL role, or anything behind a webhook). A rotation `set`s the new credential
//! there before any workload receives it, `test`s that it logs in, and once every
//! workload runs with it `retire`s the leaked one. Each call is idempotent: a rotation
//! resumed after a crash makes it again.

pub mod postgres;
pub mod webhook;

use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;

pub use postgres::Postgres;
pub use webhook::Webhook;

/// Whether `host` (an IP literal, bracketed or not) is a link-local address, where a
/// cloud's metadata service answers: the controller never connects there on a
/// tenant's behalf. Host names are not resolved here.
pub(crate) fn is_link_local(host: &str) -> bool {
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    match ip {
        IpAddr::V4(ip) => ip.is_link_local(),
        IpAddr::V6(ip) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
                || ip.segments()[..4] == [0xfd00, 0x0ec2, 0, 0]
        }
    }
}

/// A username and its password. The password is never printed.
#[derive(Clone, Copy)]
pub struct Login<'a> {
    /// The role or account name.
    pub username: &'a str,
    /// The password's bytes.
    pub password: &'a [u8],
}

impl fmt::Debug for Login<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a call to a credential target did not happen. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target could not be reached or failed for now; retry.
    #[error("{0}")]
    Unavailable(String),
    /// The target refused a credential: the admin's (fix the policy's Secret) or, in
    /// `test`, the new one.
    #[error("{0}")]
    Refused(String),
    /// The target cannot do what was asked as configured; fix the policy.
    #[error("{0}")]
    Invalid(String),
}

/// What `retire` made useless.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    /// Each thing retired, in words (no password).
    pub what: Vec<String>,
    /// Sessions of the retired credential that were ended.
    pub sessions_terminated: u32,
}

/// One rotation's view of the credential: which login was in use and which replaces it.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// The rotation's identity (its UID): the same on every attempt.
    pub rotation: &'a str,
    /// The login in use before the rotation, as the base version holds it.
    pub previous: Login<'a>,
    /// The login the new version holds.
    pub new: Login<'a>,
}

/// A system that checks a credential, whichever it is.
pub enum CredentialTarget {
    /// A PostgreSQL server's roles.
    Postgres(Postgres),
    /// An HTTPS endpoint that speaks Sigil's webhook contract.
    Webhook(Webhook),
}

impl CredentialTarget {
    /// The target in words, for status and messages: `postgres host:port/db` or a URL.
    pub fn describe(&self) -> String {
        match self {
            CredentialTarget::Postgres(p) => p.describe(),
            CredentialTarget::Webhook(w) => w.describe(),
        }
    }

    /// Makes the new login work; the previous one keeps working unless only one role
    /// holds the credential.
    pub async fn set(&self, change: Change<'_>) -> Result<(), TargetError> {
        match self {
            CredentialTarget::Postgres(p) => p.set(change).await,
            CredentialTarget::Webhook(w) => w.call("set", change.rotation, change.new, true).await,
        }
    }

    /// Logs in with the new login; [`TargetError::Refused`] when it does not work.
    pub async fn test(&self, change: Change<'_>) -> Result<(), TargetError> {
        match self {
            CredentialTarget::Postgres(p) => p.test(change.new).await,
            CredentialTarget::Webhook(w) => w.call("test", change.rotation, change.new, true).await,
        }
    }

    /// Undoes `set` after a failed test, where it took anything away: returns what was
    /// restored, in words, or `None` when `set` took nothing away.
    pub async fn restore(&self, change: Change<'_>) -> Result<Option<String>, TargetError> {
        match self {
            CredentialTarget::Postgres(p) => p.restore(change).await,
            CredentialTarget::Webhook(_) => Ok(None),
        }
    }

    /// Makes the previous login useless and ends its sessions that began before
    /// `set_at`.
    pub async fn retire(
        &self,
        change: Change<'_>,
        set_at: Timestamp,
    ) -> Result<Retired, TargetError> {
        match self {
            CredentialTarget::Postgres(p) => p.retire(change, set_at).await,
            CredentialTarget::Webhook(w) => {
                w.call("retire", change.rotation, change.previous, false)
                    .await?;
                Ok(Retired {
                    what: vec![format!(
                        "login `{}` retired by {}",
                        change.previous.username,
                        w.describe()
                    )],
                    sessions_terminated: 0,
                })
            }
        }
    }
}
