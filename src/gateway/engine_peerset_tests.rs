//! Peer-set changes under a live session: one change among thousands of peers touches no one else.

use super::*;

/// Another enrolled device (no laptop behind it): tunnel address 100.65.x.y.
fn other(n: u32) -> PeerSpec {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&n.to_le_bytes());
    key[31] = 0xee;
    PeerSpec {
        public_key: crate::key::PublicKey::from_bytes(key).unwrap(),
        address: Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 65, 0, 1)) + n),
        rules: rules(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: format!("device:{n}"),
        persistent_keepalive: None,
    }
}

fn laptop_spec(s: &Setup) -> PeerSpec {
    PeerSpec {
        public_key: s.laptop_key,
        address: LAPTOP,
        rules: rules(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: "laptop1".into(),
        persistent_keepalive: None,
    }
}

#[test]
fn one_change_among_thousands_keeps_every_other_session_and_its_counters() {
    let mut s = setup();
    let mut desired = vec![laptop_spec(&s)];
    desired.extend((0..3000).map(other));
    s.engine.peers.set(desired.clone());
    s.handshake();
    let syn = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    assert_eq!(s.send_ip(&syn).tun.len(), 1);

    let table = s.engine.peers.snapshot();
    let laptop = Arc::clone(table.by_key(&s.laptop_key).unwrap());
    let tunn_at = |p: &Peer| p.state.lock().tunn.as_deref().map(|t| t as *const Tunn);
    let session = tunn_at(&laptop).expect("a live session");
    let rx = laptop.counters.rx_packets.load(Ordering::Relaxed);
    let handshakes = s.engine.handshakes_received.load(Ordering::Relaxed);
    let flows = laptop.state.lock().flows.len();
    assert_eq!((rx, flows), (1, 1));

    // One device enrolled, one revoked, one regranted: nothing else changes.
    desired.retain(|d| d.public_key != other(17).public_key);
    desired.push(other(3000));
    desired[5].rules = RuleSet::deny_all();
    let r = s.engine.peers.set(desired);
    assert_eq!(
        (r.added, r.removed, r.updated, r.unchanged),
        (1, 1, 1, 2999)
    );

    let after = s.engine.peers.snapshot();
    assert!(Arc::ptr_eq(&laptop, after.by_key(&s.laptop_key).unwrap()));
    assert!(!laptop.removed.load(Ordering::Acquire));
    assert_eq!(
        tunn_at(&laptop),
        Some(session),
        "the laptop's session was replaced"
    );
    assert_eq!(laptop.counters.rx_packets.load(Ordering::Relaxed), rx);
    assert_eq!(laptop.state.lock().flows.len(), flows);
    // Every other kept peer is the very same one.
    for p in table
        .iter()
        .filter(|p| p.public_key != other(17).public_key)
    {
        assert!(Arc::ptr_eq(p, after.by_key(&p.public_key).unwrap()));
    }
    // The session carries on: no new handshake, the flow's reply still comes back.
    assert_eq!(s.send_ip(&syn).tun.len(), 1);
    let reply = build::tcp(PAIE, LAPTOP, 443, 40000, 0x12);
    assert_eq!(s.tun_in(&reply).net.len(), 1);
    assert_eq!(
        s.engine.handshakes_received.load(Ordering::Relaxed),
        handshakes
    );
    assert_eq!(laptop.counters.rx_packets.load(Ordering::Relaxed), rx + 1);
    assert_eq!(s.drops(DropReason::NoSession), 0);
}

#[test]
fn peers_with_equal_grants_share_one_rule_set() {
    let s = setup();
    let mut desired = vec![laptop_spec(&s)];
    desired.extend((0..100).map(other));
    desired[7].rules = RuleSet::deny_all();
    s.engine.peers.set(desired.clone());
    let t = s.engine.peers.snapshot();
    let rules_of = |n: u32| t.by_key(&other(n).public_key).unwrap().rules.load_full();
    assert!(Arc::ptr_eq(&rules_of(0), &rules_of(99)));
    assert!(!Arc::ptr_eq(&rules_of(0), &rules_of(6)));
    assert_eq!(*rules_of(6), RuleSet::deny_all());
    // A regrant in place shares too, and a later enrolment finds the same set.
    desired[8].rules = RuleSet::deny_all();
    desired.push(other(100));
    s.engine.peers.set(desired);
    let t = s.engine.peers.snapshot();
    let rules_of = |n: u32| t.by_key(&other(n).public_key).unwrap().rules.load_full();
    assert!(Arc::ptr_eq(&rules_of(6), &rules_of(7)));
    assert!(Arc::ptr_eq(&rules_of(0), &rules_of(100)));
}
