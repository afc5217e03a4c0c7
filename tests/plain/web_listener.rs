//! The portal's listener on a loopback port: a client that never finishes its request head is
//! disconnected (header-read timeout), connections past the cap, or past one address's share
//! (`[portal] max_connections_per_source`), are closed at once.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::time::{Duration, Instant};

use axum::routing::get;
use sesame::config::Config;
use sesame::listen::{bind, serve_portal, serve_with, ListenLimits};
use sesame::portal::metrics::Metrics;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_millis(800);
const CAP: usize = 2;

async fn start() -> std::net::SocketAddr {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", get(|| async { "ok" }));
    let limits = ListenLimits {
        header_read_timeout: HEADER_TIMEOUT,
        max_connections: CAP,
        ..ListenLimits::default()
    };
    tokio::spawn(async move {
        let _ = serve_with(listener, None, app, std::future::pending(), limits).await;
    });
    addr
}

/// Reads until the server closes (or 5 s pass); returns what it sent and when it closed.
async fn read_to_close(s: &mut TcpStream) -> (String, Option<Instant>) {
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let closed = match r {
        Ok(_) => Some(Instant::now()),
        Err(_) => None,
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

async fn get_ok(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    read_to_close(&mut s).await.0.starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn a_slow_request_head_is_cut() {
    let addr = start().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_to_close(&mut slow).await;
    let closed = closed.expect("the server closes a connection stuck in its headers");
    assert!(closed - started >= HEADER_TIMEOUT, "not before the timeout");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(get_ok(addr).await, "the server still answers others");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed() {
    let addr = start().await;
    let mut held = Vec::new();
    for _ in 0..CAP {
        let s = TcpStream::connect(addr).await.unwrap();
        held.push(s);
    }
    // Let the server accept the held ones before the next.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let (answer, closed) = read_to_close(&mut extra).await;
    assert!(closed.is_some(), "closed at once");
    assert!(answer.is_empty(), "no answer past the cap: {answer:?}");
    drop(held);
    // Freed slots serve again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(get_ok(addr).await);
}

/// `[portal] max_connections_per_source` on a portal listener; its refusals counted in
/// `metrics`.
async fn start_portal(portal_section: &str) -> (std::net::SocketAddr, std::sync::Arc<Metrics>) {
    let config = Config::parse(
        std::path::Path::new("/etc/sesame/sesame.toml"),
        &format!("[portal]\n{portal_section}\n"),
    )
    .unwrap();
    let metrics = std::sync::Arc::new(Metrics::new());
    let per_source = sesame::portal::per_source_cap(&config.portal, &metrics);
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = serve_portal(
            listener,
            None,
            app,
            std::future::pending(),
            ListenLimits::default(),
            per_source,
        )
        .await;
    });
    (addr, metrics)
}

/// One request on an open connection (keep-alive): whether it got its 200.
async fn request_on(s: &mut TcpStream) -> bool {
    if s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        _ => false,
    }
}

const PER_SOURCE: usize = 3;

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let (addr, metrics) = start_portal(&format!("max_connections_per_source = {PER_SOURCE}")).await;
    let mut held = Vec::new();
    for _ in 0..PER_SOURCE {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Accepted and served: the connection is counted.
        assert!(request_on(&mut s).await);
        held.push(s);
    }
    // One more from the same address: closed at once, unanswered.
    let started = Instant::now();
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let (answer, closed) = read_to_close(&mut extra).await;
    let closed = closed.expect("closed");
    assert!(closed - started < Duration::from_secs(2), "closed at once");
    assert!(answer.is_empty(), "no answer past the cap: {answer:?}");
    let page = metrics.render();
    assert!(
        page.contains("sesame_portal_connections_refused_total 1"),
        "{page}"
    );
    // The connections held before still work.
    for s in &mut held {
        assert!(request_on(s).await, "a held connection still serves");
    }
    // One closed: its slot serves a new one.
    held.pop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(get_ok(addr).await);
}

#[tokio::test]
async fn a_trusted_proxy_is_not_capped() {
    let (addr, metrics) = start_portal(&format!(
        "max_connections_per_source = {PER_SOURCE}\ntrusted_proxies = [\"127.0.0.1\"]"
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..PER_SOURCE * 2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(request_on(&mut s).await, "the proxy carries many clients");
        held.push(s);
    }
    assert!(metrics
        .render()
        .contains("sesame_portal_connections_refused_total 0"));
}
