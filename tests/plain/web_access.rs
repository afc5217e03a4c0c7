//! Who may do what, against a real slapd and a real SQLite file: CSRF on cookie-authenticated
//! state changes, delegated (DSDEN) technicians limited to their scope in the API, and sessions
//! that follow the directory (a technician removed from the IT group, or disabled, loses the
//! rights with the same cookie after one directory sync).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common::harness;

use crate::common::slapd::password_of;
use harness::{error_of, laptop_key, Harness};
use serde_json::{json, Value};

/// The DSDEN technicians' group (the harness's `[[roles.delegated]]` names it): pdurand.
const DSI_DSDEN: &str = "cn=dsi-dsden,ou=groups,dc=academie,dc=test";

const SECURITY_HEADERS: [&str; 4] = [
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_state_changes_need_the_token_and_the_same_origin() {
    let h = Harness::start_lenient().await;
    // A browser without the portal's script: it does not send the CSRF token by itself.
    let bare = h.browser();
    let r = bare.login("tleroux").await;
    let token = harness::csrf_cookie(&r).expect("csrf cookie");
    assert_eq!(r.status(), 200);
    for h_ in SECURITY_HEADERS {
        assert!(r.headers().contains_key(h_), "{h_}");
    }
    let body = json!({"username": "mdupont", "device_name": "pc"});

    // The session cookie alone (what a forged cross-site form carries): refused, nothing issued.
    let r = bare.post_json("/api/v1/enrolment-codes", &body).await;
    assert_eq!(error_of(r).await, (403, "csrf_rejected".into()));
    // The token from another site's page: refused.
    let r = bare
        .post(h.url("/api/v1/enrolment-codes"))
        .header("x-csrf-token", &token)
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (403, "csrf_rejected".into()));
    let r = bare.post(h.url("/api/v1/logout")).send().await.unwrap();
    assert_eq!(error_of(r).await, (403, "csrf_rejected".into()));
    let codes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM enrolment_codes")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(codes, 0);

    // Token and same origin: accepted.
    let r = bare
        .post(h.url("/api/v1/enrolment-codes"))
        .header("x-csrf-token", &token)
        .header("origin", h.base.as_str())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = bare
        .post(h.url("/api/v1/logout"))
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// Login CSRF: a page of another site that posts the attacker's credentials to the portal would
/// sign the victim's browser into the attacker's account. A browser's cross-origin login (web
/// form or JSON) is refused before any password is checked; the same origin and clients that
/// send no `Origin` (the agent, curl) log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_login_is_refused_without_a_session_cookie() {
    let h = Harness::start_lenient().await;
    let no_redirect = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let form = [
        ("username", "tleroux"),
        ("password", password_of("tleroux")),
        ("next", "/mon-acces"),
    ];
    let web_login = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut req = no_redirect().post(h.url("/login")).form(&form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = fetch_site {
            req = req.header("sec-fetch-site", s);
        }
        req.send()
    };
    let body = json!({"username": "tleroux", "password": password_of("tleroux")});
    let api_login = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut req = no_redirect().post(h.url("/api/v1/login")).json(&body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = fetch_site {
            req = req.header("sec-fetch-site", s);
        }
        req.send()
    };

    for (origin, site) in [
        (Some("https://evil.example"), Some("cross-site")),
        (Some("https://evil.example"), None),
        (None, Some("cross-site")),
        (Some("null"), None),
    ] {
        let r = web_login(origin, site).await.unwrap();
        assert!(
            r.headers().get("set-cookie").is_none(),
            "no session for a refused login"
        );
        assert_eq!(
            error_of(r).await,
            (403, "csrf_rejected".into()),
            "web {origin:?} {site:?}"
        );
        let r = api_login(origin, site).await.unwrap();
        assert!(r.headers().get("set-cookie").is_none());
        assert_eq!(
            error_of(r).await,
            (403, "csrf_rejected".into()),
            "api {origin:?} {site:?}"
        );
    }
    // Nothing was checked against the directory: no login event.
    let logins: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action LIKE 'auth.login%'")
            .fetch_one(h.store.pool())
            .await
            .unwrap();
    assert_eq!(logins, 0);

    // The portal's own page (same origin), and clients that send no Origin at all.
    let same = h.base.as_str();
    for (origin, site) in [(Some(same), Some("same-origin")), (None, None)] {
        let r = web_login(origin, site).await.unwrap();
        assert_eq!(r.status(), 303, "web {origin:?}");
        assert!(
            r.headers().get("set-cookie").is_some(),
            "web {origin:?}: signed in"
        );
        let r = api_login(origin, site).await.unwrap();
        assert_eq!(r.status(), 200, "api {origin:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsden_technician_manages_only_their_scope() {
    let h = Harness::start_lenient().await;
    h.slapd.modify(&format!(
        "dn: {DSI_DSDEN}\nchangetype: add\nobjectClass: groupOfNames\ncn: dsi-dsden\nmember: uid=pdurand,ou=people,dc=academie,dc=test\n"
    ));
    let it = h.login("tleroux").await;
    // Two agents enrol: mdupont (rectorat) and fnoel (the DSDEN's payroll staff).
    let mut ids = std::collections::HashMap::new();
    for uid in ["mdupont", "fnoel"] {
        let code = h.code_for(&it, uid, &format!("pc-{uid}")).await;
        let (key, _) = laptop_key();
        let r = h.enrol(&code, uid, &key).await;
        assert_eq!(r.status(), 201);
        ids.insert(
            uid,
            r.json::<Value>().await.unwrap()["device_id"]
                .as_i64()
                .unwrap(),
        );
    }

    let tech = h.login("pdurand").await;
    let list: Value = tech.get_at("/api/v1/devices").await.json().await.unwrap();
    let users: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["username"].as_str().unwrap())
        .collect();
    assert_eq!(users, vec!["fnoel"], "only the DSDEN's devices");

    // Another department's agent: as if unknown.
    let r = tech
        .post_json(
            "/api/v1/enrolment-codes",
            &json!({"username": "mdupont", "device_name": "pc2"}),
        )
        .await;
    assert_eq!(error_of(r).await, (404, "unknown_user".into()));
    let r = tech
        .delete_at(&format!("/api/v1/devices/{}", ids["mdupont"]))
        .await;
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    assert_eq!(
        h.store
            .device(ids["mdupont"])
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "active"
    );

    // Their own scope: allowed.
    let r = tech
        .post_json(
            "/api/v1/enrolment-codes",
            &json!({"username": "fnoel", "device_name": "pc2"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = tech
        .delete_at(&format!("/api/v1/devices/{}", ids["fnoel"]))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_follow_the_directory() {
    let h = Harness::start_lenient().await;
    // dsi must keep a member once tleroux leaves it.
    h.slapd.add_to_group("rmoreau", "dsi");
    let it = h.login("tleroux").await;
    let body = json!({"username": "mdupont", "device_name": "pc"});
    let r = it.post_json("/api/v1/enrolment-codes", &body).await;
    assert_eq!(r.status(), 201);

    // Removed from the IT group: after one sync pass, the same cookie has no IT rights.
    h.slapd.remove_from_group("tleroux", "dsi");
    h.sync().sync_once().await.unwrap();
    let r = it.post_json("/api/v1/enrolment-codes", &body).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
    // Still a VPN user: the session itself lives on.
    let r = it.get_at("/api/v1/devices").await;
    assert_eq!(r.status(), 200);

    // Disabled: the sync deletes the session.
    h.slapd.disable_user("tleroux");
    h.sync().sync_once().await.unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM web_sessions WHERE username = 'tleroux'")
            .fetch_one(h.store.pool())
            .await
            .unwrap();
    assert_eq!(left, 0);
    let r = it.get_at("/api/v1/devices").await;
    assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_groups_are_re_read_from_the_directory_between_syncs() {
    let h = Harness::start_lenient().await;
    h.slapd.add_to_group("rmoreau", "dsi");
    let it = h.login("tleroux").await;
    let body = json!({"username": "mdupont", "device_name": "pc"});
    h.slapd.remove_from_group("tleroux", "dsi");
    // Groups read at login, younger than [portal] role_refresh (5 min): still IT staff.
    let r = it.post_json("/api/v1/enrolment-codes", &body).await;
    assert_eq!(r.status(), 201);
    // Five minutes later (no sync meanwhile): the next request re-reads the directory.
    sqlx::query("UPDATE users SET last_sync = last_sync - 300000 WHERE username = 'tleroux'")
        .execute(h.store.pool())
        .await
        .unwrap();
    let r = it.post_json("/api/v1/enrolment-codes", &body).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_over_the_limit_still_cuts_named_users() {
    let h = Harness::start_lenient().await;
    h.slapd.add_to_group("rmoreau", "dsi");
    let it = h.login("tleroux").await;
    for (uid, name) in [("sbernard", "pc-sophie"), ("mdupont", "pc-marie")] {
        let code = h.code_for(&it, uid, name).await;
        assert_eq!(h.enrol(&code, uid, &laptop_key().0).await.status(), 201);
    }
    // Sophie leaves the VPN users for the auditors (an applied pass suspends her laptop), then
    // signs in to the portal: a user with only a suspended device and a web session.
    h.slapd
        .remove_from_group("sbernard", "personnels-administratifs");
    h.slapd.add_to_group("sbernard", "auditeurs");
    assert_eq!(h.sync().sync_once().await.unwrap().devices_suspended, 1);
    let sophie = h.login("sbernard").await;
    let r = sophie.get_at("/audit/log").await;
    assert_eq!(r.status(), 200);

    // A pass over max_changes_per_sync (here 0: Marie leaving suspends her laptop) in which
    // the directory speaks of named users: Marie leaves the payroll (and VPN) group, tleroux
    // leaves the IT group, Sophie is disabled. Nothing is held: only the suspensions of users
    // the directory no longer returns would wait.
    let mut strict = h.config.directory.clone().unwrap();
    strict.max_changes_per_sync = sesame::config::MaxChanges::Count(0);
    let held = sesame::control::DirectorySync::new(
        h.store.clone(),
        h.directory.clone(),
        Some(std::sync::Arc::clone(&h.control)),
        h.config.roles.vpn_users.clone(),
        &strict,
        std::sync::Arc::clone(&h.metrics),
    );
    h.slapd.remove_from_group("mdupont", "gestionnaires-paie");
    h.slapd.remove_from_group("tleroux", "dsi");
    h.slapd.disable_user("sbernard");
    let r = held.sync_once().await.unwrap();
    assert!(!r.held && r.devices_suspended == 1, "{r:?}");
    let marie = &h.store.list_devices(Some("mdupont")).await.unwrap()[0];
    assert_eq!(marie.status, sesame::store::DeviceStatus::Suspended);
    // Web rights do not wait: tleroux's cookie no longer creates codes, Sophie's is gone.
    let body = json!({"username": "fnoel", "device_name": "pc"});
    let r = it.post_json("/api/v1/enrolment-codes", &body).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
    let r = sophie.get_at("/api/v1/audit/verify").await;
    assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM web_sessions WHERE username = 'sbernard'")
            .fetch_one(h.store.pool())
            .await
            .unwrap();
    assert_eq!(left, 0);
    // Signing in again reads the directory: no IT rights any more.
    let again = h.login("tleroux").await;
    let r = again.post_json("/api/v1/enrolment-codes", &body).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
}
