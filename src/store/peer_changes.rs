//! The peer set's change log (`peer_changes`, migration 0015): its last sequence, the changes
//! since one, its pruning, and on PostgreSQL the commit notifications that wake publishers.
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

impl Store {
    /// The highest sequence of the change log (0 when empty): one index seek.
    pub async fn peer_change_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM peer_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
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
        rows.iter()
            .map(|r| {
                Ok(PeerChange {
                    seq: r.try_get("seq")?,
                    kind: r.try_get("kind")?,
                    device_id: r.try_get("device_id")?,
                    username: r.try_get("username")?,
                })
            })
            .collect()
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
