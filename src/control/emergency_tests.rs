//! The admin socket against a recording sink and a real peer cache in a temp dir: concurrent
//! clients, the request size cap, the pending file on disk before the answer.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;
use crate::control::peer_cache::CachedDevice;
use crate::control::{GatewayStats, PeerSpec};
use crate::key::PublicKey;

const GATEWAY_KEY: [u8; 32] = [7; 32];
const DEVICE_KEY: [u8; 32] = [9; 32];

fn key(bytes: [u8; 32]) -> PublicKey {
    PublicKey::from_bytes(bytes).unwrap()
}
const DEVICE_ID: i64 = 4;

/// Records the keys removed (unit-test stand-in for the gateway handle).
#[derive(Default)]
struct Removed(Mutex<Vec<PublicKey>>);

impl PeerSink for Removed {
    fn set_peers(&self, _peers: Vec<PeerSpec>) {}
    fn remove_peer(&self, public_key: &PublicKey) -> bool {
        self.0.lock().push(*public_key);
        true
    }
    fn public_key(&self) -> PublicKey {
        key(GATEWAY_KEY)
    }
    fn stats(&self) -> GatewayStats {
        GatewayStats::default()
    }
}

/// A state dir whose peer cache holds device 4, and the socket served from it.
async fn start() -> (tempfile::TempDir, Arc<Removed>, watch::Sender<bool>) {
    let dir = tempfile::tempdir().unwrap();
    PeerCache::open(dir.path())
        .unwrap()
        .save(
            &key(GATEWAY_KEY),
            0,
            vec![CachedDevice {
                id: DEVICE_ID,
                username: "mdupont".into(),
                public_key: key(DEVICE_KEY),
                address: Ipv4Addr::new(100, 64, 0, 2),
                groups: Vec::new(),
                endpoint: None,
                mfa_until_ms: None,
                key_expires_at: None,
            }],
        )
        .unwrap();
    let emergency = Arc::new(Emergency::open(dir.path()).unwrap());
    let sink = Arc::new(Removed::default());
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(serve_socket(
        emergency,
        Arc::clone(&sink) as Arc<dyn PeerSink>,
        stop_rx,
    ));
    let sock = dir.path().join(SOCKET_FILE);
    for _ in 0..100 {
        if UnixStream::connect(&sock).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (dir, sink, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_do_not_delay_a_revocation_acknowledged_once_on_disk() {
    let (dir, sink, stop) = start().await;
    let sock = dir.path().join(SOCKET_FILE);
    // More idle clients than the server serves at once minus one: each holds a slot.
    let idle: Vec<UnixStream> = (0..MAX_CLIENTS - 1)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let state = dir.path().to_path_buf();
    let t = Instant::now();
    let answer = tokio::task::spawn_blocking(move || request(&state, DEVICE_ID, "cli:root", "vol"))
        .await
        .unwrap()
        .unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    assert_eq!(answer, crate::key::encode_base64(&DEVICE_KEY));
    assert_eq!(*sink.0.lock(), vec![key(DEVICE_KEY)]);
    // On disk when acknowledged, owner-only, and read back by the next start.
    let pending = dir.path().join(PENDING_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&pending).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let again = Emergency::open(dir.path()).unwrap();
    assert_eq!(again.pending_ids(), HashSet::from([DEVICE_ID]));
    drop(idle);
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_and_the_socket_removed_at_shutdown() {
    let (dir, sink, stop) = start().await;
    let sock = dir.path().join(SOCKET_FILE);
    let mut big = UnixStream::connect(&sock).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let line = format!(
        "{{\"revoke\": {DEVICE_ID}, \"actor\": \"cli:root\", \"reason\": \"{}\"}}\n",
        "x".repeat(MAX_REQUEST as usize)
    );
    // The server stops reading at the cap: the rest may be refused with EPIPE.
    let _ = big.write_all(line.as_bytes());
    // The server answers, then closes with our unread bytes still queued: the kernel may end the
    // read with ECONNRESET after the answer (AF_UNIX), so read until the end or that error.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match big.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("\"ok\":false"), "{answer}");
    assert!(sink.0.lock().is_empty());
    let _ = stop.send(true);
    for _ in 0..100 {
        if !sock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!sock.exists(), "admin socket left after shutdown");
}
