//! Publishing the desired peer set: on demand (enrolment, rotation, revocation), on wake-ups and
//! periodically; fail-static when the database cannot be read.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, Notify};

use crate::config::{Config, LiveConfig};
use crate::gateway::EndReason;
use crate::service::feed::FeedHub;
use crate::store::{Device, DeviceStatus, Store, StoreError};

use super::desired::{desired_peers, device_peer, ActiveDevice};
use super::emergency::Emergency;
use super::peer_cache::{CachedDevice, PeerCache};
use super::{GatewayStats, PeerSink};
use crate::gateway::{PeerIdentity, PeerSpec};
use crate::key::PublicKey;

mod cache;
mod changes;
#[cfg(test)]
mod tests;
mod window;

use changes::Pending;

/// How often the publisher reads the change log's last sequence (one index seek): a change made
/// by another process (`sesame devices revoke`, another portal) reaches the gateway within this
/// delay. On PostgreSQL the commit's notification wakes it at once.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Rows of the change log kept behind the last one (pruned every [`EXPIRY_INTERVAL`]).
pub const KEEP_CHANGES: i64 = 100_000;
/// How often the publisher recomputes the whole set anyway (also the retry delay after a
/// failure).
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(30);
/// How often devices whose key expired are revoked (`device.expired`).
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
/// How often the peer cache's endpoints are refreshed from the gateway (written on change).
pub const ENDPOINT_SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// How often published keys are checked against their expiry on the gateway's clock, the
/// store answering or not.
pub const KEY_EXPIRY_CHECK: Duration = super::failstatic::EXPIRY_CHECK;

/// Why a publication failed; the gateway keeps its last good peer set.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read active devices: {0}")]
    Store(#[from] StoreError),
}

/// Owns the path store → policy → gateway.
pub struct ControlPlane {
    store: Store,
    /// Shared with the services and the portal; swapped whole by a reload
    /// ([`ControlPlane::replace_config`]).
    config: LiveConfig,
    sink: Arc<dyn PeerSink>,
    /// Serialises publications so a slow one never overwrites a newer one.
    publish_lock: Mutex<()>,
    wake: Notify,
    /// A change was committed (PostgreSQL notification): read the change log now.
    changed: Notify,
    /// The last publication failed: the gateway runs on an older (last good) set.
    stale: AtomicBool,
    publications: AtomicU64,
    /// What the gateway was last given: an identical set is not sent again.
    last: parking_lot::Mutex<Option<Vec<PeerSpec>>>,
    /// The change log's sequence read before the last successful computation.
    seen_seq: parking_lot::Mutex<Option<i64>>,
    /// Changes this process published on their own since that computation, as the change log
    /// names them: `("enrolled", device)` ([`Self::publish_device`]), `("window", device)`
    /// ([`Self::publish_window`]). Their rows in the log need no recomputation.
    published: parking_lot::Mutex<HashSet<(&'static str, i64)>>,
    /// `publish_now` calls so far, and how many of them a finished reconcile covered: a
    /// reconcile that started after a caller's request saw that caller's committed write.
    requested: AtomicU64,
    covered: AtomicU64,
    /// The local copy of the last good set (`sesame serve` only).
    cache: std::sync::OnceLock<PeerCache>,
    /// What the cache holds now: rewritten when it changes, or when its confirmation is
    /// [`super::peer_cache::REFRESH`] older than the store's last answer.
    cached: parking_lot::Mutex<Option<Vec<CachedDevice>>>,
    /// When the store last confirmed the published set (unix ms; the seeded cache's time
    /// until then), and the time the cache file carries.
    confirmed_ms: std::sync::atomic::AtomicI64,
    cache_written_ms: std::sync::atomic::AtomicI64,
    /// The expiry of each published device key (unix ms): removed at that instant even when
    /// the store cannot be read.
    expiries: parking_lot::Mutex<HashMap<PublicKey, i64>>,
    /// Revocations made at the gateway while the store was down (`sesame serve` only).
    emergency: std::sync::OnceLock<Arc<Emergency>>,
    /// Where database read latencies go (set once by `sesame serve`).
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// The site gateways' feeds, given every site's set in each pass (when `[[site]]`s exist).
    feeds: std::sync::OnceLock<Arc<FeedHub>>,
    /// Whether this process runs the singleton jobs (key expiry here, the directory sync);
    /// unset: it does (one process alone).
    leadership: std::sync::OnceLock<Arc<super::leader::Leadership>>,
}

impl ControlPlane {
    /// `config` is the live configuration the rest of the process reads too (an
    /// `Arc<Config>` makes a new one of its own).
    pub fn new(store: Store, config: impl Into<LiveConfig>, sink: Arc<dyn PeerSink>) -> Arc<Self> {
        Arc::new(ControlPlane {
            store,
            config: config.into(),
            sink,
            publish_lock: Mutex::new(()),
            wake: Notify::new(),
            changed: Notify::new(),
            stale: AtomicBool::new(false),
            publications: AtomicU64::new(0),
            last: parking_lot::Mutex::new(None),
            seen_seq: parking_lot::Mutex::new(None),
            published: parking_lot::Mutex::new(HashSet::new()),
            requested: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            cache: std::sync::OnceLock::new(),
            cached: parking_lot::Mutex::new(None),
            confirmed_ms: std::sync::atomic::AtomicI64::new(0),
            cache_written_ms: std::sync::atomic::AtomicI64::new(0),
            expiries: parking_lot::Mutex::new(HashMap::new()),
            emergency: std::sync::OnceLock::new(),
            metrics: std::sync::OnceLock::new(),
            feeds: std::sync::OnceLock::new(),
            leadership: std::sync::OnceLock::new(),
        })
    }

    /// Each pass also gives every `[[site]]`'s set to `feeds` (the site gateways' feed).
    pub fn set_feeds(&self, feeds: Arc<FeedHub>) {
        let _ = self.feeds.set(feeds);
    }

    /// The singleton jobs (key expiry, the directory sync) run only while `leadership` leads.
    pub fn set_leadership(&self, leadership: Arc<super::leader::Leadership>) {
        let _ = self.leadership.set(leadership);
    }

    /// True when this process runs the singleton jobs (always, without a leadership).
    pub fn leads(&self) -> bool {
        self.leadership.get().is_none_or(|l| l.is_leader())
    }

    /// Devices revoked at the gateway stay out of every publication until the store has them.
    pub fn set_emergency(&self, emergency: Arc<Emergency>) {
        let _ = self.emergency.set(emergency);
    }

    /// Writes pending emergency revocations to the store, if any.
    async fn flush_emergency(&self) {
        let Some(e) = self.emergency.get() else {
            return;
        };
        if e.pending_ids().is_empty() {
            return;
        }
        match e.flush(&self.store).await {
            Ok(n) if n > 0 => self.wake.notify_one(),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %err, "pending emergency revocations wait for the store")
            }
        }
    }

    pub fn gateway_public_key(&self) -> PublicKey {
        self.sink.public_key()
    }

    pub fn gateway_stats(&self) -> GatewayStats {
        self.sink.stats()
    }

    /// Times the database reads of the publisher into `metrics` (database latency histogram).
    pub fn observe_with(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn observe_db(&self, started: std::time::Instant) {
        if let Some(m) = self.metrics.get() {
            m.database_latency(started.elapsed());
        }
    }

    /// The configuration in force (the last one a reload accepted).
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The live configuration itself, to share with the services and the portal.
    pub fn live_config(&self) -> LiveConfig {
        self.config.clone()
    }

    /// Puts a reloaded configuration in force, for every reader of the live configuration (the
    /// portal and the services included), and republishes the peer set through the usual diff:
    /// unchanged peers keep their sessions.
    pub async fn replace_config(&self, config: Arc<Config>) -> Result<usize, ControlError> {
        let _guard = self.publish_lock.lock().await;
        self.config.replace(config);
        self.reconcile_locked().await
    }

    /// True while the gateway runs on an older peer set because the store could not be read.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Peer sets sent to the gateway since start (identical sets are not re-sent).
    pub fn publications(&self) -> u64 {
        self.publications.load(Ordering::Relaxed)
    }

    /// The desired set as of now (store + policy + static peers).
    pub async fn compute(&self) -> Result<Vec<PeerSpec>, ControlError> {
        let config = self.config.get();
        let started = std::time::Instant::now();
        let desired = compute_desired(&self.store, &config).await;
        self.observe_db(started);
        desired
    }

    /// Computes and publishes the desired set now. On failure the gateway keeps its last good
    /// set (fail-static) and the publisher loop retries.
    pub async fn reconcile(&self) -> Result<usize, ControlError> {
        let _guard = self.publish_lock.lock().await;
        self.reconcile_locked().await
    }

    /// `reconcile` with `publish_lock` already held.
    async fn reconcile_locked(&self) -> Result<usize, ControlError> {
        // Read the sequence first: a change racing with the computation shows up next check.
        let seq = self.store.peer_change_seq().await.ok();
        let config = self.config.get();
        let started = std::time::Instant::now();
        let read = active_devices(&self.store).await;
        self.observe_db(started);
        match read {
            Ok(mut devices) => {
                if let Some(e) = self.emergency.get() {
                    let pending = e.pending_ids();
                    devices.retain(|d| !pending.contains(&d.id));
                }
                // An expired key leaves now, before the store's expiry pass revokes it.
                let now = self.store.now_ms();
                devices.retain(|d| !super::failstatic::expired(d, now));
                *self.expiries.lock() = devices
                    .iter()
                    .filter_map(|d| Some((d.public_key, d.key_expires_at?)))
                    .collect();
                let peers = desired_from(&config, &devices);
                if let Some(feeds) = self.feeds.get() {
                    feeds.publish(super::sites::site_sets(&config, &devices));
                }
                self.save_cache(&devices);
                let n = peers.len();
                let mut last = self.last.lock();
                if last.as_ref() != Some(&peers) {
                    let reasons = removal_reasons(last.as_deref().unwrap_or_default(), &peers);
                    *last = Some(peers.clone());
                    self.sink.set_peers_because(peers, reasons);
                    self.publications.fetch_add(1, Ordering::Relaxed);
                }
                drop(last);
                *self.seen_seq.lock() = seq;
                self.published.lock().clear();
                if self.stale.swap(false, Ordering::Relaxed) {
                    tracing::info!(peers = n, "peer set reconciled after an outage");
                }
                Ok(n)
            }
            Err(e) => {
                if !self.stale.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "keeping the last good peer set");
                }
                Err(e)
            }
        }
    }

    /// Publishes now from a request handler (after its write committed); a failure is retried
    /// by the publisher loop. Concurrent callers share publications: a caller returns as soon
    /// as a reconcile that started after its call has succeeded, so N simultaneous enrolments
    /// cost one or two reads of the device table, not N.
    pub async fn publish_now(&self) {
        let mine = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.publish_lock.lock().await;
        if self.covered.load(Ordering::SeqCst) >= mine {
            return;
        }
        // Every request counted so far was made after its caller's commit: this reconcile,
        // which reads the store from now on, covers them all.
        let upto = self.requested.load(Ordering::SeqCst);
        if self.reconcile_locked().await.is_ok() {
            self.covered.fetch_max(upto, Ordering::SeqCst);
        } else {
            self.wake.notify_one();
        }
    }

    /// Publishes one device's peer right after its enrolment or key rotation committed, without
    /// recomputing the whole set: the device's peer (rules from the policy for `groups`, the
    /// groups just stored for its user) is added, and `replaced_key` (a rotated-out key) is
    /// removed. O(1) instead of O(devices). Taken under the publication lock, so a full
    /// reconcile that read the store before this commit cannot overwrite it afterwards; any
    /// other change the log shows still recomputes the whole set within [`POLL_INTERVAL`]. Falls back to [`Self::publish_now`] when the sink
    /// refuses the peer (a sink without incremental updates refuses every one), when the device
    /// is not active or when its user is not a VPN user.
    pub async fn publish_device(
        &self,
        device: &Device,
        groups: &[String],
        replaced_key: Option<PublicKey>,
    ) {
        // The site feeds are computed whole (the set of a site depends on the grants).
        let sites = self.feeds.get().is_some() && !self.config.get().sites.is_empty();
        if device.status != DeviceStatus::Active {
            // A device leaving (revoked, suspended) leaves the site gateways at once; the whole
            // computation below is the safety net, and also removes it from the local gateway.
            if let Some(hub) = self.feeds.get() {
                hub.remove_peer(&device.public_key.to_base64());
            }
            return self.publish_now().await;
        }
        if sites {
            return self.publish_now().await;
        }
        // A rotated device keeps its access window (windows belong to the device, not its key).
        let mfa_until_ms = replaced_key.and_then(|old| {
            let last = self.last.lock();
            let spec = last.as_ref()?.iter().find(|p| p.public_key == old)?;
            spec.mfa_until_ms
        });
        let active = ActiveDevice::of(device, groups, mfa_until_ms);
        let Some(peer) = device_peer(&self.config.get(), &active) else {
            // Not (or no longer) a VPN user: rare, let the full computation decide.
            return self.publish_now().await;
        };
        let guard = self.publish_lock.lock().await;
        // The old key first: it holds the same address, which the new peer takes over.
        if let Some(old) = replaced_key.filter(|k| *k != device.public_key) {
            self.sink.remove_peer_because(&old, EndReason::Rotated);
            if let Some(last) = self.last.lock().as_mut() {
                last.retain(|p| p.public_key != old);
            }
        }
        let applied = self.sink.upsert_peer(peer.clone());
        if applied {
            let mut expiries = self.expiries.lock();
            if let Some(old) = replaced_key {
                expiries.remove(&old);
            }
            if let Some(t) = device.expires_at {
                expiries.insert(device.public_key, t);
            }
            drop(expiries);
            if let Some(last) = self.last.lock().as_mut() {
                last.retain(|p| p.public_key != peer.public_key);
                last.push(peer);
            }
            // A new device now published: its `enrolled` row in the change log needs no
            // recomputation of the whole set (O(devices), under the publication lock that every
            // enrolment's publish waits for) once a second during a burst of enrolments. Any
            // other change (a revocation, a device from another process) is still reconciled.
            if replaced_key.is_none() {
                self.published.lock().insert(("enrolled", device.id));
            }
        }
        drop(guard);
        if applied {
            self.publications.fetch_add(1, Ordering::Relaxed);
        } else {
            self.publish_now().await;
        }
    }

    /// Asks the publisher loop to publish soon (from code that must not wait).
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// Revokes devices whose key expired; returns how many.
    pub async fn expire_devices(&self) -> Result<usize, ControlError> {
        let expired = self.store.expire_devices().await?;
        for d in &expired {
            tracing::info!(device = d.id, user = %d.username, "device key expired: revoked");
        }
        Ok(expired.len())
    }

    /// The publisher loop: publishes on each wake-up, when the change log moves (read every
    /// [`POLL_INTERVAL`], and on each PostgreSQL notification) and every
    /// [`REPUBLISH_INTERVAL`]; revokes expired keys and prunes the log every
    /// [`EXPIRY_INTERVAL`]; until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let watch = Arc::clone(&self).watch_expiries(shutdown.clone());
        let listen = Arc::clone(&self).listen_changes(shutdown.clone());
        tokio::join!(self.publish_loop(shutdown), watch, listen);
    }

    /// Removes each published key at its expiry ([`Self::expire_keys`] every
    /// [`KEY_EXPIRY_CHECK`]), whether the store answers or not, until `shutdown` turns true.
    async fn watch_expiries(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(KEY_EXPIRY_CHECK) => {
                    self.expire_keys();
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn publish_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_expiry = tokio::time::Instant::now();
        let mut last_full = tokio::time::Instant::now();
        let mut last_endpoints = tokio::time::Instant::now();
        loop {
            let woken = tokio::select! {
                _ = self.wake.notified() => true,
                _ = self.changed.notified() => false,
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
                _ = shutdown.changed() => false,
            };
            if *shutdown.borrow() {
                // The cache a restart will use: devices from the store when it answers.
                if self.reconcile().await.is_err() {
                    self.save_endpoints();
                }
                return;
            }
            self.flush_emergency().await;
            if last_endpoints.elapsed() >= ENDPOINT_SAVE_INTERVAL {
                last_endpoints = tokio::time::Instant::now();
                self.save_endpoints();
            }
            if last_expiry.elapsed() >= EXPIRY_INTERVAL && self.leads() {
                last_expiry = tokio::time::Instant::now();
                if let Err(e) = self.expire_devices().await {
                    tracing::warn!(error = %e, "cannot check expired device keys");
                }
                if let Err(e) = self.store.prune_peer_changes(KEEP_CHANGES).await {
                    tracing::debug!(error = %e, "cannot prune the change log");
                }
            }
            let due = last_full.elapsed() >= REPUBLISH_INTERVAL || self.is_stale();
            let pending = if woken || due {
                Pending::Other
            } else {
                self.pending_changes().await
            };
            match pending {
                Pending::Nothing => {}
                Pending::Windows(devices) => self.publish_windows_of(&devices).await,
                Pending::Other => {
                    last_full = tokio::time::Instant::now();
                    let _ = self.reconcile().await;
                }
            }
        }
    }
}

/// Why each peer of `old` missing from `new` goes: a device whose id is still in `new` under
/// another key was rotated; any other device was revoked (by IT staff, key expiry, or a sync
/// that found its user gone); a static peer was removed from the config.
pub fn removal_reasons(old: &[PeerSpec], new: &[PeerSpec]) -> HashMap<PublicKey, EndReason> {
    let kept: HashSet<PublicKey> = new.iter().map(|p| p.public_key).collect();
    let devices: HashSet<i64> = new
        .iter()
        .filter_map(|p| match PeerIdentity::parse(&p.label) {
            PeerIdentity::Device { id, .. } => Some(id),
            PeerIdentity::Static { .. } => None,
        })
        .collect();
    old.iter()
        .filter(|p| !kept.contains(&p.public_key))
        .map(|p| {
            let reason = match PeerIdentity::parse(&p.label) {
                PeerIdentity::Device { id, .. } if devices.contains(&id) => EndReason::Rotated,
                PeerIdentity::Device { .. } => EndReason::Revoked,
                PeerIdentity::Static { .. } => EndReason::Removed,
            };
            (p.public_key, reason)
        })
        .collect()
}

/// The desired set from the store's active devices, the policy and the static peers.
pub async fn compute_desired(
    store: &Store,
    config: &Config,
) -> Result<Vec<PeerSpec>, ControlError> {
    Ok(desired_from(config, &active_devices(store).await?))
}

/// The store's active devices of enabled users, each with the end of its open access window.
pub async fn active_devices(store: &Store) -> Result<Vec<ActiveDevice>, ControlError> {
    let rows = store.active_devices().await?;
    // Read after the devices: a window opened meanwhile is in, one of a device not read yet
    // waits for the next publication (the unlock publishes again).
    let windows: HashMap<i64, i64> = store
        .open_windows()
        .await?
        .into_iter()
        .map(|w| (w.device_id, w.until_ms))
        .collect();
    Ok(rows
        .into_iter()
        .filter(|r| !r.user.disabled)
        .map(|r| ActiveDevice {
            mfa_until_ms: windows.get(&r.device.id).copied(),
            id: r.device.id,
            username: r.device.username,
            public_key: r.device.public_key,
            address: r.device.tunnel_address,
            groups: r.user.groups,
            name: r.device.name,
            key_expires_at: r.device.expires_at,
        })
        .collect())
}

/// The desired set from devices (from the store or the peer cache), the policy and the
/// static peers.
pub fn desired_from(config: &Config, devices: &[ActiveDevice]) -> Vec<PeerSpec> {
    desired_peers(
        &config.policy,
        &config.roles.vpn_users,
        &config.peers,
        devices,
    )
}
