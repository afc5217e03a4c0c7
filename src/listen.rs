//! The HTTP listeners (the portal and the metrics): plain HTTP (behind a reverse proxy) or HTTPS with rustls, graceful stop,
//! a header-read timeout and a cap on open connections.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest wait for the portal's in-flight requests at shutdown: short enough that a stopping
/// server is gone within 5 s (systemd, the demo, an upgrade wait on it).
pub const GRACE: Duration = Duration::from_secs(2);

/// Certificate chain and key (PEM) for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Bounds on what clients may hold open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// A client that has not sent a whole request head within this time is disconnected
    /// (slowloris).
    pub header_read_timeout: Duration,
    /// Connections beyond this many are closed as soon as accepted.
    pub max_connections: usize,
    /// Longest wait for in-flight requests once shutdown is asked.
    pub grace: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            grace: GRACE,
        }
    }
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
    serve_with(listener, tls, app, shutdown, ListenLimits::default()).await
}

/// [`serve`] with other limits.
pub async fn serve_with(
    listener: std::net::TcpListener,
    tls: Option<TlsFiles>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ListenLimits,
) -> anyhow::Result<()> {
    serve_named("portal", listener, tls, app, shutdown, limits).await
}

/// [`serve_with`] for any listener of the process (`name` in its log lines: "portal",
/// "metrics"): the one place where Sesame serves HTTP, with the same timeouts and caps.
pub async fn serve_named(
    name: &'static str,
    listener: std::net::TcpListener,
    tls: Option<TlsFiles>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ListenLimits,
) -> anyhow::Result<()> {
    let local = listener.local_addr().context("listener address")?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(limits.grace));
    });
    let capped = CappedAcceptor {
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        name,
    };
    let mut server = axum_server::from_tcp(listener)
        .with_context(|| format!("{name} listener {local}"))?
        .acceptor(capped.clone());
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
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
            tracing::info!(listen = %local, "{name} listening (HTTPS)");
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(limits.header_read_timeout)
                .acceptor(capped);
            server
                .acceptor(tls)
                .handle(handle)
                .serve(app)
                .await
                .with_context(|| format!("{name} server"))
        }
        None => {
            tracing::info!(listen = %local, "{name} listening (HTTP)");
            server
                .handle(handle)
                .serve(app)
                .await
                .with_context(|| format!("{name} server"))
        }
    }
}

/// Admits a connection while fewer than the cap are open; the permit lives in the stream.
#[derive(Clone)]
struct CappedAcceptor {
    slots: Arc<Semaphore>,
    name: &'static str,
}

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for CappedAcceptor {
    type Stream = CappedStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(CappedStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Ok((
                CappedStream {
                    stream,
                    _permit: permit,
                },
                service,
            )),
            Err(_) => {
                tracing::warn!("{} connection cap reached: connection closed", self.name);
                Err(std::io::Error::other("connection cap reached"))
            }
        })
    }
}

/// A connection counted against the cap until dropped.
struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
