//! The gateway's caches beside `control::peer_cache` (same key, same sealed format): a site
//! gateway's feed state ([`SITE_CACHE_FILE`]) and every peer's last endpoint
//! ([`ENDPOINTS_FILE`], site or static `[[peer]]`s), so that a restart serves and calls back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::control::peer_cache::{check_age, PeerCache, PeerCacheError};
use crate::key::PublicKey;

pub use super::state::SiteState;

/// The site gateway's feed state, beside `peer-cache.json` in the gateway key's folder.
pub const SITE_CACHE_FILE: &str = "site-cache.json";
/// Each peer's last endpoint (`sesame gateway`, with or without a site).
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// What a site gateway restarts from: [`SiteState`] as last fed.
pub type SiteCache = SiteState;

/// The peers' last endpoints (base64 key → address).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    #[serde(default)]
    pub endpoints: BTreeMap<String, SocketAddr>,
}

impl Endpoints {
    pub fn from_pairs(pairs: &[(PublicKey, SocketAddr)]) -> Endpoints {
        Endpoints {
            endpoints: pairs.iter().map(|(k, e)| (k.to_base64(), *e)).collect(),
        }
    }

    /// The pairs whose key is among `keep` (peers still configured).
    pub fn targets(&self, keep: impl Fn(&PublicKey) -> bool) -> Vec<(PublicKey, SocketAddr)> {
        self.endpoints
            .iter()
            .filter_map(|(k, e)| Some((PublicKey::parse(k).ok()?, *e)))
            .filter(|(k, _)| keep(k))
            .collect()
    }
}

/// Loads `file` beside `cache`; a refused file is logged and ignored (the gateway starts empty
/// and waits for its portal).
pub fn load<T: serde::de::DeserializeOwned>(
    cache: &PeerCache,
    gateway_public: &PublicKey,
) -> Option<(i64, T)> {
    match cache.load_value(gateway_public) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, file = %cache.path().display(), "gateway cache refused: it is not used");
            None
        }
    }
}

/// Loads the feed state beside `cache`, refused (logged, `None`: the gateway starts empty and
/// waits for its portal) when a portal last confirmed it longer than `max_age` before `now_ms`.
/// Its peers carry their key expiries: the feed loop removes each at its instant.
pub fn load_fresh(
    cache: &PeerCache,
    gateway_public: &PublicKey,
    now_ms: i64,
    max_age: Duration,
) -> Option<(i64, SiteCache)> {
    let loaded = cache.load_value::<SiteCache>(gateway_public).and_then(|c| {
        if let Some((written_at, _)) = &c {
            check_age(cache.path(), *written_at, now_ms, max_age)?;
        }
        Ok(c)
    });
    match loaded {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, file = %cache.path().display(), "cache de la passerelle refusé : non utilisé, elle attend son portail / gateway cache refused: it is not used (the gateway waits for its portal)");
            None
        }
    }
}

/// Saves, logging a failure (the next save retries).
pub fn save<T: serde::Serialize>(
    cache: &PeerCache,
    gateway_public: &PublicKey,
    now_ms: i64,
    body: &T,
) -> Result<(), PeerCacheError> {
    cache
        .save_value(gateway_public, now_ms, body)
        .inspect_err(|e| tracing::warn!(error = %e, "cannot write the gateway cache; retrying at the next change"))
}
