//! The publisher's side of the change log: whether anything changed since the last
//! computation (O(changes), never a scan of `devices`), and the PostgreSQL notifications that
//! wake it at commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ControlPlane;

/// Changes read from the log in one check; more means "recompute".
const CHANGE_BATCH: i64 = 1_000;
/// Delay before listening again after the notification connection failed (PostgreSQL).
const RELISTEN_DELAY: Duration = Duration::from_secs(5);

impl ControlPlane {
    /// Whether the peer set may have changed since the last successful computation: the change
    /// log has rows after the sequence it read, other than the enrolments and opened windows
    /// this process already published (an error counts as a change, so the publisher retries).
    /// O(changes).
    pub(super) async fn devices_changed(&self) -> bool {
        let Some(seen) = *self.seen_seq.lock() else {
            return true;
        };
        let started = std::time::Instant::now();
        // Idle, the common case: one index seek says nothing moved.
        let last = self.store.peer_change_seq().await;
        let changes = match last {
            Ok(last) if last == seen => Ok(Vec::new()),
            Ok(_) => self.store.peer_changes_since(seen, CHANGE_BATCH).await,
            Err(e) => Err(e),
        };
        self.observe_db(started);
        let Ok(changes) = changes else {
            return true;
        };
        let Some(last) = changes.last().map(|c| c.seq) else {
            return false;
        };
        if i64::try_from(changes.len()).unwrap_or(i64::MAX) >= CHANGE_BATCH {
            return true;
        }
        let mut published = self.published.lock();
        let key = |c: &crate::store::PeerChange| {
            let kind = ["enrolled", "window"].into_iter().find(|k| *k == c.kind)?;
            Some((kind, c.device_id?))
        };
        let covered = changes
            .iter()
            .all(|c| key(c).is_some_and(|k| published.contains(&k)));
        if !covered {
            return true;
        }
        for k in changes.iter().filter_map(key) {
            published.remove(&k);
        }
        drop(published);
        *self.seen_seq.lock() = Some(last);
        false
    }

    /// Wakes the publisher's check of the change log on each committed change (PostgreSQL
    /// `LISTEN`; nothing to do on SQLite, polled), until `shutdown` turns true.
    pub(super) async fn listen_changes(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.store.listen_peer_changes().await {
                Ok(None) => return,
                Ok(Some(mut listener)) => loop {
                    tokio::select! {
                        r = listener.next() => match r {
                            Ok(()) => self.changed.notify_one(),
                            Err(e) => {
                                tracing::debug!(error = %e, "change notifications lost: listening again");
                                self.changed.notify_one();
                                break;
                            }
                        },
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen to change notifications: polling meanwhile");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RELISTEN_DELAY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
