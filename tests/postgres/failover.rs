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

/// Waits until a fresh client signs in and lists its devices (10 s at most after `since`;
/// never a 500 meanwhile).
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
        assert_ne!(login, Ok(500), "a 500 meanwhile; log:\n{}", portal.log());
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "not serving 10 s after the database changed (last login {login:?}, devices \
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

    moves_off_a_server_turned_read_only(&base, &portal, &primary, &standby).await;
}

/// After the failover: the old primary comes back as a primary beside the promoted standby
/// (the split the docs warn of) and the portal stays where it is; then the promoted standby
/// turns read-only, and the portal moves back to the old primary (its pooled connections to
/// the read-only server dropped; 503, not 500, meanwhile).
async fn moves_off_a_server_turned_read_only(
    base: &str,
    portal: &PortalProcess,
    old: &Arc<PgCluster>,
    promoted: &Arc<PgCluster>,
) {
    blocking({
        let o = Arc::clone(old);
        move || o.start_again()
    })
    .await;
    let on_old = Store::connect(&old.url("sesame"))
        .await
        .expect("old primary");
    let on_promoted = Store::connect(&promoted.url("sesame"))
        .await
        .expect("promoted standby");
    // Three checks of the watcher later, a login still lands on the promoted standby.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let since = on_promoted.now_ms();
    serve_again(base, portal, Instant::now()).await;
    let after = |events: Vec<sesame::audit::AuditEvent>, since: i64| {
        events.iter().filter(|e| e.ts >= since).count()
    };
    assert!(after(audit_of(&on_promoted, "auth.login").await, since) >= 1);
    assert_eq!(
        after(audit_of(&on_old, "auth.login").await, since),
        0,
        "the portal moved back"
    );

    for sql in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    ] {
        let out = promoted.psql("postgres", sql);
        assert!(out.status.success(), "{sql}: {out:?}");
    }
    let turned = Instant::now();
    let since = on_old.now_ms();
    serve_again(base, portal, turned).await;
    eprintln!(
        "serving again {:?} after the promoted standby turned read-only",
        turned.elapsed()
    );
    assert!(
        after(audit_of(&on_old, "auth.login").await, since) >= 1,
        "no login on the old primary"
    );
    let switches = portal
        .log()
        .matches("PostgreSQL: switched to another host")
        .count();
    assert_eq!(switches, 2, "log:\n{}", portal.log());
}
