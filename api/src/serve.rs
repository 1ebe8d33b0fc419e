//! Serving: HTTPS with a certificate that is reloaded when its files change (a renewed
//! cert-manager Secret takes effect without a restart), plain HTTP only when asked,
//! and a graceful shutdown on SIGTERM that lets calls in flight finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

/// Where the certificate and key come from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// How long calls in flight may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(20);
/// How often the certificate files are checked for a change.
const CERT_POLL: Duration = Duration::from_secs(5);

/// Serves `router` on `listen` until SIGTERM or Ctrl-C; TLS unless `tls` is `None`.
pub async fn serve(
    router: Router,
    listen: SocketAddr,
    tls: Option<TlsFiles>,
) -> anyhow::Result<()> {
    let handle = Handle::<SocketAddr>::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let announce = {
        let handle = handle.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        async move {
            if let Some(addr) = handle.listening().await {
                tracing::info!(%addr, "serving {scheme}://{addr}");
            }
        }
    };
    tokio::spawn(announce);
    match tls {
        Some(files) => {
            let config = RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .map_err(|err| {
                    anyhow::anyhow!(
                        "cannot load the TLS certificate {} and key {}: {err}",
                        files.cert.display(),
                        files.key.display()
                    )
                })?;
            tokio::spawn(reload_on_change(config.clone(), files));
            axum_server::bind_rustls(listen, config)
                .handle(handle)
                .serve(service)
                .await?;
        }
        None => {
            axum_server::bind(listen)
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
    Ok(())
}

fn modified(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let time = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Some((time(&files.cert)?, time(&files.key)?))
}

/// Polls rather than watches: a Kubernetes Secret volume changes by swapping a symlink,
/// which inotify on the file itself does not report.
async fn reload_on_change(config: RustlsConfig, files: TlsFiles) {
    let mut loaded = modified(&files);
    loop {
        tokio::time::sleep(CERT_POLL).await;
        let now = modified(&files);
        if now.is_none() || now == loaded {
            continue;
        }
        match config.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
                loaded = now;
            }
            // A half-written pair is retried at the next poll; the old certificate serves.
            Err(err) => tracing::warn!(
                error = %err,
                cert = %files.cert.display(),
                "cannot reload the TLS certificate; still serving the previous one"
            ),
        }
    }
}

async fn shutdown_on_signal(handle: Handle<SocketAddr>) {
    sigil_telemetry::shutdown_signal().await;
    tracing::info!("finishing calls in flight");
    handle.graceful_shutdown(Some(DRAIN));
}
