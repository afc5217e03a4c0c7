//! Portal sign-in against a real slapd and a real SQLite file: roles on every route,
//! sessions and cookies (HTTP and HTTPS), brute-force limits.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::harness;
use crate::common::steps::step_async;

use harness::{error_of, laptop_key, Harness};
use serde_json::{json, Value};

use common::slapd::password_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_sessions_and_cookies() {
    let h = Harness::start_lenient().await;
    // Cookie attributes on plain HTTP: `sesame`, HttpOnly, SameSite=Strict, no Secure.
    let r = h.browser().login("mdupont").await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("sesame="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains("Secure"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["roles"], json!(["vpn_user"]));
    assert_eq!(v["display_name"], "Marie Dupont");

    let anon = h.browser();
    step_async("no cookie, forged cookie: 401", async {
        let r = anon.get_at("/api/v1/devices").await;
        assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
        let r = anon
            .get(h.url("/api/v1/devices"))
            .header("cookie", "sesame=forged")
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
    })
    .await;

    let marie = step_async(
        "an agent (VPN user) on IT and auditor routes: 403, nothing written",
        async {
            let marie = h.login("mdupont").await;
            let r = marie
                .post_json(
                    "/api/v1/enrolment-codes",
                    &json!({"username": "mdupont", "device_name": "x"}),
                )
                .await;
            assert_eq!(error_of(r).await, (403, "forbidden".into()));
            assert!(h.store.code("AAAA-AAAA-AAAA").await.unwrap().is_none());
            for path in ["/api/v1/audit/events", "/api/v1/audit/verify"] {
                let r = marie.get(h.url(path)).send().await.unwrap();
                assert_eq!(error_of(r).await, (403, "forbidden".into()), "{path}");
            }
            // An auditor cannot create codes; a teacher (no role) cannot even log in, and is
            // told so exactly like a wrong password (no password oracle).
            let auditor = h.login("cgarnier").await;
            let r = auditor
                .post_json(
                    "/api/v1/enrolment-codes",
                    &json!({"username": "mdupont", "device_name": "x"}),
                )
                .await;
            assert_eq!(error_of(r).await, (403, "forbidden".into()));
            let r = anon.login("pdurand").await;
            assert_eq!(error_of(r).await, (401, "invalid_credentials".into()));
            marie
        },
    )
    .await;

    let it = step_async("IT staff: codes only for existing VPN users", async {
        let it = h.login("tleroux").await;
        let r = it
            .post_json(
                "/api/v1/enrolment-codes",
                &json!({"username": "pdurand", "device_name": "x"}),
            )
            .await;
        assert_eq!(error_of(r).await, (403, "not_vpn_user".into()));
        let r = it
            .post_json(
                "/api/v1/enrolment-codes",
                &json!({"username": "nobody", "device_name": "x"}),
            )
            .await;
        assert_eq!(error_of(r).await, (404, "unknown_user".into()));
        let r = it
            .post_json(
                "/api/v1/enrolment-codes",
                &json!({"username": "mdupont", "device_name": "x", "ttl": "soon"}),
            )
            .await;
        assert_eq!(error_of(r).await, (400, "bad_request".into()));
        it
    })
    .await;

    step_async(
        "Marie's device: Sophie cannot see or revoke it (404), Marie can list her own",
        async {
            let code = h.code_for(&it, "mdupont", "portable-marie").await;
            let (key, key_bytes) = laptop_key();
            assert_eq!(h.enrol(&code, "mdupont", &key).await.status(), 201);
            let id = h.store.list_devices(None).await.unwrap()[0].id;
            let sophie = h.login("sbernard").await;
            let r = sophie.delete_at(&format!("/api/v1/devices/{id}")).await;
            assert_eq!(error_of(r).await, (404, "not_found".into()));
            assert!(h.sink.peer(&key_bytes).is_some());
            let mine: Value = sophie.get_at("/api/v1/devices").await.json().await.unwrap();
            assert_eq!(mine, json!([]));
            let mine: Value = marie.get_at("/api/v1/devices").await.json().await.unwrap();
            assert_eq!(mine.as_array().unwrap().len(), 1);
            let r = it
                .delete(h.url("/api/v1/devices/999"))
                .send()
                .await
                .unwrap();
            assert_eq!(error_of(r).await, (404, "not_found".into()));
        },
    )
    .await;

    step_async("logout ends the session server-side", async {
        let r = marie.post(h.url("/api/v1/logout")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let r = marie.get_at("/api/v1/devices").await;
        assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
    })
    .await;

    step_async(
        "idle timeout: a session unused for 30 minutes is refused",
        async {
            sqlx::query("UPDATE web_sessions SET last_seen = last_seen - 1800001")
                .execute(h.store.pool())
                .await
                .unwrap();
            let r = it.get_at("/api/v1/devices").await;
            assert_eq!(error_of(r).await, (401, "unauthenticated".into()));
        },
    )
    .await;

    step_async("unknown routes, wrong methods, OpenAPI", async {
        let r = anon.get_at("/api/v1/nope").await;
        assert_eq!(error_of(r).await, (404, "not_found".into()));
        let r = anon.get_at("/api/v1/enrol").await;
        assert_eq!(error_of(r).await, (405, "bad_request".into()));
        let doc: Value = anon
            .get_at("/api/v1/openapi.json")
            .await
            .json()
            .await
            .unwrap();
        for p in [
            "/api/v1/enrol",
            "/api/v1/device/rotate",
            "/api/v1/devices/{id}",
            "/api/v1/audit/events",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} documented");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_failed_login_within_a_minute_is_429() {
    let h = Harness::start().await;
    let c = h.browser();
    let attempt = |pw: &'static str| {
        let c = c.clone();
        async move { c.login_with("mdupont", pw).await }
    };
    for i in 0..5 {
        assert_eq!(error_of(attempt("wrong").await).await.0, 401, "attempt {i}");
    }
    let r = attempt("wrong").await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(error_of(r).await, (429, "too_many_attempts".into()));
    // Even the right password is refused now, and enrolment too (same user, same address).
    let r = attempt(password_of("mdupont")).await;
    assert_eq!(error_of(r).await.1, "too_many_attempts");
    let r = h.enrol("AAAA-AAAA-AAAA", "mdupont", &laptop_key().0).await;
    assert_eq!(error_of(r).await.1, "too_many_attempts");
    // Another user from the same address is refused too (per-address limit)…
    let login_sb = |xff: Option<&'static str>| {
        let mut rq = c
            .post(h.url("/api/v1/login"))
            .json(&json!({"username": "sbernard", "password": password_of("sbernard")}));
        if let Some(x) = xff {
            rq = rq.header("x-forwarded-for", x);
        }
        rq.send()
    };
    assert_eq!(
        error_of(login_sb(None).await.unwrap()).await.1,
        "too_many_attempts"
    );
    // …but behind a local reverse proxy each client address has its own bucket.
    assert_eq!(
        login_sb(Some("198.18.0.98, 198.18.0.99"))
            .await
            .unwrap()
            .status(),
        200
    );
    let m = h.metrics.render();
    assert!(m.contains("sesame_rate_limited_total 4"), "{m}");
    assert!(
        m.contains("sesame_logins_total{outcome=\"failure\"} 5"),
        "{m}"
    );
}

/// With tls_cert_file/tls_key_file the portal speaks HTTPS itself, and the session cookie is
/// `__Host-sesame`, Secure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_portal_with_host_prefixed_secure_cookie() {
    let h = Harness::start_https().await;
    assert!(h.base.starts_with("https://"));
    let c = h.browser();
    let r = c.login("tleroux").await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("__Host-sesame="), "{cookie}");
    for attr in ["Path=/", "HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    // The browser sends it back over HTTPS: the session works.
    let r = c.get_at("/api/v1/devices").await;
    assert_eq!(r.status(), 200);
    // Plain HTTP to the HTTPS port gets no API answer.
    let plain = h.base.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(r.map(|r| r.status() != 200).unwrap_or(true));
}

/// Strangers failing on Marie's account from many addresses lock it for them, not for Marie's
/// own browser: it logged in before and shows its signed device cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_still_logs_in_from_its_known_device() {
    let h = Harness::start().await;
    let login = |c: &reqwest::Client, user: &str, pw: &str, xff: &str| {
        c.post(h.url("/api/v1/login"))
            .header("x-forwarded-for", xff.to_string())
            .json(&json!({"username": user, "password": pw}))
            .send()
    };
    // Marie's browser logs in once: it gets a device cookie beside the session.
    let marie = h.browser();
    let r = login(&marie, "mdupont", password_of("mdupont"), "198.18.7.1")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Her browser's scripts send the session's CSRF token back (the session cookie is sent too).
    let csrf = harness::csrf_cookie(&r).unwrap();
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("sesame-device=") && c.contains("HttpOnly")),
        "{cookies:?}"
    );
    // Five strangers, five addresses, five spellings of her account.
    let stranger = reqwest::Client::new();
    for (i, name) in [
        "mdupont",
        "MDupont",
        " mdupont",
        "ACADEMIE\\mdupont",
        "mdupont@academie.test",
    ]
    .iter()
    .enumerate()
    {
        let r = login(&stranger, name, "guess", &format!("198.18.8.{}", i + 1))
            .await
            .unwrap();
        assert_eq!(error_of(r).await.0, 401);
    }
    // The account is now refused from any new address, even with the right password…
    let r = login(&stranger, "mdupont", password_of("mdupont"), "198.18.9.1")
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (429, "too_many_attempts".into()));
    // …except from Marie's known browser, on another address too.
    let r = marie
        .post(h.url("/api/v1/login"))
        .header("x-forwarded-for", "198.18.7.2")
        .header("x-csrf-token", csrf)
        .json(&json!({"username": "mdupont", "password": password_of("mdupont")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
