//! Audit rows: append to the hash chain (inside writer transactions), query, verify.
//!
//! `hash = SHA-256(prev_hash ‖ canonical JSON of {id, ts, actor, action, target, outcome,
//! source_ip, details})`, hex. Canonical JSON: object keys sorted, no whitespace. The id is part
//! of the hashed content, so removing or reordering rows breaks the chain. Appends happen only
//! inside [`Store::write_tx`], which serialises writers, so the chain never forks.

use sha2::{Digest as _, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use super::{Store, StoreError};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an audited attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// Who does a write, recorded in the audit events the store appends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// A uid, `cli`, or `system`.
    pub actor: String,
    pub source_ip: Option<String>,
}

impl AuditContext {
    pub fn new(actor: impl Into<String>, source_ip: Option<String>) -> Self {
        AuditContext {
            actor: actor.into(),
            source_ip,
        }
    }

    /// The control plane itself (sync, expiry).
    pub fn system() -> Self {
        AuditContext::new("system", None)
    }
}

/// An event to append; the store assigns id, ts and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    pub details: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    /// Unix milliseconds, UTC.
    pub ts: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source_ip: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Column names of the audit CSV export, shared by `sesame audit export` and the API.
pub const AUDIT_CSV_HEADER: [&str; 10] = [
    "id",
    "ts",
    "actor",
    "action",
    "target",
    "outcome",
    "source_ip",
    "details",
    "prev_hash",
    "hash",
];

impl AuditEvent {
    /// The event as one CSV record, in [`AUDIT_CSV_HEADER`] order (ts with milliseconds,
    /// details as canonical JSON: exactly the hashed content).
    pub fn csv_record(&self) -> [String; 10] {
        [
            self.id.to_string(),
            super::rfc3339_ms(self.ts),
            self.actor.clone(),
            self.action.clone(),
            self.target.clone(),
            self.outcome.as_str().to_string(),
            self.source_ip.clone().unwrap_or_default(),
            canonical_json(&self.details),
            self.prev_hash.clone(),
            self.hash.clone(),
        ]
    }

    /// The hash this event should carry given its fields and `prev_hash`.
    pub fn compute_hash(&self) -> String {
        chain_hash(
            &self.prev_hash,
            self.id,
            self.ts,
            &self.actor,
            &self.action,
            &self.target,
            self.outcome,
            self.source_ip.as_deref(),
            &self.details,
        )
    }
}

/// Which events to list. Every set field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events whose actor or target is this uid.
    pub user: Option<String>,
    pub action: Option<String>,
    /// `ts >= since` (unix ms).
    pub since: Option<i64>,
    /// `ts < until` (unix ms).
    pub until: Option<i64>,
    /// Only events with `id > after_id` (paging).
    pub after_id: Option<i64>,
    /// At most this many events (oldest first).
    pub limit: Option<i64>,
}

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

/// JSON with object keys sorted and no whitespace, recursively.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(inner) = map.get(k) {
                        write(inner, out);
                    }
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[allow(clippy::too_many_arguments)]
fn chain_hash(
    prev_hash: &str,
    id: i64,
    ts: i64,
    actor: &str,
    action: &str,
    target: &str,
    outcome: Outcome,
    source_ip: Option<&str>,
    details: &serde_json::Value,
) -> String {
    let content = serde_json::json!({
        "id": id,
        "ts": ts,
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome.as_str(),
        "source_ip": source_ip,
        "details": details,
    });
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical_json(&content).as_bytes());
    hex::encode(h.finalize())
}

/// Appends one event at time `ts`. Must run inside a writer transaction.
pub(crate) async fn append(
    conn: &mut AnyConnection,
    ts: i64,
    ev: &NewAuditEvent,
) -> Result<AuditEvent, StoreError> {
    let last = sqlx::query("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (id, prev_hash) = match last {
        Some(row) => (row.try_get::<i64, _>("id")? + 1, row.try_get("hash")?),
        // Empty table: the chain starts at the retention anchor (id 1 and 64 zeros if never purged).
        None => anchor(conn).await?,
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
        action: ev.action.clone(),
        target: ev.target.clone(),
        outcome: ev.outcome,
        source_ip: ev.source_ip.clone(),
        details,
        prev_hash,
        hash: String::new(),
    };
    event.hash = event.compute_hash();
    sqlx::query(
        "INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    .execute(&mut *conn)
    .await?;
    Ok(event)
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

fn from_row(row: &AnyRow) -> Result<AuditEvent, StoreError> {
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

const COLUMNS: &str = "id, ts, actor, action, target, outcome, source_ip, details, prev_hash, hash";

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
            out.push(append(&mut tx, now, ev).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Events matching `filter`, oldest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events \
             WHERE ($1 IS NULL OR actor = $1 OR target = $1) \
               AND ($2 IS NULL OR action = $2) \
               AND ($3 IS NULL OR ts >= $3) \
               AND ($4 IS NULL OR ts < $4) \
               AND ($5 IS NULL OR id > $5) \
             ORDER BY id LIMIT $6"
        );
        let rows = sqlx::query(&sql)
            .bind(filter.user.as_deref())
            .bind(filter.action.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.after_id)
            .bind(filter.limit.unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes the events older than `older_than` (the `[audit] retention`), moving the chain's
    /// anchor forward in the same transaction, and appends `audit.purged`. Returns how many
    /// events were removed. The database refuses any other deletion.
    pub async fn purge_audit(
        &self,
        older_than: std::time::Duration,
        ctx: &AuditContext,
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
        sqlx::query(
            "UPDATE audit_retention SET purge_before_id = $1, anchor_hash = $2, updated_at = $3 \
             WHERE id = 1",
        )
        .bind(through + 1)
        .bind(&anchor_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let removed = sqlx::query("DELETE FROM audit_events WHERE id <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        append(
            &mut tx,
            now,
            &NewAuditEvent {
                actor: ctx.actor.clone(),
                action: "audit.purged".into(),
                target: "audit_events".into(),
                outcome: Outcome::Success,
                source_ip: ctx.source_ip.clone(),
                details: serde_json::json!({
                    "older_than": super::rfc3339(cutoff),
                    "through_id": through,
                    "removed": removed,
                    "anchor_hash": anchor_hash,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Walks the whole retained chain, from the retention anchor, and reports the first break.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let (mut expected_id, mut prev) = {
            let mut conn = self.pool.acquire().await?;
            anchor(&mut conn).await?
        };
        // Rows below the anchor mean the anchor was moved without a purge.
        let below: Option<i64> =
            sqlx::query_scalar("SELECT MIN(id) FROM audit_events WHERE id < $1")
                .bind(expected_id)
                .fetch_one(&self.pool)
                .await?;
        if let Some(id) = below {
            return Ok(AuditVerification::Broken {
                id,
                reason: "event below the retention anchor".into(),
            });
        }
        let mut count = 0u64;
        let mut after = expected_id - 1;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_events WHERE id > $1 ORDER BY id LIMIT 1000"
            ))
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(AuditVerification::Intact { events: count });
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
                if ev.id != expected_id {
                    return Ok(AuditVerification::Broken {
                        id: ev.id,
                        reason: format!("expected event {expected_id}, found {}", ev.id),
                    });
                }
                if ev.prev_hash != prev {
                    return Ok(AuditVerification::Broken {
                        id: ev.id,
                        reason: "prev_hash does not match the previous event's hash".into(),
                    });
                }
                if ev.compute_hash() != ev.hash {
                    return Ok(AuditVerification::Broken {
                        id: ev.id,
                        reason: "hash does not match the event's content".into(),
                    });
                }
                prev = ev.hash;
                expected_id += 1;
                count += 1;
                after = ev.id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é"}], "c": true}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"d":[1,{"y":"é","z":null}]},"b":1}"#
        );
    }

    #[test]
    fn hash_depends_on_every_field() {
        let base = AuditEvent {
            id: 1,
            ts: 1000,
            actor: "a".into(),
            action: "x.y".into(),
            target: "t".into(),
            outcome: Outcome::Success,
            source_ip: None,
            details: serde_json::json!({}),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let h = base.compute_hash();
        let mut other = base.clone();
        other.id = 2;
        assert_ne!(other.compute_hash(), h);
        let mut other = base.clone();
        other.source_ip = Some("198.18.0.1".into());
        assert_ne!(other.compute_hash(), h);
        let mut other = base;
        other.details = serde_json::json!({"k": 1});
        assert_ne!(other.compute_hash(), h);
    }
}
