//! The site feed's peers as gateway peers: a `FeedPeer` (and the site's resources) to a `PeerSpec`, its access window end included.
//!
//! One conversion for the site gateway's feed client and its fail-static cache: the resources
//! are compiled with the same [`policy`](crate::policy) code as `sesame serve`'s, the rules of
//! `mfa = true` resources go apart ([`PeerSpec::protected`]) and the window end
//! (`mfa_until_ms`) travels as is: the gateway judges it by its own clock.

use crate::api::feed::{FeedPeer, FeedResource};
use crate::gateway::{PeerIdentity, PeerSpec};
use crate::key::{KeyError, PublicKey};
use crate::policy::{Policy, Resource, Rule, RuleError};

/// A feed answer the gateway cannot use; the message names the resource or peer.
#[derive(Debug, thiserror::Error)]
pub enum FeedPeerError {
    #[error("feed resource {resource:?}: rule {rule:?}: {source}")]
    Rule {
        resource: String,
        rule: String,
        #[source]
        source: RuleError,
    },
    #[error("feed peer of device {device_id}: public key {key:?}: {source}")]
    Key {
        device_id: i64,
        key: String,
        #[source]
        source: KeyError,
    },
}

/// The site's resources as a policy (no grants: the feed names each peer's resources).
pub fn compile_resources(resources: &[FeedResource]) -> Result<Policy, FeedPeerError> {
    let mut out = Vec::with_capacity(resources.len());
    for r in resources {
        let rules = r
            .allow
            .iter()
            .map(|a| {
                a.parse::<Rule>().map_err(|source| FeedPeerError::Rule {
                    resource: r.name.clone(),
                    rule: a.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Resource {
            name: r.name.clone(),
            site: String::new(),
            description: r.description.clone(),
            rules,
        });
    }
    let mut policy = Policy::new(out);
    for r in resources.iter().filter(|r| r.mfa) {
        // Every name was just added: this cannot fail.
        let _ = policy.require_mfa(&r.name);
    }
    Ok(policy)
}

/// One feed peer as the gateway applies it: its resources compiled against `site` (names the
/// site does not define grant nothing), protected ones apart, its window end, its label
/// `device:ID:USER` (as `sesame serve` labels devices: same audit records).
pub fn peer_spec(peer: &FeedPeer, site: &Policy) -> Result<PeerSpec, FeedPeerError> {
    let public_key = PublicKey::parse(&peer.public_key).map_err(|source| FeedPeerError::Key {
        device_id: peer.device_id,
        key: peer.public_key.clone(),
        source,
    })?;
    let (rules, protected) =
        site.split_rules_for_resources(peer.resources.iter().map(String::as_str));
    let mfa_until_ms = peer.mfa_until_ms.filter(|_| !protected.is_empty());
    Ok(PeerSpec {
        public_key,
        address: peer.address,
        rules,
        protected,
        mfa_until_ms,
        label: PeerIdentity::Device {
            id: peer.device_id,
            username: peer.username.clone(),
        }
        .label(),
        persistent_keepalive: peer.persistent_keepalive,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn resources() -> Vec<FeedResource> {
        vec![
            FeedResource {
                name: "paie".into(),
                description: "Paie".into(),
                allow: vec!["198.18.10.10/32 tcp:443".into()],
                mfa: true,
            },
            FeedResource {
                name: "intranet".into(),
                description: String::new(),
                allow: vec!["198.18.30.0/24 tcp:80,443".into()],
                mfa: false,
            },
        ]
    }

    fn peer(until: Option<i64>) -> FeedPeer {
        FeedPeer {
            public_key: PublicKey::from_bytes([7; 32]).unwrap().to_base64(),
            address: Ipv4Addr::new(100, 64, 0, 9),
            device_id: 12,
            device_name: "PC-PAIE-01".into(),
            username: "alice".into(),
            resources: vec!["paie".into(), "intranet".into(), "unknown".into()],
            key_expires_at_ms: 1_900_000_000_000,
            mfa_until_ms: until,
            persistent_keepalive: Some(25),
        }
    }

    #[test]
    fn protected_rules_and_the_window_travel_apart_from_the_ordinary_rules() {
        let site = compile_resources(&resources()).unwrap();
        let spec = peer_spec(&peer(Some(1_800_000_000_000)), &site).unwrap();
        let paie = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 10));
        let intranet = IpAddr::V4(Ipv4Addr::new(198, 18, 30, 4));
        assert!(!spec.rules.allows(paie, 6, 443));
        assert!(spec.protected.allows(paie, 6, 443));
        assert!(spec.rules.allows(intranet, 6, 80));
        assert!(!spec.protected.allows(intranet, 6, 80));
        assert_eq!(spec.mfa_until_ms, Some(1_800_000_000_000));
        assert_eq!(spec.label, "device:12:alice");
        assert_eq!(spec.persistent_keepalive, Some(25));
        assert_eq!(
            site.resource_name(spec.protected.matching(paie, 6, 443).unwrap()),
            Some("paie")
        );
        // No window: the protected rules stay, closed.
        let closed = peer_spec(&peer(None), &site).unwrap();
        assert_eq!(
            (closed.mfa_until_ms, closed.protected),
            (None, spec.protected)
        );
    }

    #[test]
    fn a_window_without_protected_resources_is_dropped_and_bad_input_is_named() {
        let site = compile_resources(&resources()).unwrap();
        let mut p = peer(Some(5));
        p.resources = vec!["intranet".into()];
        assert_eq!(peer_spec(&p, &site).unwrap().mfa_until_ms, None);
        p.public_key = "not a key".into();
        let e = peer_spec(&p, &site).unwrap_err().to_string();
        assert!(e.contains("device 12"), "{e}");
        let mut bad = resources();
        bad[0].allow = vec!["198.18.10.10/32 tcp:http".into()];
        let e = compile_resources(&bad).unwrap_err().to_string();
        assert!(e.contains("\"paie\""), "{e}");
    }
}
