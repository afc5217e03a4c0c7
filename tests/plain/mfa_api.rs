//! The second factor over the HTTP API against a real slapd and a real SQLite file: enrolment
//! registers a factor, a device unlocks its window, enrolment and web logins ask for the code
//! once it exists, and only something IT handed out (enrolment, `sesame mfa code|reset`)
//! registers a factor: never a password alone.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common::cli;
use crate::common::harness::{error_of, laptop_key, totp_code, Harness};
use crate::common::portal::PortalClient;
use crate::common::slapd::password_of;
use crate::common::steps::step_async;

use serde_json::{json, Value};
use sesame::mfa::totp;

/// The code of `secret` (base32) `offset` steps from now (±1 is accepted).
fn code(secret: &str, offset: i64) -> String {
    totp_code(secret, offset)
}

async fn post_bearer(h: &Harness, path: &str, token: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(h.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_bearer(h: &Harness, path: &str, token: &str) -> Value {
    let r = reqwest::Client::new()
        .get(h.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn enrol_otp(h: &Harness, code: &str, uid: &str, otp: Option<&str>) -> reqwest::Response {
    let (key, _) = laptop_key();
    let mut body = json!({
        "code": code, "username": uid, "password": password_of(uid),
        "public_key": key, "hostname": format!("pc-{uid}"),
    });
    if let Some(otp) = otp {
        body["otp"] = json!(otp);
    }
    h.browser().post_json("/api/v1/enrol", &body).await
}

/// Marie's first laptop enrolled by IT's code (no factor yet): the enrolment's answer, with its
/// device token and the factor to register.
async fn marie_enrolled(h: &Harness) -> (String, Value) {
    let it = h.login("tleroux").await;
    let code = h.code_for(&it, "mdupont", "portable-marie").await;
    let r = enrol_otp(h, &code, "mdupont", None).await;
    assert_eq!(r.status(), 201);
    let cfg: Value = r.json().await.unwrap();
    (cfg["device_token"].as_str().unwrap().to_string(), cfg)
}

async fn actions(h: &Harness, action: &str) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_events WHERE action = $1")
        .bind(action)
        .fetch_one(h.store.pool())
        .await
        .unwrap() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_registers_the_factor_then_unlock_opens_the_window() {
    // IT web logins without the code here (web_roles = auditors): this test is the laptop's.
    let h = Harness::start_mfa("web_roles = [\"auditors\"]").await;
    let it = h.login("tleroux").await;

    let (secret, token) = step_async(
        "enrol without a factor: 201 with a factor to register (secret, otpauth URI, SVG QR code)",
        async {
            let code = h.code_for(&it, "mdupont", "portable-marie").await;
            let r = enrol_otp(&h, &code, "mdupont", None).await;
            assert_eq!(r.status(), 201);
            let cfg: Value = r.json().await.unwrap();
            let reg = &cfg["mfa_registration"];
            let secret = reg["secret"].as_str().unwrap().to_string();
            assert!(reg["otpauth_uri"]
                .as_str()
                .unwrap()
                .starts_with("otpauth://totp/Sesame:mdupont?"));
            assert!(reg["qr_svg"].as_str().unwrap().contains("<svg"));
            assert_eq!(cfg["resources"][0]["name"], "paie");
            assert_eq!(cfg["resources"][0]["mfa"], true);
            (secret, cfg["device_token"].as_str().unwrap().to_string())
        },
    )
    .await;

    // The confirming code, kept: the replay below must send this very string.
    let confirming = code(&secret, 0);
    let recovery = step_async(
        "confirm: a wrong first code is 401 invalid_otp; the right one answers 10 recovery codes",
        async {
            let wrong = other_than(&confirming);
            let r = post_bearer(
                &h,
                "/api/v1/device/mfa/confirm",
                &token,
                &json!({"code": wrong}),
            )
            .await;
            assert_eq!(error_of(r).await, (401, "invalid_otp".into()));
            let r = post_bearer(
                &h,
                "/api/v1/device/mfa/confirm",
                &token,
                &json!({"code": confirming}),
            )
            .await;
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            let codes: Vec<String> = serde_json::from_value(v["recovery_codes"].clone()).unwrap();
            assert_eq!(codes.len(), 10);
            assert_eq!(actions(&h, "mfa.registered").await, 1);
            codes
        },
    )
    .await;

    step_async(
        "unlock: no window before; the next step's code opens one; config shows it",
        async {
            let cfg = get_bearer(&h, "/api/v1/device/config", &token).await;
            assert!(cfg.get("mfa_until").is_none(), "{cfg}");
            // The confirming step is spent: its code again is a replay (the same string: a code
            // computed anew could fall in the next step).
            let r = post_bearer(
                &h,
                "/api/v1/device/unlock",
                &token,
                &json!({"code": confirming}),
            )
            .await;
            assert_eq!(error_of(r).await, (401, "invalid_otp".into()));
            let whole_sets = *h.sink.publications.lock();
            let upserts = *h.sink.upserts.lock();
            let r = post_bearer(
                &h,
                "/api/v1/device/unlock",
                &token,
                &json!({"code": code(&secret, 1)}),
            )
            .await;
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            let until = v["expires_at"].as_str().unwrap().to_string();
            // The gateway got this device's peer alone, its window with it: no whole set.
            assert_eq!(*h.sink.publications.lock(), whole_sets);
            assert_eq!(*h.sink.upserts.lock(), upserts + 1);
            let until_ms = sesame::time::parse("until", &until, 0).unwrap();
            let peers = h.sink.last.lock().clone().unwrap_or_default();
            assert!(
                peers.iter().any(|p| p.mfa_until_ms == Some(until_ms)),
                "the window's end travels with the peer"
            );
            let cfg = get_bearer(&h, "/api/v1/device/config", &token).await;
            assert_eq!(cfg["mfa_until"].as_str(), Some(until.as_str()));
            assert_eq!(h.store.open_windows().await.unwrap().len(), 1);
            assert_eq!(actions(&h, "mfa.window_opened").await, 1);
        },
    )
    .await;

    step_async(
        "lock (sesame-agent down) closes the window: 204, no mfa_until",
        async {
            let r = post_bearer(&h, "/api/v1/device/lock", &token, &json!({})).await;
            assert_eq!(r.status(), 204);
            let cfg = get_bearer(&h, "/api/v1/device/config", &token).await;
            assert!(cfg.get("mfa_until").is_none(), "{cfg}");
            assert_eq!(actions(&h, "mfa.window_closed").await, 1);
        },
    )
    .await;

    step_async(
        "a second enrolment needs the code now: 401 mfa_required, then a recovery code works once",
        async {
            let code1 = h.code_for(&it, "mdupont", "fixe-marie").await;
            let r = enrol_otp(&h, &code1, "mdupont", None).await;
            assert_eq!(error_of(r).await, (401, "mfa_required".into()));
            let r = enrol_otp(&h, &code1, "mdupont", Some(&recovery[0])).await;
            assert_eq!(r.status(), 201);
            let cfg: Value = r.json().await.unwrap();
            assert!(
                cfg.get("mfa_registration").is_none(),
                "no second registration"
            );
            let code2 = h.code_for(&it, "mdupont", "autre-marie").await;
            let r = enrol_otp(&h, &code2, "mdupont", Some(&recovery[0])).await;
            assert_eq!(error_of(r).await, (401, "invalid_otp".into()));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_alone_never_registers_and_an_it_code_works_once() {
    let h = Harness::start_mfa("").await;
    let config = h.dir.path().join("sesame.toml");
    let c = h.browser();
    let register = |code: &str| json!({"username": "tleroux", "password": password_of("tleroux"), "registration_code": code});

    step_async("IT staff without a factor cannot sign in (403 mfa_not_registered), nor register with a password alone", async {
        let r = c.login("tleroux").await;
        assert_eq!(error_of(r).await, (403, "mfa_not_registered".into()));
        let r = c.post_json("/api/v1/mfa/register", &register("ABCD-EFGH-JKMN")).await;
        assert_eq!(error_of(r).await, (401, "invalid_registration_code".into()));
        let r = c.post_json("/api/v1/mfa/register", &json!({"username": "tleroux", "password": password_of("tleroux")})).await;
        assert_eq!(r.status(), 400, "the registration code is required");
    })
    .await;

    let it_code = cli::sesame(&["mfa", "code", "--user", "tleroux"])
        .config(&config)
        .ok();
    let it_code = it_code.trim().to_string();
    assert_eq!(it_code.len(), 14, "{it_code:?}");

    let (secret, recovery) = step_async(
        "sesame mfa code: with the password, registers; a wrong password does not",
        async {
            let mut bad = register(&it_code);
            bad["password"] = json!("wrong");
            let r = c.post_json("/api/v1/mfa/register", &bad).await;
            assert_eq!(error_of(r).await, (401, "invalid_credentials".into()));
            let r = c
                .post_json("/api/v1/mfa/register", &register(&it_code))
                .await;
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            let secret = v["secret"].as_str().unwrap().to_string();
            let mut confirm = register(&it_code);
            confirm["code"] = json!(code(&secret, 0));
            let r = c.post_json("/api/v1/mfa/confirm", &confirm).await;
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            let recovery: Vec<String> =
                serde_json::from_value(v["recovery_codes"].clone()).unwrap();
            // Used once.
            let r = c
                .post_json("/api/v1/mfa/register", &register(&it_code))
                .await;
            assert_eq!(error_of(r).await, (401, "invalid_registration_code".into()));
            (secret, recovery)
        },
    )
    .await;

    step_async("the IT web login asks for the code: 401 mfa_required, wrong 401 invalid_otp, right 200", async {
        let r = c.login("tleroux").await;
        assert_eq!(error_of(r).await, (401, "mfa_required".into()));
        let body = |otp: &str| json!({"username": "tleroux", "password": password_of("tleroux"), "otp": otp});
        let r = c.post_json("/api/v1/login", &body("12345")).await;
        assert_eq!(error_of(r).await, (401, "invalid_otp".into()));
        let r = c.post_json("/api/v1/login", &body(&code(&secret, 1))).await;
        assert_eq!(r.status(), 200);
        // A VPN user's login needs no code (web_roles = it_staff, auditors).
        assert_eq!(h.browser().login("mdupont").await.status(), 200);
    })
    .await;

    step_async(
        "the /login page asks for the code and signs IT in with it (here a recovery code)",
        async {
            let page = h.browser().get_at("/login").await.text().await.unwrap();
            assert!(page.contains("name=\"otp\""), "{page}");
            assert!(page.contains("appelez le service informatique"), "{page}");
            let form = |otp: &str| {
                [
                    ("username", "tleroux"),
                    ("password", password_of("tleroux")),
                    ("otp", otp),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
            };
            let b = h.browser();
            let r = b
                .post(b.url("/login"))
                .form(&form(""))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            let b = h.browser();
            let r = b
                .post(b.url("/login"))
                .form(&form(&recovery[0]))
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_redirection() || r.status() == 200,
                "{}",
                r.status()
            );
            let me = b.get_at("/api/v1/devices").await;
            assert_eq!(me.status(), 200, "signed in");
            // The IT user page shows the factor and the reset button.
            let page = b.get_at("/it/users/tleroux").await.text().await.unwrap();
            assert!(page.contains("totp — enregistré le"), "{page}");
            assert!(page.contains("Réinitialiser le second facteur"), "{page}");
            assert!(
                page.contains("action=\"/it/users/tleroux/mfa-reset\""),
                "{page}"
            );
        },
    )
    .await;

    step_async(
        "sesame mfa reset: the factor goes, a new code is printed and registers again",
        async {
            let code = cli::sesame(&["mfa", "reset", "--user", "tleroux"])
                .config(&config)
                .ok();
            // A fresh browser (the one above holds a session: its posts need the CSRF token).
            let c = h.browser();
            let r = c.login("tleroux").await;
            assert_eq!(error_of(r).await, (403, "mfa_not_registered".into()));
            let r = c
                .post_json("/api/v1/mfa/register", &register(code.trim()))
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(actions(&h, "mfa.reset").await, 2, "code and reset audited");
        },
    )
    .await;
}

/// A six-digit code that is not `right`.
fn other_than(right: &str) -> &'static str {
    if right == "000000" {
        "111111"
    } else {
        "000000"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_refused_after_reauth_interval_without_the_code() {
    let h = Harness::start_mfa("web_roles = []").await;
    let (token, _) = marie_enrolled(&h).await;
    // The device is 91 days old and its owner never used a code since.
    sqlx::query("UPDATE devices SET created_at = created_at - $1")
        .bind(91_i64 * 86_400_000)
        .execute(h.store.pool())
        .await
        .unwrap();
    let (key, _) = laptop_key();
    let r = h.browser().rotate(&token, &key).await;
    assert_eq!(error_of(r).await, (403, "reauth_required".into()));
}

/// `POST path` with form fields (as a browser without JavaScript): status, cache header, page.
async fn post_form(c: &PortalClient, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
    let r = c.post(c.url(path)).form(fields).send().await.unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cache, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mon_acces_opens_the_window_of_a_stock_wireguard_laptop_with_the_code() {
    let h = Harness::start_mfa("web_roles = [\"auditors\"]").await;
    let (device, secret) = h.enrol_with_factor("mdupont", "portable-wireguard").await;
    let device = device.to_string();
    let me = h.login("mdupont").await;

    step_async("/mon-acces: the protected resources, each device's window (closed), a form asking for the code", async {
        let page = me.get_at("/mon-acces").await.text().await.unwrap();
        assert!(page.contains("Accès aux applications protégées"), "{page}");
        assert!(page.contains("<strong>paie</strong>"), "{page}");
        assert!(page.contains("accès fermé"), "{page}");
        assert!(page.contains("action=\"/mon-acces/unlock\""), "{page}");
        assert!(page.contains(&format!("<option value=\"{device}\">")), "{page}");
        assert!(page.contains("name=\"_csrf\""), "{page}");
        assert!(page.contains("appelez le service informatique pour une réinitialisation"), "{page}");
    })
    .await;

    step_async(
        "a wrong code: 401, what to do, audited mfa.failed, no window",
        async {
            let (st, _, page) = post_form(
                &me,
                "/mon-acces/unlock",
                &[("device", &device), ("code", "12345")],
            )
            .await;
            assert_eq!(st, 401);
            assert!(page.contains("Code incorrect"), "{page}");
            assert!(page.contains("role=\"alert\""), "{page}");
            assert!(h.store.open_windows().await.unwrap().is_empty());
            assert_eq!(actions(&h, "mfa.failed").await, 1);
        },
    )
    .await;

    step_async("someone else's device is not found; the right code opens the window (source web) and the page says until when", async {
        // One code for the whole step: computed anew, it could fall in the next step and be no replay.
        let good = code(&secret, 1);
        let (st, _, _) = post_form(&me, "/mon-acces/unlock", &[("device", "9999"), ("code", &good)]).await;
        assert_eq!(st, 404);
        let (st, _, page) = post_form(&me, "/mon-acces/unlock", &[("device", &device), ("code", &good)]).await;
        assert_eq!(st, 200, "{page}");
        assert!(page.contains("Accès ouvert (portable-wireguard) jusqu'au"), "{page}");
        let open = h.store.open_windows().await.unwrap();
        assert_eq!(open.len(), 1);
        let source: String = sqlx::query_scalar("SELECT source FROM mfa_windows")
            .fetch_one(h.store.pool())
            .await
            .unwrap();
        assert_eq!(source, "web");
        assert_eq!(actions(&h, "mfa.window_opened").await, 1);
        let page = me.get_at("/mon-acces").await.text().await.unwrap();
        assert!(page.contains("accès ouvert jusqu'au"), "{page}");
        // The same code again is a replay.
        let (st, _, _) = post_form(&me, "/mon-acces/unlock", &[("device", &device), ("code", &good)]).await;
        assert_eq!(st, 401);
    })
    .await;

    step_async(
        "5 wrong codes within a minute: the next answer is 429 with the wait, in French first",
        async {
            // The failures above count too (the source address's count as well as the account's).
            let mut wrong = 0;
            let r = loop {
                let r = me
                    .post(me.url("/mon-acces/unlock"))
                    .form(&[("device", device.as_str()), ("code", "000001")])
                    .send()
                    .await
                    .unwrap();
                if r.status() == 429 {
                    break r;
                }
                assert_eq!(r.status(), 401);
                wrong += 1;
                assert!(wrong <= 5, "no 429 after 5 wrong codes");
            };
            assert!(wrong >= 3, "{wrong}");
            assert!(r.headers().contains_key("retry-after"));
            let page = r.text().await.unwrap();
            assert!(page.contains("Trop de tentatives"), "{page}");
        },
    )
    .await;

    step_async(
        "signing out of the web closes the window opened from the web (reason logout)",
        async {
            assert_eq!(h.store.open_windows().await.unwrap().len(), 1);
            let r = me.post(me.url("/logout")).send().await.unwrap();
            assert!(
                r.status().is_success() || r.status().is_redirection(),
                "{}",
                r.status()
            );
            assert!(h.store.open_windows().await.unwrap().is_empty());
            let reason: String = sqlx::query_scalar("SELECT close_reason FROM mfa_windows")
                .fetch_one(h.store.pool())
                .await
                .unwrap();
            assert_eq!(reason, "logout");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_registers_a_factor_with_the_it_registration_code_only() {
    let h = Harness::start_mfa("").await;
    let config = h.dir.path().join("sesame.toml");
    let password = password_of("tleroux");
    let b = h.browser();

    step_async(
        "a VPN user granted paie without a factor: /mon-acces points to the registration page",
        async {
            let me = h.login("mdupont").await;
            let page = me.get_at("/mon-acces").await.text().await.unwrap();
            assert!(
                page.contains("Aucun second facteur n'est enregistré"),
                "{page}"
            );
            assert!(page.contains("href=\"/login/mfa\""), "{page}");
            assert!(!page.contains("action=\"/mon-acces/unlock\""), "{page}");
        },
    )
    .await;

    step_async(
        "IT without a factor: after the password, /login asks for the registration code (no-store)",
        async {
            let (st, cache, page) = post_form(
                &b,
                "/login",
                &[("username", "tleroux"), ("password", password)],
            )
            .await;
            assert_eq!(st, 200, "{page}");
            assert_eq!(cache, "no-store");
            assert!(page.contains("name=\"registration_code\""), "{page}");
            assert!(page.contains("action=\"/login/mfa\""), "{page}");
            assert!(page.contains("Code d'enregistrement"), "{page}");
        },
    )
    .await;

    step_async(
        "a password alone (no or a made-up registration code) registers nothing",
        async {
            // The step also stands alone (linked from /mon-acces): name, password and code.
            let page = b.get_at("/login/mfa").await.text().await.unwrap();
            for field in ["username", "password", "registration_code"] {
                assert!(
                    page.contains(&format!("name=\"{field}\"")),
                    "{field}: {page}"
                );
            }
            for reg in ["", "ABCD-EFGH-JKMN"] {
                let (st, _, page) = post_form(
                    &b,
                    "/login/mfa",
                    &[
                        ("username", "tleroux"),
                        ("password", password),
                        ("registration_code", reg),
                    ],
                )
                .await;
                assert_eq!(st, 401, "{reg:?}: {page}");
                assert!(page.contains("Code d'enregistrement inconnu"), "{page}");
            }
            assert!(h.store.mfa_factor("tleroux").await.unwrap().is_none());
        },
    )
    .await;

    let reg = cli::sesame(&["mfa", "code", "--user", "tleroux"])
        .config(&config)
        .ok();
    let reg = reg.trim().to_string();

    let secret = step_async(
        "with IT's registration code: the QR code (inline SVG) and the secret as text",
        async {
            let (st, cache, page) = post_form(
                &b,
                "/login/mfa",
                &[
                    ("username", "tleroux"),
                    ("password", password),
                    ("registration_code", &reg),
                ],
            )
            .await;
            assert_eq!(st, 200, "{page}");
            assert_eq!(cache, "no-store");
            assert!(page.contains("<svg"), "{page}");
            assert!(page.contains("role=\"img\""), "{page}");
            let at = page.find("id=\"mfa-secret\">").unwrap() + 16;
            let secret = page[at..].split('<').next().unwrap().to_string();
            assert!(totp::from_base32(&secret).is_some(), "{secret}");
            assert!(page.contains("name=\"code\""), "{page}");
            secret
        },
    )
    .await;

    step_async(
        "a wrong first code: 401, the code's step again; the right one: 10 recovery codes, once",
        async {
            let (st, _, page) = post_form(
                &b,
                "/login/mfa",
                &[
                    ("username", "tleroux"),
                    ("password", password),
                    ("registration_code", &reg),
                    ("code", "12345"),
                ],
            )
            .await;
            assert_eq!(st, 401, "{page}");
            assert!(page.contains("Code incorrect"), "{page}");
            assert!(page.contains("name=\"code\""), "{page}");
            let (st, _, page) = post_form(
                &b,
                "/login/mfa",
                &[
                    ("username", "tleroux"),
                    ("password", password),
                    ("registration_code", &reg),
                    ("code", &code(&secret, 0)),
                ],
            )
            .await;
            assert_eq!(st, 200, "{page}");
            assert!(page.contains("10 codes de secours"), "{page}");
            let list = &page[page.find("id=\"recovery-codes\"").unwrap()..];
            let list = &list[..list.find("</ol>").unwrap()];
            assert_eq!(list.matches("<li>").count(), 10, "{list}");
            assert!(h
                .store
                .mfa_factor("tleroux")
                .await
                .unwrap()
                .unwrap()
                .is_registered());
            assert_eq!(actions(&h, "mfa.registered").await, 1);
            // The registration code is spent.
            let (st, _, _) = post_form(
                &b,
                "/login/mfa",
                &[
                    ("username", "tleroux"),
                    ("password", password),
                    ("registration_code", &reg),
                ],
            )
            .await;
            assert_eq!(st, 401);
        },
    )
    .await;

    step_async(
        "then /login asks for the code and signs IT in with the next one",
        async {
            let (st, _, page) = post_form(
                &b,
                "/login",
                &[
                    ("username", "tleroux"),
                    ("password", password),
                    ("next", "/api/v1/devices"),
                    ("otp", &code(&secret, 1)),
                ],
            )
            .await;
            assert_eq!(st, 200, "{page}");
            assert!(
                page.starts_with('['),
                "the device list after the redirect: {page}"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_review_shows_protected_resources_and_each_users_factor() {
    let h = Harness::start_mfa("web_roles = []").await;
    h.enrol_with_factor("mdupont", "portable-marie").await;
    let auditor = h.login("cgarnier").await;

    step_async("JSON: the resource needs the second factor; the owner's factor (kind, registered, last used)", async {
        let r = auditor.get_at("/api/v1/audit/access-review?resource=paie").await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let e = &v["entries"][0];
        assert_eq!(e["username"], "mdupont", "{v}");
        assert_eq!(e["mfa"], true, "{v}");
        assert_eq!(e["factor"]["kind"], "totp", "{v}");
        assert!(e["factor"]["registered_at"].is_string(), "{v}");
        assert!(e["factor"]["last_used_at"].is_string(), "{v}");
    })
    .await;

    step_async(
        "CSV: four more columns; the page: required, and the factor in words",
        async {
            let csv = auditor
                .get_at("/api/v1/audit/access-review?resource=paie&format=csv")
                .await
                .text()
                .await
                .unwrap();
            let mut lines = csv.lines();
            assert!(lines.next().unwrap().ends_with(
                ",last_flow_packets,mfa,factor_kind,factor_registered_at,factor_last_used_at"
            ));
            assert!(lines.next().unwrap().contains(",true,totp,"), "{csv}");
            let page = auditor
                .get_at("/audit/access-review?resource=paie")
                .await
                .text()
                .await
                .unwrap();
            assert!(page.contains("Second facteur"), "{page}");
            assert!(page.contains("<strong>exigé</strong>"), "{page}");
            assert!(page.contains("totp — enregistré le"), "{page}");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_first_codes_past_the_limit_are_refused_and_audited_like_every_429() {
    let h = Harness::start_mfa("web_roles = [\"auditors\"]").await;
    let (token, cfg) = marie_enrolled(&h).await;
    let secret = cfg["mfa_registration"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = other_than(&code(&secret, 0));
    let mut refused = 0;
    let r = loop {
        let r = post_bearer(
            &h,
            "/api/v1/device/mfa/confirm",
            &token,
            &json!({"code": wrong}),
        )
        .await;
        if r.status() == 429 {
            break r;
        }
        assert_eq!(error_of(r).await, (401, "invalid_otp".into()));
        refused += 1;
        assert!(refused <= 5, "no 429 after 5 wrong first codes");
    };
    assert_eq!(refused, 5);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_of(r).await.1, "too_many_attempts");
    // Audited as every other 429: the route, the counter, the wait.
    let events = h
        .store
        .list_audit(&sesame::audit::AuditFilter {
            action: Some("auth.rate_limited".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].details["route"], "confirm");
    let keys = events[0].details["keys"].as_array().unwrap();
    assert!(keys.contains(&json!("user:mfa:mdupont")), "{keys:?}");
    assert!(events[0].details["retry_after_secs"].as_u64().unwrap() >= 1);
}
