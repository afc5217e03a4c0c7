//! The WireGuard cross-platform userspace API on `/var/run/wireguard/<interface>.sock`, read-only, so stock `wg show` works.
//!
//! `get=1` answers the interface's listen port and every peer (public key, endpoint, latest
//! handshake, transfer, allowed IP), never the private key: wireguard-tools treats the
//! `private_key` line as optional (without it `wg` prints no interface key). `set=1` is refused
//! with EPERM: Sesame owns the peer set. Hand-written because the protocol is a dozen lines of
//! `key=value` text and no maintained crate serves it (wireguard-go and boringtun embed theirs).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{GatewayHandle, PeerStats};

/// Where wireguard-tools looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// A client has this long, in all, to send its request and read the answer; then it is cut.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// A request longer than this (up to its blank line) is refused: `get=1` is one line, and a
/// `set=1` is refused anyway.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Clients served at once (each on its own thread); past this a new one is closed at once.
pub const MAX_CLIENTS: usize = 8;

/// What the socket reports: the gateway's peers as they are now.
pub type StatsSource = Arc<dyn Fn() -> Vec<PeerStats> + Send + Sync>;

/// The socket path for an interface.
pub fn socket_path(interface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{interface}.sock"))
}

/// The running API socket; [`UapiServer::stop`] (or Drop) closes and removes it.
pub struct UapiServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UapiServer {
    /// Binds `/var/run/wireguard/<interface>.sock` (mode 0600) and answers on a thread. A
    /// socket that cannot be opened (another live process holds the path) is logged and the
    /// server goes on without it: `wg show` is an operator's view, never a reason to stop the
    /// data plane.
    pub fn start(gateway: GatewayHandle, interface: &str, listen_port: u16) -> Option<UapiServer> {
        let path = socket_path(interface);
        match Self::start_at(gateway, path.clone(), listen_port) {
            Ok(server) => Some(server),
            Err(e) => {
                tracing::warn!(socket = %path.display(), error = %e, "cannot open the WireGuard API socket: `wg show` is unavailable");
                None
            }
        }
    }

    /// As [`UapiServer::start`], at any path.
    pub fn start_at(
        gateway: GatewayHandle,
        path: PathBuf,
        listen_port: u16,
    ) -> std::io::Result<UapiServer> {
        Self::serve(Arc::new(move || gateway.peer_stats()), path, listen_port)
    }

    /// Serves `stats` at `path`: the accept loop on one thread, each client on a thread of
    /// its own, so an idle client never delays another.
    pub fn serve(
        stats: StatsSource,
        path: PathBuf,
        listen_port: u16,
    ) -> std::io::Result<UapiServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // A socket left by a process that died: nobody answers on it any more.
        if UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sesame-uapi".into())
                .spawn(move || accept_loop(&listener, &stop, &stats, listen_port))?
        };
        tracing::info!(socket = %path.display(), "WireGuard API (read-only) listening: `wg show` works");
        Ok(UapiServer {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops answering and removes the socket file (clients being served end within
    /// [`CLIENT_TIMEOUT`] on their own threads; nobody waits for them).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Relaxed);
            // Wakes the accept loop, which then sees the flag.
            let _ = UnixStream::connect(&self.path);
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for UapiServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Counts a client thread until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn accept_loop(listener: &UnixListener, stop: &AtomicBool, stats: &StatsSource, port: u16) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(conn) = conn else { continue };
        if busy.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!("wg API: too many clients at once, one closed");
            continue;
        }
        let slot = Slot(Arc::clone(&busy));
        let stats = Arc::clone(stats);
        let spawned = std::thread::Builder::new()
            .name("sesame-uapi-client".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = answer(conn, &*stats, port) {
                    tracing::debug!(error = %e, "wg API client went away");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "wg API: cannot start a client thread");
        }
    }
}

/// Why a request was not read.
#[derive(Debug)]
enum ReadError {
    /// Over [`MAX_REQUEST_BYTES`] before its blank line.
    TooLarge,
    Io(std::io::Error),
}

/// Reads the request up to its blank line (or the end of the stream), within `deadline` in
/// all and at most [`MAX_REQUEST_BYTES`]; returns its first line.
fn read_request(conn: &mut UnixStream, deadline: Instant) -> Result<String, ReadError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Io(std::io::ErrorKind::TimedOut.into()));
        }
        conn.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        let n = conn.read(&mut chunk).map_err(ReadError::Io)?;
        let scan_from = buf.len().saturating_sub(1);
        buf.extend_from_slice(&chunk[..n]);
        let ended = n == 0
            || buf.first() == Some(&b'\n')
            || buf[scan_from..].windows(2).any(|w| w == b"\n\n");
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(ReadError::TooLarge);
        }
        if ended {
            let first = buf.split(|b| *b == b'\n').next().unwrap_or_default();
            return Ok(String::from_utf8_lossy(first).into_owned());
        }
    }
}

/// One client: reads the request up to its blank line, writes the answer, within
/// [`CLIENT_TIMEOUT`] in all.
fn answer(
    mut conn: UnixStream,
    stats: &dyn Fn() -> Vec<PeerStats>,
    port: u16,
) -> std::io::Result<()> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let reply = match read_request(&mut conn, deadline) {
        Ok(first) => match first.trim_end() {
            "get=1" => render_get(&stats(), port),
            // EPERM: the configuration comes from Sesame (enrolment, config file), not from
            // `wg set`. Negative, as wireguard-go writes it (wg prints strerror of its opposite).
            "set=1" => format!("errno=-{}\n\n", libc::EPERM),
            _ => format!("errno=-{}\n\n", libc::EINVAL),
        },
        Err(ReadError::TooLarge) => {
            tracing::debug!(max = MAX_REQUEST_BYTES, "wg API: oversized request refused");
            format!("errno=-{}\n\n", libc::EMSGSIZE)
        }
        Err(ReadError::Io(e)) => return Err(e),
    };
    write_by(&mut conn, reply.as_bytes(), deadline)
}

/// Writes all of `bytes` before `deadline` (a client that reads too slowly is cut).
fn write_by(conn: &mut UnixStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        conn.set_write_timeout(Some(left))?;
        match conn.write(bytes)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => bytes = &bytes[n..],
        }
    }
    Ok(())
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `get=1` answer: the device, then one block per peer, then `errno=0`.
pub fn render_get(peers: &[PeerStats], listen_port: u16) -> String {
    let mut out = format!("listen_port={listen_port}\n");
    for p in peers {
        out.push_str(&format!("public_key={}\n", hex(p.public_key.as_bytes())));
        if let Some(endpoint) = p.endpoint {
            out.push_str(&format!("endpoint={endpoint}\n"));
        }
        let (sec, nsec) = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        out.push_str(&format!(
            "last_handshake_time_sec={sec}\nlast_handshake_time_nsec={nsec}\n"
        ));
        out.push_str(&format!(
            "rx_bytes={}\ntx_bytes={}\n",
            p.rx_bytes, p.tx_bytes
        ));
        out.push_str(&format!(
            "allowed_ip={}/32\nprotocol_version=1\n",
            p.address
        ));
    }
    out.push_str("errno=0\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A server with no peers on a socket in a temp dir.
    fn server() -> (tempfile::TempDir, PathBuf, UapiServer) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.sock");
        let server =
            UapiServer::serve(Arc::new(Vec::<PeerStats>::new), path.clone(), 51820).expect("serve");
        (dir, path, server)
    }

    /// Sends `request`, reads until the server closes; the answer and how long it took.
    fn ask(path: &Path, request: &[u8]) -> (String, Duration) {
        let t = Instant::now();
        let mut c = UnixStream::connect(path).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = c.write_all(request);
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        (out, t.elapsed())
    }

    #[test]
    fn an_idle_client_does_not_delay_another_and_is_cut_after_the_timeout() {
        let (_dir, path, server) = server();
        let mut idle = UnixStream::connect(&path).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
        let (out, took) = ask(&path, b"get=1\n\n");
        assert_eq!(out, "listen_port=51820\nerrno=0\n\n");
        assert!(took < CLIENT_TIMEOUT / 2, "answered after {took:?}");
        // The idle one is closed once its time is up, with no answer.
        idle.set_read_timeout(Some(CLIENT_TIMEOUT * 3))
            .expect("timeout");
        let t = Instant::now();
        let mut rest = Vec::new();
        let _ = idle.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert!(
            t.elapsed() < CLIENT_TIMEOUT * 2,
            "idle client held {:?}",
            t.elapsed()
        );
        server.stop();
        assert!(!path.exists(), "socket left after stop");
    }

    #[test]
    fn a_client_trickling_bytes_is_cut_at_the_timeout_in_all() {
        let (_dir, path, _server) = server();
        let mut slow = UnixStream::connect(&path).expect("connect");
        let t = Instant::now();
        // One byte every 200 ms: each read is quick, the request never ends.
        while t.elapsed() < CLIENT_TIMEOUT * 3 {
            if slow.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            t.elapsed() < CLIENT_TIMEOUT * 2,
            "trickling client kept {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn an_oversized_request_is_refused() {
        let (_dir, path, _server) = server();
        let mut big = b"set=1\n".to_vec();
        while big.len() <= MAX_REQUEST_BYTES {
            big.extend_from_slice(
                b"public_key=0000000000000000000000000000000000000000000000000000000000000000\n",
            );
        }
        big.extend_from_slice(b"\n");
        let (out, _) = ask(&path, &big);
        assert_eq!(out, format!("errno=-{}\n\n", libc::EMSGSIZE));
        // Under the cap, the same kind of request gets its ordinary answer.
        let (out, _) = ask(&path, b"set=1\nlisten_port=1\n\n");
        assert_eq!(out, format!("errno=-{}\n\n", libc::EPERM));
    }

    #[test]
    fn get_lists_peers_without_any_private_key() {
        let peer = PeerStats {
            public_key: crate::key::PublicKey::from_bytes([0xab; 32]).expect("key"),
            label: "device:1:mdupont".into(),
            address: Ipv4Addr::new(100, 64, 0, 2),
            endpoint: Some("198.18.0.2:40000".parse().expect("addr")),
            rx_bytes: 1200,
            rx_packets: 3,
            tx_bytes: 800,
            tx_packets: 2,
            last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
            session_active: true,
            flows: 0,
        };
        let idle = PeerStats {
            endpoint: None,
            last_handshake: None,
            public_key: crate::key::PublicKey::from_bytes([0xcd; 32]).expect("key"),
            ..peer.clone()
        };
        let text = render_get(&[peer, idle], 51820);
        assert_eq!(
            text,
            format!(
                "listen_port=51820\npublic_key={}\nendpoint=198.18.0.2:40000\n\
                 last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n\
                 rx_bytes=1200\ntx_bytes=800\nallowed_ip=100.64.0.2/32\nprotocol_version=1\n\
                 public_key={}\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
                 rx_bytes=1200\ntx_bytes=800\nallowed_ip=100.64.0.2/32\nprotocol_version=1\n\
                 errno=0\n\n",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
        assert!(!text.contains("private_key"));
    }
}
