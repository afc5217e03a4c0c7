//! The brute-force limits across two `sesame portal` processes on one real PostgreSQL (issue
//! 21): failures counted on either portal add up (per account and per source), and the device
//! cookie one portal handed out lets its browser past the account's limit on the other; the
//! logins one portal takes at once read the counts together.

use crate::common;

use std::time::Duration;

use common::portal::{csrf_cookie, error_of, ClientOptions, PortalClient};
use common::portal_process::{write_config_with, PortalProcess};
use common::slapd::{password_of, Slapd};
use common::store_db::{audit_of, statement_calls as calls};
use serde_json::json;
use sesame::store::Store;

/// `POST /api/v1/login` on `base` as if through a load balancer that saw `from`.
async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    from: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/login"))
        .header("x-forwarded-for", from)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("login")
}

/// Marie's own browser (its cookies, `csrf` its CSRF token) signs in on `base` from another
/// address than its first login's.
async fn marie_on(marie: &PortalClient, base: &str, csrf: &str) -> reqwest::Response {
    marie
        .post(format!("{base}/api/v1/login"))
        .header("x-forwarded-for", "198.18.7.2")
        .header("x-csrf-token", csrf)
        .json(&json!({"username": "mdupont", "password": password_of("mdupont")}))
        .send()
        .await
        .expect("login")
}

/// Two `sesame portal` processes (A, B) on one real PostgreSQL and slapd, `portal_extra` in
/// their `[portal]`; each part stops on drop.
struct TwoPortals {
    a: String,
    b: String,
    store: Store,
    _portals: Vec<PortalProcess>,
    _dir: tempfile::TempDir,
    _pg: common::postgres::PgDatabase,
    _slapd: Slapd,
}

impl TwoPortals {
    async fn start(portal_extra: &str) -> TwoPortals {
        let slapd = Slapd::start();
        let pg = tokio::task::spawn_blocking(common::postgres::database)
            .await
            .expect("PostgreSQL");
        let dir = tempfile::tempdir().expect("tempdir");
        let sync = Duration::from_secs(60);
        let (c1, a) = write_config_with(dir.path(), 1, &slapd, &pg.url, sync, portal_extra);
        let (c2, b) = write_config_with(dir.path(), 2, &slapd, &pg.url, sync, portal_extra);
        let store = Store::connect(&pg.url).await.expect("migrate");
        let mut portals = Vec::new();
        for (c, base) in [(&c1, &a), (&c2, &b)] {
            let mut p = PortalProcess::start(c, base);
            p.wait_ready().await;
            portals.push(p);
        }
        TwoPortals {
            a,
            b,
            store,
            _portals: portals,
            _dir: dir,
            _pg: pg,
            _slapd: slapd,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_two_portals_add_up_and_a_device_cookie_from_one_passes_the_other() {
    let w = TwoPortals::start("").await;
    let (a, b, store) = (w.a.clone(), w.b.clone(), &w.store);

    // Marie's browser signs in on portal A: a device cookie beside the session.
    let marie = PortalClient::new(&a, ClientOptions::default());
    let r = login(&marie, &a, "mdupont", password_of("mdupont"), "198.18.7.1").await;
    assert_eq!(r.status(), 200);
    let csrf = csrf_cookie(&r).expect("csrf cookie");
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap_or("").starts_with("sesame-device=")));

    // Five wrong passwords on her account from five addresses: three on A, two on B.
    let stranger = reqwest::Client::new();
    for (i, base) in [&a, &a, &a, &b, &b].into_iter().enumerate() {
        let from = format!("198.18.8.{}", i + 1);
        let r = login(&stranger, base, "mdupont", "guess", &from).await;
        assert_eq!(error_of(r).await.0, 401, "failure {} on {base}", i + 1);
    }
    // The sixth, with the right password from a new address, is refused on either portal.
    for (base, from) in [(&a, "198.18.9.1"), (&b, "198.18.9.2")] {
        let r = login(&stranger, base, "mdupont", password_of("mdupont"), from).await;
        assert_eq!(r.status(), 429, "the sixth attempt on {base}");
        assert_eq!(error_of(r).await, (429, "too_many_attempts".into()));
    }
    // Her own browser, known since its login on A, signs in on B (from another address too).
    let r = marie_on(&marie, &b, &csrf).await;
    assert_eq!(r.status(), 200, "the device cookie from A on B");

    // One address guessing five accounts, over both portals: its sixth attempt is refused on
    // either, whatever the account (tleroux's own counts are clean).
    let one = "198.18.10.1";
    for (i, base) in [&b, &a, &b, &a, &b].into_iter().enumerate() {
        let r = login(&stranger, base, &format!("guess{i}"), "guess", one).await;
        assert_eq!(error_of(r).await.0, 401, "guess {} on {base}", i + 1);
    }
    for base in [&a, &b] {
        let r = login(&stranger, base, "tleroux", password_of("tleroux"), one).await;
        assert_eq!(r.status(), 429, "the source's sixth attempt on {base}");
        assert_eq!(error_of(r).await, (429, "too_many_attempts".into()));
    }
    // Each refusal audited by the portal that refused it, naming the counter.
    let limited = audit_of(store, "auth.rate_limited").await;
    assert_eq!(limited.len(), 4, "{limited:?}");
    assert!(limited
        .iter()
        .any(|e| e.details["keys"] == json!(["user:mdupont"])));
    assert!(limited
        .iter()
        .any(|e| e.details["keys"] == json!(["ip:198.18.10.1"])));
}

/// The spray ceiling counts across portals: failures on many accounts from many addresses,
/// under every per-key limit and spread over two portals, trip it once in all (one
/// `auth.spray_detected`); then an attempt without a known device is 429 on either portal, and a
/// browser known to one signs in on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spray_ceiling_counts_failures_on_every_portal_and_trips_once() {
    let w = TwoPortals::start("spray_ceiling = 10\n").await;
    let (a, b, store) = (w.a.clone(), w.b.clone(), &w.store);
    // Marie's browser signs in on A before the spray: a known device from then on.
    let marie = PortalClient::new(&a, ClientOptions::default());
    let r = login(&marie, &a, "mdupont", password_of("mdupont"), "198.18.7.1").await;
    assert_eq!(r.status(), 200);
    let csrf = csrf_cookie(&r).expect("csrf cookie");

    // Eleven guesses, each on its own account from its own address (no per-key limit is
    // reached), six on A and five on B: neither portal alone saw more than the ceiling.
    let stranger = reqwest::Client::new();
    for i in 0..11 {
        let base = if i % 2 == 0 { &a } else { &b };
        let from = format!("198.18.11.{}", i + 1);
        let r = login(&stranger, base, &format!("spray{i}"), "guess", &from).await;
        assert_eq!(error_of(r).await.0, 401, "guess {} on {base}", i + 1);
    }
    // The spray is on for both: a right password without a known device is refused on either.
    for (base, from) in [(&a, "198.18.12.1"), (&b, "198.18.12.2")] {
        let r = login(&stranger, base, "tleroux", password_of("tleroux"), from).await;
        assert_eq!(r.status(), 429, "during the spray on {base}");
        assert_eq!(r.headers()["retry-after"], "60");
        assert_eq!(error_of(r).await, (429, "too_many_attempts".into()));
    }
    // Marie's browser, known since A, still signs in on B.
    let r = marie_on(&marie, &b, &csrf).await;
    assert_eq!(r.status(), 200, "a known device during the spray");
    // One episode, audited once by the portal whose failure crossed the ceiling.
    let detected = audit_of(store, "auth.spray_detected").await;
    assert_eq!(detected.len(), 1, "{detected:?}");
    assert_eq!(detected[0].details["ceiling_per_minute"], 10);
}

/// The logins a portal takes at once ask PostgreSQL for their failure counts together (issue
/// 21's two-portal figure: one read per login was a statement each): fewer reads than logins,
/// every login answered, and a failure counted meanwhile is still seen by the next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_on_a_portal_read_the_failure_counts_together() {
    const LOGINS: usize = 40;
    let w = TwoPortals::start("").await;
    let (a, b, store) = (w.a.clone(), w.b.clone(), &w.store);
    for sql in [
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        "SELECT pg_stat_statements_reset()",
    ] {
        sqlx::query(sql)
            .execute(store.pool())
            .await
            .expect("pg_stat_statements");
    }
    // The table held by another transaction: the first read waits for it, so the logins that
    // arrive meanwhile are certainly concurrent (a loaded machine could otherwise serve them
    // one after the other, each reading alone, as the old code always did).
    let mut hold = store.pool().begin().await.expect("begin");
    sqlx::query("LOCK TABLE login_failures IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .expect("lock");
    let client = reqwest::Client::new();
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..LOGINS {
        let (client, a) = (client.clone(), a.clone());
        logins.spawn(async move {
            let from = format!("198.18.13.{}", i + 1);
            login(&client, &a, "tleroux", password_of("tleroux"), &from)
                .await
                .status()
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    hold.commit().await.expect("release");
    while let Some(status) = logins.join_next().await {
        assert_eq!(status.expect("login"), 200);
    }
    let reads = calls(store, "FROM login_failures WHERE key IN").await;
    assert!(
        (1..i64::try_from(LOGINS / 2).expect("n")).contains(&reads),
        "{LOGINS} concurrent logins, {reads} reads of the failure counts"
    );

    // Shared reads see every failure: five on B, then the sixth attempt on A is refused.
    for i in 0..5 {
        let r = login(
            &client,
            &b,
            "tleroux",
            "guess",
            &format!("198.18.14.{}", i + 1),
        )
        .await;
        assert_eq!(error_of(r).await.0, 401, "failure {}", i + 1);
    }
    let r = login(
        &client,
        &a,
        "tleroux",
        password_of("tleroux"),
        "198.18.14.9",
    )
    .await;
    assert_eq!(r.status(), 429, "the sixth attempt");
}
