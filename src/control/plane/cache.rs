//! The control plane's side of the peer cache: what it writes (the set the store confirmed, with
//! the gateway's endpoints and each key's expiry), what it seeds from at start, and the keys it
//! removes at their expiry on its own clock, the store answering or not.

use std::sync::atomic::Ordering;

use crate::gateway::EndReason;
use crate::key::PublicKey;

use super::super::desired::ActiveDevice;
use super::super::peer_cache::{CachedDevice, PeerCache};
use super::changes::Targets;
use super::ControlPlane;

impl ControlPlane {
    /// Keeps the last good peer set (with endpoints) in `cache` from now on.
    pub fn set_peer_cache(&self, cache: PeerCache) {
        let _ = self.cache.set(cache);
    }

    /// The store answered: the published set is confirmed as of now (and the cache file
    /// says so once its confirmation is [`super::super::peer_cache::REFRESH`] old).
    pub(super) fn confirmed(&self) {
        let now = self.store.now_ms();
        self.confirmed_ms.store(now, Ordering::SeqCst);
        let written = self.cache_written_ms.load(Ordering::SeqCst);
        let refresh = crate::time::duration_ms(super::super::peer_cache::REFRESH);
        if self.cache.get().is_some() && now.saturating_sub(written) >= refresh {
            self.save_endpoints();
        }
    }

    /// Writes the cache (the store just confirmed `devices`, every active device) if the
    /// devices or their endpoints changed since the last write, or the file's confirmation is
    /// [`super::super::peer_cache::REFRESH`] old.
    pub(super) fn save_cache(&self, devices: &[ActiveDevice]) {
        self.confirmed_ms
            .store(self.store.now_ms(), Ordering::SeqCst);
        if self.cache.get().is_none() {
            return;
        }
        *self.cache_wanted.lock() =
            Some(devices.iter().map(|d| CachedDevice::new(d, None)).collect());
        self.save_endpoints();
    }

    /// The devices `targets` names are now `fresh` (read from the store): their entries change
    /// in what the cache should hold, written at once when `urgent` (a device left: a restart
    /// from the cache must not bring it back), else with the next endpoints' save.
    pub(super) fn cache_follows(&self, targets: &Targets, fresh: &[ActiveDevice], urgent: bool) {
        if self.cache.get().is_none() {
            return;
        }
        {
            let mut wanted = self.cache_wanted.lock();
            let Some(entries) = wanted.as_mut() else {
                return;
            };
            entries
                .retain(|e| !targets.ids.contains(&e.id) && !targets.users.contains(&e.username));
            entries.extend(fresh.iter().map(|d| CachedDevice::new(d, None)));
            entries.sort_by_key(|e| e.id);
        }
        if urgent {
            self.save_endpoints();
        }
    }

    /// Writes what the cache should hold (the devices the store last confirmed, or those it
    /// was seeded with) with the gateway's endpoints, if anything changed: periodic, after a
    /// change, and at shutdown, so a restart knows where each laptop was.
    pub fn save_endpoints(&self) {
        if self.cache.get().is_none() {
            return;
        }
        let wanted = self.cache_wanted.lock().clone();
        let Some(mut entries) = wanted.or_else(|| self.cached.lock().clone()) else {
            return;
        };
        let endpoints: std::collections::HashMap<PublicKey, std::net::SocketAddr> =
            self.sink.endpoints().into_iter().collect();
        for e in &mut entries {
            if let Some(ep) = endpoints.get(&e.public_key) {
                e.endpoint = Some(*ep);
            }
        }
        // The time the store last answered (not now: the store may be down).
        self.write_cache(entries, self.confirmed_ms.load(Ordering::SeqCst));
    }

    /// Writes `entries`, confirmed by the store at `confirmed_ms`.
    fn write_cache(&self, mut entries: Vec<CachedDevice>, confirmed_ms: i64) {
        let Some(cache) = self.cache.get() else {
            return;
        };
        // A peer with no traffic since the restart keeps the endpoint the cache had.
        let mut cached = self.cached.lock();
        if let Some(old) = cached.as_ref() {
            let known: std::collections::HashMap<PublicKey, std::net::SocketAddr> = old
                .iter()
                .filter_map(|o| Some((o.public_key, o.endpoint?)))
                .collect();
            for e in entries.iter_mut().filter(|e| e.endpoint.is_none()) {
                e.endpoint = known.get(&e.public_key).copied();
            }
        }
        let written = self.cache_written_ms.load(Ordering::SeqCst);
        let refresh = crate::time::duration_ms(super::super::peer_cache::REFRESH);
        if cached.as_ref() == Some(&entries) && confirmed_ms.saturating_sub(written) < refresh {
            return;
        }
        match cache.save(&self.sink.public_key(), confirmed_ms, entries.clone()) {
            Ok(()) => {
                *cached = Some(entries);
                self.cache_written_ms.store(confirmed_ms, Ordering::SeqCst);
            }
            Err(e) => tracing::warn!(error = %e, "cannot write the peer cache"),
        }
    }

    /// What the cache held at start, confirmed by the store at `written_at` (its endpoints are
    /// kept for peers without traffic yet, its key expiries are watched). Nothing (no file, or
    /// a refused one) means the next publication writes it.
    pub fn seed_cache(&self, written_at: i64, entries: Vec<CachedDevice>) {
        if !entries.is_empty() {
            self.expiries.lock().extend(
                entries
                    .iter()
                    .filter_map(|e| Some((e.public_key, e.key_expires_at?))),
            );
            self.confirmed_ms.store(written_at, Ordering::SeqCst);
            self.cache_written_ms.store(written_at, Ordering::SeqCst);
            *self.cached.lock() = Some(entries);
        }
    }

    /// Removes the published peers whose key expired on the store's clock, without reading
    /// the store (the store revokes them at its next [`super::EXPIRY_INTERVAL`] pass, or when it
    /// answers again); returns how many.
    pub fn expire_keys(&self) -> usize {
        let now = self.store.now_ms();
        let gone: Vec<PublicKey> = {
            let mut expiries = self.expiries.lock();
            let gone: Vec<PublicKey> = expiries
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| *k)
                .collect();
            for k in &gone {
                expiries.remove(k);
            }
            gone
        };
        for k in &gone {
            self.sink.remove_peer_because(k, EndReason::Revoked);
            if let Some(last) = self.last.lock().as_mut() {
                last.remove(k);
            }
            tracing::info!(key = %k.to_base64(), stale = self.is_stale(), "device key expired: peer removed from the gateway");
        }
        gone.len()
    }
}
