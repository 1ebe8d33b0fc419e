//! The mechanism every kind uses and none owns: the shared [`Context`], status and
//! conditions, Events, backoff, errors, metrics, the shared Secret watch and the Secret
//! writer, the leader Lease, and watch helpers. Nothing here imports a kind (`sealed/`,
//! `sync/`, `rotation/`, `restart`): they depend on it, never the reverse.

pub mod backoff;
pub mod context;
pub mod error;
pub mod leader;
pub mod metrics;
pub(crate) mod secret_watch;
pub(crate) mod secret_writer;
pub(crate) mod status;
pub mod watch;

pub use context::{ClusterExternalSecrets, Config, Context};
pub use error::{Error, Result};

/// The field manager of every write.
pub const MANAGER: &str = "sigil-controller";
