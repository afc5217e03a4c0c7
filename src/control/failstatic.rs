//! Starting `sesame serve` without the database: the gateway serves the peer set of its local
//! cache (authenticated, see `peer_cache`) within seconds and the store is retried until it
//! answers; after any restart the gateway re-initiates handshakes towards the cached endpoints.

use crate::key::PublicKey;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::store::Store;

use super::desired::ActiveDevice;
use super::peer_cache::{CachedDevice, PeerCache};
use super::plane::{active_devices, desired_from};
use super::PeerSink;

/// How long start-up waits for the store before serving the cached set.
pub const STORE_START_TIMEOUT: Duration = Duration::from_secs(3);
/// Delay between two attempts to reach the store while serving the cached set.
pub const STORE_RETRY: Duration = Duration::from_secs(2);

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

/// The cached devices, or none with a clear log line when the file is refused.
pub fn load_cached(cache: &PeerCache, gateway_public: &PublicKey) -> Vec<CachedDevice> {
    match cache.load(gateway_public) {
        Ok(Some((_, devices))) => devices,
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, file = %cache.path().display(), "peer cache refused: it is not used (the gateway waits for the database)");
            Vec::new()
        }
    }
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

/// Connects the store and publishes its devices. While the store cannot be read, serves the
/// cached set and retries every [`STORE_RETRY`]; `None` if `shutdown` turns true first. Then
/// initiates a handshake towards each cached endpoint either way.
pub async fn connect_or_serve_cached(
    config: &Config,
    sink: &dyn PeerSink,
    cached: &[CachedDevice],
    revoked: &HashSet<i64>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Store> {
    let cached: Vec<CachedDevice> = cached
        .iter()
        .filter(|c| !revoked.contains(&c.id))
        .cloned()
        .collect();
    let endpoints: Vec<(PublicKey, std::net::SocketAddr)> = cached
        .iter()
        .filter_map(|c| Some((c.public_key, c.endpoint?)))
        .collect();
    if let Some((store, mut devices)) = try_store(config).await {
        devices.retain(|d| !revoked.contains(&d.id));
        sink.set_peers(desired_from(config, &devices));
        sink.initiate_handshakes(endpoints);
        return Some(store);
    }
    let devices: Vec<ActiveDevice> = cached.iter().map(CachedDevice::active).collect();
    tracing::warn!(
        devices = devices.len(),
        "database unreachable at start: serving the cached peer set (fail-static), retrying every {}s",
        STORE_RETRY.as_secs()
    );
    sink.set_peers(desired_from(config, &devices));
    sink.initiate_handshakes(endpoints);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STORE_RETRY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
        if let Some((store, mut devices)) = try_store(config).await {
            devices.retain(|d| !revoked.contains(&d.id));
            tracing::info!("database reachable again: peer set from the store");
            sink.set_peers(desired_from(config, &devices));
            return Some(store);
        }
    }
}
