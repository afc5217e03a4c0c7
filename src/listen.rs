//! The HTTP listeners (the portal and the metrics): plain HTTP (behind a reverse proxy) or HTTPS with rustls, graceful stop,
//! a header-read timeout, a cap on open connections and, for the portal, one per client address.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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

/// A cap on the connections one client address may hold open at once: one address cannot
/// take every slot of [`ListenLimits::max_connections`] (a few idle sockets from one host would
/// otherwise lock everyone out of the portal).
#[derive(Clone)]
pub struct PerSource {
    /// Connections past this many from one address are closed as soon as accepted.
    pub max: usize,
    /// Addresses never capped: trusted reverse proxies, which carry many clients.
    pub exempt: Vec<ipnet::IpNet>,
    /// Called for each connection the cap closes (a metric counts them).
    pub on_refused: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for PerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerSource")
            .field("max", &self.max)
            .field("exempt", &self.exempt)
            .finish_non_exhaustive()
    }
}

/// The open connections of each capped address.
struct Sources {
    cap: PerSource,
    open: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    /// A slot for a connection from `ip`, or `None` when `ip` holds the cap already. Exempt
    /// addresses get an uncounted slot.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let ip = ip.to_canonical();
        if self.cap.exempt.iter().any(|n| n.contains(&ip)) {
            return Some(SourceSlot { sources: None, ip });
        }
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: Some(Arc::clone(self)),
            ip,
        })
    }
}

/// One connection counted against its address until dropped.
struct SourceSlot {
    sources: Option<Arc<Sources>>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let Some(sources) = &self.sources else {
            return;
        };
        let mut open = sources.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
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

/// The portal: [`serve_with`] and at most `per_source.max` connections per client address.
pub async fn serve_portal(
    listener: std::net::TcpListener,
    tls: Option<TlsFiles>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ListenLimits,
    per_source: PerSource,
) -> anyhow::Result<()> {
    serve_capped(
        "portal",
        listener,
        tls,
        app,
        shutdown,
        limits,
        Some(per_source),
    )
    .await
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
    serve_capped(name, listener, tls, app, shutdown, limits, None).await
}

async fn serve_capped(
    name: &'static str,
    listener: std::net::TcpListener,
    tls: Option<TlsFiles>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ListenLimits,
    per_source: Option<PerSource>,
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
        sources: per_source.map(|cap| {
            Arc::new(Sources {
                cap,
                open: parking_lot::Mutex::new(HashMap::new()),
            })
        }),
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

/// Admits a connection while its address holds fewer than the per-source cap (when there is
/// one) and fewer than the cap are open in all; the slots live in the stream.
#[derive(Clone)]
struct CappedAcceptor {
    slots: Arc<Semaphore>,
    sources: Option<Arc<Sources>>,
    name: &'static str,
}

impl CappedAcceptor {
    fn admit(&self, stream: TcpStream) -> std::io::Result<CappedStream> {
        let source = match &self.sources {
            None => None,
            Some(sources) => {
                let ip = stream.peer_addr()?.ip();
                match sources.admit(ip) {
                    Some(slot) => Some(slot),
                    None => {
                        (sources.cap.on_refused)();
                        // Debug only: a flood from one address must not flood the journal
                        // too (the metric counts them).
                        tracing::debug!(%ip, "{} per-source connection cap reached: connection closed", self.name);
                        return Err(std::io::Error::other("per-source connection cap reached"));
                    }
                }
            }
        };
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Ok(CappedStream {
                stream,
                _permit: permit,
                _source: source,
            }),
            Err(_) => {
                tracing::warn!("{} connection cap reached: connection closed", self.name);
                Err(std::io::Error::other("connection cap reached"))
            }
        }
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for CappedAcceptor {
    type Stream = CappedStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(CappedStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.admit(stream).map(|s| (s, service)))
    }
}

/// A connection counted against the caps until dropped.
struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _source: Option<SourceSlot>,
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
mod per_source_tests {
    use super::*;

    #[test]
    fn an_address_gets_max_slots_freed_on_drop_and_exempt_ones_are_not_counted() {
        let sources = Arc::new(Sources {
            cap: PerSource {
                max: 2,
                exempt: vec!["10.0.0.0/24".parse().expect("net")],
                on_refused: Arc::new(|| {}),
            },
            open: parking_lot::Mutex::new(HashMap::new()),
        });
        let a: IpAddr = "198.18.0.7".parse().expect("ip");
        let b: IpAddr = "198.18.0.8".parse().expect("ip");
        let first = sources.admit(a).expect("1st");
        let _second = sources.admit(a).expect("2nd");
        assert!(sources.admit(a).is_none(), "3rd from the same address");
        // IPv4-mapped IPv6 is the same address.
        assert!(sources
            .admit("::ffff:198.18.0.7".parse().expect("ip"))
            .is_none());
        let _other = sources.admit(b).expect("another address");
        drop(first);
        let _again = sources.admit(a).expect("a freed slot");
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let held: Vec<_> = (0..10)
            .map(|_| sources.admit(proxy).expect("exempt"))
            .collect();
        assert_eq!(held.len(), 10);
        assert!(!sources.open.lock().contains_key(&proxy));
        drop(held);
        drop(_second);
        drop(_again);
        assert_eq!(sources.open.lock().len(), 1, "only b's slot left");
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
