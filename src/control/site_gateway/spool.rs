//! The site gateway's event spool: audit records waiting for a portal, on disk beside the
//! gateway key (one JSON line each, fsynced per batch), bounded, delivered oldest first.
//!
//! File: a first line `{"next_seq":N}`, then one [`GatewayEvent`] per line. Appends go to the
//! end; once a batch is delivered the file is rewritten with what remains
//! ([`crate::durable::replace`]). Over [`MAX_RECORDS`] the NEWEST records are dropped (the
//! start of an incident is kept), counted, and one `audit.overflow` record saying how many is
//! queued as soon as there is room again.

use std::collections::VecDeque;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::json;

use crate::api::feed::GatewayEvent;
use crate::audit::NewAuditEvent;
use crate::time;

/// The spool file, in the gateway key's folder.
pub const SPOOL_FILE: &str = "events.spool";
/// Most records kept while no portal answers (a 10-minute outage of a busy site writes a few
/// thousand: flows are aggregated per window).
pub const MAX_RECORDS: usize = 50_000;

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    next_seq: u64,
}

/// Why the spool file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

struct Inner {
    records: VecDeque<GatewayEvent>,
    next_seq: u64,
    /// Records dropped since the last `audit.overflow` record was queued.
    overflow: u64,
}

/// The spool, shared by the audit writer (appends) and the shipper (delivers).
pub struct Spool {
    path: PathBuf,
    max: usize,
    inner: Mutex<Inner>,
    pub spooled: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
    /// Wakes the shipper when records arrive.
    pub arrived: tokio::sync::Notify,
}

impl Spool {
    /// Opens the spool in `dir`, reloading records a previous run left (an unreadable line is
    /// skipped and logged).
    pub fn open(dir: &Path, max: usize) -> Result<Spool, SpoolError> {
        let path = dir.join(SPOOL_FILE);
        let err = |source| SpoolError {
            path: path.clone(),
            source,
        };
        let mut records = VecDeque::new();
        let mut next_seq = 1;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut lines = text.lines();
                if let Some(h) = lines
                    .next()
                    .and_then(|l| serde_json::from_str::<Header>(l).ok())
                {
                    next_seq = h.next_seq;
                }
                for line in lines.filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<GatewayEvent>(line) {
                        Ok(r) => {
                            next_seq = next_seq.max(r.seq + 1);
                            records.push_back(r);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, file = %path.display(), "unreadable spooled record skipped")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let n = records.len() as u64;
        let spool = Spool {
            path,
            max,
            inner: Mutex::new(Inner {
                records,
                next_seq,
                overflow: 0,
            }),
            spooled: AtomicU64::new(n),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            arrived: tokio::sync::Notify::new(),
        };
        spool.rewrite(&spool.inner.lock())?;
        if n > 0 {
            tracing::info!(
                records = n,
                "audit records spooled by a previous run: delivered when a portal answers"
            );
        }
        Ok(spool)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `events` (fsynced once for the batch); over the bound the newest are dropped
    /// and counted. An I/O error is logged: the records stay in memory and the next rewrite
    /// writes them.
    pub fn append(&self, events: impl IntoIterator<Item = NewAuditEvent>) {
        let mut inner = self.inner.lock();
        let mut batch = Vec::new();
        let now = time::now_ms();
        if inner.overflow > 0 && inner.records.len() < self.max {
            let lost = std::mem::take(&mut inner.overflow);
            let seq = inner.next_seq;
            inner.next_seq += 1;
            batch.push(overflow_record(seq, now, lost));
        }
        for ev in events {
            if inner.records.len() + batch.len() >= self.max {
                inner.overflow += 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let seq = inner.next_seq;
            inner.next_seq += 1;
            batch.push(record(seq, now, ev));
        }
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.append_lines(&batch) {
            tracing::error!(error = %e, "cannot append to the event spool: records kept in memory");
        }
        self.spooled
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        inner.records.extend(batch);
        drop(inner);
        self.arrived.notify_one();
    }

    fn append_lines(&self, batch: &[GatewayEvent]) -> Result<(), SpoolError> {
        let err = |source| SpoolError {
            path: self.path.clone(),
            source,
        };
        let mut text = Vec::new();
        for r in batch {
            // A GatewayEvent always serializes (strings, numbers and a JSON value).
            serde_json::to_writer(&mut text, r).map_err(|e| err(e.into()))?;
            text.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(err)?;
        f.write_all(&text).and_then(|()| f.sync_data()).map_err(err)
    }

    /// The oldest records, at most `n`, to deliver.
    pub fn peek(&self, n: usize) -> Vec<GatewayEvent> {
        self.inner.lock().records.iter().take(n).cloned().collect()
    }

    /// Forgets the records up to `last_seq` (delivered), rewriting the file.
    pub fn delivered(&self, last_seq: u64) -> Result<(), SpoolError> {
        let mut inner = self.inner.lock();
        let before = inner.records.len();
        while inner.records.front().is_some_and(|r| r.seq <= last_seq) {
            inner.records.pop_front();
        }
        self.delivered
            .fetch_add((before - inner.records.len()) as u64, Ordering::Relaxed);
        self.rewrite(&inner)
    }

    fn rewrite(&self, inner: &Inner) -> Result<(), SpoolError> {
        let mut text = serde_json::to_vec(&Header {
            next_seq: inner.next_seq,
        })
        .map_err(|e| SpoolError {
            path: self.path.clone(),
            source: e.into(),
        })?;
        text.push(b'\n');
        for r in &inner.records {
            serde_json::to_writer(&mut text, r).map_err(|e| SpoolError {
                path: self.path.clone(),
                source: e.into(),
            })?;
            text.push(b'\n');
        }
        crate::durable::replace(&self.path, 0o600, &[&text]).map_err(|e| SpoolError {
            path: e.path,
            source: e.source,
        })
    }
}

/// A flow audit event as the portal takes it.
fn record(seq: u64, now: i64, ev: NewAuditEvent) -> GatewayEvent {
    let mut details = ev.details;
    let public_key = details
        .get("public_key")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let device_id = details.get("device_id").and_then(serde_json::Value::as_i64);
    if let (serde_json::Value::Object(m), Some(ip)) = (&mut details, &ev.source_ip) {
        m.entry("source_ip").or_insert_with(|| json!(ip));
    }
    GatewayEvent {
        seq,
        action: ev.action.as_str().to_string(),
        ts_ms: now,
        public_key,
        device_id,
        outcome: ev.outcome.as_str().to_string(),
        details,
    }
}

fn overflow_record(seq: u64, now: i64, lost: u64) -> GatewayEvent {
    GatewayEvent {
        seq,
        action: crate::audit::Action::AuditOverflow.as_str().to_string(),
        ts_ms: now,
        public_key: None,
        device_id: None,
        outcome: crate::audit::Outcome::Failure.as_str().to_string(),
        details: json!({"reason": "spool_full", "dropped": lost, "kept": "oldest"}),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "spool_tests.rs"]
mod tests;
