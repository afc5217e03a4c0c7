//! Starting `sesame serve` without the database: the gateway serves the peer set of its local
//! cache (authenticated, see `peer_cache`) within seconds and the store is retried until it
//! answers; after any restart the gateway re-initiates handshakes towards the cached endpoints.
//! A cache older than `[gateway] max_cache_age` is refused; a cached key that expires while the
//! store is still down leaves the gateway at its expiry (checked every [`EXPIRY_CHECK`]).

use crate::key::PublicKey;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::gateway::EndReason;
use crate::store::Store;
use crate::time::Clock;

use super::desired::ActiveDevice;
use super::peer_cache::{check_age, CachedDevice, PeerCache};
use super::plane::{active_devices, desired_from};
use super::PeerSink;

/// How long start-up waits for the store before serving the cached set.
pub const STORE_START_TIMEOUT: Duration = Duration::from_secs(3);
/// Delay between two attempts to reach the store while serving the cached set.
pub const STORE_RETRY: Duration = Duration::from_secs(2);
/// How often served keys are checked for expiry, with or without the store.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// The peer cache beside the gateway key; `None` (logged) if it cannot be opened.
pub fn open_cache(private_key_file: &Path) -> Option<PeerCache> {
    let dir = private_key_file.parent().unwrap_or(Path::new("."));
    match PeerCache::open(dir) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "peer cache unavailable: a restart will need the database");
            None
        }
    }
}

/// What the cache held at start: when the store last confirmed it, and its devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cached {
    /// Unix ms; 0 when nothing was loaded.
    pub written_at: i64,
    pub devices: Vec<CachedDevice>,
}

/// The cached devices, or none with a clear log line when the file is refused: modified,
/// another gateway's, or older than `max_age` at `now_ms` (the gateway then waits for the
/// database, as with no cache).
pub fn load_cached(
    cache: &PeerCache,
    gateway_public: &PublicKey,
    now_ms: i64,
    max_age: Duration,
) -> Cached {
    let loaded = cache.load(gateway_public).and_then(|c| {
        if let Some((written_at, _)) = &c {
            check_age(cache.path(), *written_at, now_ms, max_age)?;
        }
        Ok(c)
    });
    match loaded {
        Ok(Some((written_at, devices))) => Cached {
            written_at,
            devices,
        },
        Ok(None) => Cached::default(),
        Err(e) => {
            tracing::error!(error = %e, file = %cache.path().display(), "cache des pairs refusé : non utilisé, la passerelle attend la base de données / peer cache refused: it is not used (the gateway waits for the database)");
            Cached::default()
        }
    }
}

/// Whether `d`'s key has expired at `now_ms`.
pub fn expired(d: &ActiveDevice, now_ms: i64) -> bool {
    d.key_expires_at.is_some_and(|t| t <= now_ms)
}

async fn try_store(config: &Config) -> Option<(Store, Vec<ActiveDevice>)> {
    let attempt = async {
        let store = Store::connect(&config.database.url).await.ok()?;
        match active_devices(&store).await {
            Ok(d) => Some((store, d)),
            Err(_) => {
                store.close().await;
                None
            }
        }
    };
    tokio::time::timeout(STORE_START_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// Removes from `served` (and from the gateway) the devices whose key expired at `now_ms`.
fn expire_served(served: &mut Vec<ActiveDevice>, now_ms: i64, sink: &dyn PeerSink) {
    let (gone, kept): (Vec<_>, Vec<_>) = served.drain(..).partition(|d| expired(d, now_ms));
    *served = kept;
    for d in gone {
        sink.remove_peer_because(&d.public_key, EndReason::Revoked);
        tracing::warn!(device = d.id, user = %d.username, "device key expired while the database is unreachable: peer removed");
    }
}

/// Connects the store and publishes its devices. While the store cannot be read, serves the
/// cached set (less the keys expired by `clock`, and removing each key when it expires) and
/// retries every [`STORE_RETRY`]; `None` if `shutdown` turns true first. Then initiates a
/// handshake towards each cached endpoint either way.
pub async fn connect_or_serve_cached(
    config: &Config,
    sink: &dyn PeerSink,
    cached: &[CachedDevice],
    revoked: &HashSet<i64>,
    clock: &dyn Clock,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Store> {
    let now = clock.now_ms();
    let cached: Vec<CachedDevice> = cached
        .iter()
        .filter(|c| !revoked.contains(&c.id))
        .filter(|c| !expired(&c.active(), now))
        .cloned()
        .collect();
    let endpoints: Vec<(PublicKey, std::net::SocketAddr)> = cached
        .iter()
        .filter_map(|c| Some((c.public_key, c.endpoint?)))
        .collect();
    if let Some((store, mut devices)) = try_store(config).await {
        devices.retain(|d| !revoked.contains(&d.id) && !expired(d, clock.now_ms()));
        sink.set_peers(desired_from(config, &devices));
        sink.initiate_handshakes(endpoints);
        return Some(store);
    }
    let mut served: Vec<ActiveDevice> = cached.iter().map(CachedDevice::active).collect();
    tracing::warn!(
        devices = served.len(),
        "database unreachable at start: serving the cached peer set (fail-static), retrying every {}s",
        STORE_RETRY.as_secs()
    );
    sink.set_peers(desired_from(config, &served));
    sink.initiate_handshakes(endpoints);
    loop {
        let attempt = async {
            tokio::time::sleep(STORE_RETRY).await;
            try_store(config).await
        };
        tokio::pin!(attempt);
        // Keys expire on time while the attempt waits.
        let found = loop {
            tokio::select! {
                found = &mut attempt => break found,
                _ = tokio::time::sleep(EXPIRY_CHECK) => expire_served(&mut served, clock.now_ms(), sink),
                _ = shutdown.wait_for(|stop| *stop) => return None,
            }
        };
        if let Some((store, mut devices)) = found {
            devices.retain(|d| !revoked.contains(&d.id) && !expired(d, clock.now_ms()));
            tracing::info!("database reachable again: peer set from the store");
            sink.set_peers(desired_from(config, &devices));
            return Some(store);
        }
    }
}
