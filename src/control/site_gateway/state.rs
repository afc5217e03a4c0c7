//! The site gateway's view of its feed: the last full set plus the changes since, as peers the
//! gateway runs (rules compiled with the same `policy` code as `sesame serve`).

use std::collections::BTreeMap;

use crate::api::feed::{FeedPeer, FeedResource, FeedUpdate};
use crate::control::feed_peers::{compile_resources, peer_spec, FeedPeerError};
use crate::gateway::PeerSpec;
use crate::policy::Policy;

/// The feed state a site gateway runs and caches.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteState {
    pub site: String,
    /// Empty until the first full set.
    pub generation: String,
    pub version: u64,
    pub resources: Vec<FeedResource>,
    /// By base64 public key.
    pub peers: BTreeMap<String, FeedPeer>,
    /// The portal's `[mfa] idle` (ms), as last fed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_idle_ms: Option<u64>,
}

/// What one feed answer asks of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The whole set (or the rules) changed: restate every peer.
    Full,
    /// These peers changed (by key), these left.
    Changes {
        upserts: Vec<String>,
        removed: Vec<String>,
    },
    /// Nothing new.
    Nothing,
    /// Changes from another generation than ours: ask again without `since`.
    Resync,
}

/// A feed answer the gateway refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the portal sent the peers of site {got:?}, this gateway serves {want:?}: check [gateway] site and the token in portal_token_file")]
pub struct WrongSite {
    pub want: String,
    pub got: String,
}

impl SiteState {
    pub fn new(site: &str) -> SiteState {
        SiteState {
            site: site.to_string(),
            ..SiteState::default()
        }
    }

    /// The `since` to ask the feed with: none before the first full set.
    pub fn since(&self) -> Option<u64> {
        (!self.generation.is_empty()).then_some(self.version)
    }

    /// Applies one answer of the feed.
    pub fn apply(&mut self, u: FeedUpdate) -> Result<Applied, WrongSite> {
        if u.site != self.site {
            return Err(WrongSite {
                want: self.site.clone(),
                got: u.site,
            });
        }
        self.mfa_idle_ms = u.mfa_idle_ms;
        if u.full {
            self.generation = u.generation;
            self.version = u.version;
            self.resources = u.resources;
            self.peers = u
                .peers
                .into_iter()
                .map(|p| (p.public_key.clone(), p))
                .collect();
            return Ok(Applied::Full);
        }
        if u.generation != self.generation {
            return Ok(Applied::Resync);
        }
        let rules_changed = u.resources != self.resources;
        self.version = self.version.max(u.version);
        self.resources = u.resources;
        let mut upserts = Vec::new();
        for p in u.peers {
            if self.peers.get(&p.public_key) != Some(&p) {
                upserts.push(p.public_key.clone());
                self.peers.insert(p.public_key.clone(), p);
            }
        }
        let removed: Vec<String> = u
            .removed
            .into_iter()
            .filter(|k| self.peers.remove(k).is_some())
            .collect();
        Ok(if rules_changed {
            Applied::Full
        } else if upserts.is_empty() && removed.is_empty() {
            Applied::Nothing
        } else {
            Applied::Changes { upserts, removed }
        })
    }

    /// The site's resources compiled (the feed loop refuses an answer whose rules do not
    /// compile, so a fed or cached state compiles).
    pub fn policy(&self) -> Result<Policy, FeedPeerError> {
        compile_resources(&self.resources)
    }

    /// The peer as the gateway runs it at `now_ms` (`control::feed_peers`, the one conversion):
    /// `None` once its key expired or if the key is unreadable (logged). Its access window
    /// travels with it: the gateway opens and closes it on its own clock.
    pub fn spec(&self, policy: &Policy, p: &FeedPeer, now_ms: i64) -> Option<PeerSpec> {
        if p.key_expires_at_ms <= now_ms {
            return None;
        }
        match peer_spec(p, policy) {
            Ok(spec) => Some(spec),
            Err(e) => {
                tracing::warn!(error = %e, "feed peer skipped");
                None
            }
        }
    }

    /// Every peer the gateway runs at `now_ms`.
    pub fn specs(&self, policy: &Policy, now_ms: i64) -> Vec<PeerSpec> {
        self.peers
            .values()
            .filter_map(|p| self.spec(policy, p, now_ms))
            .collect()
    }

    /// The next instant after `now_ms` when a peer leaves on its own: a key expiring. (A
    /// window's end is the gateway's to see: it travels with the peer.)
    pub fn next_change(&self, now_ms: i64) -> Option<i64> {
        self.peers
            .values()
            .map(|p| p.key_expires_at_ms)
            .filter(|t| *t > now_ms)
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "state_tests.rs"]
mod tests;
