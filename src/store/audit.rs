//! The audit log's SQL: append to the hash chain (inside writer transactions), query, checkpoint, purge, verify.
//!
//! The event model, the hash, signatures and the verification rules live in [`crate::audit`].
//! Appends happen only inside [`Store::write_tx`], which serialises writers, so the chain never
//! forks; checkpoints and purges read the head and seal it inside the same transaction.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::{Backend, Store, StoreError};
use crate::audit::checkpoint::{ChainHead, Checkpoint, CheckpointReason, Sealer};
use crate::audit::verify::ChainCheck;
use crate::audit::{
    canonical_json, index_keys, Action, AuditContext, AuditEvent, NewAuditEvent, Outcome,
    GENESIS_HASH,
};

/// Rows per INSERT statement of [`Store::append_audit_bulk`] (13 binds each: under SQLite's
/// 32,766 and PostgreSQL's 65,535 bind limits).
pub const BULK_ROWS: usize = 500;

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

/// Appends one event at time `ts`. Must run inside a writer transaction.
pub(crate) async fn append(
    conn: &mut AnyConnection,
    ts: i64,
    ev: &NewAuditEvent,
) -> Result<AuditEvent, StoreError> {
    append_after(conn, ts, ev, None).await
}

/// Appends one event after `prev`, the event this transaction appended just before (saves
/// reading the chain's last row again: batches of the audit writer); `None` reads it.
async fn append_after(
    conn: &mut AnyConnection,
    ts: i64,
    ev: &NewAuditEvent,
    prev: Option<&AuditEvent>,
) -> Result<AuditEvent, StoreError> {
    let (id, prev_hash) = match prev {
        Some(p) => (p.id + 1, p.hash.clone()),
        None => last_link(conn).await?,
    };
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
    // Index columns (not hashed): derived by the one rule of crate::audit::index_keys.
    let keys = index_keys(&event.target, &event.details);
    sqlx::query(
        "INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, prev_hash, hash, \
         username, device_id, resource) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(event.id)
    .bind(event.ts)
    .bind(&event.actor)
    .bind(&event.action)
    .bind(&event.target)
    .bind(event.outcome.as_str())
    .bind(event.source_ip.as_deref())
    .bind(canonical_json(&event.details))
    .bind(&event.prev_hash)
    .bind(&event.hash)
    .bind(keys.username)
    .bind(keys.device_id)
    .bind(keys.resource)
    .execute(&mut *conn)
    .await?;
    Ok(event)
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
        let mut out = Vec::with_capacity(events.len());
        for ev in events {
            let next = append_after(&mut tx, now, ev, out.last()).await?;
            out.push(next);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Appends many events with given timestamps (unix ms, in order) in one transaction, the
    /// chain computed in memory and rows inserted [`BULK_ROWS`] at a time: the fast path for
    /// bulk loads (benchmarks, tests, imports). Returns how many were appended.
    pub async fn append_audit_bulk(
        &self,
        events: &[(i64, NewAuditEvent)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let (mut id, mut prev_hash) = last_link(&mut tx).await?;
        for chunk in events.chunks(BULK_ROWS) {
            let mut rows = Vec::with_capacity(chunk.len());
            for (ts, ev) in chunk {
                let mut event = AuditEvent {
                    id,
                    ts: *ts,
                    actor: ev.actor.clone(),
                    action: ev.action.as_str().to_string(),
                    target: ev.target.clone(),
                    outcome: ev.outcome,
                    source_ip: ev.source_ip.clone(),
                    details: ev.details.clone(),
                    prev_hash: std::mem::take(&mut prev_hash),
                    hash: String::new(),
                };
                event.hash = event.compute_hash();
                prev_hash = event.hash.clone();
                id += 1;
                rows.push(event);
            }
            let placeholders: Vec<String> = (0..rows.len())
                .map(|r| {
                    let b = r * 13;
                    format!(
                        "(${},${},${},${},${},${},${},${},${},${},${},${},${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7,
                        b + 8,
                        b + 9,
                        b + 10,
                        b + 11,
                        b + 12,
                        b + 13
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, \
                 prev_hash, hash, username, device_id, resource) VALUES {}",
                placeholders.join(",")
            );
            let mut q = sqlx::query(&sql);
            for e in &rows {
                let keys = index_keys(&e.target, &e.details);
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
                    .bind(keys.resource);
            }
            q.execute(&mut *tx).await?;
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
        let cutoff = now.saturating_sub(super::duration_ms(older_than));
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
                    "older_than": super::rfc3339(cutoff),
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
