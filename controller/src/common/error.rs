//! The controller's typed errors. Messages never contain secret values.

/// Everything that can fail while reconciling or keeping keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API request failed.
    #[error("Kubernetes API request failed: {action}")]
    Kube {
        /// What the controller was doing.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A request to a secret store failed in a way worth retrying.
    #[error("could not {action}")]
    Provider {
        /// What the controller was doing.
        action: String,
        /// The provider's error (never holds a value).
        #[source]
        source: sigil_providers::Error,
    },
    /// An object could not be serialized for the API server.
    #[error("cannot serialize {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
    /// A sealing key could not be made.
    #[error("cannot generate a sealing key")]
    KeyGeneration(#[source] sigil_core::Error),
    /// Another replica holds the leader Lease now.
    #[error("lost the leader Lease {0} to another replica")]
    LostLeadership(String),
}

/// The result type of the controller.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what the controller was doing to a client error.
pub(crate) trait KubeContext<T> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeContext<T> for std::result::Result<T, kube::Error> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}
