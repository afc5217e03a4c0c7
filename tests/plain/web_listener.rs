//! The portal's listener on a loopback port: a client that never finishes its request head is
//! disconnected (header-read timeout), connections past the cap are closed at once.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::time::{Duration, Instant};

use axum::routing::get;
use sesame::listen::{bind, serve_with, ListenLimits};
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
