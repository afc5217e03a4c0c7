//! Two `sesame portal` processes on one real PostgreSQL and one slapd (issue 21): a web login on
//! one is a session on the other; the singleton jobs run on one of them; killed, the other takes
//! them over within two sync intervals and a user removed from the directory meanwhile is
//! suspended once.

use crate::common;

use std::time::{Duration, Instant};

use common::cli;
use common::portal::{ClientOptions, PortalClient};
use common::portal_process::{devices_answer, write_config, PortalProcess};
use common::slapd::{password_of, Slapd};
use common::store_db::audit_of;
use sesame::control::leader::JOBS_LEASE;
use sesame::store::Store;

/// Directory sync every 2 s: the lease is renewed every second and lasts two.
const SYNC: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_portals_share_sessions_and_the_jobs_survive_the_leaders_death() {
    let slapd = Slapd::start();
    let pg = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let (c1, b1) = write_config(dir.path(), 1, &slapd, &pg.url, SYNC);
    let (c2, b2) = write_config(dir.path(), 2, &slapd, &pg.url, SYNC);
    // The schema first, by one process (as the owner would): then both portals start.
    let store = Store::connect(&pg.url).await.expect("migrate");
    // One after the other: the first creates the shared key files (portal, audit).
    let mut portals = Vec::new();
    for (c, b) in [(&c1, &b1), (&c2, &b2)] {
        let mut p = PortalProcess::start(c, b);
        p.wait_ready().await;
        portals.push(p);
    }

    // A web login on portal 1 is a session on portal 2 (same cookie, no sticky session).
    let it = PortalClient::new(&b1, ClientOptions::default());
    let r = it.login("tleroux").await;
    assert_eq!(r.status(), 200, "login on portal 1");
    let on_two = PortalClient {
        http: it.http.clone(),
        base: b2.clone(),
    };
    let r = on_two.get_at("/api/v1/devices").await;
    assert_eq!(r.status(), 200, "the session on portal 2");

    // A laptop of sbernard, enrolled through portal 2.
    let code = cli::sesame(&[
        "enrol-code",
        "create",
        "--user",
        "sbernard",
        "--device",
        "PC-RH-02",
    ])
    .config(&c2)
    .ok();
    let key = sesame::key::PrivateKey::generate().public_key().to_base64();
    let r = reqwest::Client::new()
        .post(format!("{b2}/api/v1/enrol"))
        .json(&serde_json::json!({
            "code": code.trim(), "username": "sbernard", "password": password_of("sbernard"),
            "public_key": key, "hostname": "pc-sbernard",
        }))
        .send()
        .await
        .expect("enrol");
    assert_eq!(r.status(), 201);

    // One of them leads; kill it (SIGKILL: no release, its lease must expire).
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        if let Some((holder, _)) = store.lease_holder(JOBS_LEASE).await.expect("lease") {
            break holder;
        }
        assert!(Instant::now() < deadline, "no portal took the jobs lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead = portals
        .iter()
        .position(|p| leader.ends_with(&p.config.display().to_string()))
        .expect("the leader is one of the two portals");
    let mut killed = portals.remove(dead);
    killed.child.kill().expect("kill");
    killed.child.wait().expect("wait");
    let survivor = &portals[0];
    let killed_at = Instant::now();

    // The user leaves the directory: three absences in a row suspend the laptop.
    slapd.delete_user("sbernard");
    let deadline = Instant::now() + 2 * SYNC + 3 * SYNC + Duration::from_secs(20);
    let took_over = loop {
        let handovers = audit_of(&store, "jobs.leader_changed").await;
        if handovers.iter().any(|e| e.details["leading"] == true) {
            break killed_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no takeover; survivor log:\n{}",
            survivor.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        took_over <= 2 * SYNC + Duration::from_secs(1),
        "taken over after {took_over:?}, more than two sync intervals"
    );
    loop {
        if !audit_of(&store, "device.suspended").await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never suspended; survivor log:\n{}",
            survivor.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more passes: still exactly one suspension, by the one leader.
    tokio::time::sleep(2 * SYNC).await;
    let suspended = audit_of(&store, "device.suspended").await;
    assert_eq!(suspended.len(), 1, "{suspended:?}");
    let handovers = audit_of(&store, "jobs.leader_changed").await;
    assert_eq!(handovers.len(), 1, "{handovers:?}");
    assert_eq!(handovers[0].details["previous"], leader.as_str());
    assert!(survivor
        .log()
        .contains("this portal now runs the singleton jobs"));
    eprintln!("jobs taken over {took_over:?} after the leader was killed (sync every {SYNC:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_answers_503_while_postgresql_is_down_and_serves_again_without_restart() {
    let slapd = Slapd::start();
    // A cluster of this test's own: it is stopped and started again.
    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(common::postgres::PgCluster::start)
            .await
            .expect("PostgreSQL"),
    );
    cluster.create_database("sesame");
    let url = cluster.url("sesame");
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, base) = write_config(dir.path(), 1, &slapd, &url, SYNC);
    let mut portal = PortalProcess::start(&config, &base);
    portal.wait_ready().await;
    let it = PortalClient::new(&base, ClientOptions::default());
    assert_eq!(it.login("tleroux").await.status(), 200);
    assert_eq!(devices_answer(&it).await, Some((200, String::new())));

    // The test cluster commits asynchronously and is stopped as in a crash: what the portal's
    // migrations committed in its last few hundred milliseconds (the last tables, which a login
    // reads) could be lost with it. A production database commits synchronously; here a
    // checkpoint makes the schema durable first.
    let out = cluster.psql("sesame", "CHECKPOINT");
    assert!(out.status.success(), "{out:?}");
    tokio::task::spawn_blocking({
        let c = std::sync::Arc::clone(&cluster);
        move || c.stop()
    })
    .await
    .expect("stop");
    // Down: 503 with the stable code, never a 500, never a hang (several requests).
    for _ in 0..3 {
        assert_eq!(
            devices_answer(&it).await,
            Some((503, "database_unavailable".to_string())),
            "log:\n{}",
            portal.log()
        );
    }
    // A new browser's login too (its failure limits are read from the database first): 503.
    let stranger = PortalClient::new(&base, ClientOptions::default());
    let r = tokio::time::timeout(Duration::from_secs(15), stranger.login("tleroux"))
        .await
        .expect("a login while PostgreSQL is down answers");
    assert_eq!(
        common::portal::error_of(r).await,
        (503, "database_unavailable".to_string())
    );
    tokio::task::spawn_blocking({
        let c = std::sync::Arc::clone(&cluster);
        move || c.start_again()
    })
    .await
    .expect("start");
    // The test cluster commits asynchronously (synchronous_commit = off) and was stopped as in a
    // crash: the session row may be gone with it, so the client signs in again.
    let back = Instant::now();
    loop {
        let fresh = PortalClient::new(&base, ClientOptions::default());
        let signed_in = tokio::time::timeout(Duration::from_secs(15), fresh.login("tleroux"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if signed_in && devices_answer(&fresh).await == Some((200, String::new())) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not serving 10 s after PostgreSQL came back; log:\n{}",
            portal.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "serving again {:?} after PostgreSQL restarted",
        back.elapsed()
    );
}
