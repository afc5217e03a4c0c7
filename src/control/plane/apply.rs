//! The two ways the desired set reaches the local gateway, the site feeds, the key expiries
//! and the peer cache: the devices a batch of changes names, worked out and applied alone; or
//! the whole set, computed from every active device of the store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;

use crate::gateway::PeerSpec;
use crate::key::PublicKey;

use super::super::desired::{desired_peers, ActiveDevice};
use super::super::sites::site_sets;
use super::changes::{Pending, Targets};
use super::published::{Delta, Published};
use super::{active_devices, active_devices_named, desired_from, reasons_for};
use super::{ControlError, ControlPlane};

impl ControlPlane {
    /// [`Self::reconcile`] with `publish_lock` held: the changes after the cursor, applied
    /// device by device; the whole set when the store was unreadable (stale), when nothing was
    /// computed yet, or when the change log cannot say what changed.
    pub(super) async fn catch_up_locked(&self) -> Result<usize, ControlError> {
        if self.is_stale() {
            return self.recompute_locked().await;
        }
        let pending = match self.pending_changes().await {
            Ok(p) => p,
            Err(e) => return Err(self.failed(e.into())),
        };
        let (changes, next) = match pending {
            Pending::Nothing => {
                self.confirmed();
                return Ok(self.published_len());
            }
            Pending::Whole(why) => {
                tracing::debug!(why, "computing the whole peer set");
                return self.recompute_locked().await;
            }
            Pending::Changes(changes, next) => (changes, next),
        };
        let Some(targets) = Targets::of(&changes) else {
            tracing::debug!("a change of an unknown kind: computing the whole peer set");
            return self.recompute_locked().await;
        };
        let ids: Vec<i64> = targets.ids.iter().copied().collect();
        let users: Vec<String> = targets.users.iter().cloned().collect();
        let started = std::time::Instant::now();
        let read = active_devices_named(&self.store, &ids, &users).await;
        self.observe_db(started);
        let mut fresh = match read {
            Ok(d) => d,
            Err(e) => return Err(self.failed(e)),
        };
        self.keep_usable(&mut fresh);
        self.apply_devices(&targets, &fresh);
        *self.cursor.lock() = Some(next);
        self.confirmed();
        Ok(self.published_len())
    }

    /// Moves every device `targets` names to its state in `fresh` (the store's active devices
    /// among them, read after the changes): its peer added, replaced or removed at the local
    /// gateway (removed as rotated when the device has a peer under another key, as revoked when
    /// it has none), in the sites it now belongs to and out of those it left, its key's expiry
    /// and its cache entry with it. A gateway that refuses one peer gets the whole set.
    fn apply_devices(&self, targets: &Targets, fresh: &[ActiveDevice]) {
        let config = self.config.get();
        let peers: HashMap<PublicKey, PeerSpec> =
            desired_peers(&config.policy, &config.roles.vpn_users, &[], fresh)
                .into_iter()
                .map(|p| (p.public_key, p))
                .collect();
        let by_id: HashMap<i64, &ActiveDevice> = fresh.iter().map(|d| (d.id, d)).collect();
        let mut last = self.last.lock();
        let published = last.get_or_insert_with(Published::default);
        // Every device concerned: named, of a named user as published, or read now.
        let mut concerned: BTreeSet<i64> = targets.ids.clone();
        for user in &targets.users {
            concerned.extend(published.devices_of(user));
        }
        concerned.extend(by_id.keys());
        let mut delta = Delta::default();
        let mut keys: BTreeSet<PublicKey> = BTreeSet::new();
        for id in &concerned {
            let device = by_id.get(id);
            keys.extend(published.key_of(*id));
            keys.extend(device.map(|d| d.public_key));
            published.delta(
                *id,
                device.and_then(|d| peers.get(&d.public_key)),
                &mut delta,
            );
        }
        self.expiries_follow(&delta, fresh, &peers);
        published.apply(&delta);
        if !delta.is_empty() {
            let mut refused = false;
            for (key, reason) in &delta.removed {
                refused |= !self.sink.remove_peer_because(key, *reason);
            }
            for peer in &delta.upserted {
                refused |= !self.sink.upsert_peer(peer.clone());
            }
            if refused {
                // An address still held by another peer, a peer already gone (emergency
                // revocation), or a sink without incremental updates: the whole set, from
                // memory, through the gateway's own diff.
                let reasons = delta.removed.iter().copied().collect();
                self.sink.set_peers_because(published.to_vec(), reasons);
            }
            self.publications.fetch_add(1, Ordering::Relaxed);
        }
        drop(last);
        if let Some(hub) = self.feeds.get() {
            let keys: BTreeSet<String> = keys.iter().map(PublicKey::to_base64).collect();
            hub.replace_peers(&keys, site_sets(&config, fresh));
        }
        self.cache_follows(targets, fresh, !delta.removed.is_empty());
    }

    /// The expiries of the keys `delta` removes are dropped; those of the devices with a peer
    /// now are set.
    fn expiries_follow(
        &self,
        delta: &Delta,
        fresh: &[ActiveDevice],
        peers: &HashMap<PublicKey, PeerSpec>,
    ) {
        let mut expiries = self.expiries.lock();
        for (key, _) in &delta.removed {
            expiries.remove(key);
        }
        for d in fresh.iter().filter(|d| peers.contains_key(&d.public_key)) {
            match d.key_expires_at {
                Some(t) => expiries.insert(d.public_key, t),
                None => expiries.remove(&d.public_key),
            };
        }
    }

    /// Computes the whole set from the store and publishes it (`publish_lock` held): every
    /// active device read, the local gateway given the set through its diff (an identical set
    /// is not sent again), every site's feed its set, the cursor moved to the change log's
    /// sequence read before the devices.
    pub(super) async fn recompute_locked(&self) -> Result<usize, ControlError> {
        self.whole.fetch_add(1, Ordering::Relaxed);
        *self.last_whole.lock() = tokio::time::Instant::now();
        let config = self.config.get();
        let started = std::time::Instant::now();
        // The cursor first: a change racing with the read shows up in the next check.
        let read = async {
            let cursor = self.cursor_now().await?;
            Ok::<_, ControlError>((cursor, active_devices(&self.store).await?))
        }
        .await;
        self.observe_db(started);
        let (cursor, mut devices) = match read {
            Ok(r) => r,
            Err(e) => return Err(self.failed(e)),
        };
        self.keep_usable(&mut devices);
        let peers = desired_from(&config, &devices);
        let keys: HashSet<PublicKey> = peers.iter().map(|p| p.public_key).collect();
        *self.expiries.lock() = devices
            .iter()
            .filter(|d| keys.contains(&d.public_key))
            .filter_map(|d| Some((d.public_key, d.key_expires_at?)))
            .collect();
        if let Some(feeds) = self.feeds.get() {
            feeds.publish(site_sets(&config, &devices));
        }
        self.save_cache(&devices);
        let n = peers.len();
        let mut last = self.last.lock();
        if !last.as_ref().is_some_and(|p| p.same_as(&peers)) {
            let reasons = match last.as_ref() {
                Some(old) => reasons_for(old.peers(), &peers),
                None => HashMap::new(),
            };
            *last = Some(Published::from_set(&peers));
            self.sink.set_peers_because(peers, reasons);
            self.publications.fetch_add(1, Ordering::Relaxed);
        }
        drop(last);
        *self.cursor.lock() = Some(cursor);
        if self.stale.swap(false, Ordering::Relaxed) {
            tracing::info!(peers = n, "peer set reconciled after an outage");
        }
        Ok(n)
    }

    /// Drops the devices revoked at the gateway and not yet in the store, and those whose key
    /// expired (they leave now, before the store's expiry pass revokes them).
    fn keep_usable(&self, devices: &mut Vec<ActiveDevice>) {
        if let Some(e) = self.emergency.get() {
            let pending = e.pending_ids();
            devices.retain(|d| !pending.contains(&d.id));
        }
        let now = self.store.now_ms();
        devices.retain(|d| !super::super::failstatic::expired(d, now));
    }

    /// A read failed: the gateway keeps its last good set, and the next publication computes
    /// the whole set.
    fn failed(&self, e: ControlError) -> ControlError {
        if !self.stale.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "keeping the last good peer set");
        }
        e
    }

    fn published_len(&self) -> usize {
        self.last.lock().as_ref().map_or(0, Published::len)
    }
}
