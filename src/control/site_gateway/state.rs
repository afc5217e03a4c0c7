//! The site gateway's view of its feed: the last full set plus the changes since, as peers the
//! gateway runs (rules compiled with the same `policy` code as `sesame serve`).

use std::collections::BTreeMap;

use crate::api::feed::{FeedPeer, FeedResource, FeedUpdate};
use crate::gateway::{PeerIdentity, PeerSpec};
use crate::key::PublicKey;
use crate::policy::{Policy, Resource, Rule};

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

    /// The site's resources compiled; a rule the gateway cannot read is skipped (logged).
    pub fn policy(&self) -> Policy {
        Policy::new(self.resources.iter().map(|r| Resource {
            name: r.name.clone(),
            site: self.site.clone(),
            description: r.description.clone(),
            rules: r
                .allow
                .iter()
                .filter_map(|a| match a.parse::<Rule>() {
                    Ok(rule) => Some(rule),
                    Err(e) => {
                        tracing::warn!(resource = %r.name, rule = %a, error = %e, "rule from the portal skipped");
                        None
                    }
                })
                .collect(),
        }))
    }

    /// The peer as the gateway runs it at `now_ms`: `None` once its key expired or if the key
    /// is unreadable. A resource with `mfa = true` is reachable only while the window is open.
    pub fn spec(&self, policy: &Policy, p: &FeedPeer, now_ms: i64) -> Option<PeerSpec> {
        if p.key_expires_at_ms <= now_ms {
            return None;
        }
        let public_key = PublicKey::parse(&p.public_key).ok()?;
        let window_open = p.mfa_until_ms.is_some_and(|until| now_ms < until);
        let names =
            p.resources.iter().map(String::as_str).filter(|name| {
                window_open || !self.resources.iter().any(|r| r.name == *name && r.mfa)
            });
        Some(PeerSpec {
            public_key,
            address: p.address,
            rules: policy.rules_for_resources(names),
            // The window is folded into `rules` here (recomputed at `next_change`); the
            // gateway's own window (idle, cut flows, `mfa.window_closed`) is
            // `control::feed_peers::peer_spec`'s, not used by the site gateway yet.
            protected: Default::default(),
            mfa_until_ms: None,
            label: PeerIdentity::Device {
                id: p.device_id,
                username: p.username.clone(),
            }
            .label(),
            persistent_keepalive: p.persistent_keepalive,
        })
    }

    /// Every peer the gateway runs at `now_ms`.
    pub fn specs(&self, now_ms: i64) -> Vec<PeerSpec> {
        let policy = self.policy();
        self.peers
            .values()
            .filter_map(|p| self.spec(&policy, p, now_ms))
            .collect()
    }

    /// The next instant after `now_ms` when a peer's rules or presence change on their own:
    /// a key expiring, an access window closing.
    pub fn next_change(&self, now_ms: i64) -> Option<i64> {
        self.peers
            .values()
            .flat_map(|p| [Some(p.key_expires_at_ms), p.mfa_until_ms])
            .flatten()
            .filter(|t| *t > now_ms)
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "state_tests.rs"]
mod tests;
