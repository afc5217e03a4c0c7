//! Emergency revocation through the local admin socket: `sesame devices revoke ID --emergency`
//! cuts a device at the running gateway even while the database is down; the revocation is
//! kept in the state directory and reaches the store (audited) when it answers again.
//!
//! Protocol: one JSON line each way over a Unix socket (`admin.sock`, mode 0600, beside the
//! gateway key): `{"revoke": ID, "reason": "...", "actor": "cli:root"}` →
//! `{"ok": true, "public_key": "..."}` or `{"ok": false, "error": "..."}`.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::audit::AuditContext;
use crate::store::{Store, StoreError};

use super::peer_cache::PeerCache;
use super::PeerSink;

/// The admin socket, in the gateway's state directory.
pub const SOCKET_FILE: &str = "admin.sock";
/// Revocations made at the gateway, not yet written to the store.
pub const PENDING_FILE: &str = "pending-revocations.json";

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

    fn persist(&self, pending: &[PendingRevocation]) -> Result<(), EmergencyError> {
        let path = self.dir.join(PENDING_FILE);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(pending).map_err(|source| EmergencyError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, body).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Cuts device `id` at the gateway (its key found in the peer cache) and records it.
    pub fn revoke(
        &self,
        sink: &dyn PeerSink,
        id: i64,
        actor: &str,
        reason: &str,
    ) -> Result<String, EmergencyError> {
        let cache =
            PeerCache::open(&self.dir).map_err(|e| EmergencyError::Refused(e.to_string()))?;
        let devices = cache
            .load(&sink.public_key())
            .map_err(|e| EmergencyError::Refused(e.to_string()))?
            .map(|(_, d)| d)
            .unwrap_or_default();
        let device = devices
            .iter()
            .find(|d| d.id == id)
            .and_then(|d| d.active())
            .ok_or(EmergencyError::UnknownDevice(id))?;
        let public_key = crate::gateway::keys::encode(&device.public_key);
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
        sink.remove_peer(&device.public_key);
        tracing::warn!(
            device = id,
            actor,
            reason,
            "emergency revocation at the gateway"
        );
        Ok(public_key)
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

/// Serves the admin socket until `shutdown` turns true.
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
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(read.take(4096));
        let answer = match reader.read_line(&mut line).await {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => match emergency.revoke(&*sink, req.revoke, &req.actor, &req.reason) {
                    Ok(k) => Response {
                        ok: true,
                        public_key: Some(k),
                        error: None,
                    },
                    Err(e) => Response {
                        ok: false,
                        public_key: None,
                        error: Some(e.to_string()),
                    },
                },
                Err(e) => Response {
                    ok: false,
                    public_key: None,
                    error: Some(format!("bad request: {e}")),
                },
            },
            Err(e) => Response {
                ok: false,
                public_key: None,
                error: Some(e.to_string()),
            },
        };
        let mut out = serde_json::to_vec(&answer).unwrap_or_default();
        out.push(b'\n');
        let _ = write.write_all(&out).await;
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
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
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
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
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(io(&path))?;
    let r: Response = serde_json::from_str(&line).map_err(|source| EmergencyError::Json {
        path: path.clone(),
        source,
    })?;
    match (r.ok, r.public_key) {
        (true, Some(k)) => Ok(k),
        _ => Err(EmergencyError::Refused(r.error.unwrap_or_default())),
    }
}
