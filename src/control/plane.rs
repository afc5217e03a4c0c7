//! Publishing the desired peer set: each change the change log names is applied alone (the
//! devices it concerns read again, their peers worked out, put to the local gateway and the
//! site feeds); the whole set is computed at start, after a reload or an outage, when the log
//! cannot say what changed, and as a rare safety net; fail-static when the database cannot be
//! read.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, Notify};

use crate::config::{Config, LiveConfig};
use crate::gateway::EndReason;
use crate::service::feed::FeedHub;
use crate::store::{Store, StoreError};

use super::desired::{desired_peers, ActiveDevice};
use super::emergency::Emergency;
use super::peer_cache::{CachedDevice, PeerCache};
use super::{GatewayStats, PeerSink};
use crate::gateway::{PeerIdentity, PeerSpec};
use crate::key::PublicKey;

mod apply;
mod cache;
mod changes;
mod published;
#[cfg(test)]
mod tests;

use changes::Cursor;
use published::Published;

/// How often the publisher reads the change log's bounds (two index seeks): a change made by
/// another process (`sesame devices revoke`, another portal) reaches the gateway within this
/// delay. On PostgreSQL the commit's notification wakes it at once.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Rows of the change log kept behind the last one (pruned every [`EXPIRY_INTERVAL`]).
pub const KEEP_CHANGES: i64 = 100_000;
/// How often the publisher computes the whole set even though the change log named every
/// change: a safety net (a change whose sequence was taken more than `HOLE_LOOKBACK`
/// sequences before a whole computation's, a bug), not the way changes travel. At 100,000
/// devices one whole computation costs about 2.8 s of CPU (bench/SCALEOUT_REPORT.md, mostly the
/// store's read of 95,000 rows), so every 15 minutes it averages 0.3 % of a core, within the 2 %
/// idle budget with room for the rest; at 1,000 devices it is 30 ms.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(15 * 60);
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
    /// Whole computations started (reads of every active device).
    whole: AtomicU64,
    /// When the last whole computation started (the safety net counts from it).
    last_whole: parking_lot::Mutex<tokio::time::Instant>,
    /// What the gateway was last given: an identical set is not sent again.
    last: parking_lot::Mutex<Option<Published>>,
    /// Where the publisher is in the change log; `None` until a whole computation succeeded.
    cursor: parking_lot::Mutex<Option<Cursor>>,
    /// `publish_now` calls so far, and how many of them a finished publication covered: a
    /// publication that started after a caller's request saw that caller's committed write.
    requested: AtomicU64,
    covered: AtomicU64,
    /// The local copy of the last good set (`sesame serve` only).
    cache: std::sync::OnceLock<PeerCache>,
    /// What the cache file holds now: rewritten when it changes, or when its confirmation is
    /// [`super::peer_cache::REFRESH`] older than the store's last answer.
    cached: parking_lot::Mutex<Option<Vec<CachedDevice>>>,
    /// The active devices as the store last confirmed them (endpoints aside): what the cache
    /// file should hold. A device that left is written at once; one added or changed with
    /// the next endpoints' save.
    cache_wanted: parking_lot::Mutex<Option<Vec<CachedDevice>>>,
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
            whole: AtomicU64::new(0),
            last_whole: parking_lot::Mutex::new(tokio::time::Instant::now()),
            last: parking_lot::Mutex::new(None),
            cursor: parking_lot::Mutex::new(None),
            requested: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            cache: std::sync::OnceLock::new(),
            cached: parking_lot::Mutex::new(None),
            cache_wanted: parking_lot::Mutex::new(None),
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
    /// portal and the services included), and computes the whole set again (the policy may
    /// have changed every peer) through the usual diff: unchanged peers keep their sessions.
    pub async fn replace_config(&self, config: Arc<Config>) -> Result<usize, ControlError> {
        let _guard = self.publish_lock.lock().await;
        self.config.replace(config);
        self.recompute_locked().await
    }

    /// True while the gateway runs on an older peer set because the store could not be read.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Peer sets (whole, or a batch of changes) sent to the gateway since start (identical
    /// sets are not re-sent).
    pub fn publications(&self) -> u64 {
        self.publications.load(Ordering::Relaxed)
    }

    /// Whole computations started since start: each reads every active device of the store.
    pub fn whole_computations(&self) -> u64 {
        self.whole.load(Ordering::Relaxed)
    }

    /// The desired set as of now (store + policy + static peers).
    pub async fn compute(&self) -> Result<Vec<PeerSpec>, ControlError> {
        let config = self.config.get();
        let started = std::time::Instant::now();
        let desired = compute_desired(&self.store, &config).await;
        self.observe_db(started);
        desired
    }

    /// Brings the gateway and the site feeds up to date with the store now: the changes the
    /// change log names since the last publication, each applied alone, or the whole set when
    /// the log cannot say (see [`Self::recompute`]). On failure the gateway keeps its last good
    /// set (fail-static) and the publisher loop retries with a whole computation.
    pub async fn reconcile(&self) -> Result<usize, ControlError> {
        let _guard = self.publish_lock.lock().await;
        self.catch_up_locked().await
    }

    /// Computes the whole desired set from the store and publishes it now (at start, after a
    /// reload or an outage, as the safety net): O(devices).
    pub async fn recompute(&self) -> Result<usize, ControlError> {
        let _guard = self.publish_lock.lock().await;
        self.recompute_locked().await
    }

    /// Publishes now from a request handler (after its write committed): the changes since the
    /// last publication, its own among them; a failure is retried by the publisher loop.
    /// Concurrent callers share publications: a caller returns as soon as one that started
    /// after its call has succeeded, so N simultaneous enrolments cost one or two reads of the
    /// change log and of the devices it names, not N.
    pub async fn publish_now(&self) {
        let mine = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.publish_lock.lock().await;
        if self.covered.load(Ordering::SeqCst) >= mine {
            return;
        }
        // Every request counted so far was made after its caller's commit: this publication,
        // which reads the store from now on, covers them all.
        let upto = self.requested.load(Ordering::SeqCst);
        if self.catch_up_locked().await.is_ok() {
            self.covered.fetch_max(upto, Ordering::SeqCst);
        } else {
            self.wake.notify_one();
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

    /// The publisher loop: applies the change log's new rows on each wake-up, on each
    /// PostgreSQL notification and every [`POLL_INTERVAL`]; computes the whole set every
    /// [`REPUBLISH_INTERVAL`] (and whenever the log cannot say what changed); revokes expired
    /// keys and prunes the log every [`EXPIRY_INTERVAL`]; until `shutdown` turns true.
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
        let mut last_endpoints = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                // The cache a restart will use: the store's set when it answers.
                let _ = self.reconcile().await;
                self.save_endpoints();
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
            if self.last_whole.lock().elapsed() >= REPUBLISH_INTERVAL {
                let _ = self.recompute().await;
            } else {
                let _ = self.reconcile().await;
            }
        }
    }
}

/// Why each peer of `old` missing from `new` goes: a device whose id is still in `new` under
/// another key was rotated; any other device was revoked (by IT staff, key expiry, or a sync
/// that found its user gone); a static peer was removed from the config.
pub fn removal_reasons(old: &[PeerSpec], new: &[PeerSpec]) -> HashMap<PublicKey, EndReason> {
    reasons_for(old.iter(), new)
}

/// [`removal_reasons`] for the peers `old` yields.
fn reasons_for<'a>(
    old: impl Iterator<Item = &'a PeerSpec>,
    new: &[PeerSpec],
) -> HashMap<PublicKey, EndReason> {
    let kept: HashSet<PublicKey> = new.iter().map(|p| p.public_key).collect();
    let devices: HashSet<i64> = new
        .iter()
        .filter_map(|p| match PeerIdentity::parse(&p.label) {
            PeerIdentity::Device { id, .. } => Some(id),
            PeerIdentity::Static { .. } => None,
        })
        .collect();
    old.filter(|p| !kept.contains(&p.public_key))
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
    // is the change log's next row.
    let windows = store.open_windows().await?;
    Ok(with_windows(rows, windows))
}

/// [`active_devices`] among those with an id in `ids` or a user in `users`: O(devices named).
pub async fn active_devices_named(
    store: &Store,
    ids: &[i64],
    users: &[String],
) -> Result<Vec<ActiveDevice>, ControlError> {
    let rows = store.active_devices_named(ids, users).await?;
    let found: Vec<i64> = rows.iter().map(|r| r.device.id).collect();
    let windows = store.open_windows_of(&found).await?;
    Ok(with_windows(rows, windows))
}

/// Active devices of enabled users from the store's rows, with their open windows' ends.
fn with_windows(
    rows: Vec<crate::store::DeviceWithUser>,
    windows: Vec<crate::store::OpenWindow>,
) -> Vec<ActiveDevice> {
    let windows: HashMap<i64, i64> = windows
        .into_iter()
        .map(|w| (w.device_id, w.until_ms))
        .collect();
    rows.into_iter()
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
        .collect()
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
