//! The feed loop of a site gateway: long-polls its portals in turn, applies each answer to the
//! gateway, removes peers whose key expires on its own clock, and writes the fail-static cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::control::emergency::Emergency;
use crate::control::feed_peers::compile_resources;
use crate::control::peer_cache::PeerCache;
use crate::gateway::engine::DEFAULT_MFA_IDLE;
use crate::gateway::{EndReason, GatewayHandle};
use crate::key::PublicKey;
use crate::policy::Policy;
use crate::time;

use super::cache;
use super::client::{ClientError, PortalClient};
use super::state::{Applied, SiteState};

/// First delay after a failed request; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the metrics read of the feed (unix ms; 0 = never).
#[derive(Debug, Default)]
pub struct FeedStatus {
    pub last_answer_ms: AtomicI64,
    pub cache_written_ms: AtomicI64,
    pub peers: AtomicU64,
    pub errors: AtomicU64,
    pub unauthorized: AtomicU64,
}

/// The loop's state: the feed as last applied, and where it goes.
pub struct FeedLoop {
    pub client: PortalClient,
    pub state: SiteState,
    pub gateway: GatewayHandle,
    /// The site cache file (`None`: cannot be written, logged at start).
    pub cache: Option<PeerCache>,
    /// The compiled resources, for the flow audit's resource names.
    pub policy: Arc<ArcSwap<Policy>>,
    pub status: Arc<FeedStatus>,
    /// Devices cut here with `sesame devices revoke ID --emergency`: kept out whatever the
    /// feed says.
    pub emergency: Option<Arc<Emergency>>,
}

impl FeedLoop {
    /// Serves `state` (from the cache) at once, without waiting for any portal. A cached state
    /// whose rules no longer compile is dropped (the gateway waits for its portal).
    pub fn serve_cached(&mut self) {
        match self.state.policy() {
            Ok(policy) => self.policy.store(Arc::new(policy)),
            Err(e) => {
                tracing::error!(error = %e, "cached peer set refused: waiting for a portal");
                self.state = SiteState::new(&self.state.site);
            }
        }
        self.set_mfa_idle();
        self.gateway.set_peers(self.specs(time::now_ms()));
        self.status
            .peers
            .store(self.state.peers.len() as u64, Ordering::Relaxed);
    }

    /// `[mfa] idle` as the portal last said (the gateway's default before any).
    fn set_mfa_idle(&self) {
        let idle = self
            .state
            .mfa_idle_ms
            .map_or(DEFAULT_MFA_IDLE, Duration::from_millis);
        self.gateway.set_mfa_idle(idle);
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut portal = 0usize;
        let mut delay = Duration::ZERO;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let since = self.state.since();
            let client = self.client.clone();
            let poll = async move {
                tokio::time::sleep(delay).await;
                client.feed(portal, since).await
            };
            tokio::pin!(poll);
            let answer = loop {
                let next = self.state.next_change(time::now_ms());
                let until_next = next.map_or(Duration::from_secs(3600), |t| {
                    Duration::from_millis(u64::try_from(t - time::now_ms()).unwrap_or(0))
                });
                tokio::select! {
                    a = &mut poll => break a,
                    _ = tokio::time::sleep(until_next) => self.restate(),
                    _ = stop.wait_for(|s| *s) => return,
                }
            };
            match answer {
                Ok(update) => {
                    self.status
                        .last_answer_ms
                        .store(time::now_ms(), Ordering::Relaxed);
                    if update.is_some_and(|u| !self.apply(u)) {
                        // A refused answer would come back at once: ask again later, as
                        // after an error, not in a loop.
                        self.status.errors.fetch_add(1, Ordering::Relaxed);
                        delay = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    } else {
                        delay = Duration::ZERO;
                        backoff = FIRST_BACKOFF;
                    }
                    // The portal confirmed the set: the cache's age says so, changed or not.
                    let written = self.status.cache_written_ms.load(Ordering::Relaxed);
                    let refresh = time::duration_ms(crate::control::peer_cache::REFRESH);
                    if time::now_ms().saturating_sub(written) >= refresh {
                        self.save();
                    }
                }
                Err(e) => {
                    self.status.errors.fetch_add(1, Ordering::Relaxed);
                    if matches!(e, ClientError::Unauthorized { .. }) {
                        self.status.unauthorized.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "site token refused");
                    } else {
                        tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "feed unavailable: serving the last peer set (fail-static)");
                    }
                    portal = (portal + 1) % self.client.portals().len().max(1);
                    delay = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Applies one answer; false when it is refused (kept out of the peer set).
    fn apply(&mut self, u: crate::api::feed::FeedUpdate) -> bool {
        let skew = u.server_time_ms - time::now_ms();
        if skew.abs() > 30_000 {
            tracing::warn!(skew_ms = skew, "the portal's clock and this gateway's differ: key expiries are applied on this gateway's clock");
        }
        // Rules this gateway cannot compile: the whole answer is refused, the last set served.
        let policy = match compile_resources(&u.resources) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "feed answer refused");
                return false;
            }
        };
        let idle = self.state.mfa_idle_ms;
        let applied = self.state.apply(u);
        if applied.is_ok() && self.state.mfa_idle_ms != idle {
            self.set_mfa_idle();
        }
        match applied {
            Err(e) => {
                tracing::error!(error = %e, "feed answer refused");
                return false;
            }
            Ok(Applied::Nothing) => return true,
            Ok(Applied::Resync) => {
                tracing::info!("the portal's feed restarted: asking for the whole set");
                self.state.generation.clear();
                return true;
            }
            Ok(Applied::Full) => {
                self.policy.store(Arc::new(policy));
                self.restate();
            }
            Ok(Applied::Changes { upserts, removed }) => {
                let now = time::now_ms();
                let policy = self.policy.load();
                let revoked = self.revoked();
                for k in &upserts {
                    let spec = self
                        .state
                        .peers
                        .get(k)
                        .filter(|p| !revoked.contains(&p.device_id))
                        .and_then(|p| self.state.spec(&policy, p, now));
                    match spec {
                        Some(spec) => {
                            self.gateway.upsert_peer(spec);
                        }
                        None => remove(&self.gateway, k, EndReason::Revoked),
                    }
                }
                for k in &removed {
                    remove(&self.gateway, k, EndReason::Removed);
                }
                tracing::info!(
                    upserts = upserts.len(),
                    removed = removed.len(),
                    version = self.state.version,
                    "feed changes applied"
                );
            }
        }
        self.status
            .peers
            .store(self.state.peers.len() as u64, Ordering::Relaxed);
        self.save();
        true
    }

    /// Restates every peer: after a full set, a change of rules or a key expiring (peers whose
    /// key expired end as revoked).
    fn restate(&mut self) {
        let now = time::now_ms();
        let expired: HashMap<PublicKey, EndReason> = self
            .state
            .peers
            .values()
            .filter(|p| p.key_expires_at_ms <= now)
            .filter_map(|p| PublicKey::parse(&p.public_key).ok())
            .map(|k| (k, EndReason::Revoked))
            .collect();
        let specs = self.specs(now);
        self.gateway.set_peers_because(specs, &expired);
    }

    fn revoked(&self) -> std::collections::HashSet<i64> {
        self.emergency
            .as_ref()
            .map(|e| e.pending_ids())
            .unwrap_or_default()
    }

    /// The peers to run at `now_ms`: the feed's, less the emergency revocations.
    fn specs(&self, now_ms: i64) -> Vec<crate::gateway::PeerSpec> {
        let revoked = self.revoked();
        let policy = self.policy.load();
        self.state
            .peers
            .values()
            .filter(|p| !revoked.contains(&p.device_id))
            .filter_map(|p| self.state.spec(&policy, p, now_ms))
            .collect()
    }

    fn save(&self) {
        let Some(file) = &self.cache else { return };
        let now = time::now_ms();
        if cache::save(file, &self.gateway.public_key(), now, &self.state).is_ok() {
            self.status.cache_written_ms.store(now, Ordering::Relaxed);
        }
    }
}

fn remove(gateway: &GatewayHandle, key: &str, reason: EndReason) {
    if let Ok(k) = PublicKey::parse(key) {
        gateway.remove_peer_because(&k, reason);
    }
}
