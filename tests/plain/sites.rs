//! Sites on the portal side: `sesame site token`, and the site gateways' feed served by an
//! in-process portal over a real SQLite store (each token yields its own site's devices only;
//! a revocation reaches a waiting long-poll at once).
#![allow(clippy::too_many_lines)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sesame::audit::AuditContext;
use sesame::config::{Config, LiveConfig};
use sesame::control::sink::NoLocalGateway;
use sesame::control::ControlPlane;
use sesame::directory::DirectoryUser;
use sesame::key::PublicKey;
use sesame::portal::{router, AppState};
use sesame::service::feed::FeedHub;
use sesame::service::{devices, sites, Actor, Services};
use sesame::store::{AddressPool, EnrolRequest, NewCode, Store};

use crate::common::cli::{self, text};
use crate::common::config::{TestConfig, TWO_SITES};
use crate::common::store_db::audit_of;

const VPN: &str = "cn=personnels,ou=groups,dc=academie,dc=test";
const PAIE: &str = "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test";
const APP56: &str = "cn=dsden56,ou=groups,dc=academie,dc=test";

/// Two sites, payroll at the rectorat, an application at the DSDEN, granted to their groups.
fn sites_config(url: &str, dir: &Path) -> TestConfig {
    let mfa_key = dir.join("mfa.key");
    TestConfig::new().database(url).sections(&format!(
        r#"[roles]
vpn_users = ["{VPN}"]
it_staff = ["cn=dsi,ou=groups,dc=academie,dc=test"]

{TWO_SITES}
[[resource]]
name = "paie"
site = "rectorat"
allow = ["198.18.10.10/32 tcp:443"]
mfa = true

[[resource]]
name = "app56"
site = "dsden56"
allow = ["198.18.56.10/32 tcp:443"]

[[grant]]
group = "{PAIE}"
resources = ["paie"]

[[grant]]
group = "{APP56}"
resources = ["app56"]

[mfa]
idle = "45m"
secret_key_file = "{mfa_key}"
"#,
        mfa_key = mfa_key.display()
    ))
}

fn admin() -> Actor {
    Actor::cli("cli:test".into())
}

async fn enrol(store: &Store, user: &str, device: &str, key: u8, groups: &[&str]) -> i64 {
    let code = store
        .create_code(
            &NewCode {
                username: user.into(),
                device_name: device.into(),
                ttl: Duration::from_secs(3600),
            },
            &AuditContext::system(),
        )
        .await
        .expect("code")
        .code;
    let person = DirectoryUser {
        username: user.into(),
        dn: format!("uid={user},ou=people,dc=academie,dc=test"),
        display_name: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        disabled: false,
    };
    store
        .enrol(
            &EnrolRequest {
                code: &code,
                user: &person,
                public_key: PublicKey::from_bytes([key; 32]).expect("key"),
                hostname: &"pc-host".parse().expect("hostname"),
                key_lifetime: None,
            },
            &AddressPool {
                network: "100.64.0.0/24".parse().expect("net"),
                reserved: vec!["100.64.0.1".parse().expect("ip")],
            },
            &AuditContext::system(),
        )
        .await
        .expect("enrol")
        .device
        .id
}

fn key_b64(n: u8) -> String {
    PublicKey::from_bytes([n; 32]).expect("key").to_base64()
}

#[test]
fn site_token_prints_a_new_token_each_time_replacing_the_previous_one_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let config = sites_config(&url, dir.path()).write(&dir.path().join("sesame.toml"));
    let token = |site: &str| {
        cli::sesame(&["site", "token", "--site", site])
            .config(&config)
            .output()
    };
    let first = token("rectorat");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first = text(&first.stdout).trim().to_string();
    assert_eq!(first.len(), 64, "256 bits in hex: {first}");
    let second = text(&token("rectorat").stdout).trim().to_string();
    assert_ne!(first, second);
    let unknown = token("dsden29");
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("dsden29"),
        "{}",
        text(&unknown.stderr)
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::connect(&url).await.expect("open");
        let events = audit_of(&store, "site.token_created").await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].target, "site:rectorat");
        assert_eq!(events[1].details["replaced"], true);
        let svc = Services::new(LiveConfig::new(load(&config)), store.clone());
        // Only the last token opens the feed; the first is refused (and that is audited).
        assert_eq!(
            sites::authenticate(&svc, &second, Some("rectorat"), None)
                .await
                .expect("current"),
            "rectorat"
        );
        let refused = sites::authenticate(&svc, &first, None, None).await;
        assert_eq!(refused.expect_err("replaced").code(), "invalid_site_token");
        // The rectorat's current token, presented by a gateway serving another site.
        let other = sites::authenticate(&svc, &second, Some("dsden56"), None).await;
        assert_eq!(other.expect_err("other site").code(), "invalid_site_token");
        let audited = audit_of(&store, "site.token_refused").await;
        assert_eq!(audited.len(), 2);
        assert_eq!(audited[0].outcome.as_str(), "denied");
        assert_eq!(audited[1].details["reason"], "other_site");
        assert_eq!(audited[1].details["claimed_site"], "dsden56");
    });
}

fn load(path: &Path) -> Config {
    Config::load(path).expect("config")
}

/// A portal (no gateway) over a real SQLite store, its feeds filled by the control plane.
struct Portal {
    base: String,
    svc: Arc<Services>,
    control: Arc<ControlPlane>,
    _dir: tempfile::TempDir,
}

async fn start_portal() -> (Portal, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let path = sites_config(&url, dir.path()).write(&dir.path().join("sesame.toml"));
    let live = LiveConfig::new(load(&path));
    let store = Store::connect(&url).await.expect("open");
    let control = ControlPlane::new(
        store.clone(),
        live.clone(),
        Arc::new(NoLocalGateway::new(live.clone())),
    );
    let hub = Arc::new(FeedHub::new());
    control.set_feeds(Arc::clone(&hub));
    let svc = Arc::new(
        Services::new(live, store.clone())
            .with_publisher(control.clone())
            .with_feeds(hub),
    );
    let listener = sesame::listen::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = router(AppState::new(Arc::clone(&svc)));
    tokio::spawn(async move {
        let _ = sesame::listen::serve(listener, None, app, std::future::pending()).await;
    });
    (
        Portal {
            base,
            svc,
            control,
            _dir: dir,
        },
        store,
    )
}

async fn feed(portal: &Portal, token: &str, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/gateway/feed{query}", portal.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("feed");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

fn peer_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["public_key"].as_str().expect("key").to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_site_token_yields_its_sites_devices_and_a_revocation_wakes_the_long_poll() {
    let (portal, store) = start_portal().await;
    let alice = enrol(&store, "alice", "PC-PAIE-01", 1, &[VPN, PAIE, APP56]).await;
    let bob = enrol(&store, "bob", "PC-PAIE-02", 2, &[VPN, PAIE]).await;
    let _carol = enrol(&store, "carol", "PC-RH-01", 3, &[VPN]).await;
    let _dave = enrol(&store, "dave", "PC-EXT-01", 4, &[PAIE]).await; // not a VPN user
    let rectorat = sites::create_token(&portal.svc, &admin(), "rectorat")
        .await
        .expect("token");
    let dsden = sites::create_token(&portal.svc, &admin(), "dsden56")
        .await
        .expect("token");
    // The publisher's pass (its poll sees the enrolments within a second).
    portal.control.reconcile().await.expect("pass");

    // The rectorat's gateway: alice and bob, payroll only, named as IT named them.
    let (status, full) = feed(&portal, &rectorat, "?wait=0").await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["site"], "rectorat");
    assert_eq!(full["full"], true);
    assert_eq!(peer_keys(&full), {
        let mut k = vec![key_b64(1), key_b64(2)];
        k.sort();
        k
    });
    let a = full["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .find(|p| p["device_id"] == alice)
        .expect("alice");
    assert_eq!(a["device_name"], "PC-PAIE-01");
    assert_eq!(a["resources"], serde_json::json!(["paie"]));
    assert_eq!(full["resources"][0]["name"], "paie");
    assert_eq!(full["resources"].as_array().expect("resources").len(), 1);

    // The DSDEN's gateway: alice alone, with the DSDEN's application only.
    let (_, d) = feed(&portal, &dsden, "?wait=0").await;
    assert_eq!(d["site"], "dsden56");
    assert_eq!(peer_keys(&d), vec![key_b64(1)]);
    assert_eq!(d["peers"][0]["resources"], serde_json::json!(["app56"]));

    // A wrong token, and no token: 401 invalid_site_token / unauthenticated.
    let (status, e) = feed(&portal, &"0".repeat(64), "?wait=0").await;
    assert_eq!(status, 401);
    assert_eq!(e["error"]["code"], "invalid_site_token");

    // A long-poll at the current version waits; bob's revocation wakes it within 2 s.
    let version = full["version"].as_u64().expect("version");
    let generation = full["generation"].as_str().expect("generation").to_string();
    let poll = {
        let (base, token) = (portal.base.clone(), rectorat.clone());
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .get(format!(
                    "{base}/api/v1/gateway/feed?since={version}&generation={generation}&wait=25"
                ))
                .bearer_auth(token)
                .send()
                .await
                .expect("feed");
            (Instant::now(), r.json::<Value>().await.expect("json"))
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "nothing changed: the long-poll waits");
    // Monitoring sees the rectorat's gateway waiting on the feed, and when it last asked.
    let metrics = portal.svc.metrics().render();
    assert!(
        metrics.contains("sesame_feed_waiting{site=\"rectorat\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sesame_feed_last_request_timestamp_seconds{site=\"dsden56\"} 1"),
        "{metrics}"
    );
    let revoked_at = Instant::now();
    devices::revoke(&portal.svc, &admin(), bob, "stolen", None)
        .await
        .expect("revoke");
    let (answered_at, changes) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll answers")
        .expect("join");
    let lag = answered_at.duration_since(revoked_at);
    assert!(
        lag < Duration::from_secs(2),
        "revocation reached the feed in {lag:?}"
    );
    assert_eq!(changes["full"], false);
    assert_eq!(changes["removed"], serde_json::json!([key_b64(2)]));
    let metrics = portal.svc.metrics().render();
    assert!(
        metrics.contains("sesame_feed_waiting{site=\"rectorat\"} 0\n"),
        "answered, no longer waiting: {metrics}"
    );
    assert!(changes["version"].as_u64().expect("version") > version);
    // The DSDEN's set did not move: its feed has nothing new since.
    let dv = d["version"].as_u64().expect("version");
    let dg = d["generation"].as_str().expect("generation");
    let (_, same) = feed(
        &portal,
        &dsden,
        &format!("?since={dv}&generation={dg}&wait=0"),
    )
    .await;
    assert_eq!(same["version"].as_u64(), Some(dv));
    assert!(same["peers"].as_array().expect("peers").is_empty());
}

async fn post_events(portal: &Portal, token: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/gateway/events", portal.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("events");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

fn record(seq: u64, action: &str, device: i64) -> Value {
    serde_json::json!({
        "seq": seq, "action": action, "ts_ms": 1_700_000_000_000_i64 + seq as i64,
        "public_key": key_b64(1), "device_id": device, "outcome": "success",
        // A site named in the body is never believed.
        "details": {"endpoint": "192.0.2.10:51820", "site": "dsden56"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_events_land_in_the_audit_log_with_the_tokens_site_once_each() {
    let (portal, store) = start_portal().await;
    let alice = enrol(&store, "alice", "PC-PAIE-01", 1, &[VPN, PAIE]).await;
    let token = sites::create_token(&portal.svc, &admin(), "rectorat")
        .await
        .expect("token");
    let batch = serde_json::json!({"records": [
        record(1, "tunnel.session_started", alice),
        record(2, "flow.allowed", alice),
        record(3, "tunnel.session_ended", alice),
    ]});
    let (status, v) = post_events(&portal, &token, &batch).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 3);
    let started = audit_of(&store, "tunnel.session_started").await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].details["site"], "rectorat");
    assert_eq!(started[0].details["device_name"], "PC-PAIE-01");
    assert_eq!(started[0].details["spool_seq"], 1);
    assert_eq!(started[0].target, format!("device:{alice}"));
    assert_eq!(started[0].actor, "alice");

    // The gateway did not hear the answer and sends the batch again, then the next one.
    let (status, v) = post_events(&portal, &token, &batch).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(3)));
    let next = serde_json::json!({"records": [
        record(3, "tunnel.session_ended", alice),
        record(4, "tunnel.session_started", alice),
    ]});
    let (status, _) = post_events(&portal, &token, &next).await;
    assert_eq!(status, 200);
    assert_eq!(audit_of(&store, "tunnel.session_started").await.len(), 2);
    assert_eq!(audit_of(&store, "tunnel.session_ended").await.len(), 1);
    assert_eq!(audit_of(&store, "flow.allowed").await.len(), 1);

    // A bad batch is refused whole; a wrong token is refused.
    let bad = serde_json::json!({"records": [record(9, "device.revoked", alice)]});
    let (status, e) = post_events(&portal, &token, &bad).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, e) = post_events(&portal, &"1".repeat(64), &batch).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("invalid_site_token"))
    );
    assert!(matches!(
        store.verify_audit().await.expect("verify"),
        sesame::audit::AuditVerification::Intact { .. }
    ));
}

/// The feed peer of `device` in a feed answer.
fn feed_peer(v: &Value, device: i64) -> Value {
    v["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .find(|p| p["device_id"] == device)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_the_site_gateway_closed_closes_at_the_portal_but_never_a_newer_one() {
    let (portal, store) = start_portal().await;
    let alice = enrol(&store, "alice", "PC-PAIE-01", 1, &[VPN, PAIE]).await;
    let token = sites::create_token(&portal.svc, &admin(), "rectorat")
        .await
        .expect("token");
    let until = portal.svc.now_ms() + 3_600_000;
    store
        .mfa_open_window(alice, "alice", "agent", until)
        .await
        .expect("window");
    portal.control.reconcile().await.expect("pass");
    let (status, v) = feed(&portal, &token, "?site=rectorat").await;
    assert_eq!(status, 200, "{v}");
    // The window and `[mfa] idle` travel to the site's gateway, which enforces both.
    assert_eq!(feed_peer(&v, alice)["mfa_until_ms"], until);
    assert_eq!(v["mfa_idle_ms"], 45 * 60 * 1000);
    let closed = |seq: u64, until_ms: i64| {
        let mut r = record(seq, "mfa.window_closed", alice);
        r["details"] = serde_json::json!({
            "until": sesame::time::format(until_ms), "reason": "idle", "flows_cut": 1,
        });
        serde_json::json!({"records": [r]})
    };
    // A late report of an earlier window (another end) leaves this one open.
    let (status, _) = post_events(&portal, &token, &closed(1, until - 60_000)).await;
    assert_eq!(status, 200);
    let w = store.mfa_window(alice).await.expect("q").expect("row");
    assert_eq!(w.close_reason, None);
    // The gateway's report of this window closes it: the feed stops sending it.
    let (status, _) = post_events(&portal, &token, &closed(2, until)).await;
    assert_eq!(status, 200);
    let w = store.mfa_window(alice).await.expect("q").expect("row");
    assert_eq!(w.close_reason.as_deref(), Some("idle"));
    let (_, v) = feed(&portal, &token, "?site=rectorat").await;
    assert_eq!(feed_peer(&v, alice)["mfa_until_ms"], Value::Null);
    assert_eq!(audit_of(&store, "mfa.window_closed").await.len(), 2);
}
