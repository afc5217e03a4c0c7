//! Endpoint memory: the gateway writes where each peer's traffic last came from and, after a
//! restart, initiates a handshake towards each, so that stock WireGuard clients are back within
//! seconds instead of waiting for their own retry timers (15 s and more).

use std::time::Duration;

use tokio::sync::watch;

use crate::control::peer_cache::PeerCache;
use crate::gateway::GatewayHandle;
use crate::time;

use super::cache::{self, Endpoints, ENDPOINTS_FILE};

/// How often the endpoints are compared with the last written ones.
pub const SAVE_PERIOD: Duration = Duration::from_secs(5);

/// The endpoint file beside `cache`.
pub fn file(cache: &PeerCache) -> PeerCache {
    cache.sibling(ENDPOINTS_FILE)
}

/// Initiates a handshake towards the remembered endpoint of every peer the gateway runs now;
/// returns what it remembered (the base of the next writes).
pub fn call_back(handle: &GatewayHandle, file: &PeerCache) -> Endpoints {
    let public = handle.public_key();
    let Some((_, known)) = cache::load::<Endpoints>(file, &public) else {
        return Endpoints::default();
    };
    let running: std::collections::HashSet<_> = handle
        .peer_stats()
        .into_iter()
        .map(|p| p.public_key)
        .collect();
    let targets = known.targets(|k| running.contains(k));
    if !targets.is_empty() {
        tracing::info!(
            peers = targets.len(),
            "initiating handshakes towards the peers' last endpoints"
        );
        handle.initiate_handshakes(targets);
    }
    known
}

/// The endpoints to write: `known` updated with the peers' current endpoints, limited to the
/// peers the gateway runs (a peer without traffic since the restart keeps its old endpoint).
pub fn merged(handle: &GatewayHandle, known: &Endpoints) -> Endpoints {
    let mut out = Endpoints::default();
    for p in handle.peer_stats() {
        let k = p.public_key.to_base64();
        let e = p.endpoint.or_else(|| known.endpoints.get(&k).copied());
        if let Some(e) = e {
            out.endpoints.insert(k, e);
        }
    }
    out
}

/// Writes the endpoints every [`SAVE_PERIOD`] when they changed, and once more at `stop`.
pub async fn remember(
    handle: GatewayHandle,
    file: PeerCache,
    mut known: Endpoints,
    mut stop: watch::Receiver<bool>,
) {
    let public = handle.public_key();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(SAVE_PERIOD) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let now = merged(&handle, &known);
        if now != known && cache::save(&file, &public, time::now_ms(), &now).is_ok() {
            known = now;
        }
        if stopping {
            return;
        }
    }
}

/// Calls the peers of `handle` back at their remembered endpoints and keeps writing them beside
/// the gateway key (`private_key_file`'s folder) on `runtime` until `stop`; `None` if the
/// cache key cannot be opened (logged).
pub fn start(
    runtime: &tokio::runtime::Runtime,
    handle: &GatewayHandle,
    private_key_file: &std::path::Path,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let cache = crate::control::failstatic::open_cache(private_key_file)?;
    let file = file(&cache);
    let known = call_back(handle, &file);
    Some(runtime.spawn(remember(handle.clone(), file, known, stop)))
}
