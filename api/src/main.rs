//! `sigil-api`: the HTTPS API that runbooks call to rotate credentials. A thin binary
//! over the `sigil_api` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sigil_api::auth::{CachedReviewer, KubeReviewer};
use sigil_api::serve::TlsFiles;

/// Rotate credentials from a runbook: authenticated with the caller's Kubernetes token,
/// authorized by RBAC, safe to retry, audited (one JSON line per call on stdout).
#[derive(Parser, Debug)]
#[command(name = "sigil-api", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SIGIL_API_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM certificate chain; reloaded when the file changes.
    #[arg(long, env = "SIGIL_API_TLS_CERT", required_unless_present_any = ["insecure_http", "print_openapi"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "SIGIL_API_TLS_KEY", required_unless_present_any = ["insecure_http", "print_openapi"])]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP (local use only: tokens would cross the network in clear).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_http: bool,
    /// Base URL of the controller's internal HTTP server (verify and re-seal).
    #[arg(
        long,
        env = "SIGIL_CONTROLLER_URL",
        default_value = "http://sigil-controller.sigil-system.svc:8080"
    )]
    controller_url: String,
    /// A token of this API's ServiceAccount for the audience `sigil-controller`, sent to
    /// the controller's internal endpoints (the chart projects one; reread on each call).
    #[arg(
        long,
        env = "SIGIL_CONTROLLER_TOKEN_FILE",
        default_value = "/var/run/secrets/sigil.dev/controller/token"
    )]
    controller_token_file: PathBuf,
    /// Sigil's own namespace (sealing-key Rotations, the public key ConfigMap).
    #[arg(long, env = "POD_NAMESPACE", default_value = "sigil-system")]
    namespace: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Longest a request may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Requests per second per user (bursts of twice that); 0 turns the limit off.
    #[arg(long, default_value_t = 20)]
    rate_limit: u32,
    /// How long a successful TokenReview or SubjectAccessReview is reused (at most 5m: a
    /// revoked token or RoleBinding keeps working this long); 0 turns the cache off.
    #[arg(long, default_value = "10s", value_parser = review_cache_ttl)]
    review_cache_ttl: Duration,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

/// The longest `--review-cache-ttl`.
const MAX_REVIEW_CACHE_TTL: Duration = Duration::from_secs(300);

fn review_cache_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if ttl > MAX_REVIEW_CACHE_TTL {
        return Err(format!(
            "{text} is longer than 5m: a revoked token or RoleBinding would keep working that long; use 5m or less"
        ));
    }
    Ok(ttl)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", sigil_api::openapi::document_text());
        return ExitCode::SUCCESS;
    }
    sigil_telemetry::init_logging(args.log_json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let reviewer = CachedReviewer::new(
        Arc::new(KubeReviewer::new(client.clone())),
        args.review_cache_ttl,
    );
    let state = sigil_api::AppState::new(
        client,
        Arc::new(reviewer),
        sigil_api::Settings {
            namespace: args.namespace,
            controller_url: args.controller_url.trim_end_matches('/').to_owned(),
            controller_token_file: Some(args.controller_token_file),
            max_body_bytes: args.max_body_bytes,
            request_timeout: args.request_timeout,
            rate_limit: args.rate_limit,
        },
    );
    if let (Some(users), Some(sources)) = (state.limiter.clone(), state.source_limiter.clone()) {
        // Forget users and addresses idle for a while, so the limiters' memory stays bounded.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                users.retain_recent();
                sources.retain_recent();
            }
        });
    }
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    sigil_api::serve::serve(sigil_api::router(state), args.listen, tls).await
}
