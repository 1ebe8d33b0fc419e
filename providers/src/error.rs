//! The providers' typed errors. Messages never contain a secret value, a token or a
//! credential.

use std::fmt;

use crate::{Operation, Provider};

/// The kind of an [`Error`]: what the caller should do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The store could not be reached or failed; retry with backoff.
    Unavailable,
    /// The store asked us to slow down; retry later.
    Throttled,
    /// The store refused the credentials or the request; fix the auth configuration.
    AuthFailed,
    /// The secret (or the asked version) does not exist.
    NotFound,
    /// The configuration is unusable as given; fix it.
    InvalidConfig,
    /// Someone else changed the secret since the caller looked at it (a check-and-set
    /// mismatch, a staging label no longer where expected); nothing was written. Look
    /// again before deciding what to do.
    Conflict,
}

impl ErrorKind {
    /// A stable lowercase name, e.g. for a metric label: `"unavailable"`,
    /// `"throttled"`, `"auth_failed"`, `"not_found"`, `"invalid_config"` or
    /// `"conflict"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Throttled => "throttled",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong while talking to a secret store.
///
/// `detail` strings come from the transport or the store's error answer (status
/// code, error code and message); they never contain a secret value, a token or a
/// credential.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be reached, timed out, answered 5xx, or is sealed.
    #[error("{provider} is unavailable ({operation}): {detail}")]
    Unavailable {
        /// The store.
        provider: Provider,
        /// What was asked of it.
        operation: Operation,
        /// What happened, e.g. `connection refused` or `HTTP 503: Vault is sealed`.
        detail: String,
    },
    /// The store answered 429 or a throttling error.
    #[error("{provider} throttled the {operation}; retry later: {detail}")]
    Throttled {
        /// The store.
        provider: Provider,
        /// What was asked of it.
        operation: Operation,
        /// The store's answer.
        detail: String,
    },
    /// A login was refused, a token was rejected (401/403, expired, revoked), or the
    /// token source for a login failed.
    #[error(
        "{provider} refused the {operation}: {detail}; check the store's auth settings and the role's permissions"
    )]
    AuthFailed {
        /// The store.
        provider: Provider,
        /// What was asked of it.
        operation: Operation,
        /// The store's answer or the token source's error.
        detail: String,
    },
    /// The secret does not exist, or the asked version does not exist or was deleted
    /// or destroyed.
    #[error("{provider} has no secret `{key}`{}", at_version(.version))]
    NotFound {
        /// The store.
        provider: Provider,
        /// The key (Vault path below the mount, AWS secret name or ARN).
        key: String,
        /// The version asked for, if any.
        version: Option<String>,
    },
    /// The configuration cannot be used: a bad URL, a CA bundle without a certificate,
    /// an empty role, and so on.
    #[error("invalid secret store configuration: `{field}` {detail}")]
    InvalidConfig {
        /// The field at fault, named as in the store's provider spec (External
        /// Secrets Operator's names), e.g. `server`, `path` (the KV mount),
        /// `caBundle`, `auth.appRole.roleId`, `role` (the AWS role ARN) or
        /// `remoteRef.version`; for an argument of a write, its name: `value`,
        /// `clientRequestToken`, `versionStage` or `metadata`.
        field: &'static str,
        /// What is wrong with it and what to do.
        detail: String,
    },
    /// A write or stage move was refused because the secret changed since the caller
    /// looked at it: a Vault check-and-set version that is no longer the latest, an
    /// AWS staging label attached to another version than the one named, a
    /// ClientRequestToken already used for another value. Nothing was written.
    #[error(
        "{provider} secret `{key}` changed since it was read: {detail}; nothing was written, read it again"
    )]
    Conflict {
        /// The store.
        provider: Provider,
        /// The key (Vault path below the mount, AWS secret name or ARN).
        key: String,
        /// What changed, e.g. `staging label AWSCURRENT is on version 0b1c…, not 9f3e…`.
        detail: String,
    },
}

fn at_version(version: &Option<String>) -> String {
    match version {
        Some(v) => format!(" at version `{v}`"),
        None => String::new(),
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Throttled { .. } => ErrorKind::Throttled,
            Error::AuthFailed { .. } => ErrorKind::AuthFailed,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::Conflict { .. } => ErrorKind::Conflict,
        }
    }

    /// Builds an error of `kind`; `NotFound` and `Conflict` are for `key` (`NotFound`
    /// also for `version`), and `InvalidConfig` names `field`.
    pub(crate) fn of_kind(
        kind: ErrorKind,
        provider: Provider,
        operation: Operation,
        key: &str,
        version: Option<&str>,
        field: &'static str,
        detail: String,
    ) -> Error {
        match kind {
            ErrorKind::Unavailable => Error::Unavailable {
                provider,
                operation,
                detail,
            },
            ErrorKind::Throttled => Error::Throttled {
                provider,
                operation,
                detail,
            },
            ErrorKind::AuthFailed => Error::AuthFailed {
                provider,
                operation,
                detail,
            },
            ErrorKind::NotFound => Error::NotFound {
                provider,
                key: key.to_owned(),
                version: version.map(str::to_owned),
            },
            ErrorKind::InvalidConfig => Error::InvalidConfig { field, detail },
            ErrorKind::Conflict => Error::Conflict {
                provider,
                key: key.to_owned(),
                detail,
            },
        }
    }

    /// The same error for another key (a batch call that failed as a whole).
    pub(crate) fn for_key(&self, key: &str) -> Error {
        match self {
            Error::NotFound {
                provider, version, ..
            } => Error::NotFound {
                provider: *provider,
                key: key.to_owned(),
                version: version.clone(),
            },
            other => other.clone(),
        }
    }
}

/// The result type of the providers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let e = Error::NotFound {
            provider: Provider::Vault,
            key: "app/db".into(),
            version: Some("3".into()),
        };
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "Vault has no secret `app/db` at version `3`");
        let e = Error::Throttled {
            provider: Provider::Aws,
            operation: Operation::BatchRead,
            detail: "ThrottlingException: Rate exceeded".into(),
        };
        assert_eq!(e.kind().as_str(), "throttled");
        assert_eq!(
            e.to_string(),
            "AWS Secrets Manager throttled the batch read; retry later: ThrottlingException: Rate exceeded"
        );
        let e = Error::InvalidConfig {
            field: "server",
            detail: "is not a URL".into(),
        };
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("`server`"));
        let e = Error::of_kind(
            ErrorKind::Conflict,
            Provider::Vault,
            Operation::Write,
            "app/db",
            None,
            "remoteRef",
            "check-and-set version 3 is no longer the latest".into(),
        );
        assert_eq!(e.kind().as_str(), "conflict");
        assert_eq!(
            e.to_string(),
            "Vault secret `app/db` changed since it was read: check-and-set version 3 is no \
             longer the latest; nothing was written, read it again"
        );
    }

    #[test]
    fn for_key_rekeys_not_found_only() {
        let e = Error::NotFound {
            provider: Provider::Aws,
            key: "a".into(),
            version: None,
        };
        match e.for_key("b") {
            Error::NotFound { key, .. } => assert_eq!(key, "b"),
            other => panic!("{other:?}"),
        }
        let e = Error::Unavailable {
            provider: Provider::Aws,
            operation: Operation::BatchRead,
            detail: "x".into(),
        };
        assert_eq!(e.for_key("b").kind(), ErrorKind::Unavailable);
    }
}
