//! Unit tests of the control plane's pure parts.

use super::*;
use crate::policy::RuleSet;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32]).expect("key")
}

fn peer(n: u8, who: PeerIdentity) -> PeerSpec {
    PeerSpec {
        public_key: key(n),
        address: std::net::Ipv4Addr::new(100, 64, 0, n),
        rules: RuleSet::deny_all(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: who.label(),
        persistent_keepalive: None,
    }
}

#[test]
fn removed_peers_say_why_they_go() {
    let dev = |id| PeerIdentity::Device {
        id,
        username: "alice".into(),
    };
    let old = [
        peer(1, dev(1)),
        peer(2, dev(2)),
        peer(3, PeerIdentity::Static { name: "s".into() }),
        peer(4, dev(4)),
    ];
    // Device 1 has a new key, device 2 is gone, the static peer is gone, 4 stays.
    let new = [peer(11, dev(1)), peer(4, dev(4))];
    let r = removal_reasons(&old, &new);
    assert_eq!(r.len(), 3);
    assert_eq!(r[&key(1)], EndReason::Rotated);
    assert_eq!(r[&key(2)], EndReason::Revoked);
    assert_eq!(r[&key(3)], EndReason::Removed);
}
