//! Each change of the peer set applied alone (issue 21): the publisher reads the devices the
//! change log names, not every device, and leaves the local gateway (with the right reason for
//! a key that leaves), the site feeds and the peer cache exactly as a whole computation from
//! the store would, on SQLite and PostgreSQL: after a revocation, a rotation, a user's new
//! groups and a window, and after any random sequence of changes. A log pruned past the
//! publisher, and only that, costs a whole computation; on PostgreSQL, a change committed after
//! a later one is not lost.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::config::{TestConfig, TWO_SITES};
use common::harness::RecordingSink;
use common::store_db::*;
use rand::{Rng as _, SeedableRng as _};
use sesame::api::feed::FeedPeer;
use sesame::config::Config;
use sesame::control::peer_cache::PeerCache;
use sesame::control::{ControlPlane, GatewayStats, PeerSink, PeerSpec};
use sesame::directory::DirectoryUser;
use sesame::gateway::EndReason;
use sesame::key::PublicKey;
use sesame::service::feed::FeedHub;
use sesame::store::{Device, DeviceStatus, Rotation, Store};

const STAFF: &str = "cn=personnels-administratifs,ou=groups,dc=example,dc=org";
const PAIE_GROUP: &str = "cn=gestionnaires-paie,ou=groups,dc=example,dc=org";
const RH_GROUP: &str = "cn=gestionnaires-rh,ou=groups,dc=example,dc=org";
const APP56_GROUP: &str = "cn=dsden56,ou=groups,dc=example,dc=org";
const NET: &str = "100.64.0.0/24";
/// A rotation allowed at once, the key valid an hour.
const ROTATION: Rotation = Rotation {
    key_lifetime: Some(HOUR),
    max_lifetime: None,
    min_interval: Duration::ZERO,
};

/// Two sites: payroll (second factor) and HR at the rectorat, an application at the DSDEN.
fn two_sites(url: &str, dir: &std::path::Path) -> Arc<Config> {
    let path = TestConfig::new()
        .database(url)
        .sections(&format!(
            r#"[roles]
vpn_users = ["{STAFF}"]

{TWO_SITES}
[[resource]]
name = "paie"
site = "rectorat"
allow = ["198.18.10.10/32 tcp:443"]
mfa = true

[[resource]]
name = "rh"
site = "rectorat"
allow = ["198.18.20.0/24 tcp:443"]

[[resource]]
name = "app56"
site = "dsden56"
allow = ["198.18.56.10/32 tcp:443"]

[[grant]]
group = "{PAIE_GROUP}"
resources = ["paie"]

[[grant]]
group = "{RH_GROUP}"
resources = ["rh"]

[[grant]]
group = "{APP56_GROUP}"
resources = ["app56"]

[mfa]
secret_key_file = "{}"
"#,
            dir.join("mfa.key").display()
        ))
        .write(&dir.join("sesame.toml"));
    Arc::new(Config::load(&path).expect("config"))
}

/// The local gateway stand-in, recording why each key left.
#[derive(Default)]
struct Gateway {
    peers: RecordingSink,
    ended: parking_lot::Mutex<Vec<(PublicKey, EndReason)>>,
}

impl PeerSink for Gateway {
    fn set_peers(&self, peers: Vec<PeerSpec>) {
        self.peers.set_peers(peers);
    }
    fn upsert_peer(&self, peer: PeerSpec) -> bool {
        self.peers.upsert_peer(peer)
    }
    fn remove_peer(&self, key: &PublicKey) -> bool {
        self.peers.remove_peer(key)
    }
    fn remove_peer_because(&self, key: &PublicKey, reason: EndReason) -> bool {
        self.ended.lock().push((*key, reason));
        self.peers.remove_peer(key)
    }
    fn set_peers_because(&self, peers: Vec<PeerSpec>, reasons: HashMap<PublicKey, EndReason>) {
        self.ended.lock().extend(reasons);
        self.peers.set_peers(peers);
    }
    fn public_key(&self) -> PublicKey {
        self.peers.public_key()
    }
    fn stats(&self) -> GatewayStats {
        self.peers.stats()
    }
}

/// The local set and each site's peers, by key.
type Sets = (Vec<PeerSpec>, BTreeMap<String, Vec<FeedPeer>>);

/// A store, the two sites' configuration, and a publisher giving a stand-in gateway and a feed.
struct World {
    db: Db,
    config: Arc<Config>,
    gateway: Arc<Gateway>,
    hub: Arc<FeedHub>,
    control: Arc<ControlPlane>,
    /// The peer cache's state directory.
    state: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl World {
    /// `users` enrolled with one device each (keys 0, 1, …), then the first (whole) pass.
    async fn start(db: Db, users: &[(&str, Vec<&str>)]) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = two_sites(&db.url, dir.path());
        for (i, (user, groups)) in users.iter().enumerate() {
            let code = code_for(&db, user, "pc").await;
            let n = u16::try_from(i).expect("n");
            enrol(&db, &code, &member(user, groups), key16(n), NET)
                .await
                .expect("enrol");
        }
        let gateway = Arc::new(Gateway::default());
        let hub = Arc::new(FeedHub::new());
        let control = ControlPlane::new(db.store.clone(), Arc::clone(&config), gateway.clone());
        control.set_feeds(Arc::clone(&hub));
        let state = tempfile::tempdir().expect("state dir");
        control.set_peer_cache(PeerCache::open(state.path()).expect("cache"));
        control.reconcile().await.expect("first pass");
        assert_eq!(control.whole_computations(), 1, "the first pass is whole");
        World {
            db,
            config,
            gateway,
            hub,
            control,
            state,
            _dir: dir,
        }
    }

    /// What a whole computation from the store gives now (the publisher's rules: devices
    /// revoked or expired are out).
    async fn whole(&self) -> Sets {
        let store: &Store = &self.db.store;
        let mut devices = sesame::control::plane::active_devices(store)
            .await
            .expect("read");
        let now = store.now_ms();
        devices.retain(|d| !sesame::control::failstatic::expired(d, now));
        let mut local = sesame::control::plane::desired_from(&self.config, &devices);
        local.sort_by_key(|p| p.public_key.to_base64());
        let sites = sesame::control::sites::site_sets(&self.config, &devices)
            .into_iter()
            .map(|(name, mut set)| {
                set.peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
                (name, set.peers)
            })
            .collect();
        (local, sites)
    }

    /// What the gateway and the feed hold now.
    fn published(&self) -> Sets {
        let mut local = self.gateway.peers.last.lock().clone().unwrap_or_default();
        local.sort_by_key(|p| p.public_key.to_base64());
        let sites = self
            .config
            .sites
            .iter()
            .map(|s| {
                let peers = self.hub.update(&s.name, None, 0).expect("fed").peers;
                (s.name.clone(), peers)
            })
            .collect();
        (local, sites)
    }

    /// Publishes the changes, and checks the result against a whole computation.
    async fn publish_and_check(&self, what: &str) {
        self.control.publish_now().await;
        assert_eq!(self.published(), self.whole().await, "{what}");
    }

    /// The devices (id, key) the peer cache file holds.
    fn cached(&self) -> Vec<(i64, PublicKey)> {
        let cache = PeerCache::open(self.state.path()).expect("cache");
        let (_, devices) = cache
            .load(&self.gateway.public_key())
            .expect("load")
            .expect("written");
        devices.iter().map(|d| (d.id, d.public_key)).collect()
    }

    async fn active_device_of(&self, user: &str) -> Device {
        self.db
            .store
            .list_devices(Some(user))
            .await
            .expect("devices")
            .into_iter()
            .find(|d| d.status == DeviceStatus::Active)
            .expect("an active device")
    }

    fn last_ended(&self) -> Option<(PublicKey, EndReason)> {
        self.gateway.ended.lock().last().copied()
    }
}

fn member(name: &str, groups: &[&str]) -> DirectoryUser {
    DirectoryUser {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..person(name)
    }
}

/// A distinct key for each `n` (the fixtures' `key` has 255).
fn key16(n: u16) -> PublicKey {
    let mut k = [0x5A; 32];
    k[..2].copy_from_slice(&n.to_be_bytes());
    PublicKey::from_bytes(k).expect("key")
}

/// A revocation, a rotation, a user's new groups and an access window each reach the gateway
/// (with the right reason for a key that leaves), the site feeds and the peer cache without a
/// whole computation, and leave them exactly as one would.
async fn each_change_is_applied_alone(db: Db) {
    let w = World::start(
        db,
        &[
            ("alice", vec![STAFF, PAIE_GROUP]),
            ("bruno", vec![STAFF, RH_GROUP]),
            ("carla", vec![STAFF, APP56_GROUP]),
        ],
    )
    .await;
    let store = w.db.store.clone();
    let bruno = w.active_device_of("bruno").await;
    store
        .revoke_device(bruno.id, "stolen", &it_staff())
        .await
        .expect("revoke");
    w.publish_and_check("a revocation").await;
    assert_eq!(w.last_ended(), Some((bruno.public_key, EndReason::Revoked)));
    // A device that left leaves the peer cache at once: a restart from it cannot bring it back.
    assert!(!w.cached().iter().any(|(id, _)| *id == bruno.id));

    let alice = w.active_device_of("alice").await;
    store
        .rotate_key(alice.id, &key16(100), &ROTATION, &it_staff())
        .await
        .expect("rotate");
    w.publish_and_check("a rotation").await;
    assert_eq!(w.last_ended(), Some((alice.public_key, EndReason::Rotated)));

    // Carla moves from the DSDEN's application to HR at the rectorat.
    store
        .upsert_users(&[&member("carla", &[STAFF, RH_GROUP])])
        .await
        .expect("groups");
    w.publish_and_check("a user's new groups").await;
    let rectorat = w.hub.update("rectorat", None, 0).expect("fed").peers;
    assert!(rectorat.iter().any(|p| p.username == "carla"));

    store
        .mfa_open_window(alice.id, "alice", "agent", store.now_ms() + 3_600_000)
        .await
        .expect("window");
    w.publish_and_check("a window").await;
    let rotated = w.gateway.peers.peer(&key16(100)).expect("alice's peer");
    assert!(rotated.mfa_until_ms.is_some(), "the window travels");

    assert_eq!(w.control.whole_computations(), 1, "no whole computation");
    // The cache holds the active devices as they are now (written with the endpoints' save).
    w.control.save_endpoints();
    let active: Vec<(i64, PublicKey)> = sesame::control::plane::active_devices(&store)
        .await
        .expect("read")
        .iter()
        .map(|d| (d.id, d.public_key))
        .collect();
    assert_eq!(w.cached(), active);
    // A whole computation now finds nothing to send.
    let sent = *w.gateway.peers.publications.lock();
    w.control.recompute().await.expect("whole");
    assert_eq!(*w.gateway.peers.publications.lock(), sent);
}

/// Random groups: a VPN user most of the time, each grant's group half the time.
fn random_groups(rng: &mut rand::rngs::StdRng) -> Vec<&'static str> {
    [
        (STAFF, 0.8),
        (PAIE_GROUP, 0.5),
        (RH_GROUP, 0.5),
        (APP56_GROUP, 0.5),
    ]
    .into_iter()
    .filter(|(_, p)| rng.gen_bool(*p))
    .map(|(g, _)| g)
    .collect()
}

/// One random change to `user` or one of their devices (`step` names a new one); refusals (a
/// revoked device rotated, a user disabled enrolling) are part of the game. What it did.
async fn random_change(w: &World, rng: &mut rand::rngs::StdRng, user: &str, step: u16) -> String {
    let store = &w.db.store;
    let mut devices = store.list_devices(Some(user)).await.expect("devices");
    devices.retain(|d| d.status != DeviceStatus::Revoked);
    let device = (!devices.is_empty()).then(|| devices[rng.gen_range(0..devices.len())].clone());
    let stored = store.user(user).await.expect("user").expect("stored");
    let groups: Vec<&str> = stored.groups.iter().map(String::as_str).collect();
    let (now, ctx) = (store.now_ms(), it_staff());
    let op = rng.gen_range(0..10);
    match (op, &device) {
        (0, _) => {
            let code = code_for(&w.db, user, &format!("pc{step}")).await;
            let _ = enrol(&w.db, &code, &member(user, &groups), key16(step), NET).await;
        }
        (1, Some(d)) => drop(store.revoke_device(d.id, "test", &ctx).await),
        (2, Some(d)) => drop(store.rotate_key(d.id, &key16(step), &ROTATION, &ctx).await),
        (3 | 4, _) => {
            // New groups, or disabled (or back).
            let mut u = member(user, &groups);
            u.disabled = stored.disabled != (op == 4);
            if op == 3 {
                u.groups = member(user, &random_groups(rng)).groups;
            }
            store.upsert_users(&[&u]).await.expect("user");
        }
        (5, Some(d)) => {
            let until = now + rng.gen_range(1..4) * 3_600_000;
            let open = store.mfa_open_window(d.id, user, "agent", until).await;
            open.expect("window");
        }
        (6, Some(d)) => drop(store.mfa_close_window(d.id, "down").await.expect("close")),
        (7, _) => drop(store.suspend_user_devices(user, "gone", &ctx).await),
        (8, _) => drop(store.restore_user_devices(user, 24 * HOUR, &ctx).await),
        (9, Some(d)) => {
            let at = if rng.gen_bool(0.3) {
                now - 1
            } else {
                now + 86_400_000
            };
            let sql = format!("UPDATE devices SET expires_at = {at} WHERE id = {}", d.id);
            exec(store, &sql).await;
        }
        _ => {}
    }
    format!("{step}: change {op} of {user} {:?}", device.map(|d| d.id))
}

/// After any random sequence of changes (enrolments, revocations, rotations, groups, users
/// disabled and back, windows, suspensions, expiries), sometimes several in one batch, the
/// changes applied alone leave the gateway and the site feeds exactly as a whole computation
/// from the store would, and no whole computation ran.
async fn changes_applied_alone_match_a_whole_computation(db: Db) {
    let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let start: Vec<(&str, Vec<&str>)> = users
        .iter()
        .map(|u| (*u, random_groups(&mut rng)))
        .collect();
    let w = World::start(db, &start).await;
    let mut done = Vec::new();
    for step in 100..300 {
        let user = users[rng.gen_range(0..users.len())];
        done.push(random_change(&w, &mut rng, user, step).await);
        if rng.gen_bool(0.6) {
            w.publish_and_check(&done.join("\n")).await;
        }
    }
    w.publish_and_check("at the end").await;
    assert_eq!(w.control.whole_computations(), 1, "no whole computation");
    // The sequence went through every path: peers added and changed, removed both ways.
    let ended = w.gateway.ended.lock().clone();
    assert!(*w.gateway.peers.upserts.lock() >= 30);
    for reason in [EndReason::Revoked, EndReason::Rotated] {
        assert!(ended.iter().filter(|(_, r)| *r == reason).count() >= 3);
    }
    let sent = *w.gateway.peers.publications.lock();
    w.control.recompute().await.expect("whole");
    assert_eq!(
        *w.gateway.peers.publications.lock(),
        sent,
        "nothing left to send"
    );
}

/// Rows of the change log pruned before the publisher read them: it cannot know what changed,
/// so it computes the whole set (once), and is right.
async fn a_log_pruned_past_the_publisher_means_a_whole_computation(db: Db) {
    let staff = || vec![STAFF, RH_GROUP];
    let w = World::start(
        db,
        &[("alice", staff()), ("bruno", staff()), ("carla", staff())],
    )
    .await;
    for user in ["alice", "bruno"] {
        let d = w.active_device_of(user).await;
        let revoked = w.db.store.revoke_device(d.id, "test", &it_staff()).await;
        revoked.expect("revoke");
    }
    // Only the last row stays: the first revocation's row is gone.
    w.db.store.prune_peer_changes(1).await.expect("prune");
    w.publish_and_check("after the pruning").await;
    assert_eq!(w.control.whole_computations(), 2);
    assert_eq!(w.gateway.peers.keys(), vec![key16(2)]);
}

crate::both_backends!(
    each_change_is_applied_alone,
    changes_applied_alone_match_a_whole_computation,
    a_log_pruned_past_the_publisher_means_a_whole_computation,
);

/// PostgreSQL takes a change's sequence before its transaction commits: a change committed
/// after a later one (a long transaction, a busy portal) is read when it commits, not lost
/// behind the sequence the publisher already passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_after_a_later_one_is_not_lost() {
    let staff = || vec![STAFF, RH_GROUP];
    let w = World::start(
        postgres_db().await,
        &[("alice", staff()), ("bruno", staff())],
    )
    .await;
    // Alice disabled in a transaction that takes its sequence now and commits later.
    let mut slow = w.db.store.pool().begin().await.expect("begin");
    sqlx::query("UPDATE users SET disabled = 1 WHERE username = 'alice'")
        .execute(&mut *slow)
        .await
        .expect("disable");
    // Bruno's revocation commits first, with the next sequence; the publisher reads it.
    let bruno = w.active_device_of("bruno").await;
    let revoked =
        w.db.store
            .revoke_device(bruno.id, "stolen", &it_staff())
            .await;
    revoked.expect("revoke");
    w.publish_and_check("bruno revoked").await;
    assert_eq!(w.gateway.peers.keys(), vec![key16(0)]);
    // Then alice's change commits, below the sequence read.
    slow.commit().await.expect("commit");
    w.publish_and_check("alice disabled").await;
    assert!(w.gateway.peers.keys().is_empty(), "alice's change applied");
    assert_eq!(w.control.whole_computations(), 1);
}
