//! Command-line interface definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::ClusterArgs;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  error: bad input, an unreadable or invalid file, a value that does not open
  2  usage error: unknown command, flag or flag value";

/// Seal Kubernetes Secrets so they are safe to commit to Git; only the cluster can open
/// them, and only in the namespace, name and key they were sealed for.
#[derive(Parser, Debug)]
#[command(name = "sigil", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Encrypt Secrets into SealedSecrets (or one value with --raw).
    #[command(after_help = EXIT_CODES)]
    Seal(SealArgs),
    /// Break-glass: open SealedSecrets offline with a private key and print the Secrets.
    #[command(after_help = EXIT_CODES)]
    Unseal(UnsealArgs),
    /// Fetch the cluster's public sealing keys (a key file for `sigil seal --cert`).
    #[command(after_help = EXIT_CODES)]
    Cert(CertArgs),
    /// Manage sealing key pairs.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Generate an offline key pair (for bootstrap or break-glass) as key files.
    #[command(after_help = EXIT_CODES)]
    Generate(GenerateArgs),
    /// Copy the cluster's private sealing keys into a file (mode 0600), for disaster recovery.
    #[command(after_help = EXIT_CODES)]
    Backup(BackupArgs),
    /// Bring private keys into the cluster (e.g. the same key for a disaster-recovery cluster).
    #[command(after_help = EXIT_CODES)]
    Import(ImportArgs),
}

/// How much of its identity each value is bound to.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScopeArg {
    /// Namespace, Secret name and data key (the default).
    Strict,
    /// Namespace and data key: the Secret may be renamed.
    Namespace,
    /// Data key only: usable in any namespace.
    Cluster,
}

impl From<ScopeArg> for sigil_core::Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Strict => Self::Strict,
            ScopeArg::Namespace => Self::Namespace,
            ScopeArg::Cluster => Self::Cluster,
        }
    }
}

/// Output format.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Format {
    /// YAML, documents separated by `---`.
    #[default]
    Yaml,
    /// JSON; several documents become one `List`.
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct SealArgs {
    /// Public key file (`sigil.pub.v1` lines); repeat to seal for several clusters.
    /// For each `cluster=` name the first key listed is used (lines without one count as
    /// one cluster). Without --cert, the keys are fetched from the cluster.
    #[arg(long = "cert", value_name = "FILE")]
    pub(crate) certs: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// What each value is bound to.
    #[arg(long, value_enum)]
    pub(crate) scope: Option<ScopeArg>,
    /// Namespace, for Secrets that do not set metadata.namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Secret name, for Secrets that do not set metadata.name.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Input: a file, a directory (sealed file by file into the -w directory), or `-`.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE|DIR|-",
        default_value = "-"
    )]
    pub(crate) input: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub(crate) format: Format,
    /// Write to this file (or directory, for a directory input) instead of stdout.
    #[arg(short = 'w', long = "write", value_name = "OUT")]
    pub(crate) out: Option<PathBuf>,
    /// Re-seal only the input's keys into this SealedSecret file, in place; every other
    /// key stays byte-for-byte as it was.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["out", "raw"])]
    pub(crate) merge_into: Option<PathBuf>,
    /// Seal one value read from stdin (exact bytes) and print the sealed value.
    #[arg(long, requires = "key")]
    pub(crate) raw: bool,
    /// The data key of the value sealed with --raw.
    #[arg(long, value_name = "KEY", requires = "raw")]
    pub(crate) key: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct UnsealArgs {
    /// Private key file (`sigil.key.v1` lines), e.g. from `sigil keys generate`.
    #[arg(long, value_name = "FILE")]
    pub(crate) recovery_key: PathBuf,
    /// SealedSecrets to open: a file or `-`.
    #[arg(short = 'f', long = "file", value_name = "FILE|-", default_value = "-")]
    pub(crate) input: PathBuf,
    /// Namespace, for SealedSecrets that do not set metadata.namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub(crate) format: Format,
}

#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    /// Where to write the private key (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub(crate) private_out: PathBuf,
    /// Where to write the public key (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub(crate) public_out: PathBuf,
    /// Cluster name recorded with the key.
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CertArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// Write the key file here instead of stdout.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// File for the private keys (created with mode 0600; never overwritten).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub(crate) out: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// Private key file (`sigil.key.v1` lines), e.g. from `sigil keys backup`.
    #[arg(long, value_name = "FILE")]
    pub(crate) private_key: PathBuf,
}
