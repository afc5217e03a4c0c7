use super::*;
use crate::api::feed::FeedUpdate;
use std::net::{IpAddr, Ipv4Addr};

fn key(n: u8) -> String {
    crate::key::PrivateKey::from_bytes([n; 32])
        .public_key()
        .to_base64()
}

fn peer(n: u8, resources: &[&str], expires: i64) -> FeedPeer {
    FeedPeer {
        public_key: key(n),
        address: Ipv4Addr::new(100, 64, 0, n),
        device_id: i64::from(n),
        device_name: format!("PC-{n}"),
        username: format!("user{n}"),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        key_expires_at_ms: expires,
        mfa_until_ms: None,
        persistent_keepalive: None,
    }
}

fn resources() -> Vec<FeedResource> {
    vec![
        FeedResource {
            name: "paie".into(),
            description: String::new(),
            allow: vec!["198.18.10.10/32 tcp:443".into()],
            mfa: false,
        },
        FeedResource {
            name: "rh".into(),
            description: String::new(),
            allow: vec!["198.18.10.20/32 tcp:443".into()],
            mfa: true,
        },
    ]
}

fn update(full: bool, version: u64, peers: Vec<FeedPeer>, removed: Vec<String>) -> FeedUpdate {
    FeedUpdate {
        site: "dsden56".into(),
        generation: "g1".into(),
        version,
        full,
        resources: resources(),
        peers,
        removed,
        server_time_ms: 0,
        mfa_idle_ms: Some(600_000),
    }
}

const PAIE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 10));
const RH: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 20));

#[test]
fn full_then_changes_then_resync() {
    let mut s = SiteState::new("dsden56");
    assert_eq!(s.since(), None);
    let far = i64::MAX;
    let r = s.apply(update(
        true,
        3,
        vec![peer(1, &["paie"], far), peer(2, &["paie"], far)],
        vec![],
    ));
    assert_eq!(r, Ok(Applied::Full));
    assert_eq!(s.since(), Some(3));
    assert_eq!(s.specs(&s.policy().unwrap(), 0).len(), 2);
    // A change: peer 2 loses payroll, peer 1 leaves, peer 3 arrives.
    let r = s
        .apply(update(
            false,
            5,
            vec![peer(2, &[], far), peer(3, &["paie"], far)],
            vec![key(1)],
        ))
        .unwrap();
    assert_eq!(
        r,
        Applied::Changes {
            upserts: vec![key(2), key(3)],
            removed: vec![key(1)]
        }
    );
    assert_eq!(s.since(), Some(5));
    let specs = s.specs(&s.policy().unwrap(), 0);
    let two = specs
        .iter()
        .find(|p| p.address == Ipv4Addr::new(100, 64, 0, 2))
        .unwrap();
    assert!(!two.rules.allows(PAIE, 6, 443));
    // The same answer again: nothing.
    assert_eq!(
        s.apply(update(false, 5, vec![], vec![])),
        Ok(Applied::Nothing)
    );
    // Changes of another generation: resync, state untouched.
    let mut other = update(false, 6, vec![peer(9, &["paie"], far)], vec![]);
    other.generation = "g2".into();
    assert_eq!(s.apply(other), Ok(Applied::Resync));
    assert!(!s.peers.contains_key(&key(9)));
    // Another site's answer is refused.
    let mut foreign = update(true, 1, vec![], vec![]);
    foreign.site = "rectorat".into();
    assert!(s.apply(foreign).is_err());
    assert_eq!(s.peers.len(), 2);
}

#[test]
fn an_expired_key_leaves_and_its_instant_is_the_next_change() {
    let mut s = SiteState::new("dsden56");
    s.apply(update(
        true,
        1,
        vec![peer(1, &["paie"], 10_000), peer(2, &["paie"], 50_000)],
        vec![],
    ))
    .unwrap();
    assert_eq!(s.specs(&s.policy().unwrap(), 9_999).len(), 2);
    assert_eq!(s.next_change(9_999), Some(10_000));
    assert_eq!(s.specs(&s.policy().unwrap(), 10_000).len(), 1);
    assert_eq!(s.next_change(10_000), Some(50_000));
    assert!(s.specs(&s.policy().unwrap(), 50_000).is_empty());
    assert_eq!(s.next_change(50_000), None);
}

#[test]
fn an_mfa_resource_travels_apart_with_its_window_and_the_idle_time() {
    let mut s = SiteState::new("dsden56");
    let mut p = peer(1, &["paie", "rh"], 90_000);
    p.mfa_until_ms = Some(20_000);
    s.apply(update(true, 1, vec![p], vec![])).unwrap();
    assert_eq!(s.mfa_idle_ms, Some(600_000));
    let policy = s.policy().unwrap();
    // The gateway judges the window on its own clock (it closes it at 20 s, or when idle, and
    // cuts the flows): the spec is the same before and after the end.
    for now in [19_999, 20_000] {
        let spec = &s.specs(&policy, now)[0];
        assert!(spec.rules.allows(PAIE, 6, 443));
        assert!(!spec.rules.allows(RH, 6, 443));
        assert!(spec.protected.allows(RH, 6, 443));
        assert_eq!(spec.mfa_until_ms, Some(20_000));
    }
    // A window's end is not a change of the peer set: only key expiries are.
    assert_eq!(s.next_change(0), Some(90_000));
}

#[test]
fn rules_the_gateway_cannot_compile_are_named() {
    let mut s = SiteState::new("dsden56");
    let mut u = update(true, 1, vec![peer(1, &["paie"], i64::MAX)], vec![]);
    u.resources[0].allow.push("not a rule".into());
    s.apply(u).unwrap();
    let e = s.policy().unwrap_err().to_string();
    assert!(e.contains("\"paie\"") && e.contains("not a rule"), "{e}");
}
