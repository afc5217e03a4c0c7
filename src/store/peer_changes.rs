//! The peer set's change log (`peer_changes`, migration 0015): its bounds, the changes since
//! one sequence or at given ones, its pruning, and on PostgreSQL the commit notifications that
//! wake publishers and the snapshot bounds that say when a sequence left unread is final.
//!
//! Triggers write one row per change of `devices`, `users` (groups, disabled) and
//! `mfa_windows`, in the transaction of the change, whichever process made it (a portal, the
//! CLI, another portal). Noticing a change therefore costs one index seek, not a scan of
//! `devices`.

use std::sync::Arc;

use sqlx::Row as _;
use tokio::sync::watch;

use super::failover::{Current, Failover};
use super::{Backend, Store, StoreError};

/// The channel the PostgreSQL trigger notifies (`pg_notify`), with the new sequence as payload.
pub const CHANNEL: &str = "sesame_peer_changes";

/// One row of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub seq: i64,
    /// `enrolled`, `device`, `user` or `window`.
    pub kind: String,
    pub device_id: Option<i64>,
    pub username: Option<String>,
}

/// A PostgreSQL snapshot's transaction bounds (64-bit ids, `xid8`): a transaction that had
/// written a change before `next` was read has finished once `oldest_running` passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeHorizon {
    /// Every transaction below this one has finished (`pg_snapshot_xmin`).
    pub oldest_running: u64,
    /// The first transaction id not yet given out (`pg_snapshot_xmax`).
    pub next: u64,
}

fn change_from_row(r: &sqlx::any::AnyRow) -> Result<PeerChange, StoreError> {
    Ok(PeerChange {
        seq: r.try_get("seq")?,
        kind: r.try_get("kind")?,
        device_id: r.try_get("device_id")?,
        username: r.try_get("username")?,
    })
}

impl Store {
    /// The highest sequence of the change log (0 when empty): one index seek.
    pub async fn peer_change_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM peer_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    /// The lowest and highest sequences of the change log (0 when empty): two index seeks
    /// (apart, so that SQLite answers each from the index: one query with both aggregates
    /// would scan the table). A lowest above a publisher's last seen + 1 means rows it has not
    /// read were pruned.
    pub async fn peer_change_bounds(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(seq) FROM peer_changes) AS lo, \
             (SELECT MAX(seq) FROM peer_changes) AS hi",
        )
        .fetch_one(&self.pool)
        .await?;
        let lo: Option<i64> = row.try_get("lo")?;
        let hi: Option<i64> = row.try_get("hi")?;
        Ok((lo.unwrap_or(0), hi.unwrap_or(0)))
    }

    /// The rows of the change log with these sequences (those committed), oldest first.
    pub async fn peer_changes_at(&self, seqs: &[i64]) -> Result<Vec<PeerChange>, StoreError> {
        let mut out = Vec::new();
        for chunk in seqs.chunks(500) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT seq, kind, device_id, username FROM peer_changes WHERE seq IN ({}) \
                 ORDER BY seq",
                list.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(*s);
            }
            out.extend(q.fetch_all(&self.pool).await?.iter().map(change_from_row));
        }
        out.into_iter().collect()
    }

    /// Which writers may still commit a change with a sequence below the highest one read
    /// (PostgreSQL: sequence values are taken before commit, so concurrent transactions commit
    /// out of order). `None` on SQLite: one writer at a time, sequence order is commit order.
    pub async fn peer_change_horizon(&self) -> Result<Option<ChangeHorizon>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin, \
             pg_snapshot_xmax(pg_current_snapshot())::text AS xmax",
        )
        .fetch_one(&self.pool)
        .await?;
        let xid = |col: &str| -> Result<u64, StoreError> {
            let text: String = row.try_get(col)?;
            text.parse().map_err(|_| StoreError::Corrupt {
                table: "pg_current_snapshot",
                message: format!("{col} {text:?}"),
            })
        };
        Ok(Some(ChangeHorizon {
            oldest_running: xid("xmin")?,
            next: xid("xmax")?,
        }))
    }

    /// The changes after `since`, oldest first, at most `limit` of them.
    pub async fn peer_changes_since(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<PeerChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, device_id, username FROM peer_changes WHERE seq > $1 \
             ORDER BY seq LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    /// Deletes the rows more than `keep` sequences behind the last one; returns how many.
    pub async fn prune_peer_changes(&self, keep: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM peer_changes WHERE seq <= (SELECT COALESCE(MAX(seq), 0) FROM peer_changes) - $1",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// A listener of the change log's commit notifications: PostgreSQL only (SQLite has one
    /// writer process; its publishers poll [`Store::peer_change_seq`]). It listens on the host
    /// the pool uses, and moves with it (`failover`).
    pub async fn listen_peer_changes(&self) -> Result<Option<PeerChangeListener>, StoreError> {
        let (Backend::Postgres, Some(failover)) = (self.backend, self.failover.as_ref()) else {
            return Ok(None);
        };
        let (listener, host) = failover.listener(CHANNEL).await?;
        Ok(Some(PeerChangeListener {
            listener,
            host,
            failover: Arc::clone(failover),
        }))
    }
}

/// Notifications of committed changes (PostgreSQL `LISTEN sesame_peer_changes`).
pub struct PeerChangeListener {
    listener: sqlx::postgres::PgListener,
    /// Changes when the store's pool moves to another host.
    host: watch::Receiver<Current>,
    failover: Arc<Failover>,
}

impl PeerChangeListener {
    /// Waits for the next committed change. A lost connection is re-established by sqlx (the
    /// changes committed meanwhile are not notified: the caller checks the sequence after an
    /// error, and its periodic pass catches up anyway). When the pool moves to another host,
    /// the listener moves too and returns, as for a change (some may have been missed).
    pub async fn next(&mut self) -> Result<(), StoreError> {
        tokio::select! {
            r = self.listener.recv() => {
                r?;
                Ok(())
            }
            Ok(()) = self.host.changed() => {
                let (listener, host) = self.failover.listener(CHANNEL).await?;
                self.listener = listener;
                self.host = host;
                Ok(())
            }
        }
    }
}
