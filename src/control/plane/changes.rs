//! The publisher's side of the change log: which changes it has not applied yet (O(changes),
//! never a scan of `devices`), whether it must compute the whole set instead, and the
//! PostgreSQL notifications that wake it at commit.
//!
//! On PostgreSQL a sequence value is taken before its transaction commits, so concurrent
//! writers commit out of order: having read sequence 11, a publisher may see 10 only later. A
//! sequence skipped by a read is kept as a *hole* and read again until every transaction that
//! could hold it has finished (the snapshot's oldest running transaction passed the first id
//! not given out when the hole was seen: [`crate::store::ChangeHorizon`]); then it is final
//! (rolled back, or read). SQLite has one writer at a time: its sequence order is commit order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{PeerChange, StoreError};

use super::ControlPlane;

/// Changes applied one by one at most in one check; more means "compute the whole set" (at
/// 100,000 devices a whole computation costs about as much as 30,000 changes applied alone).
pub(super) const CHANGE_BATCH: i64 = 10_000;
/// Sequences left unread kept at most (PostgreSQL); more means "compute the whole set".
const MAX_HOLES: usize = 1_000;
/// After a whole computation, how far below the last sequence holes are looked for: a
/// transaction that took its sequence before that many others committed is left to the next
/// whole computation ([`super::REPUBLISH_INTERVAL`]).
const HOLE_LOOKBACK: i64 = 1_000;
/// Delay before listening again after the notification connection failed (PostgreSQL).
const RELISTEN_DELAY: Duration = Duration::from_secs(5);

/// Where the publisher is in the change log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    /// The highest sequence read.
    pub seen: i64,
    /// Sequences below `seen` not read yet, each with the first transaction id not given out
    /// when it was found missing: final once the oldest running transaction is past it.
    pub holes: BTreeMap<i64, u64>,
}

/// What the change log holds that this process has not applied yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pending {
    Nothing,
    /// These changes, and where the cursor goes once they are applied.
    Changes(Vec<PeerChange>, Cursor),
    /// Compute the whole set (never computed, the log went back or was pruned past the
    /// cursor, too many changes or holes, a kind this version does not know).
    Whole(&'static str),
}

/// What a batch of changes concerns: devices by id, and users (every device of each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Targets {
    pub ids: BTreeSet<i64>,
    pub users: BTreeSet<String>,
}

impl Targets {
    /// The devices and users `changes` name; `None` for a kind this version does not know.
    pub fn of(changes: &[PeerChange]) -> Option<Targets> {
        let mut t = Targets::default();
        for c in changes {
            match (c.kind.as_str(), c.device_id, &c.username) {
                ("enrolled" | "device" | "window", Some(id), _) => {
                    t.ids.insert(id);
                }
                ("user", _, Some(name)) => {
                    t.users.insert(name.clone());
                }
                _ => return None,
            }
        }
        Some(t)
    }
}

impl ControlPlane {
    /// The cursor a whole computation starts from, read before the store's devices: the last
    /// sequence, and (PostgreSQL) the sequences below it not committed yet, whose changes the
    /// computation may miss.
    pub(super) async fn cursor_now(&self) -> Result<Cursor, StoreError> {
        let (lowest, seen) = self.store.peer_change_bounds().await?;
        let mut cursor = Cursor {
            seen,
            holes: BTreeMap::new(),
        };
        let Some(horizon) = self.store.peer_change_horizon().await? else {
            return Ok(cursor);
        };
        let from = seen.saturating_sub(HOLE_LOOKBACK).max(0);
        let read: BTreeSet<i64> = self
            .store
            .peer_changes_since(from, HOLE_LOOKBACK)
            .await?
            .iter()
            .map(|c| c.seq)
            .filter(|s| *s <= seen)
            .collect();
        // Below the oldest row kept, sequences were pruned, not skipped.
        for s in (from + 1).max(lowest)..seen {
            if !read.contains(&s) {
                cursor.holes.insert(s, horizon.next);
            }
        }
        Ok(cursor)
    }

    /// The changes not applied yet, read from the change log after the cursor, and in its
    /// holes. O(changes); an idle check is two index seeks.
    pub(super) async fn pending_changes(&self) -> Result<Pending, StoreError> {
        let Some(cursor) = self.cursor.lock().clone() else {
            return Ok(Pending::Whole("first computation"));
        };
        let started = std::time::Instant::now();
        let pending = self.read_pending(cursor).await;
        self.observe_db(started);
        pending
    }

    async fn read_pending(&self, cursor: Cursor) -> Result<Pending, StoreError> {
        let (lowest, last) = self.store.peer_change_bounds().await?;
        if last == cursor.seen && cursor.holes.is_empty() {
            return Ok(Pending::Nothing);
        }
        if last < cursor.seen {
            return Ok(Pending::Whole("the change log went back"));
        }
        if last > cursor.seen && lowest > cursor.seen + 1 {
            return Ok(Pending::Whole(
                "the change log was pruned past what was read",
            ));
        }
        let mut next = cursor.clone();
        let mut changes = Vec::new();
        if !cursor.holes.is_empty() {
            // The horizon first: a transaction finished before it is visible to the read after.
            let horizon = self.store.peer_change_horizon().await?;
            let seqs: Vec<i64> = cursor.holes.keys().copied().collect();
            for c in self.store.peer_changes_at(&seqs).await? {
                next.holes.remove(&c.seq);
                changes.push(c);
            }
            match horizon {
                Some(h) => next.holes.retain(|_, until| *until > h.oldest_running),
                None => next.holes.clear(),
            }
        }
        if last > cursor.seen {
            let read = self
                .store
                .peer_changes_since(cursor.seen, CHANGE_BATCH)
                .await?;
            if i64::try_from(read.len()).unwrap_or(i64::MAX) >= CHANGE_BATCH {
                return Ok(Pending::Whole("too many changes"));
            }
            let top = read.last().map_or(cursor.seen, |c| c.seq);
            let skipped = usize::try_from(top - cursor.seen)
                .unwrap_or(usize::MAX)
                .saturating_sub(read.len());
            if skipped > 0 {
                if next.holes.len().saturating_add(skipped) > MAX_HOLES {
                    return Ok(Pending::Whole("too many sequences left unread"));
                }
                // Read after the rows: any writer of a skipped sequence had its id by then.
                if let Some(h) = self.store.peer_change_horizon().await? {
                    let got: BTreeSet<i64> = read.iter().map(|c| c.seq).collect();
                    for s in cursor.seen + 1..top {
                        if !got.contains(&s) {
                            next.holes.insert(s, h.next);
                        }
                    }
                }
            }
            next.seen = top;
            changes.extend(read);
        }
        changes.sort_by_key(|c| c.seq);
        Ok(Pending::Changes(changes, next))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64, kind: &str, device_id: Option<i64>, username: Option<&str>) -> PeerChange {
        PeerChange {
            seq,
            kind: kind.into(),
            device_id,
            username: username.map(String::from),
        }
    }

    #[test]
    fn changes_name_devices_and_users_and_an_unknown_kind_names_everything() {
        let t = Targets::of(&[
            change(1, "enrolled", Some(4), Some("alice")),
            change(2, "window", Some(4), Some("alice")),
            change(3, "user", None, Some("bruno")),
            change(4, "device", Some(7), Some("carla")),
        ])
        .expect("known kinds");
        assert_eq!(t.ids, BTreeSet::from([4, 7]));
        assert_eq!(t.users, BTreeSet::from(["bruno".to_string()]));
        assert_eq!(Targets::of(&[change(5, "site", None, None)]), None);
    }
}
