//! The peer set: lookups, desired-state diffs, single-peer changes and their snapshots.

use super::*;
use crate::policy::Rule;

fn spec(n: u32) -> PeerSpec {
    let mut key = [0xa5u8; 32];
    key[..4].copy_from_slice(&n.to_le_bytes());
    PeerSpec {
        public_key: PublicKey::from_bytes(key).unwrap(),
        address: Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 2)) + n),
        rules: RuleSet::new(["198.18.10.10/32 tcp:443".parse::<Rule>().unwrap()]),
        protected: Default::default(),
        mfa_until_ms: None,
        label: format!("peer{n}"),
        persistent_keepalive: None,
    }
}

#[test]
fn lookup_by_key_address_and_index() {
    let peers = Peers::default();
    let r = peers.set((0..100).map(spec).collect());
    assert_eq!(r.added, 100);
    let t = peers.load();
    assert_eq!(t.len(), 100);
    let s = spec(42);
    let p = t.by_key(&s.public_key).unwrap();
    assert_eq!(p.address, s.address);
    assert!(Arc::ptr_eq(p, t.by_address(s.address).unwrap()));
    // Any session index of this peer (low 8 bits vary) finds it.
    for low in [0u32, 1, 255] {
        assert!(Arc::ptr_eq(
            p,
            t.by_receiver_index(p.index << 8 | low).unwrap()
        ));
    }
    assert!(t.by_receiver_index(0).is_none());
    assert!(t.by_address(Ipv4Addr::new(100, 64, 9, 9)).is_none());
}

#[test]
fn swap_keeps_unchanged_peers_and_cuts_removed_ones() {
    let peers = Peers::default();
    peers.set((0..10_000).map(spec).collect());
    let before = peers.snapshot();
    let kept = Arc::clone(before.by_key(&spec(5).public_key).unwrap());
    let gone = Arc::clone(before.by_key(&spec(7).public_key).unwrap());
    gone.state.lock().endpoint = Some("198.18.0.2:1".parse().unwrap());

    let mut desired: Vec<PeerSpec> = (0..10_000).filter(|n| *n != 7).map(spec).collect();
    desired.push(spec(10_000));
    for d in desired
        .iter_mut()
        .filter(|d| d.public_key == spec(9).public_key)
    {
        d.rules = RuleSet::deny_all();
    }
    let r = peers.set(desired);
    assert_eq!(
        (r.added, r.removed, r.updated, r.unchanged),
        (1, 1, 1, 9_998)
    );

    let after = peers.snapshot();
    assert!(Arc::ptr_eq(
        &kept,
        after.by_key(&spec(5).public_key).unwrap()
    ));
    assert!(after.by_key(&spec(7).public_key).is_none());
    assert!(gone.removed.load(Ordering::Acquire));
    assert!(gone.state.lock().endpoint.is_none());
    // The rule change applied in place.
    let nine = after.by_key(&spec(9).public_key).unwrap();
    assert!(nine.rules.load().is_empty());
    // The old snapshot is still whole for a worker that holds it.
    assert_eq!(before.len(), 10_000);
    let new = after.by_key(&spec(10_000).public_key).unwrap();
    assert_ne!(new.index, gone.index);
    let indices: HashSet<u32> = after.iter().map(|p| p.index).collect();
    assert_eq!(indices.len(), 10_000);
    assert_eq!(after.len(), 10_000);

    // Adding one peer copies only the shard it lands in; the rest is shared.
    let r = peers.set((0..=10_001).filter(|n| *n != 7).map(spec).collect());
    assert_eq!((r.added, r.removed, r.duplicates), (1, 0, 0));
    let plus = peers.snapshot();
    assert_eq!(plus.len(), 10_001);
    assert_eq!(
        plus.shards_shared_with(&after),
        super::super::table::SHARDS - 1
    );
    assert!(Arc::ptr_eq(
        &kept,
        plus.by_key(&spec(5).public_key).unwrap()
    ));
    // The same set again changes nothing: the very same snapshot stays.
    let r = peers.set((0..=10_001).filter(|n| *n != 7).map(spec).collect());
    assert_eq!(r.unchanged, 10_001);
    assert!(Arc::ptr_eq(&plus, &peers.snapshot()));
}

#[test]
fn upsert_and_remove_change_one_peer() {
    let peers = Peers::default();
    peers.set((0..1000).map(spec).collect());
    let before = peers.snapshot();
    let kept = Arc::clone(before.by_key(&spec(5).public_key).unwrap());

    let r = peers.upsert(spec(1000));
    assert_eq!((r.added, r.removed), (1, 0));
    let t = peers.snapshot();
    assert_eq!(t.len(), 1001);
    assert!(Arc::ptr_eq(&kept, t.by_key(&spec(5).public_key).unwrap()));
    let new = t.by_key(&spec(1000).public_key).unwrap();
    assert!(Arc::ptr_eq(new, t.by_address(spec(1000).address).unwrap()));
    assert!(Arc::ptr_eq(
        new,
        t.by_receiver_index(new.index << 8).unwrap()
    ));

    // Rules change in place: same Arc.
    let mut changed = spec(5);
    changed.rules = RuleSet::deny_all();
    assert_eq!(peers.upsert(changed).updated, 1);
    let t = peers.snapshot();
    assert!(Arc::ptr_eq(&kept, t.by_key(&spec(5).public_key).unwrap()));
    assert!(kept.rules.load().is_empty());

    // Another peer's address is refused.
    let mut clash = spec(2000);
    clash.address = spec(6).address;
    assert_eq!(peers.upsert(clash.clone()).duplicates, 1);
    assert!(peers.load().by_key(&clash.public_key).is_none());

    // A new address replaces the peer: new Arc, old one cut.
    let mut moved = spec(5);
    moved.address = Ipv4Addr::new(100, 64, 200, 1);
    let r = peers.upsert(moved.clone());
    assert_eq!((r.added, r.removed), (1, 1));
    assert!(kept.removed.load(Ordering::Acquire));
    let t = peers.snapshot();
    assert!(t.by_address(spec(5).address).is_none());
    assert_eq!(
        t.by_address(moved.address).unwrap().public_key,
        moved.public_key
    );
    assert!(t.by_receiver_index(kept.index << 8).is_none());

    let six = Arc::clone(t.by_key(&spec(6).public_key).unwrap());
    six.state.lock().endpoint = Some("198.18.0.2:1".parse().unwrap());
    assert!(peers.remove(&spec(6).public_key));
    assert!(!peers.remove(&spec(6).public_key));
    assert!(six.removed.load(Ordering::Acquire));
    assert!(six.state.lock().endpoint.is_none());
    let t = peers.snapshot();
    assert_eq!(t.len(), 1000);
    assert!(t.by_address(spec(6).address).is_none());
    assert_eq!(t.iter().count(), 1000);
    // The snapshot from before is untouched.
    assert_eq!(before.len(), 1000);
    assert!(before.by_key(&spec(6).public_key).is_some());
}

#[test]
fn first_spec_wins_a_contested_key_or_address() {
    let peers = Peers::default();
    peers.set(vec![spec(1), spec(2)]);
    let two = Arc::clone(peers.load().by_key(&spec(2).public_key).unwrap());
    // A new peer listed before peer 2 takes its address: peer 2 goes.
    let mut taker = spec(3);
    taker.address = spec(2).address;
    let r = peers.set(vec![spec(1), taker.clone(), spec(2), spec(1)]);
    assert_eq!(
        (r.added, r.removed, r.duplicates, r.unchanged),
        (1, 1, 2, 1)
    );
    assert!(two.removed.load(Ordering::Acquire));
    let t = peers.snapshot();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t.by_address(spec(2).address).unwrap().public_key,
        taker.public_key
    );
    // Listed after peer 2, the new peer is the one skipped; peer 2 keeps its session.
    peers.set(vec![spec(1), spec(2)]);
    let two = Arc::clone(peers.load().by_key(&spec(2).public_key).unwrap());
    let r = peers.set(vec![spec(1), spec(2), taker.clone()]);
    assert_eq!((r.added, r.removed, r.duplicates), (0, 0, 1));
    assert!(Arc::ptr_eq(
        &two,
        peers.load().by_key(&spec(2).public_key).unwrap()
    ));
    // Two new specs with one key: the first one is added.
    let mut other = spec(4);
    other.public_key = spec(5).public_key;
    let r = peers.set(vec![spec(1), spec(2), spec(5), other]);
    assert_eq!((r.added, r.duplicates), (1, 1));
    assert_eq!(
        peers.load().by_key(&spec(5).public_key).unwrap().address,
        spec(5).address
    );
}

#[test]
fn address_change_replaces_the_peer_and_duplicates_are_skipped() {
    let peers = Peers::default();
    peers.set(vec![spec(1)]);
    let old = Arc::clone(peers.load().by_key(&spec(1).public_key).unwrap());
    let mut moved = spec(1);
    moved.address = Ipv4Addr::new(100, 64, 1, 1);
    let mut dup = spec(2);
    dup.address = moved.address;
    let r = peers.set(vec![moved.clone(), dup]);
    assert_eq!((r.added, r.removed, r.duplicates), (1, 1, 1));
    let t = peers.load();
    assert!(!Arc::ptr_eq(&old, t.by_key(&moved.public_key).unwrap()));
    assert!(t.by_address(spec(1).address).is_none());
}

/// Timing printout, not an assertion: `cargo test --release --lib set_peers_timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing printout; run by hand in release"]
#[allow(clippy::print_stdout)]
fn set_peers_timing() {
    let peers = Peers::default();
    peers.set((0..10_000).map(spec).collect());
    for round in 0..5u32 {
        let desired: Vec<PeerSpec> = (0..=10_000 + round).map(spec).collect();
        let copy = desired.clone();
        let t = std::time::Instant::now();
        let r = peers.set(desired);
        let e = t.elapsed();
        assert_eq!(r.added, 1);
        let t = std::time::Instant::now();
        drop(copy);
        let d = t.elapsed();
        println!(
            "set_peers adding 1 to {}: {e:?} (freeing the same specs alone: {d:?})",
            10_000 + round
        );
    }
    for round in 0..3u32 {
        let t = std::time::Instant::now();
        let r = peers.upsert(spec(20_000 + round));
        let e = t.elapsed();
        assert_eq!(r.added, 1);
        println!("upsert of 1 into {}: {:?}", peers.load().len() - 1, e);
        let t = std::time::Instant::now();
        assert!(peers.remove(&spec(20_000 + round).public_key));
        println!("remove of 1: {:?}", t.elapsed());
    }
}

#[test]
fn idle_peer_is_small() {
    // Inline size; heap parts (label, rules, table entries) are measured in
    // tests/plain/gateway_memory.rs with a counting allocator.
    assert!(
        std::mem::size_of::<Peer>() < 512,
        "{}",
        std::mem::size_of::<Peer>()
    );
}
