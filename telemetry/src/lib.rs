//! What Sigil's servers share around their work: logs on stderr, the audit record on
//! stdout, and the signal that starts a graceful shutdown.

/// Logs to stderr (text or JSON) filtered by `RUST_LOG` (default `info`), and the
/// `audit` target, one JSON object per line, to stdout: the record of every call and
/// Rotation step, kept apart so it can be shipped and kept longer than the logs.
pub fn init_logging(json: bool) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // tokio-postgres logs each statement's text at DEBUG: a rotation's `ALTER ROLE`
    // carries a password verifier, which is never logged, whatever RUST_LOG says.
    let not_audit = filter_fn(|meta| {
        meta.target() != "audit"
            && !(meta.target().starts_with("tokio_postgres")
                && *meta.level() > tracing::Level::INFO)
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        logs.json().with_filter(not_audit).boxed()
    } else {
        logs.with_filter(not_audit).boxed()
    };
    let audit = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_target(false)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stdout)
        .with_filter(Targets::new().with_target("audit", LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(audit)
        .init();
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
