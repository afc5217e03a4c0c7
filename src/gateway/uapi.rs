//! The WireGuard cross-platform userspace API on `/var/run/wireguard/<interface>.sock`, read-only, so stock `wg show` works.
//!
//! `get=1` answers the interface's listen port and every peer (public key, endpoint, latest
//! handshake, transfer, allowed IP), never the private key: wireguard-tools treats the
//! `private_key` line as optional (without it `wg` prints no interface key). `set=1` is refused
//! with EPERM: Sesame owns the peer set. Hand-written because the protocol is a dozen lines of
//! `key=value` text and no maintained crate serves it (wireguard-go and boringtun embed theirs).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use super::{GatewayHandle, PeerStats};

/// Where wireguard-tools looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// A client that sends nothing for this long is dropped (the server handles one at a time).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// A request longer than this is not a `get` or `set` we answer.
const MAX_REQUEST_LINES: usize = 10_000;

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

    /// As [`UapiServer::start`], at any path (tests).
    pub fn start_at(
        gateway: GatewayHandle,
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
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Ok(conn) = conn {
                            if let Err(e) = answer(conn, &gateway, listen_port) {
                                tracing::debug!(error = %e, "wg API client went away");
                            }
                        }
                    }
                })?
        };
        tracing::info!(socket = %path.display(), "WireGuard API (read-only) listening: `wg show` works");
        Ok(UapiServer {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops answering and removes the socket file.
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

/// One client: reads the request up to its blank line, writes the answer.
fn answer(conn: UnixStream, gateway: &GatewayHandle, listen_port: u16) -> std::io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    // Drain the rest of the request (a `set` carries lines) up to the blank line.
    let mut line = String::new();
    for _ in 0..MAX_REQUEST_LINES {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\n" {
            break;
        }
    }
    let reply = match first.trim_end() {
        "get=1" => render_get(&gateway.peer_stats(), listen_port),
        // EPERM: the configuration comes from Sesame (enrolment, config file), not from `wg set`.
        // Negative, as wireguard-go writes it (wg prints strerror of its opposite).
        "set=1" => format!("errno=-{}\n\n", libc::EPERM),
        _ => format!("errno=-{}\n\n", libc::EINVAL),
    };
    let mut conn = conn;
    conn.write_all(reply.as_bytes())
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `get=1` answer: the device, then one block per peer, then `errno=0`.
pub fn render_get(peers: &[PeerStats], listen_port: u16) -> String {
    let mut out = format!("listen_port={listen_port}\n");
    for p in peers {
        out.push_str(&format!("public_key={}\n", hex(&p.public_key)));
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

    #[test]
    fn get_lists_peers_without_any_private_key() {
        let peer = PeerStats {
            public_key: [0xab; 32],
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
            public_key: [0xcd; 32],
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
