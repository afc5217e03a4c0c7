//! The hub: full sets, changes since a version, a ring that forgets (full set again), and
//! long-polls woken by a change.

use std::time::Duration;

use super::*;

fn peer(n: u8, resources: &[&str]) -> FeedPeer {
    FeedPeer {
        public_key: crate::key::PublicKey::from_bytes([n; 32])
            .expect("key")
            .to_base64(),
        address: std::net::Ipv4Addr::new(100, 64, 0, n),
        device_id: i64::from(n),
        device_name: format!("PC-{n}"),
        username: format!("u{n}"),
        resources: resources.iter().map(|r| r.to_string()).collect(),
        key_expires_at_ms: i64::MAX,
        mfa_until_ms: None,
        persistent_keepalive: None,
    }
}

fn sets(site: &str, peers: Vec<FeedPeer>) -> BTreeMap<String, SiteSet> {
    let resources = vec![FeedResource {
        name: "paie".into(),
        description: String::new(),
        allow: vec!["198.18.10.10/32 tcp:443".into()],
        mfa: false,
    }];
    BTreeMap::from([(site.to_string(), SiteSet { resources, peers })])
}

#[test]
fn a_new_gateway_gets_the_full_set_then_only_changes() {
    let hub = FeedHub::new();
    hub.publish(sets(
        "rectorat",
        vec![peer(1, &["paie"]), peer(2, &["paie"])],
    ));
    let full = hub.update("rectorat", None, 7).expect("site");
    assert!(full.full);
    assert_eq!(full.peers.len(), 2);
    assert_eq!(full.resources[0].name, "paie");
    assert_eq!(full.server_time_ms, 7);
    assert!(
        hub.update("dsden56", None, 7).is_none(),
        "only configured sites"
    );
    // Peer 2 revoked, peer 3 enrolled.
    hub.publish(sets(
        "rectorat",
        vec![peer(1, &["paie"]), peer(3, &["paie"])],
    ));
    let changes = hub.update("rectorat", Some(full.version), 8).expect("site");
    assert!(!changes.full);
    assert!(changes.version > full.version);
    assert_eq!(changes.removed, vec![peer(2, &[]).public_key]);
    assert_eq!(changes.peers, vec![peer(3, &["paie"])]);
    // Nothing since: nothing.
    let none = hub
        .update("rectorat", Some(changes.version), 9)
        .expect("site");
    assert!(!none.full && none.peers.is_empty() && none.removed.is_empty());
    assert_eq!(none.version, changes.version);
}

#[test]
fn a_gateway_behind_the_ring_or_from_another_generation_gets_the_full_set() {
    let hub = FeedHub::with_ring(2);
    hub.publish(sets("rectorat", vec![peer(1, &["paie"])]));
    let first = hub.update("rectorat", None, 0).expect("site");
    hub.publish(sets("rectorat", vec![peer(2, &["paie"])]));
    hub.publish(sets("rectorat", vec![peer(3, &["paie"])]));
    let late = hub
        .update("rectorat", Some(first.version), 0)
        .expect("site");
    assert!(late.full, "the changes since left the ring");
    assert_eq!(late.peers, vec![peer(3, &["paie"])]);
    let other = FeedHub::new();
    other.publish(sets("rectorat", vec![peer(3, &["paie"])]));
    assert_ne!(other.generation(), hub.generation());
    let foreign = other
        .update("rectorat", Some(late.version), 0)
        .expect("site");
    assert!(foreign.full, "another portal's version is not ours");
}

#[tokio::test]
async fn a_long_poll_wakes_at_the_change_not_at_its_timeout() {
    let hub = std::sync::Arc::new(FeedHub::new());
    hub.publish(sets("rectorat", vec![peer(1, &["paie"])]));
    let v = hub.update("rectorat", None, 0).expect("site").version;
    let h = std::sync::Arc::clone(&hub);
    let poll = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let u = h
            .wait_update("rectorat", Some(v), Duration::from_secs(30), || 0)
            .await
            .expect("site");
        (u, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "nothing changed yet: the poll waits");
    hub.publish(sets("rectorat", vec![]));
    let (u, waited) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken")
        .expect("join");
    assert!(waited < Duration::from_secs(30));
    assert_eq!(u.removed, vec![peer(1, &[]).public_key]);
}

#[tokio::test]
async fn a_removed_peer_leaves_every_site_at_once_and_the_next_publication_adds_nothing() {
    let hub = std::sync::Arc::new(FeedHub::new());
    let mut both = sets("rectorat", vec![peer(1, &["paie"]), peer(2, &["paie"])]);
    both.extend(sets("dsden56", vec![peer(1, &["paie"])]));
    hub.publish(both);
    let v = hub.update("dsden56", None, 0).expect("site").version;
    let h = std::sync::Arc::clone(&hub);
    let poll = tokio::spawn(async move {
        h.wait_update("dsden56", Some(v), Duration::from_secs(30), || 0)
            .await
            .expect("site")
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hub.replace_peers(&keys(&[1]), BTreeMap::new()), 2);
    let u = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("woken by the removal")
        .expect("join");
    assert_eq!(u.removed, vec![peer(1, &[]).public_key]);
    let r = hub.update("rectorat", None, 0).expect("site");
    assert_eq!(r.peers, vec![peer(2, &["paie"])], "the other device stays");
    // The whole computation that follows no longer has the device: nothing new for it.
    let before = hub.update("dsden56", None, 0).expect("site").version;
    let mut after = sets("rectorat", vec![peer(2, &["paie"])]);
    after.extend(sets("dsden56", vec![]));
    hub.publish(after);
    assert_eq!(
        hub.update("dsden56", None, 0).expect("site").version,
        before
    );
    assert_eq!(
        hub.replace_peers(&keys(&[1]), BTreeMap::new()),
        0,
        "already gone"
    );
}

#[test]
fn one_peer_upserted_is_one_change_and_the_others_stay() {
    let hub = FeedHub::new();
    hub.publish(sets(
        "rectorat",
        vec![peer(1, &["paie"]), peer(2, &["paie"])],
    ));
    let full = hub.update("rectorat", None, 1).expect("site");
    // Peer 1's window opened: upserted alone; peer 2 is not named, and stays.
    let mut opened = peer(1, &["paie"]);
    opened.mfa_until_ms = Some(5_000);
    assert_eq!(
        hub.replace_peers(&keys(&[1]), sets("rectorat", vec![opened.clone()])),
        1
    );
    // A site the hub does not feed is ignored.
    hub.replace_peers(&keys(&[9]), sets("dsden56", vec![peer(9, &["paie"])]));
    let changes = hub.update("rectorat", Some(full.version), 2).expect("site");
    assert_eq!(changes.version, full.version + 1);
    assert_eq!(changes.peers, vec![opened.clone()]);
    assert!(changes.removed.is_empty());
    assert_eq!(
        hub.update("rectorat", None, 3).expect("site").peers.len(),
        2
    );
    assert!(hub.update("dsden56", None, 3).is_none());
    // The same again: no change.
    assert_eq!(
        hub.replace_peers(&keys(&[1]), sets("rectorat", vec![opened])),
        0
    );
    assert_eq!(
        hub.update("rectorat", None, 4).expect("site").version,
        changes.version
    );
}

#[test]
fn a_peer_moves_between_sites_and_a_rotated_key_leaves_them_all() {
    let hub = FeedHub::new();
    let mut both = sets("rectorat", vec![peer(1, &["paie"]), peer(2, &["paie"])]);
    both.extend(sets("dsden56", vec![peer(1, &["paie"])]));
    hub.publish(both);
    let v = |site: &str| hub.update(site, None, 0).expect("site").version;
    let (rectorat, dsden) = (v("rectorat"), v("dsden56"));
    // Device 1's user lost the rectorat's grant: it stays in dsden56 only, unchanged there.
    assert_eq!(
        hub.replace_peers(&keys(&[1]), sets("dsden56", vec![peer(1, &["paie"])])),
        1
    );
    let r = hub.update("rectorat", Some(rectorat), 0).expect("site");
    assert_eq!(r.removed, vec![peer(1, &[]).public_key]);
    assert_eq!(v("dsden56"), dsden, "nothing changed there");
    // Device 1 rotated to key 3 (the old key named with the new peer): out under 1, in under 3.
    let c = hub.replace_peers(&keys(&[1, 3]), sets("dsden56", vec![peer(3, &["paie"])]));
    assert_eq!(c, 1);
    let d = hub.update("dsden56", Some(dsden), 0).expect("site");
    assert_eq!(d.peers, vec![peer(3, &["paie"])]);
    assert_eq!(d.removed, vec![peer(1, &[]).public_key]);
    assert_eq!(
        hub.update("rectorat", None, 0).expect("site").peers,
        vec![peer(2, &["paie"])]
    );
}

fn keys(ns: &[u8]) -> BTreeSet<String> {
    ns.iter().map(|n| peer(*n, &[]).public_key).collect()
}
