//! Emergency revocation through the local admin socket: `sesame devices revoke ID --emergency`
//! cuts a device at the running gateway even while the database is down; the revocation is
//! kept in the state directory and reaches the store (audited) when it answers again.
//!
//! Protocol: one JSON line each way over a Unix socket (`admin.sock`, mode 0600, beside the
//! gateway key): `{"revoke": ID, "reason": "...", "actor": "cli:root"}` →
//! `{"ok": true, "public_key": "..."}` or `{"ok": false, "error": "..."}`. Clients are served
//! concurrently, each with [`READ_TIMEOUT`] to send its line: an idle or stuck client never
//! delays a revocation. `ok: true` is sent only once the revocation is on disk (file and
//! directory synced) and the device is out of the gateway's peer set.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{watch, Semaphore};

use crate::audit::AuditContext;
use crate::store::{Store, StoreError};

use super::peer_cache::{PeerCache, PeerCacheError};
use super::PeerSink;
use crate::control::site_gateway::state::SiteState;
use crate::key::PublicKey;

/// The admin socket, in the gateway's state directory.
pub const SOCKET_FILE: &str = "admin.sock";
/// Revocations made at the gateway, not yet written to the store.
pub const PENDING_FILE: &str = "pending-revocations.json";
/// How long a client may take to send its request line before it is answered with an error
/// and disconnected.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line read.
const MAX_REQUEST: u64 = 4096;
/// Clients served at once; past this, new ones wait for a slot (at most [`READ_TIMEOUT`]
/// plus one revocation each).
const MAX_CLIENTS: usize = 16;
/// How long the CLI waits for the gateway's answer.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an emergency revocation failed.
#[derive(Debug, thiserror::Error)]
pub enum EmergencyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("device {0} is not in the gateway's peer set (unknown, suspended or already revoked)")]
    UnknownDevice(i64),
    #[error("the gateway refused: {0}")]
    Refused(String),
    #[error("{path}: no answer from the gateway within {secs} s")]
    NoAnswer { path: PathBuf, secs: u64 },
}

/// One revocation made at the gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingRevocation {
    pub device_id: i64,
    pub public_key: String,
    pub actor: String,
    pub reason: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    revoke: i64,
    reason: String,
    actor: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Response {
    ok: bool,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The gateway side: pending revocations and how to find a device's key without the store.
pub struct Emergency {
    dir: PathBuf,
    pending: parking_lot::Mutex<Vec<PendingRevocation>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EmergencyError + '_ {
    move |source| EmergencyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Emergency {
    /// Loads the revocations still pending from a previous run.
    pub fn open(state_dir: &Path) -> Result<Emergency, EmergencyError> {
        let path = state_dir.join(PENDING_FILE);
        let pending = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| EmergencyError::Json {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Emergency {
            dir: state_dir.to_path_buf(),
            pending: parking_lot::Mutex::new(pending),
        })
    }

    /// Device ids revoked at the gateway and not yet in the store: never published.
    pub fn pending_ids(&self) -> HashSet<i64> {
        self.pending.lock().iter().map(|p| p.device_id).collect()
    }

    /// Writes the pending list and syncs it (file and directory) before returning: what the
    /// socket acknowledges survives a crash or a power cut.
    fn persist(&self, pending: &[PendingRevocation]) -> Result<(), EmergencyError> {
        let path = self.dir.join(PENDING_FILE);
        let body = serde_json::to_vec(pending).map_err(|source| EmergencyError::Json {
            path: path.clone(),
            source,
        })?;
        crate::durable::replace(&path, 0o600, &[&body]).map_err(|e| EmergencyError::Io {
            path: e.path,
            source: e.source,
        })
    }

    /// Cuts device `id` at the gateway (its key found in the peer cache) and records it.
    pub fn revoke(
        &self,
        sink: &dyn PeerSink,
        id: i64,
        actor: &str,
        reason: &str,
    ) -> Result<String, EmergencyError> {
        let device_key = self.lookup(sink, id)?;
        let public_key = device_key.to_base64();
        let mut pending = self.pending.lock();
        if !pending.iter().any(|p| p.device_id == id) {
            pending.push(PendingRevocation {
                device_id: id,
                public_key: public_key.clone(),
                actor: actor.to_string(),
                reason: reason.to_string(),
            });
            self.persist(&pending)?;
        }
        drop(pending);
        sink.remove_peer(&device_key);
        tracing::warn!(
            device = id,
            actor,
            reason,
            "emergency revocation at the gateway"
        );
        Ok(public_key)
    }

    /// The key of device `id`: from the peer cache of `sesame serve`, else from the feed cache
    /// of a site gateway.
    fn lookup(&self, sink: &dyn PeerSink, id: i64) -> Result<PublicKey, EmergencyError> {
        let refused = |e: PeerCacheError| EmergencyError::Refused(e.to_string());
        let cache = PeerCache::open(&self.dir).map_err(refused)?;
        let public = sink.public_key();
        if let Some((_, devices)) = cache.load(&public).map_err(refused)? {
            if let Some(d) = devices.iter().find(|d| d.id == id) {
                return Ok(d.public_key);
            }
        }
        let site = cache.sibling(crate::control::site_gateway::cache::SITE_CACHE_FILE);
        if let Some((_, state)) = site.load_value::<SiteState>(&public).map_err(refused)? {
            if let Some(p) = state.peers.values().find(|p| p.device_id == id) {
                return PublicKey::parse(&p.public_key)
                    .map_err(|e| EmergencyError::Refused(e.to_string()));
            }
        }
        Err(EmergencyError::UnknownDevice(id))
    }

    /// Writes pending revocations to the store (`device.revoked`, audited with the actor who
    /// asked); returns how many were applied. Stops at the first store error.
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let todo = self.pending.lock().clone();
        let mut done = 0;
        for p in &todo {
            let ctx = AuditContext::new(p.actor.clone(), None);
            let reason = format!("emergency revocation at the gateway: {}", p.reason);
            match store.revoke_device(p.device_id, &reason, &ctx).await {
                Ok(_) | Err(StoreError::DeviceRevoked(_)) | Err(StoreError::DeviceNotFound(_)) => {
                    done += 1;
                    let mut pending = self.pending.lock();
                    pending.retain(|x| x.device_id != p.device_id);
                    if let Err(e) = self.persist(&pending) {
                        tracing::warn!(error = %e, "cannot update the pending revocations file");
                    }
                    tracing::info!(
                        device = p.device_id,
                        "emergency revocation written to the store"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl Response {
    fn refused(error: String) -> Response {
        Response {
            ok: false,
            public_key: None,
            error: Some(error),
        }
    }
}

/// The socket file, removed when the server stops, whichever way its task ends (shutdown,
/// an error, the runtime dropped at exit).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves the admin socket until `shutdown` turns true, each client on its own task; removes
/// the socket file when it stops.
pub async fn serve_socket(
    emergency: Arc<Emergency>,
    sink: Arc<dyn PeerSink>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), EmergencyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = emergency.dir.join(SOCKET_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(io(&path))?;
    let _file = SocketFile(path.clone());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let emergency = Arc::clone(&emergency);
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            serve_client(stream, emergency, sink).await;
            drop(slot);
        });
    }
    Ok(())
}

/// One client: its request line within [`READ_TIMEOUT`], the revocation (blocking file I/O, off
/// the runtime's threads), the answer.
async fn serve_client(
    stream: tokio::net::UnixStream,
    emergency: Arc<Emergency>,
    sink: Arc<dyn PeerSink>,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let answer = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Response::refused(format!("no request within {} s", READ_TIMEOUT.as_secs())),
        Ok(Err(e)) => Response::refused(e.to_string()),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::refused(format!("bad request: {e}")),
            Ok(req) => {
                let revoked = tokio::task::spawn_blocking(move || {
                    emergency.revoke(&*sink, req.revoke, &req.actor, &req.reason)
                })
                .await;
                match revoked {
                    Ok(Ok(k)) => Response {
                        ok: true,
                        public_key: Some(k),
                        error: None,
                    },
                    Ok(Err(e)) => Response::refused(e.to_string()),
                    Err(e) => Response::refused(format!("revocation task failed: {e}")),
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(READ_TIMEOUT, write.write_all(&out)).await;
}

/// The CLI side: asks the gateway whose state directory is `state_dir` to cut device `id`.
pub fn request(
    state_dir: &Path,
    id: i64,
    actor: &str,
    reason: &str,
) -> Result<String, EmergencyError> {
    let path = state_dir.join(SOCKET_FILE);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(io(&path))?;
    stream
        .set_read_timeout(Some(CLI_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CLI_TIMEOUT)))
        .map_err(io(&path))?;
    let mut req = serde_json::to_vec(&Request {
        revoke: id,
        reason: reason.to_string(),
        actor: actor.to_string(),
    })
    .map_err(|source| EmergencyError::Json {
        path: path.clone(),
        source,
    })?;
    req.push(b'\n');
    stream.write_all(&req).map_err(io(&path))?;
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Err(EmergencyError::NoAnswer {
                path,
                secs: CLI_TIMEOUT.as_secs(),
            })
        }
        Err(e) => return Err(io(&path)(e)),
    }
    let r: Response = serde_json::from_str(&line).map_err(|source| EmergencyError::Json {
        path: path.clone(),
        source,
    })?;
    match (r.ok, r.public_key) {
        (true, Some(k)) => Ok(k),
        _ => Err(EmergencyError::Refused(r.error.unwrap_or_default())),
    }
}

#[cfg(test)]
#[path = "emergency_tests.rs"]
mod tests;
