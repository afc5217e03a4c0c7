//! Fail-static with time passing: a device key that expires while the database is down leaves
//! the gateway at its expiry (the running control plane, and a restart serving the peer cache),
//! a cache older than `[gateway] max_cache_age` is refused at start, and the cache's age is the
//! store's last confirmation.
#![allow(clippy::too_many_lines)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sesame::config::Config;
use sesame::control::failstatic::{self, Cached};
use sesame::control::peer_cache::{CachedDevice, PeerCache, REFRESH};
use sesame::control::site_gateway::cache::{self as site_cache, SiteState};
use sesame::control::{ActiveDevice, ControlPlane, GatewayStats, PeerSink, PeerSpec};
use sesame::directory::DirectoryUser;
use sesame::key::PublicKey;
use sesame::store::EnrolRequest;
use sesame::time::{Clock, ManualClock};

use crate::common::config::TestConfig;
use crate::common::harness::{RecordingSink, GATEWAY_KEY};
use crate::common::store_db::*;

const VPN: &str = "cn=personnels-administratifs,ou=groups,dc=example,dc=org";
const DAY: Duration = Duration::from_secs(86_400);

fn config(db_url: &str) -> Config {
    let text = TestConfig::new()
        .gateway("tunnel_network = \"100.64.0.0/24\"")
        .database(db_url)
        .sections(&format!(
            "[roles]\nvpn_users = [\"{VPN}\"]\nit_staff = [\"cn=dsi,ou=groups,dc=example,dc=org\"]\n"
        ))
        .text();
    Config::parse(Path::new("/etc/sesame/sesame.toml"), &text).expect("config")
}

/// A recording gateway that also reports endpoints (as the real one does for the cache).
#[derive(Default)]
struct Gateway {
    peers: RecordingSink,
    endpoints: Mutex<Vec<(PublicKey, SocketAddr)>>,
}

impl PeerSink for Gateway {
    fn set_peers(&self, peers: Vec<PeerSpec>) {
        self.peers.set_peers(peers);
    }
    fn upsert_peer(&self, peer: PeerSpec) -> bool {
        self.peers.upsert_peer(peer)
    }
    fn remove_peer(&self, public_key: &PublicKey) -> bool {
        self.peers.remove_peer(public_key)
    }
    fn endpoints(&self) -> Vec<(PublicKey, SocketAddr)> {
        self.endpoints.lock().clone()
    }
    fn public_key(&self) -> PublicKey {
        self.peers.public_key()
    }
    fn stats(&self) -> GatewayStats {
        self.peers.stats()
    }
}

impl Gateway {
    fn has(&self, k: &PublicKey) -> bool {
        self.peers.keys().contains(k)
    }
}

/// Waits (generously) until `cond` holds; false if it never did.
async fn eventually(cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

fn staff(name: &str) -> DirectoryUser {
    DirectoryUser {
        groups: vec![VPN.into()],
        ..person(name)
    }
}

/// Enrols `user`'s laptop with key `k`, its key valid for `lifetime`.
async fn enrol_for(db: &Db, user: &str, k: PublicKey, lifetime: Duration) {
    let code = code_for(db, user, "pc").await;
    db.store
        .enrol(
            &EnrolRequest {
                code: &code,
                user: &staff(user),
                public_key: k,
                hostname: &"pc-compta-01".parse().expect("hostname"),
                key_lifetime: Some(lifetime),
            },
            &pool("100.64.0.0/24"),
            &it_staff(),
        )
        .await
        .expect("enrol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_key_expiring_while_the_database_is_down_leaves_at_its_expiry() {
    let db = sqlite_db().await;
    enrol_for(&db, "alice", key(1), HOUR).await;
    enrol_for(&db, "bruno", key(2), 180 * 24 * HOUR).await;
    let gw = Arc::new(Gateway::default());
    let control = ControlPlane::new(
        db.store.clone(),
        Arc::new(config(&db.url)),
        Arc::clone(&gw) as Arc<dyn PeerSink>,
    );
    control.reconcile().await.expect("published");
    assert!(gw.has(&key(1)) && gw.has(&key(2)));

    // The database goes away; the publisher runs on.
    db.store.close().await;
    assert!(control.reconcile().await.is_err());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(Arc::clone(&control).run(stop_rx));
    db.clock.advance(HOUR - Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(gw.has(&key(1)), "not before its expiry");
    db.clock.advance(Duration::from_secs(61));
    assert!(
        eventually(|| !gw.has(&key(1))).await,
        "alice's expired key is still served with the database down"
    );
    assert!(gw.has(&key(2)), "bruno's key is valid");
    assert!(control.is_stale());
    stop.send(true).expect("stop");
    run.await.expect("run");
}

fn cached(n: u8, expires: Option<i64>) -> CachedDevice {
    CachedDevice::new(
        &ActiveDevice {
            id: i64::from(n),
            username: format!("user{n}"),
            public_key: key(n),
            address: std::net::Ipv4Addr::new(100, 64, 0, 10 + n),
            groups: vec![VPN.into()],
            mfa_until_ms: None,
            name: String::new(),
            key_expires_at: expires,
        },
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_cache_removes_a_key_at_its_expiry_with_the_database_down() {
    // Nothing listens on port 1: the store never answers.
    let config = config("postgres://sesame@127.0.0.1:1/sesame");
    let clock = ManualClock::new(T0);
    let gw = Gateway::default();
    let devices = vec![
        cached(1, Some(T0 + 3_600_000)),
        cached(2, None),
        cached(3, Some(T0 - 1)),
    ];
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let revoked = HashSet::new();
    let serve =
        failstatic::connect_or_serve_cached(&config, &gw, &devices, &revoked, &clock, &mut stop_rx);
    let check = async {
        assert!(
            eventually(|| gw.has(&key(1))).await,
            "the cached set is served"
        );
        assert!(gw.has(&key(2)));
        assert!(!gw.has(&key(3)), "already expired in the cache");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(gw.has(&key(1)), "not before its expiry");
        clock.advance(HOUR);
        assert!(
            eventually(|| !gw.has(&key(1))).await,
            "a cached key that expired is still served"
        );
        assert!(gw.has(&key(2)));
        stop.send(true).expect("stop");
    };
    let (store, ()) = tokio::join!(serve, check);
    assert!(store.is_none());
}

/// What the thread's tracing wrote while `f` ran (text lines).
fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = sesame::telemetry::MemoryLog::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, buf.text())
}

#[test]
fn a_cache_older_than_max_cache_age_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = PeerCache::open(dir.path()).expect("cache");
    let gw = PublicKey::from_bytes(GATEWAY_KEY).expect("key");
    let now = T0 + 30 * 86_400_000;
    let week = 7 * DAY;
    let devices = vec![cached(1, None), cached(2, Some(now + 1))];
    // Confirmed 6 days ago: served.
    cache
        .save(&gw, now - 6 * 86_400_000, devices.clone())
        .expect("save");
    let (loaded, logs) = logs_of(|| failstatic::load_cached(&cache, &gw, now, week));
    assert_eq!(
        loaded,
        Cached {
            written_at: now - 6 * 86_400_000,
            devices: devices.clone()
        }
    );
    assert!(logs.is_empty(), "{logs}");
    // Confirmed 8 days ago: refused, saying why and what to do, French first.
    cache
        .save(&gw, now - 8 * 86_400_000, devices.clone())
        .expect("save");
    let (loaded, logs) = logs_of(|| failstatic::load_cached(&cache, &gw, now, week));
    assert_eq!(loaded, Cached::default(), "no cached peer");
    for part in [
        "refusé",
        "8days",
        "max_cache_age (7days)",
        "rétablissez",
        "refused",
        "bring them back",
        "raise max_cache_age",
    ] {
        assert!(logs.contains(part), "{part}: {logs}");
    }
    assert!(logs.find("refusé") < logs.find("refused"), "{logs}");
    // A longer limit takes it.
    assert_eq!(
        failstatic::load_cached(&cache, &gw, now, 10 * DAY).devices,
        devices
    );

    // The site gateway's feed state: the same rule.
    let site = cache.sibling("site-cache.json");
    let state = SiteState::new("dsden56");
    site_cache::save(&site, &gw, now - 8 * 86_400_000, &state).expect("save");
    let (loaded, logs) = logs_of(|| site_cache::load_fresh(&site, &gw, now, week));
    assert!(loaded.is_none());
    assert!(logs.contains("max_cache_age"), "{logs}");
    let loaded = site_cache::load_fresh(&site, &gw, now, 10 * DAY).expect("fresh");
    assert_eq!(loaded.0, now - 8 * 86_400_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_age_is_the_stores_last_confirmation() {
    let db = sqlite_db().await;
    enrol_for(&db, "alice", key(1), 180 * 24 * HOUR).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Arc::new(Gateway::default());
    let control = ControlPlane::new(
        db.store.clone(),
        Arc::new(config(&db.url)),
        Arc::clone(&gw) as Arc<dyn PeerSink>,
    );
    let cache = PeerCache::open(dir.path()).expect("cache");
    control.set_peer_cache(PeerCache::open(dir.path()).expect("cache"));
    let public = gw.public_key();
    let written = || cache.load(&public).expect("load").expect("cache").0;
    control.reconcile().await.expect("published");
    assert_eq!(written(), T0);
    let (_, devices) = cache.load(&public).expect("load").expect("cache");
    assert_eq!(
        devices[0].key_expires_at,
        Some(T0 + 180 * 86_400_000),
        "the key's expiry is cached"
    );
    // The same set confirmed again: rewritten once its confirmation is REFRESH old.
    db.clock.advance(REFRESH / 2);
    control.reconcile().await.expect("published");
    assert_eq!(written(), T0);
    db.clock.advance(REFRESH / 2);
    control.reconcile().await.expect("published");
    let confirmed = T0 + sesame::time::duration_ms(REFRESH);
    assert_eq!(written(), confirmed);
    // The database down: a new endpoint is saved, with the last confirmation's time.
    db.store.close().await;
    db.clock.advance(DAY);
    *gw.endpoints.lock() = vec![(key(1), "198.18.0.20:40000".parse().expect("addr"))];
    control.save_endpoints();
    let (at, devices) = cache.load(&public).expect("load").expect("cache");
    assert_eq!(
        devices[0].endpoint,
        Some("198.18.0.20:40000".parse().expect("addr"))
    );
    assert_eq!(at, confirmed, "an outage does not make the cache younger");
    assert_eq!(db.clock.now_ms(), confirmed + 86_400_000);
}
