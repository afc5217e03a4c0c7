//! The publisher's side of the change log: whether anything changed since the last
//! computation (O(changes), never a scan of `devices`), and the PostgreSQL notifications that
//! wake it at commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ControlPlane;

/// What the change log holds that this process has not published yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pending {
    Nothing,
    /// Access windows opened: publish these devices' peers alone.
    Windows(Vec<i64>),
    /// Anything else: compute the whole set.
    Other,
}

/// Changes read from the log in one check; more means "recompute".
const CHANGE_BATCH: i64 = 1_000;
/// Delay before listening again after the notification connection failed (PostgreSQL).
const RELISTEN_DELAY: Duration = Duration::from_secs(5);

impl ControlPlane {
    /// What changed since the last successful computation, from the change log's rows after
    /// the sequence it read, less the enrolments and opened windows this process already
    /// published: [`Pending::Nothing`], only windows opened elsewhere (another request's
    /// commit seen before its own publication, another portal), or anything else (an error
    /// counts, so the publisher retries). O(changes).
    pub(super) async fn pending_changes(&self) -> Pending {
        let Some(seen) = *self.seen_seq.lock() else {
            return Pending::Other;
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
            return Pending::Other;
        };
        let Some(last) = changes.last().map(|c| c.seq) else {
            return Pending::Nothing;
        };
        if i64::try_from(changes.len()).unwrap_or(i64::MAX) >= CHANGE_BATCH {
            return Pending::Other;
        }
        let key = |c: &crate::store::PeerChange| {
            let kind = ["enrolled", "window"].into_iter().find(|k| *k == c.kind)?;
            Some((kind, c.device_id?))
        };
        let mut published = self.published.lock();
        let mut windows = Vec::new();
        for c in &changes {
            match key(c) {
                Some(k) if published.remove(&k) => {}
                Some(("window", id)) => windows.push(id),
                _ => return Pending::Other,
            }
        }
        drop(published);
        *self.seen_seq.lock() = Some(last);
        windows.sort_unstable();
        windows.dedup();
        if windows.is_empty() {
            Pending::Nothing
        } else {
            Pending::Windows(windows)
        }
    }

    /// Publishes the window of each of `devices` as the store has it now, one device at a
    /// time; a window that closed, or a device that cannot be read, makes it compute the whole
    /// set instead.
    pub(super) async fn publish_windows_of(&self, devices: &[i64]) {
        for &id in devices {
            let now = self.store.now_ms();
            let read = async {
                let device = self.store.device(id).await.ok()??;
                let user = self.store.user(&device.username).await.ok()??;
                let window = self.store.mfa_window(id).await.ok()??;
                Some((device, user, window))
            };
            match read.await {
                Some((device, user, window)) if window.is_open(now) => {
                    self.publish_window(&device, &user.groups, window.expires_at)
                        .await;
                }
                _ => return self.publish_now().await,
            }
        }
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
