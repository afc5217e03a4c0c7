//! Verification of the audit chain: hash links from the retention anchor, and consistency with every signed checkpoint.
//!
//! [`ChainCheck`] is fed the retained events in id order, from the database (the store's
//! `verify_audit_with`) or from an exported JSONL copy
//! ([`verify_export`]), and stops at the first event that is wrong. Given the audit public key
//! and the checkpoint file, it also checks that every signed head is still in the log (or was
//! legitimately purged below a signed anchor), that the anchor itself was signed, that nothing
//! signed is missing at the tail, and that every `audit.checkpoint` event of the log is one of
//! the file's.

use std::collections::{HashMap, HashSet};
use std::io::BufRead as _;
use std::path::Path;

use ed25519_dalek::VerifyingKey;

use super::checkpoint::Checkpoint;
use super::{Action, AuditEvent, Outcome, GENESIS_HASH};

/// Result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerification {
    Intact {
        events: u64,
    },
    /// The first event whose `prev_hash` or `hash` does not match.
    Broken {
        id: i64,
        reason: String,
    },
}

/// The first thing found wrong: the event id it concerns and what is wrong, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub id: i64,
    pub reason: String,
}

impl From<Broken> for AuditVerification {
    fn from(b: Broken) -> Self {
        AuditVerification::Broken {
            id: b.id,
            reason: b.reason,
        }
    }
}

/// A hash a signed checkpoint vouches for at one event id.
struct Vouched {
    hash: String,
    /// 1-based position of the checkpoint in the file.
    checkpoint: usize,
    ts: String,
}

/// What the checkpoints require of the walk.
struct Trusted {
    vouched: HashMap<i64, Vec<Vouched>>,
    /// Signatures of the file's checkpoints (each `audit.checkpoint` event must be one).
    signatures: HashSet<String>,
    /// The highest event id any checkpoint vouches for, and which checkpoint.
    tail: Option<(i64, usize, String)>,
    /// The highest `last_id` of the file: `audit.checkpoint` events for later heads were
    /// written after this copy of the file and cannot be checked against it.
    newest: i64,
    /// Last id whose hash matched a checkpoint (to bound where a rewrite began).
    last_matched: i64,
}

/// Walks a chain event by event. Build with [`ChainCheck::new`], feed with
/// [`ChainCheck::push`] in id order, end with [`ChainCheck::finish`].
pub struct ChainCheck {
    expected_id: i64,
    prev: String,
    count: u64,
    trusted: Option<Trusted>,
}

impl ChainCheck {
    /// A walk of the chain retained from `first_id`, whose first event links to `anchor_hash`.
    /// With `trust` (the audit public key, if there is one, and the checkpoint file's content),
    /// the checkpoints are checked first: each signed by that key, coherent, in order, and the
    /// anchor signed unless it is the genesis. Without a key, any checkpoint is a failure.
    pub fn new(
        first_id: i64,
        anchor_hash: &str,
        trust: Option<(Option<&VerifyingKey>, &[Checkpoint])>,
    ) -> Result<ChainCheck, Broken> {
        let mut check = ChainCheck {
            expected_id: first_id,
            prev: anchor_hash.to_string(),
            count: 0,
            trusted: None,
        };
        let Some((key, checkpoints)) = trust else {
            return Ok(check);
        };
        let mut t = Trusted {
            vouched: HashMap::new(),
            signatures: HashSet::new(),
            tail: None,
            last_matched: first_id - 1,
            newest: checkpoints
                .iter()
                .map(|c| c.last_id)
                .max()
                .unwrap_or(i64::MIN),
        };
        let mut previous: Option<&Checkpoint> = None;
        for (i, cp) in checkpoints.iter().enumerate() {
            let n = i + 1;
            let broken = |reason: String| Broken {
                id: cp.last_id,
                reason: format!("checkpoint {n} ({}): {reason}", cp.ts),
            };
            let Some(key) = key else {
                return Err(broken(
                    "no audit public key to check it with: give --public-key or [audit] signing_key_file".into(),
                ));
            };
            if !cp.signed_by(key) {
                return Err(broken(
                    "signature invalide ou autre clé / not signed by the audit key".into(),
                ));
            }
            if cp.events != cp.last_id - cp.first_id + 1 {
                return Err(broken(format!(
                    "{} events do not fit ids {}..={}",
                    cp.events, cp.first_id, cp.last_id
                )));
            }
            if let Some(p) = previous {
                if cp.last_id < p.last_id || cp.first_id < p.first_id {
                    return Err(broken("goes backwards from the previous checkpoint".into()));
                }
            }
            previous = Some(cp);
            t.signatures.insert(cp.signature.clone());
            for (id, hash) in [
                (cp.first_id - 1, &cp.anchor_hash),
                (cp.last_id, &cp.last_hash),
            ] {
                if id == first_id - 1 && *hash != anchor_hash {
                    return Err(Broken {
                        id: first_id,
                        reason: format!(
                            "the retention anchor (hash before event {first_id}) differs from the one signed in checkpoint {n} ({})",
                            cp.ts
                        ),
                    });
                }
                if id >= first_id {
                    t.vouched.entry(id).or_default().push(Vouched {
                        hash: hash.clone(),
                        checkpoint: n,
                        ts: cp.ts.clone(),
                    });
                    if t.tail.as_ref().is_none_or(|(tail, _, _)| id > *tail) {
                        t.tail = Some((id, n, cp.ts.clone()));
                    }
                }
            }
        }
        let genesis = first_id == 1 && anchor_hash == GENESIS_HASH;
        let signed_anchor = checkpoints
            .iter()
            .any(|cp| cp.first_id == first_id && cp.anchor_hash == anchor_hash);
        if !genesis && !signed_anchor {
            // The events gone start where the last signed anchor said the log started.
            let from = checkpoints
                .last()
                .map_or(first_id, |cp| cp.first_id.min(first_id));
            return Err(Broken {
                id: from,
                reason: format!(
                    "the log starts at event {first_id} but no signed purge checkpoint vouches for that anchor: events {from}..{first_id} were removed outside a retention purge"
                ),
            });
        }
        check.trusted = Some(t);
        Ok(check)
    }

    /// Checks the next event.
    pub fn push(&mut self, ev: &AuditEvent) -> Result<(), Broken> {
        let broken = |reason: String| Broken { id: ev.id, reason };
        if ev.id > self.expected_id {
            return Err(Broken {
                id: self.expected_id,
                reason: format!(
                    "event {} is missing (the next one is {})",
                    self.expected_id, ev.id
                ),
            });
        }
        if ev.id != self.expected_id {
            return Err(broken(format!(
                "expected event {}, found {}",
                self.expected_id, ev.id
            )));
        }
        if ev.prev_hash != self.prev {
            return Err(broken(format!(
                "prev_hash does not match the hash of event {}: an event was inserted, removed or changed there",
                ev.id - 1
            )));
        }
        if ev.compute_hash() != ev.hash {
            return Err(broken("hash does not match the event's content".into()));
        }
        if let Some(t) = self.trusted.as_mut() {
            for v in t.vouched.get(&ev.id).into_iter().flatten() {
                if v.hash != ev.hash {
                    return Err(broken(format!(
                        "hash differs from the one signed in checkpoint {} ({}): events {}..={} were rewritten",
                        v.checkpoint,
                        v.ts,
                        t.last_matched + 1,
                        ev.id
                    )));
                }
                t.last_matched = ev.id;
            }
            if ev.action == Action::AuditCheckpoint.as_str() {
                let sig = ev.details.get("signature").and_then(|s| s.as_str());
                let head = ev.details.get("last_id").and_then(|v| v.as_i64());
                let newer_than_file = head.is_some_and(|h| h > t.newest);
                if !newer_than_file && !sig.is_some_and(|s| t.signatures.contains(s)) {
                    return Err(broken(
                        "this audit.checkpoint event is not in the checkpoint file (forged, or another file)"
                            .into(),
                    ));
                }
            }
        }
        self.prev.clone_from(&ev.hash);
        self.expected_id += 1;
        self.count += 1;
        Ok(())
    }

    /// Ends the walk: the events checked, or what is missing at the tail.
    pub fn finish(self) -> Result<u64, Broken> {
        if let Some((tail, n, ts)) = self.trusted.and_then(|t| t.tail) {
            if tail >= self.expected_id {
                return Err(Broken {
                    id: self.expected_id,
                    reason: format!(
                        "events {}..={tail} are missing: checkpoint {n} ({ts}) signed a log reaching event {tail} (truncated)",
                        self.expected_id
                    ),
                });
            }
        }
        Ok(self.count)
    }
}

/// Errors reading an exported copy (not verification failures: those are [`Broken`]).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the export {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One line of `sesame audit export --format jsonl`, read back exactly as it was hashed.
fn parse_export_line(line: &str) -> Result<AuditEvent, String> {
    #[derive(serde::Deserialize)]
    struct Line {
        id: i64,
        ts: String,
        actor: String,
        action: String,
        target: String,
        outcome: String,
        source_ip: Option<String>,
        details: serde_json::Value,
        prev_hash: String,
        hash: String,
    }
    let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok(AuditEvent {
        id: l.id,
        ts: crate::time::parse("ts", &l.ts, crate::time::now_ms()).map_err(|e| e.to_string())?,
        actor: l.actor,
        action: l.action,
        target: l.target,
        outcome: Outcome::parse(&l.outcome).ok_or_else(|| format!("outcome {:?}", l.outcome))?,
        source_ip: l.source_ip,
        details: l.details,
        prev_hash: l.prev_hash,
        hash: l.hash,
    })
}

/// Verifies an exported JSONL copy of the whole log against the checkpoints, with no database.
/// The copy's first event sets the anchor: the genesis, or one a purge checkpoint signed.
pub fn verify_export(
    path: &Path,
    key: Option<&VerifyingKey>,
    checkpoints: &[Checkpoint],
) -> Result<AuditVerification, ExportError> {
    let read_err = |source| ExportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut check: Option<ChainCheck> = None;
    let mut last_id = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let ev = match parse_export_line(&line) {
            Ok(ev) => ev,
            Err(e) => {
                return Ok(AuditVerification::Broken {
                    id: last_id + 1,
                    reason: format!("line {} is not an exported audit event: {e}", i + 1),
                })
            }
        };
        last_id = ev.id;
        let c = match check.as_mut() {
            Some(c) => c,
            None => match ChainCheck::new(ev.id, &ev.prev_hash, Some((key, checkpoints))) {
                Ok(c) => check.insert(c),
                Err(b) => return Ok(b.into()),
            },
        };
        if let Err(b) = c.push(&ev) {
            return Ok(b.into());
        }
    }
    let check = match check {
        Some(c) => c,
        // An empty copy: only an empty, never-purged log matches it.
        None => match ChainCheck::new(1, GENESIS_HASH, Some((key, checkpoints))) {
            Ok(c) => c,
            Err(b) => return Ok(b.into()),
        },
    };
    Ok(match check.finish() {
        Ok(events) => AuditVerification::Intact { events },
        Err(b) => b.into(),
    })
}
