//! Signed checkpoints: the Ed25519 audit key, chain heads signed with it, and the append-only checkpoint file.
//!
//! A checkpoint vouches, from outside the database, for the state of the chain at one moment:
//! where the retained part starts (first id and the anchor hash it links to), where it ends
//! (last id and hash) and how many events lie between. Someone holding the database but not the
//! key cannot forge one, so `verify` can tell a rewritten, truncated or wrongly purged log from
//! an intact one. The signed message is a fixed prefix plus the canonical JSON of every field
//! but the signature.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::canonical_json;
use crate::gateway::keys::{self, KeyError};

/// Domain separation: a checkpoint signature cannot be replayed as any other signed message.
const SIGNED_PREFIX: &[u8] = b"sesame-audit-checkpoint-v1\n";

/// The fixed marker of a checkpoint's log line (the off-host copy): the line is
/// `SESAME_AUDIT_CHECKPOINT {canonical JSON of the checkpoint}`, found with
/// `journalctl -u sesame -o cat | grep SESAME_AUDIT_CHECKPOINT`, in a full journal line
/// (`Dec 07 12:00:00 host sesame[123]: …`) and inside the JSON of `[log] format = "json"` alike.
pub const LOG_MARKER: &str = "SESAME_AUDIT_CHECKPOINT";
/// The tracing target of that line; `telemetry` keeps it at `info` whatever `[log] level` says.
pub const LOG_TARGET: &str = crate::telemetry::ANCHOR_TARGET;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("clé d'audit / audit signing key: {0}")]
    Key(#[source] KeyError),
    #[error(
        "clé d'audit introuvable : {path} / audit signing key {path} not found: create it with `sesame keygen --audit --out {path}` (or start `sesame serve` once)"
    )]
    KeyMissing { path: PathBuf },
    #[error(
        "clé publique d'audit invalide / invalid audit public key {text:?}: give the base64 printed by `sesame keygen --audit`"
    )]
    PublicKey { text: String },
    #[error("cannot write the checkpoint file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the checkpoint file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a checkpoint ({source}); the checkpoint file is one JSON object per line")]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}:{line}: ligne {LOG_MARKER} illisible / unreadable {LOG_MARKER} line: {why}")]
    LogLine {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// The Ed25519 key that signs checkpoints; its file holds the 32-byte seed in base64, mode 0600.
pub struct AuditKey(SigningKey);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuditKey")
            .field(&self.public_base64())
            .finish()
    }
}

impl AuditKey {
    /// Reads the key; refuses a missing file or one that group or others may read.
    pub fn load(path: &Path) -> Result<AuditKey, CheckpointError> {
        match keys::read_secret_file(path, "audit.signing_key_file") {
            Ok(seed) => Ok(AuditKey(SigningKey::from_bytes(&seed))),
            Err(KeyError::Missing { .. }) => Err(CheckpointError::KeyMissing {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(CheckpointError::Key(e)),
        }
    }

    /// Writes a new random key (mode 0600, never overwriting an existing file).
    pub fn generate(path: &Path) -> Result<AuditKey, CheckpointError> {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        keys::write_secret_file(path, &key.to_bytes()).map_err(CheckpointError::Key)?;
        Ok(AuditKey(key))
    }

    /// The key at `path`, created first if the file does not exist (`sesame serve`'s first start).
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(AuditKey, bool), CheckpointError> {
        match AuditKey::load(path) {
            Ok(k) => Ok((k, false)),
            Err(CheckpointError::KeyMissing { .. }) => Ok((AuditKey::generate(path)?, true)),
            Err(e) => Err(e),
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// The public half in base64, as `sesame keygen --audit` prints it.
    pub fn public_base64(&self) -> String {
        crate::key::encode_base64(self.0.verifying_key().as_bytes())
    }
}

/// The public half of the key at `path`, or `None` if there is no such file (nothing was ever
/// signed with it, or it lives elsewhere: then only checkpoint-free chains verify).
pub fn load_public_key(path: &Path) -> Result<Option<VerifyingKey>, CheckpointError> {
    match AuditKey::load(path) {
        Ok(k) => Ok(Some(k.verifying_key())),
        Err(CheckpointError::KeyMissing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses a base64 Ed25519 public key (`--public-key`).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, CheckpointError> {
    let bad = || CheckpointError::PublicKey {
        text: text.to_string(),
    };
    let bytes = crate::key::decode_base64(text).map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

/// Where the retained chain starts and ends, as read inside a writer transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Id of the first retained event (1 if never purged).
    pub first_id: i64,
    /// The `prev_hash` the first retained event carries (64 zeros if never purged).
    pub anchor_hash: String,
    /// Id of the last event (`first_id - 1` when nothing is retained).
    pub last_id: i64,
    /// Hash of the last event (`anchor_hash` when nothing is retained).
    pub last_hash: String,
}

impl ChainHead {
    /// Events between the anchor and the head.
    pub fn events(&self) -> i64 {
        (self.last_id - self.first_id + 1).max(0)
    }
}

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointReason {
    /// Every `[audit] checkpoint_interval`.
    Interval,
    /// Just before a retention purge: vouches for the new anchor.
    Purge,
    /// `sesame serve` stopping.
    Shutdown,
}

/// One signed chain head: a line of the checkpoint file and the details of an `audit.checkpoint`
/// event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// When it was signed (RFC 3339 UTC, ms).
    pub ts: String,
    pub reason: CheckpointReason,
    /// Events in the retained chain: `last_id - first_id + 1`.
    pub events: i64,
    pub first_id: i64,
    pub anchor_hash: String,
    pub last_id: i64,
    pub last_hash: String,
    /// The signer's public key (base64).
    pub public_key: String,
    /// Ed25519 signature (base64) of the other fields.
    pub signature: String,
}

impl Checkpoint {
    /// Signs `head` at `now_ms`.
    pub fn sign(key: &AuditKey, head: &ChainHead, now_ms: i64, reason: CheckpointReason) -> Self {
        let mut cp = Checkpoint {
            ts: crate::time::format(now_ms),
            reason,
            events: head.events(),
            first_id: head.first_id,
            anchor_hash: head.anchor_hash.clone(),
            last_id: head.last_id,
            last_hash: head.last_hash.clone(),
            public_key: key.public_base64(),
            signature: String::new(),
        };
        let sig = key.0.sign(&cp.signed_message());
        cp.signature = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        cp
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut fields = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = fields.as_object_mut() {
            map.remove("signature");
        }
        let mut msg = SIGNED_PREFIX.to_vec();
        msg.extend_from_slice(canonical_json(&fields).as_bytes());
        msg
    }

    /// Whether `key` signed exactly these fields.
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        if self.public_key != crate::key::encode_base64(key.as_bytes()) {
            return false;
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        key.verify(&self.signed_message(), &sig).is_ok()
    }

    /// The checkpoint as JSON (the details of its `audit.checkpoint` event).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Appends `cp` as one line to the checkpoint file (created 0640 if missing) and syncs it to
/// disk before returning.
pub fn append_to_file(path: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(err)?;
    let line = format!("{}\n", canonical_json(&cp.to_json()));
    file.write_all(line.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    if created {
        // The new directory entry must survive a crash too.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Writes `cp` as one log line (the off-host copy: journald, the académie's log collection),
/// marked with [`LOG_MARKER`].
pub fn log_line(cp: &Checkpoint) {
    tracing::info!(target: LOG_TARGET, "{LOG_MARKER} {}", canonical_json(&cp.to_json()));
}

/// The checkpoint of one line holding [`LOG_MARKER`]: the JSON right after the marker, as is
/// (text logs) or inside JSON strings (`[log] format = "json"`, journald's own JSON), each
/// level of escaping undone.
pub fn parse_log_line(line: &str) -> Result<Checkpoint, String> {
    let at = line
        .find(LOG_MARKER)
        .ok_or_else(|| format!("no {LOG_MARKER}"))?;
    let mut rest = line[at + LOG_MARKER.len()..].trim_start().to_string();
    // Each level of JSON string around the message doubles the escaping: at most a few.
    for _ in 0..4 {
        if rest.starts_with("{\"") {
            let first = serde_json::Deserializer::from_str(&rest)
                .into_iter::<Checkpoint>()
                .next();
            return match first {
                Some(Ok(cp)) => Ok(cp),
                Some(Err(e)) => Err(format!("not a checkpoint: {e}")),
                None => Err("nothing after the marker".into()),
            };
        }
        if !rest.starts_with("{\\") {
            break;
        }
        // Inside a JSON string: read the string's remaining content, unescaped.
        let quoted = format!("\"{rest}");
        rest = match serde_json::Deserializer::from_str(&quoted)
            .into_iter::<String>()
            .next()
        {
            Some(Ok(s)) => s,
            _ => return Err("escaped JSON that does not end".into()),
        };
    }
    Err(format!(
        "the marker must be followed by the checkpoint's JSON object ({LOG_MARKER} {{...}})"
    ))
}

/// Every checkpoint of `text`, the content of `path`: the checkpoint file (one JSON object per
/// line), or captured log lines when any line holds [`LOG_MARKER`] (then only those count, the
/// others are skipped).
pub fn parse_text(path: &Path, text: &str) -> Result<Vec<Checkpoint>, CheckpointError> {
    let lines = text.lines().enumerate();
    if text.contains(LOG_MARKER) {
        return lines
            .filter(|(_, l)| l.contains(LOG_MARKER))
            .map(|(i, l)| {
                parse_log_line(l).map_err(|why| CheckpointError::LogLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    why,
                })
            })
            .collect();
    }
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| CheckpointError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// Every checkpoint in the file, in order: the checkpoint file itself or log lines carrying
/// [`LOG_MARKER`] ([`parse_text`]). A missing file holds none.
pub fn read_file(path: &Path) -> Result<Vec<Checkpoint>, CheckpointError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_text(path, &text)
}

/// What seals chain heads: the key and the file. The store calls it inside the writer
/// transaction that reads the head, so no event slips in between.
#[derive(Debug)]
pub struct Sealer {
    pub key: AuditKey,
    pub file: PathBuf,
}

impl Sealer {
    /// Signs `head`, appends it to the checkpoint file (synced), writes it as a log line (the
    /// off-host copy, [`log_line`]) and returns it.
    pub fn seal(
        &self,
        head: &ChainHead,
        now_ms: i64,
        reason: CheckpointReason,
    ) -> Result<Checkpoint, CheckpointError> {
        let cp = Checkpoint::sign(&self.key, head, now_ms, reason);
        append_to_file(&self.file, &cp)?;
        log_line(&cp);
        Ok(cp)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    fn head() -> ChainHead {
        ChainHead {
            first_id: 5,
            anchor_hash: "a".repeat(64),
            last_id: 9,
            last_hash: "b".repeat(64),
        }
    }

    #[test]
    fn key_is_0600_reloads_and_refuses_open_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let (k, created) = AuditKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let (again, created) = AuditKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public_base64(), k.public_base64());
        assert!(AuditKey::generate(&path).is_err(), "never overwrites");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AuditKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
        let e = AuditKey::load(&dir.path().join("none")).unwrap_err();
        assert!(e.to_string().contains("sesame keygen --audit"), "{e}");
    }

    #[test]
    fn signature_covers_every_field_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = AuditKey::generate(&dir.path().join("k")).unwrap();
        let other = AuditKey::generate(&dir.path().join("o")).unwrap();
        let cp = Checkpoint::sign(&k, &head(), 1_767_603_600_000, CheckpointReason::Interval);
        assert_eq!(cp.events, 5);
        assert_eq!(cp.ts, "2026-01-05T09:00:00.000Z");
        assert!(cp.signed_by(&k.verifying_key()));
        assert!(!cp.signed_by(&other.verifying_key()));
        for tamper in [
            |c: &mut Checkpoint| c.last_id += 1,
            |c: &mut Checkpoint| c.first_id += 1,
            |c: &mut Checkpoint| c.events += 1,
            |c: &mut Checkpoint| c.last_hash = "c".repeat(64),
            |c: &mut Checkpoint| c.anchor_hash = "c".repeat(64),
            |c: &mut Checkpoint| c.ts = "2026-01-05T09:00:00.001Z".into(),
            |c: &mut Checkpoint| c.reason = CheckpointReason::Purge,
        ] {
            let mut c = cp.clone();
            tamper(&mut c);
            assert!(!c.signed_by(&k.verifying_key()), "{c:?}");
        }
        // Re-signed by another key but claiming the first one: refused.
        let mut forged = Checkpoint::sign(&other, &head(), 0, CheckpointReason::Interval);
        forged.public_key = k.public_base64();
        assert!(!forged.signed_by(&k.verifying_key()));
        assert_eq!(
            parse_public_key(&k.public_base64()).unwrap(),
            k.verifying_key()
        );
        assert!(parse_public_key("nope").is_err());
    }

    #[test]
    fn file_appends_lines_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.jsonl");
        assert!(read_file(&path).unwrap().is_empty());
        let sealer = Sealer {
            key: AuditKey::generate(&dir.path().join("k")).unwrap(),
            file: path.clone(),
        };
        let a = sealer.seal(&head(), 1, CheckpointReason::Interval).unwrap();
        let b = sealer.seal(&head(), 2, CheckpointReason::Shutdown).unwrap();
        assert_eq!(read_file(&path).unwrap(), vec![a, b]);
        std::fs::write(&path, "{}\nnot json\n").unwrap();
        let e = read_file(&path).unwrap_err().to_string();
        assert!(e.contains(":1:"), "{e}");
    }

    /// What tracing writes for `cp`, as `sesame serve` formats it (text, then JSON lines).
    fn logged(cp: &Checkpoint) -> (String, String) {
        use crate::telemetry::MemoryLog;
        use tracing_subscriber::layer::SubscriberExt as _;
        let (text, json) = (MemoryLog::default(), MemoryLog::default());
        let (t, j) = (text.clone(), json.clone());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(move || t.clone()))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(move || j.clone()),
            );
        tracing::subscriber::with_default(subscriber, || log_line(cp));
        (text.text(), json.text())
    }

    #[test]
    fn log_lines_are_read_back_in_every_form_the_journal_gives() {
        let dir = tempfile::tempdir().unwrap();
        let k = AuditKey::generate(&dir.path().join("k")).unwrap();
        let a = Checkpoint::sign(&k, &head(), 1, CheckpointReason::Interval);
        let b = Checkpoint::sign(&k, &head(), 2, CheckpointReason::Shutdown);
        let (text_a, json_a) = logged(&a);
        let (text_b, json_b) = logged(&b);
        assert!(text_a.contains(LOG_MARKER) && json_a.contains(LOG_MARKER));
        let prefix = "Dec 07 12:00:00 host sesame[123]: ";
        // `journalctl -o cat`, a full journal line, and each with `[log] format = "json"`.
        for (first, second) in [
            (text_a.clone(), text_b.clone()),
            (format!("{prefix}{text_a}"), format!("{prefix}{text_b}")),
            (json_a.clone(), json_b.clone()),
            (format!("{prefix}{json_a}"), format!("{prefix}{json_b}")),
        ] {
            let captured =
                format!("{prefix}INFO other line\n{first}not ours {{\"a\":1}}\n\n{second}");
            let path = dir.path().join("journal.log");
            std::fs::write(&path, &captured).unwrap();
            assert_eq!(
                read_file(&path).unwrap(),
                vec![a.clone(), b.clone()],
                "{captured}"
            );
        }
        // journald's own JSON (`-o json`) around the JSON log line: two levels of escaping.
        let outer = serde_json::json!({ "MESSAGE": json_a.trim_end() }).to_string();
        assert_eq!(parse_log_line(&outer).unwrap(), a);
        // A marked line that is not a checkpoint is an error naming its line.
        let path = dir.path().join("bad.log");
        let cut = &text_a[..text_a.len() - 20];
        std::fs::write(&path, format!("x\n{text_b}{cut}\n")).unwrap();
        let e = read_file(&path).unwrap_err().to_string();
        assert!(e.contains("bad.log:3:") && e.contains(LOG_MARKER), "{e}");
        std::fs::write(&path, format!("{LOG_MARKER} hello\n")).unwrap();
        let e = read_file(&path).unwrap_err().to_string();
        assert!(e.contains(":1:"), "{e}");
    }
}
