//! Serving the router: plain HTTP (behind a reverse proxy) or HTTPS with rustls, graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;

/// Longest wait for in-flight requests at shutdown.
pub const GRACE: Duration = Duration::from_secs(5);

/// Certificate chain and key (PEM) for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Binds `addr` (before anything else starts, so a busy port is reported at once).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = privileged_port_hint(addr, &e);
        anyhow::Error::new(e).context(format!("cannot listen on portal.listen {addr}{hint}"))
    })?;
    l.set_nonblocking(true)
        .context("portal listener: non-blocking mode")?;
    Ok(l)
}

/// What to do when a port below 1024 is refused: the service runs without root and gets
/// CAP_NET_BIND_SERVICE only when asked (empty for any other error).
pub fn privileged_port_hint(addr: SocketAddr, e: &std::io::Error) -> &'static str {
    if addr.port() < 1024 && e.kind() == std::io::ErrorKind::PermissionDenied {
        " (a port below 1024 needs CAP_NET_BIND_SERVICE: add it to the unit with `systemctl edit sesame`, see docs/install.md)"
    } else {
        ""
    }
}

/// Serves `app` on `listener` until `shutdown` completes; HTTPS when `tls` is given.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<TlsFiles>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr().context("portal listener address")?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(files) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                    .await
                    .with_context(|| {
                        format!(
                            "loading portal.tls_cert_file {} and tls_key_file {}",
                            files.cert.display(),
                            files.key.display()
                        )
                    })?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(GRACE));
            });
            tracing::info!(listen = %local, "portal listening (HTTPS)");
            axum_server::from_tcp_rustls(listener, config)
                .handle(handle)
                .serve(app)
                .await
                .context("portal server")
        }
        None => {
            let listener =
                tokio::net::TcpListener::from_std(listener).context("portal listener")?;
            tracing::info!(listen = %local, "portal listening (HTTP)");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .context("portal server")
        }
    }
}

#[cfg(test)]
mod privileged_port_tests {
    use super::*;

    #[test]
    fn only_a_refused_low_port_gets_the_capability_hint() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let low: SocketAddr = "0.0.0.0:443".parse().expect("addr");
        let high: SocketAddr = "0.0.0.0:8443".parse().expect("addr");
        assert!(privileged_port_hint(low, &denied).contains("CAP_NET_BIND_SERVICE"));
        assert_eq!(privileged_port_hint(low, &in_use), "");
        assert_eq!(privileged_port_hint(high, &denied), "");
    }
}
