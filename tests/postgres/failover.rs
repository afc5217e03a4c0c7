//! A portal follows a failover to a promoted standby (issue 21): two real PostgreSQL clusters
//! with streaming replication on free loopback ports, one `sesame portal` process and this
//! test's own store on a multi-host URL with `target_session_attrs=read-write`.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::portal::{ClientOptions, PortalClient};
use common::portal_process::{devices_answer, write_config, PortalProcess};
use common::postgres::PgCluster;
use common::slapd::Slapd;
use common::store_db::audit_of;
use sesame::store::Store;

const SYNC: Duration = Duration::from_secs(60);

/// Runs `f` on a blocking thread (the cluster commands wait for their processes).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Waits until a fresh client signs in and lists its devices (10 s at most after `since`).
async fn serve_again(base: &str, portal: &PortalProcess, since: Instant) {
    // The primary was stopped as in a crash, with asynchronous commits: the session may not
    // have reached the standby, so the client signs in again.
    loop {
        let fresh = PortalClient::new(base, ClientOptions::default());
        let login = tokio::time::timeout(Duration::from_secs(15), fresh.login("tleroux"))
            .await
            .map(|r| r.status().as_u16());
        let devices = match login {
            Ok(200) => devices_answer(&fresh).await,
            _ => None,
        };
        if devices == Some((200, String::new())) {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "not serving 10 s after the standby was promoted (last login {login:?}, devices \
             {devices:?}); log:\n{}",
            portal.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_follows_a_failover_to_the_promoted_standby_with_a_multi_host_url() {
    let slapd = Slapd::start();
    let primary = Arc::new(blocking(PgCluster::start).await);
    primary.create_database("sesame");
    let standby = Arc::new(
        blocking({
            let p = Arc::clone(&primary);
            move || PgCluster::start_standby_of(&p)
        })
        .await,
    );
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/sesame?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, base) = write_config(dir.path(), 1, &slapd, &url, SYNC);
    let mut portal = PortalProcess::start(&config, &base);
    portal.wait_ready().await;
    let it = PortalClient::new(&base, ClientOptions::default());
    assert_eq!(it.login("tleroux").await.status(), 200);
    assert_eq!(devices_answer(&it).await, Some((200, String::new())));
    // This process's own store on the same URL: its pool must follow too.
    let store = Store::connect(&url)
        .await
        .expect("store on the multi-host URL");

    // The primary crashes once the standby has all it wrote; the standby is up but read-only:
    // no host takes writes.
    blocking({
        let (p, s) = (Arc::clone(&primary), Arc::clone(&standby));
        move || {
            p.wait_replayed_by(&s);
            p.stop();
        }
    })
    .await;
    for _ in 0..3 {
        let asked = Instant::now();
        assert_eq!(
            devices_answer(&it).await,
            Some((503, "database_unavailable".to_string())),
            "log:\n{}",
            portal.log()
        );
        eprintln!("503 in {:?} with no primary", asked.elapsed());
    }
    let down = store.write_tx().await.expect_err("no primary to write on");
    assert!(
        matches!(down, sesame::store::StoreError::Unavailable(_)),
        "{down:?}"
    );

    blocking({
        let s = Arc::clone(&standby);
        move || s.promote()
    })
    .await;
    let promoted = Instant::now();
    let promoted_ms = store.now_ms();
    serve_again(&base, &portal, promoted).await;
    let serving = promoted.elapsed();
    eprintln!("serving again {serving:?} after pg_ctl promote");
    assert!(
        portal
            .log()
            .contains("PostgreSQL: switched to another host"),
        "log:\n{}",
        portal.log()
    );

    // The login was written on the promoted standby, the only server left.
    let on_standby = Store::connect(&standby.url("sesame"))
        .await
        .expect("the promoted standby");
    let logins = audit_of(&on_standby, "auth.login").await;
    assert!(
        logins.iter().any(|e| e.ts >= promoted_ms),
        "no login after the promotion on the new primary: {logins:?}"
    );

    // This process's store writes there as well, within the same bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.write_tx().await {
            Ok(tx) => {
                tx.commit().await.expect("commit");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "store never followed: {e}"),
        }
    }
    // Its change listener listens on the new primary: a notification there wakes it.
    let mut listener = store
        .listen_peer_changes()
        .await
        .expect("listen on the new primary")
        .expect("PostgreSQL notifies");
    let out = standby.psql("sesame", "SELECT pg_notify('sesame_peer_changes', '1')");
    assert!(out.status.success(), "{out:?}");
    tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("notified within 10 s")
        .expect("notification");
}
