//! `sigil-controller` entry point: flags, logging, then `sigil_controller::run::run`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Many small, long-lived cached objects: jemalloc keeps fewer pages for them than glibc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Unseals SealedSecrets into Secrets and keeps the sealing keys.
#[derive(Parser, Debug)]
#[command(name = "sigil-controller", version)]
struct Args {
    /// Namespace of the key Secrets, the `sigil-public-keys` ConfigMap and the Lease.
    #[arg(long, env = "SIGIL_NAMESPACE", default_value = "sigil-system")]
    namespace: String,
    /// Cluster name written into the published public keys.
    #[arg(long, env = "SIGIL_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Make a new sealing key when the active one is this old (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    key_renewal_period: Duration,
    /// SealedSecrets reconciled at once.
    #[arg(long, default_value_t = 32)]
    concurrency: u16,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Take the Lease before working, so several replicas can run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "sigil-controller")]
    lease_name: String,
    /// How long the Lease lasts unrenewed; a standby takes over after this.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// This replica's identity (the Pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Only this namespace's SealedSecrets, stores and ExternalSecrets (default: every
    /// namespace).
    #[arg(long)]
    watch_namespace: Option<String>,
    /// Serve ClusterSecretStores (needs cluster-wide read of them and of Namespaces).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cluster_secret_stores: bool,
    /// ClusterExternalSecrets: `auto` serves them without --watch-namespace and reports
    /// them `NotServed` with it; `serve` writes their ExternalSecrets into every namespace
    /// they choose even with --watch-namespace; `off` does not watch them.
    #[arg(long, value_enum, default_value_t = ClusterExternalSecretsArg::Auto)]
    cluster_external_secrets: ClusterExternalSecretsArg,
    /// How long a Rotation waits for every mirror Secret to hold the new version before
    /// it fails (the store keeps the new value).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    rotation_propagation_timeout: Duration,
    /// Rollouts (Rotation restarts and reloads) in progress at once, at most.
    #[arg(long, default_value_t = 5)]
    max_concurrent_restarts: usize,
    /// How long a rollout may take before the next one starts anyway.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    rollout_deadline: Duration,
    /// How long a Rotation waits for the rollouts it started to complete before it fails
    /// (`RolloutTimedOut`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    rollout_timeout: Duration,
    /// The shortest `schedule.every` a RotationPolicy may ask for; a shorter one is
    /// refused (`InvalidSpec`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    min_rotation_interval: Duration,
    /// The most remote keys one `dataFrom.find` may copy; a find that matches more
    /// fails (`InvalidSpec`) and the Secret is left as it was.
    #[arg(long, default_value_t = 1000)]
    max_keys_per_find: usize,
    /// Workloads annotated `sigil.dev/reload: "true"` restart once a Secret they consume
    /// has stayed unchanged this long after a change.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    reload_debounce: Duration,
    /// Whether watches start with a streaming list (Kubernetes' `WatchList`) rather than
    /// paginated lists; unset: streaming where the API server is 1.32 or newer. Set
    /// false on a cluster that turned the `WatchList` feature gate off.
    #[arg(long)]
    streaming_lists: Option<bool>,
    /// Stores may mint tokens only for ServiceAccounts annotated
    /// `sigil.dev/allow-store-tokens: "true"` (off: as External Secrets Operator does).
    #[arg(long)]
    store_tokens_need_opt_in: bool,
    /// The ServiceAccount of sigil-api, `NAMESPACE/NAME`: the only caller of the internal
    /// verify and re-seal endpoints (default: `sigil-api` in `--namespace`).
    #[arg(long, env = "SIGIL_API_SERVICE_ACCOUNT")]
    api_service_account: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

/// `--cluster-external-secrets`, as [`sigil_controller::common::ClusterExternalSecrets`].
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ClusterExternalSecretsArg {
    Auto,
    Serve,
    Off,
}

impl From<ClusterExternalSecretsArg> for sigil_controller::common::ClusterExternalSecrets {
    fn from(arg: ClusterExternalSecretsArg) -> Self {
        match arg {
            ClusterExternalSecretsArg::Auto => Self::Auto,
            ClusterExternalSecretsArg::Serve => Self::Serve,
            ClusterExternalSecretsArg::Off => Self::Off,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    sigil_telemetry::init_logging(args.log_json);
    // Reads FAILPOINTS (tests only; the feature is off in release builds).
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let api_service_account = args
        .api_service_account
        .unwrap_or_else(|| format!("{}/sigil-api", args.namespace));
    let config = sigil_controller::common::Config {
        namespace: args.namespace,
        cluster_name: args.cluster_name,
        key_renewal_period: args.key_renewal_period,
        concurrency: args.concurrency,
        http_addr: args.http_addr,
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        lease_duration: args.lease_duration,
        identity,
        watch_namespace: args.watch_namespace,
        cluster_secret_stores: args.cluster_secret_stores,
        cluster_external_secrets: args.cluster_external_secrets.into(),
        rotation_propagation_timeout: args.rotation_propagation_timeout,
        max_concurrent_restarts: args.max_concurrent_restarts,
        rollout_deadline: args.rollout_deadline,
        rollout_timeout: args.rollout_timeout,
        min_rotation_interval: args.min_rotation_interval,
        max_keys_per_find: args.max_keys_per_find,
        reload_debounce: args.reload_debounce,
        store_tokens_need_opt_in: args.store_tokens_need_opt_in,
        api_service_account,
        initial_list: args.streaming_lists.map(|streaming| {
            if streaming {
                sigil_controller::common::watch::InitialList::Streaming
            } else {
                sigil_controller::common::watch::InitialList::Paginated
            }
        }),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        sigil_controller::run::run(config, client).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
