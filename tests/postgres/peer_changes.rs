//! The publisher and the change log on a real PostgreSQL (issue 21): idle, it reads the log's
//! bounds and never scans `devices`; a change committed by another process (another portal,
//! the CLI) is notified at commit and reaches the gateway, a window opened there as that one
//! peer. Each change applied alone: `publish_changes.rs`.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config::TestConfig;
use common::harness::RecordingSink;
use common::store_db::{statement_calls as calls, *};
use sesame::config::Config;
use sesame::control::ControlPlane;
use sesame::store::Store;

const STAFF: &str = "cn=personnels-administratifs,ou=groups,dc=example,dc=org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_publishers_read_the_log_not_the_devices_and_other_portals_changes_are_notified() {
    let db = postgres_db().await;
    exec(
        &db.store,
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
    )
    .await;
    let mut devices = Vec::new();
    for (i, user) in ["alice", "bob", "carla"].iter().enumerate() {
        let code = code_for(&db, user, "pc").await;
        let n = u8::try_from(i + 1).expect("n");
        let e = enrol(&db, &code, &person(user), key(n), "100.64.0.0/24")
            .await
            .expect("enrol");
        devices.push(e.device);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Payroll needs the second factor: a window changes the peer.
    let path = TestConfig::new()
        .database(&db.url)
        .sections(&format!(
            "[roles]\nvpn_users = [\"{STAFF}\"]\n\n[[resource]]\nname = \"paie\"\n\
             allow = [\"198.18.10.10/32 tcp:443\"]\nmfa = true\n\n[[grant]]\n\
             group = \"{STAFF}\"\nresources = [\"paie\"]\n\n[mfa]\nsecret_key_file = \"{}\"\n",
            dir.path().join("mfa.key").display()
        ))
        .write(&dir.path().join("sesame.toml"));
    let config = Arc::new(Config::load(&path).expect("config"));
    let sink = Arc::new(RecordingSink::default());
    let control = ControlPlane::new(db.store.clone(), config, sink.clone());
    control.reconcile().await.expect("first pass");
    let peers = || sink.last.lock().as_ref().map_or(0, Vec::len);
    assert_eq!(peers(), 3);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(Arc::clone(&control).run(stopped));

    // Another portal's connection, and its notifications as the publisher hears them.
    let other = Store::connect(&db.url).await.expect("second portal");
    let mut listener = other
        .listen_peer_changes()
        .await
        .expect("listen")
        .expect("PostgreSQL notifies");

    // Idle: three polls or more, none of them a read of `devices`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    exec(&db.store, "SELECT pg_stat_statements_reset()").await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let log_reads = calls(&db.store, "peer_changes").await;
    let device_reads = calls(&db.store, "FROM devices").await;
    assert!(log_reads >= 3, "the publisher reads the log: {log_reads}");
    assert_eq!(device_reads, 0, "an idle publisher scans nothing");

    // A window opened through the other portal: this publisher sends that one peer, without
    // computing the whole set.
    let whole_sets = *sink.publications.lock();
    let upserts = *sink.upserts.lock();
    other
        .mfa_open_window(
            devices[0].id,
            "alice",
            "agent",
            sesame::time::now_ms() + 3_600_000,
        )
        .await
        .expect("window");
    tokio::time::timeout(Duration::from_secs(5), listener.next())
        .await
        .expect("notified within 5 s")
        .expect("notification");
    let deadline = Instant::now() + Duration::from_secs(5);
    while *sink.upserts.lock() == upserts && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*sink.upserts.lock(), upserts + 1, "one peer sent");
    assert_eq!(*sink.publications.lock(), whole_sets, "no whole set");

    // A revocation by the other portal: notified at commit, and published.
    let revoked_at = Instant::now();
    other
        .revoke_device(devices[1].id, "stolen", &it_staff())
        .await
        .expect("revoke");
    tokio::time::timeout(Duration::from_secs(5), listener.next())
        .await
        .expect("notified within 5 s")
        .expect("notification");
    let deadline = Instant::now() + Duration::from_secs(5);
    while peers() != 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(peers(), 2, "the revoked device left the gateway");
    eprintln!(
        "revocation by another portal published after {:?}",
        revoked_at.elapsed()
    );
    stop.send(true).expect("stop");
    publisher.await.expect("publisher");
}
