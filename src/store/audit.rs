//! The audit log's SQL: append to the hash chain (inside writer transactions), query, checkpoint, purge, verify.
//!
//! The event model, the hash, signatures and the verification rules live in [`crate::audit`].
//! Appends happen only inside [`Store::write_tx`], which serialises writers, so the chain never
//! forks; checkpoints and purges read the head and seal it inside the same transaction.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::{Backend, Store, StoreError};
use crate::audit::checkpoint::{ChainHead, Checkpoint, CheckpointReason, Sealer};
use crate::audit::verify::{AuditVerification, ChainCheck};
use crate::audit::{
    canonical_json, index_keys, Action, AuditContext, AuditEvent, NewAuditEvent, Outcome,
    GENESIS_HASH,
};

/// Rows per INSERT statement of an append (14 binds each: far under SQLite's 32,766 and
/// PostgreSQL's 65,535 bind limits). Measured (bench audit_insert): multi-row statements are what
/// lifts the append rate; 100 rows already amortise the statement's round trip.
pub const INSERT_ROWS: usize = 100;

/// Appends one event at time `ts`. Must run inside a writer transaction.
pub(crate) async fn append(
    conn: &mut AnyConnection,
    ts: i64,
    ev: &NewAuditEvent,
) -> Result<AuditEvent, StoreError> {
    let event = link(last_link(conn).await?, ts, ev);
    insert_rows(conn, std::slice::from_ref(&event)).await?;
    Ok(event)
}

/// Appends `events` at time `ts`, in order: the chain head read once, the events linked in
/// memory, then inserted [`INSERT_ROWS`] rows per statement. Must run inside a writer
/// transaction.
pub(crate) async fn append_many(
    conn: &mut AnyConnection,
    ts: i64,
    events: &[&NewAuditEvent],
) -> Result<Vec<AuditEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut next = last_link(conn).await?;
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        let e = link(next, ts, ev);
        next = next_link(&e);
        out.push(e);
    }
    insert_rows(conn, &out).await?;
    Ok(out)
}

/// The event `ev` at time `ts`, chained after `(id, prev_hash)`: its id and hashes, in memory.
fn link((id, prev_hash): (i64, String), ts: i64, ev: &NewAuditEvent) -> AuditEvent {
    let details = if ev.details.is_null() {
        serde_json::json!({})
    } else {
        ev.details.clone()
    };
    let mut event = AuditEvent {
        id,
        ts,
        actor: ev.actor.clone(),
        action: ev.action.as_str().to_string(),
        target: ev.target.clone(),
        outcome: ev.outcome,
        source_ip: ev.source_ip.clone(),
        details,
        prev_hash,
        hash: String::new(),
    };
    event.hash = event.compute_hash();
    event
}

/// `(id, prev_hash)` of the event after `e`.
fn next_link(e: &AuditEvent) -> (i64, String) {
    (e.id + 1, e.hash.clone())
}

/// `rows` groups of `cols` placeholders: `($1,$2,…),(…)` on PostgreSQL, `(?,?,…),(…)` on SQLite.
///
/// SQLite gets anonymous ones because sqlx binds numbered parameters by asking SQLite each one's
/// name, a linear search: quadratic in the statement's parameters (measured with perf on
/// audit_insert: a third of the append's time for 1,300 binds).
fn placeholders(conn: &AnyConnection, rows: usize, cols: usize) -> String {
    let numbered = conn.backend_name() != "SQLite";
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ",(" });
        for c in 1..=cols {
            if c > 1 {
                out.push(',');
            }
            if numbered {
                out.push('$');
                out.push_str(&(r * cols + c).to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

/// Inserts chained events (consecutive ids, already hashed), [`INSERT_ROWS`] per statement, with
/// their index columns (one rule: [`index_keys`]), and records the sessions and flows among them
/// in `audit_last_seen` (migration 0007). Must run inside a writer transaction.
async fn insert_rows(conn: &mut AnyConnection, events: &[AuditEvent]) -> Result<(), StoreError> {
    for chunk in events.chunks(INSERT_ROWS) {
        let sql = format!(
            "INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, \
             prev_hash, hash, username, device_id, resource, site) VALUES {}",
            placeholders(conn, chunk.len(), 14)
        );
        let mut q = sqlx::query(&sql);
        let mut seen = SeenUpdates::default();
        for e in chunk {
            // Index columns (not hashed).
            let keys = index_keys(&e.target, &e.details);
            seen.note(e, &keys);
            q = q
                .bind(e.id)
                .bind(e.ts)
                .bind(e.actor.clone())
                .bind(e.action.clone())
                .bind(e.target.clone())
                .bind(e.outcome.as_str())
                .bind(e.source_ip.clone())
                .bind(canonical_json(&e.details))
                .bind(e.prev_hash.clone())
                .bind(e.hash.clone())
                .bind(keys.username)
                .bind(keys.device_id)
                .bind(keys.resource)
                .bind(keys.site);
        }
        q.execute(&mut *conn).await?;
        seen.upsert(conn).await?;
    }
    Ok(())
}

/// What a kind of `audit_last_seen` row is about.
pub(crate) const SEEN_SESSION: &str = "session";
pub(crate) const SEEN_FLOW: &str = "flow";

/// The `audit_last_seen` rows a chunk of events updates: (device, kind, resource) → (id, ts)
/// of the chunk's last such event (one row per key: PostgreSQL refuses a statement that
/// updates a row twice).
#[derive(Default)]
struct SeenUpdates(std::collections::BTreeMap<(i64, &'static str, String), (i64, i64)>);

impl SeenUpdates {
    fn note(&mut self, e: &AuditEvent, keys: &crate::audit::IndexKeys) {
        let Some(device) = keys.device_id else {
            return;
        };
        let key = if e.action == Action::FlowAllowed.as_str() {
            match &keys.resource {
                Some(r) => (device, SEEN_FLOW, r.clone()),
                None => return,
            }
        } else if e.action == Action::TunnelSessionStarted.as_str()
            || e.action == Action::TunnelSessionEnded.as_str()
        {
            (device, SEEN_SESSION, String::new())
        } else {
            return;
        };
        // Events come in id order: the later one wins.
        self.0.insert(key, (e.id, e.ts));
    }

    async fn upsert(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO audit_last_seen (device_id, kind, resource, event_id, ts) VALUES {} \
             ON CONFLICT (device_id, kind, resource) DO UPDATE SET event_id = excluded.event_id, \
             ts = excluded.ts WHERE excluded.event_id > audit_last_seen.event_id",
            placeholders(conn, self.0.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for ((device, kind, resource), (id, ts)) in self.0 {
            q = q.bind(device).bind(kind).bind(resource).bind(id).bind(ts);
        }
        q.execute(&mut *conn).await?;
        Ok(())
    }
}

/// The id and `prev_hash` of the next event.
async fn last_link(conn: &mut AnyConnection) -> Result<(i64, String), StoreError> {
    let last = sqlx::query("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    match last {
        Some(row) => Ok((row.try_get::<i64, _>("id")? + 1, row.try_get("hash")?)),
        // Empty table: the chain starts at the retention anchor (id 1 and 64 zeros if never purged).
        None => anchor(conn).await,
    }
}

/// Where the retained chain starts: (first id, prev_hash it must carry).
async fn anchor(conn: &mut AnyConnection) -> Result<(i64, String), StoreError> {
    let row = sqlx::query("SELECT purge_before_id, anchor_hash FROM audit_retention WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok((row.try_get("purge_before_id")?, row.try_get("anchor_hash")?)),
        None => Ok((1, GENESIS_HASH.to_string())),
    }
}

/// The chain's current head (inside a writer transaction, so it cannot move meanwhile).
async fn head(conn: &mut AnyConnection) -> Result<ChainHead, StoreError> {
    let (first_id, anchor_hash) = anchor(conn).await?;
    // With nothing retained, the next event links to the anchor: the head is the anchor.
    let (next_id, last_hash) = last_link(conn).await?;
    Ok(ChainHead {
        first_id,
        anchor_hash,
        last_id: next_id - 1,
        last_hash,
    })
}

/// Signs `head` (file first, synced) and records the checkpoint in the log, at `now`.
async fn seal(
    conn: &mut AnyConnection,
    sealer: &Sealer,
    head: &ChainHead,
    now: i64,
    reason: CheckpointReason,
) -> Result<Checkpoint, StoreError> {
    let cp = sealer.seal(head, now, reason)?;
    append(
        conn,
        now,
        &NewAuditEvent::new(
            Action::AuditCheckpoint,
            &AuditContext::system(),
            "audit_events",
        )
        .details(cp.to_json()),
    )
    .await?;
    Ok(cp)
}

pub(crate) fn from_row(row: &AnyRow) -> Result<AuditEvent, StoreError> {
    let outcome: String = row.try_get("outcome")?;
    let details: String = row.try_get("details")?;
    let corrupt = |message: String| StoreError::Corrupt {
        table: "audit_events",
        message,
    };
    Ok(AuditEvent {
        id: row.try_get("id")?,
        ts: row.try_get("ts")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt(format!("outcome {outcome:?}")))?,
        source_ip: row.try_get("source_ip")?,
        details: serde_json::from_str(&details)
            .map_err(|e| corrupt(format!("details are not JSON: {e}")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

pub(crate) const COLUMNS: &str =
    "id, ts, actor, action, target, outcome, source_ip, details, prev_hash, hash";

impl Store {
    /// Appends one event, timestamped now, to the chain.
    pub async fn append_audit(&self, ev: &NewAuditEvent) -> Result<AuditEvent, StoreError> {
        let mut out = self.append_audit_batch(std::slice::from_ref(ev)).await?;
        out.pop()
            .ok_or_else(|| StoreError::InvalidInput("no audit event".into()))
    }

    /// Appends several events in one transaction (the audit writer's batches).
    pub async fn append_audit_batch(
        &self,
        events: &[NewAuditEvent],
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let refs: Vec<&NewAuditEvent> = events.iter().collect();
        let out = append_many(&mut tx, now, &refs).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Appends many events with given timestamps (unix ms, in order) in one transaction, the
    /// chain computed in memory and rows inserted [`INSERT_ROWS`] at a time: the fast path for
    /// bulk loads (benchmarks, tests, imports). Returns how many were appended.
    pub async fn append_audit_bulk(
        &self,
        events: &[(i64, NewAuditEvent)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut next = last_link(&mut tx).await?;
        for chunk in events.chunks(INSERT_ROWS) {
            let mut rows = Vec::with_capacity(chunk.len());
            for (ts, ev) in chunk {
                let e = link(next, *ts, ev);
                next = next_link(&e);
                rows.push(e);
            }
            insert_rows(&mut tx, &rows).await?;
        }
        tx.commit().await?;
        Ok(events.len() as u64)
    }

    /// Signs the chain's head now: appended to the checkpoint file and recorded in the log as
    /// `audit.checkpoint`.
    pub async fn checkpoint_audit(
        &self,
        sealer: &Sealer,
        reason: CheckpointReason,
    ) -> Result<Checkpoint, StoreError> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let h = head(&mut tx).await?;
        let cp = seal(&mut tx, sealer, &h, now, reason).await?;
        tx.commit().await?;
        Ok(cp)
    }

    /// Deletes the events older than `older_than` (the `[audit] retention`): first a signed
    /// checkpoint vouching for the new anchor, then the anchor moves and the rows below it go,
    /// then `audit.purged`, all in one writer transaction. Returns how many events were removed.
    /// The database refuses any other deletion.
    pub async fn purge_audit(
        &self,
        older_than: std::time::Duration,
        ctx: &AuditContext,
        sealer: &Sealer,
    ) -> Result<u64, StoreError> {
        let now = self.now_ms();
        let cutoff = now.saturating_sub(crate::time::duration_ms(older_than));
        let mut tx = self.write_tx().await?;
        let last =
            sqlx::query("SELECT id, hash FROM audit_events WHERE ts < $1 ORDER BY id DESC LIMIT 1")
                .bind(cutoff)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(last) = last else {
            return Ok(0);
        };
        let through: i64 = last.try_get("id")?;
        let anchor_hash: String = last.try_get("hash")?;
        let current = head(&mut tx).await?;
        let new_head = ChainHead {
            first_id: through + 1,
            anchor_hash: anchor_hash.clone(),
            ..current
        };
        seal(&mut tx, sealer, &new_head, now, CheckpointReason::Purge).await?;
        let removed = match self.backend {
            // The service role may not UPDATE or DELETE audit tables: a SECURITY DEFINER
            // function owned by the schema owner moves the anchor to the one the checkpoint
            // just recorded, and deletes below it (migration 0004).
            Backend::Postgres => {
                let n: i64 = sqlx::query_scalar("SELECT audit_purge($1, $2)")
                    .bind(through)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                u64::try_from(n).unwrap_or(0)
            }
            Backend::Sqlite => {
                sqlx::query(
                    "UPDATE audit_retention SET purge_before_id = $1, anchor_hash = $2, updated_at = $3 \
                     WHERE id = 1",
                )
                .bind(through + 1)
                .bind(&anchor_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM audit_events WHERE id <= $1")
                    .bind(through)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
        };
        append(
            &mut tx,
            now,
            &NewAuditEvent::new(Action::AuditPurged, ctx, "audit_events").details(
                serde_json::json!({
                    "older_than": crate::time::format(cutoff),
                    "through_id": through,
                    "removed": removed,
                    "anchor_hash": anchor_hash,
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Walks the whole retained chain, from the retention anchor, and reports the first break.
    /// Hash links only: [`Store::verify_audit_with`] also checks the signed checkpoints.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        self.verify_audit_with(None).await
    }

    /// Walks the retained chain in one read snapshot. With `trust`, the audit public key (if
    /// any) and the checkpoint file's content, every checkpoint must agree. Read the file
    /// *before* calling: each checkpoint then vouches for events already committed, and those
    /// signed later are recognised as newer than the file.
    pub async fn verify_audit_with(
        &self,
        trust: Option<(Option<&ed25519_dalek::VerifyingKey>, &[Checkpoint])>,
    ) -> Result<AuditVerification, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let (first_id, anchor_hash) = anchor(&mut tx).await?;
        // Rows below the anchor mean the anchor was moved without a purge.
        let below: Option<i64> =
            sqlx::query_scalar("SELECT MIN(id) FROM audit_events WHERE id < $1")
                .bind(first_id)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(id) = below {
            return Ok(AuditVerification::Broken {
                id,
                reason: "event below the retention anchor".into(),
            });
        }
        let mut check = match ChainCheck::new(first_id, &anchor_hash, trust) {
            Ok(c) => c,
            Err(b) => return Ok(b.into()),
        };
        let mut after = first_id - 1;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_events WHERE id > $1 ORDER BY id LIMIT 1000"
            ))
            .bind(after)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let id: i64 = row.try_get("id")?;
                let ev = match from_row(row) {
                    Ok(ev) => ev,
                    Err(e) => {
                        return Ok(AuditVerification::Broken {
                            id,
                            reason: e.to_string(),
                        })
                    }
                };
                if let Err(b) = check.push(&ev) {
                    return Ok(b.into());
                }
                after = id;
            }
        }
        tx.rollback().await?;
        Ok(match check.finish() {
            Ok(events) => AuditVerification::Intact { events },
            Err(b) => b.into(),
        })
    }
}
