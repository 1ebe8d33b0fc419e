//! Command-line interface definition.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::api::ApiArgs;
use crate::cluster::ClusterArgs;

/// Exit statuses of every command (the top-level help).
const EXIT_CODES: &str = "\
Exit status:
  0  success (a Rotation: it completed, or its dry run did)
  1  error: bad input, an unreadable or invalid file, a value that does not open, an error
     from the cluster or sigil-api, a Rotation that failed
  2  usage error: unknown command, flag or flag value; no --server for a command that needs it
  3  --timeout elapsed while waiting for a Rotation, which keeps running";

/// Exit statuses of the commands that work on files and the cluster, not sigil-api.
const LOCAL_EXIT_CODES: &str = "\
Exit status:
  0  success
  1  error: bad input, an unreadable or invalid file, a value that does not open, an error
     from the cluster
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
    #[command(after_help = LOCAL_EXIT_CODES)]
    Seal(SealArgs),
    /// Break-glass: open SealedSecrets offline with a private key and print the Secrets.
    #[command(after_help = LOCAL_EXIT_CODES)]
    Unseal(UnsealArgs),
    /// Fetch the cluster's public sealing keys (a key file for `sigil seal --cert`).
    #[command(after_help = LOCAL_EXIT_CODES)]
    Cert(CertArgs),
    /// Manage sealing key pairs.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Rotate an ExternalSecret's remote key now through sigil-api, and follow its progress.
    ///
    /// sigil-api records a Rotation; the controller writes a new value to the store,
    /// refreshes every Secret that mirrors it and restarts the workloads that read them.
    /// sigil prints each step as it finishes, then a summary.
    #[command(after_help = EXIT_CODES)]
    Rotate(RotateArgs),
    /// Check through sigil-api that every value of SealedSecrets opens in the cluster.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Re-seal SealedSecrets to the cluster's newest sealing key, through sigil-api.
    #[command(after_help = EXIT_CODES)]
    Reseal(ResealArgs),
    /// Move SealedSecrets made by other tools to Sigil, offline.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Print a shell completion script.
    ///
    /// For example `sigil completions bash > /etc/bash_completion.d/sigil`, or
    /// `sigil completions zsh > "${fpath[1]}/_sigil"`.
    Completions(CompletionsArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Generate an offline key pair (for bootstrap or break-glass) as key files.
    #[command(after_help = LOCAL_EXIT_CODES)]
    Generate(GenerateArgs),
    /// Copy the cluster's private sealing keys into a file (mode 0600), for disaster recovery.
    #[command(after_help = LOCAL_EXIT_CODES)]
    Backup(BackupArgs),
    /// Bring private keys into the cluster (e.g. the same key for a disaster-recovery cluster).
    #[command(after_help = LOCAL_EXIT_CODES)]
    Import(ImportArgs),
    /// Make a new active sealing key now through sigil-api, and follow its progress.
    #[command(after_help = EXIT_CODES)]
    Rotate(KeysRotateArgs),
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
    /// Output format: YAML, or for a directory each file in its own format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub(crate) format: Option<Format>,
    /// Write to this file (or directory, for a directory input) instead of stdout.
    #[arg(short = 'w', long = "write", value_name = "OUT")]
    pub(crate) out: Option<PathBuf>,
    /// With a directory input: also remove the SealedSecret files under -w OUTDIR whose
    /// source file is gone (without it, they stay).
    #[arg(long)]
    pub(crate) prune: bool,
    /// Re-seal only the input's keys into this SealedSecret file, in place; every other
    /// key stays byte-for-byte as it was.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["out", "raw"])]
    pub(crate) merge_into: Option<PathBuf>,
    /// With --merge-into: seal the merged values without the keys the file is sealed to
    /// that no --cert lists (another cluster, a break-glass key); refused otherwise.
    #[arg(long, requires = "merge_into")]
    pub(crate) drop_recipients: bool,
    /// Seal one value read from stdin (exact bytes) and print the sealed value.
    #[arg(long, requires = "key", conflicts_with = "input")]
    pub(crate) raw: bool,
    /// With --raw: seal an empty value (refused otherwise, as it is usually a mistake).
    #[arg(long, requires = "raw")]
    pub(crate) allow_empty: bool,
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

/// How `sigil rotate` and `sigil keys rotate` report.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ReportFormat {
    /// Progress step by step, then a summary.
    #[default]
    Text,
    /// The final Rotation object, and nothing else.
    Json,
}

/// Waiting for a Rotation and reporting on it.
#[derive(Args, Debug)]
pub(crate) struct WaitArgs {
    /// Wait until the Rotation completes or fails, showing its steps (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub(crate) wait: bool,
    /// Print the new Rotation's name and return at once.
    #[arg(long, overrides_with = "wait")]
    pub(crate) no_wait: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub(crate) format: ReportFormat,
    /// Stop waiting after this long (e.g. 90s, 10m, 1h) and exit with status 3; the
    /// Rotation keeps running.
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse_duration, conflicts_with = "no_wait")]
    pub(crate) timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|_| "expected a duration such as 90s, 10m or 1h30m".to_owned())?;
    Duration::try_from(parsed)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a duration above zero".to_owned())
}

/// An Idempotency-Key travels as an HTTP header: visible ASCII only.
fn parse_idempotency_key(text: &str) -> Result<String, String> {
    let valid = (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(text.to_owned())
    } else {
        Err("expected 1 to 255 printable ASCII characters without spaces".to_owned())
    }
}

#[derive(Args, Debug)]
pub(crate) struct RotateArgs {
    /// The ExternalSecret whose remote key gets a new value.
    #[arg(value_name = "EXTERNALSECRET")]
    pub(crate) external_secret: String,
    /// Namespace of the ExternalSecret (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Which of the ExternalSecret's `data[].secretKey` entries to rotate; needed when it
    /// reads more than one remote key or property.
    #[arg(long, value_name = "SECRET_KEY")]
    pub(crate) key: Option<String>,
    /// The new value itself, from FILE (`-`: piped on standard input), instead of a
    /// generated one, e.g. an API key a vendor re-issued. It is sealed here to the
    /// cluster's public keys for this ExternalSecret and `--key` only, and only the
    /// ciphertext is sent; one trailing newline is dropped.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) value_from_file: Option<std::path::PathBuf>,
    /// Why, for the record (e.g. an incident number): shown in status, Events and the
    /// audit log.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
    /// Do not restart the workloads that consume the refreshed Secrets.
    #[arg(long)]
    pub(crate) no_restart: bool,
    /// Show what would change (Secrets, ExternalSecrets, workloads) and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Makes retrying this command safe: sigil-api creates one Rotation per key and
    /// answers a repeat with that Rotation (default: a new random key per invocation).
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
    pub(crate) idempotency_key: Option<String>,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

#[derive(Args, Debug)]
pub(crate) struct KeysRotateArgs {
    /// Why, for the record (e.g. an incident number).
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// SealedSecrets to check: a file (YAML or JSON, one or many documents) or `-`.
    #[arg(short = 'f', long = "file", value_name = "FILE|-", default_value = "-")]
    pub(crate) input: PathBuf,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

#[derive(Args, Debug)]
pub(crate) struct ResealArgs {
    /// SealedSecrets to re-seal: a file, a directory (file by file into the -w
    /// directory), or `-`.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE|DIR|-",
        default_value = "-"
    )]
    pub(crate) input: PathBuf,
    /// Write to this file (or directory, for a directory input) instead of stdout; name
    /// the input itself to re-seal in place.
    #[arg(short = 'w', long = "write", value_name = "OUT")]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

const MIGRATE_BITNAMI: &str = "\
Re-seal Bitnami SealedSecrets as Sigil SealedSecrets, offline, with Bitnami's keys.

Each value is opened in memory with Bitnami's private keys and sealed to the Sigil keys of --cert \
for the same namespace, name, data key and scope (strict; namespace-wide as namespace; \
cluster-wide as cluster). The template's type, immutable, labels and annotations are kept; \
Bitnami's data templates are refused. A directory is migrated file by file into the same relative \
paths under -w: other documents pass through, and files without a Bitnami SealedSecret are copied \
as they are. Nothing is written unless every value opens, and plaintext never leaves memory.

For example, without writing Bitnami's keys to a file:

  sigil cert -w sigil.pub
  kubectl get secret -n kube-system -l sealedsecrets.bitnami.com/sealed-secrets-key -o yaml |
    sigil migrate bitnami --bitnami-key /dev/stdin --cert sigil.pub -f k8s/ -w k8s-sigil/";

#[derive(Subcommand, Debug)]
pub(crate) enum MigrateCommand {
    /// Re-seal Bitnami SealedSecrets as Sigil SealedSecrets, offline, with Bitnami's keys.
    #[command(long_about = MIGRATE_BITNAMI, after_help = LOCAL_EXIT_CODES)]
    Bitnami(MigrateBitnamiArgs),
}

#[derive(Args, Debug)]
pub(crate) struct MigrateBitnamiArgs {
    /// Bitnami's private sealing keys: PEM (tls.key, PKCS#1 or PKCS#8), or the key
    /// Secrets as `kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key -o
    /// yaml` prints them. Repeat, or list several files: every key is tried, so values
    /// sealed before a key renewal open too.
    #[arg(long = "bitnami-key", value_name = "FILE", required = true, num_args = 1..)]
    pub(crate) bitnami_keys: Vec<PathBuf>,
    /// Sigil public key file (`sigil.pub.v1` lines, e.g. from `sigil cert`) to seal to;
    /// repeat for several clusters, as with `sigil seal --cert`.
    #[arg(long = "cert", value_name = "FILE", required = true)]
    pub(crate) certs: Vec<PathBuf>,
    /// Namespace of SealedSecrets that do not set metadata.namespace (e.g. one that
    /// kustomize sets); their output does not set it either.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Bitnami SealedSecrets: a file, a directory (file by file into the -w directory),
    /// or `-`.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE|DIR|-",
        default_value = "-"
    )]
    pub(crate) input: PathBuf,
    /// Write to this file (or directory, for a directory input) instead of stdout; never
    /// over an input file. Each file keeps its format (YAML or JSON).
    #[arg(short = 'w', long = "write", value_name = "OUT")]
    pub(crate) out: Option<PathBuf>,
}

/// Shells `sigil completions` writes for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => Self::Bash,
            Shell::Zsh => Self::Zsh,
            Shell::Fish => Self::Fish,
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

/// Writes the completion script for the whole command tree.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(args.shell),
        &mut Cli::command(),
        "sigil",
        &mut script,
    );
    crate::output::emit(None, &String::from_utf8(script)?)
}
