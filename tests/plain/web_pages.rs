//! The web pages against a real slapd and a real SQLite file, driven as a browser without
//! JavaScript would (forms, cookies, redirects): sign-in, Mon accès, IT code and sheet, devices
//! and revocation with a reason, the auditor's log, 403 pages, delegated scope, English.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::harness;
use crate::common::steps::step_async;

use std::sync::Arc;

use harness::{laptop_key, Harness};
use reqwest::redirect::Policy;

use common::slapd::password_of;

/// A browser: cookie jar, no automatic redirects (the test follows them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The value of the hidden `_csrf` field of a page's form.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"_csrf\" value=\"")
        .expect("a form with _csrf")
        + 20;
    html[at..].split('"').next().unwrap().to_string()
}

async fn sign_in(h: &Harness, uid: &str, next: &str) -> (reqwest::Client, reqwest::Response) {
    let b = browser();
    let r = b
        .post(h.url("/login"))
        .form(&[
            ("username", uid),
            ("password", password_of(uid)),
            ("next", next),
        ])
        .send()
        .await
        .unwrap();
    (b, r)
}

async fn page(b: &reqwest::Client, h: &Harness, path: &str) -> (u16, String) {
    let r = b.get(h.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    for header in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
    ] {
        assert!(r.headers().contains_key(header), "{path}: {header}");
    }
    (status, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_agent_and_auditor_journeys() {
    let h = Harness::start_lenient().await;

    step_async(
        "not signed in: to the login page, coming back afterwards",
        async {
            let anon = browser();
            let r = anon.get(h.url("/mon-acces")).send().await.unwrap();
            assert_eq!(r.status(), 303);
            assert_eq!(r.headers()["location"], "/login?next=/mon-acces");
            let (st, html) = page(&anon, &h, "/login").await;
            assert_eq!(st, 200);
            assert!(html.contains("<html lang=\"fr\"") && html.contains("Mot de passe"));
            assert!(!html.contains("<script>"), "no inline script");
            let (_, html) = page(&anon, &h, "/login?lang=en").await;
            assert!(html.contains("<html lang=\"en\"") && html.contains("Password"));
        },
    )
    .await;

    step_async(
        "a wrong password: the form again, with the API's message, 401",
        async {
            let r = browser()
                .post(h.url("/login"))
                .form(&[
                    ("username", "tleroux"),
                    ("password", "wrong"),
                    ("next", "/"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            assert!(r
                .text()
                .await
                .unwrap()
                .contains("Identifiant ou mot de passe incorrect"));
        },
    )
    .await;

    let it = step_async(
        "IT signs in; a foreign `next` is ignored (no open redirect)",
        async {
            let (it, r) = sign_in(&h, "tleroux", "https://evil.example/").await;
            assert_eq!(r.status(), 303);
            assert_eq!(r.headers()["location"], "/");
            let r = it.get(h.url("/")).send().await.unwrap();
            assert_eq!(r.headers()["location"], "/it/devices");
            it
        },
    )
    .await;

    let code = step_async("a code for one agent, and its printable sheet", async {
        let (st, form) = page(&it, &h, "/it/codes").await;
        assert_eq!(st, 200);
        let csrf = csrf_of(&form);
        let r = it
            .post(h.url("/it/codes"))
            .form(&[
                ("_csrf", csrf.as_str()),
                ("username", "mdupont"),
                ("device_name", "portable-marie"),
                ("ttl", "72h"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sheet = r.text().await.unwrap();
        let at = sheet.find("<p class=\"code\">").expect("code on the sheet") + 16;
        let code = sheet[at..].split('<').next().unwrap().to_string();
        assert_eq!(code.len(), 14, "{code}");
        assert!(sheet.contains("sesame-agent enrol --portal") && sheet.contains("sesame-agent up"));
        assert!(sheet.contains("sesame-agent status"));
        // Without the token: refused, nothing issued.
        let r = it
            .post(h.url("/it/codes"))
            .form(&[("username", "mdupont"), ("device_name", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // A TTL over 30 days: the same rule as the API and the CLI.
        let r = it
            .post(h.url("/it/codes"))
            .form(&[
                ("_csrf", csrf.as_str()),
                ("username", "mdupont"),
                ("device_name", "x"),
                ("ttl", "31d"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("30 jours"));
        code
    })
    .await;

    step_async(
        "the agent enrols (API), appears in the list; IT revokes with a reason",
        async {
            let (key, _) = laptop_key();
            let r = h.enrol(&code, "mdupont", &key).await;
            assert_eq!(r.status(), 201);
            let id = r.json::<serde_json::Value>().await.unwrap()["device_id"]
                .as_i64()
                .unwrap();
            // The dashboard counts today's enrolment (server-side SVG, numbers in a table).
            let (st, dash) = page(&it, &h, "/it/dashboard").await;
            assert_eq!(st, 200);
            assert!(dash.contains("<svg") && !dash.contains("<script>"));
            let today = &sesame::time::format(h.store.now_ms())[5..10];
            assert!(
                dash.contains(&format!("<th scope=\"row\">{today}</th><td>1</td>")),
                "{dash}"
            );
            let (_, list) = page(&it, &h, "/it/devices?q=marie").await;
            assert!(list.contains("portable-marie") && list.contains("mdupont"));
            let (_, none) = page(&it, &h, "/it/devices?status=revoked").await;
            assert!(!none.contains("portable-marie"));
            let (st, confirm) = page(&it, &h, &format!("/it/devices/{id}/revoke")).await;
            assert_eq!(st, 200);
            let r = it
                .post(h.url(&format!("/it/devices/{id}/revoke")))
                .form(&[
                    ("_csrf", csrf_of(&confirm).as_str()),
                    ("reason", "ordinateur volé"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303);
            let d = h.store.device(id).await.unwrap().unwrap();
            assert_eq!(d.status.as_str(), "revoked");
            assert_eq!(d.revoke_reason.as_deref(), Some("ordinateur volé"));
            let (_, user) = page(&it, &h, "/it/users/mdupont").await;
            assert!(
                user.contains("paie") && user.contains("cn=gestionnaires-paie"),
                "{user}"
            );
        },
    )
    .await;

    let (agent, mine) = step_async(
        "the agent's Mon accès shows the device revoked; an IT page is a 403 page",
        async {
            let (agent, _) = sign_in(&h, "mdupont", "/mon-acces").await;
            let (st, mine) = page(&agent, &h, "/mon-acces").await;
            assert_eq!(st, 200);
            assert!(
                mine.contains("portable-marie") && mine.contains("révoqué"),
                "{mine}"
            );
            assert!(mine.contains("sesame-agent enrol"));
            let (st, denied) = page(&agent, &h, "/it/devices").await;
            assert_eq!(st, 403);
            assert!(denied.contains("Accès refusé"));
            let (_, mine_en) = page(&agent, &h, "/mon-acces?lang=en").await;
            assert!(mine_en.contains("My devices") && mine_en.contains("revoked"));
            (agent, mine)
        },
    )
    .await;

    step_async(
        "the auditor finds the enrolment and the revocation, and the chain status",
        async {
            let (auditor, _) = sign_in(&h, "cgarnier", "/").await;
            let (st, log) = page(&auditor, &h, "/audit/log?user=mdupont").await;
            assert_eq!(st, 200);
            assert!(
                log.contains("enrol.completed") && log.contains("device.revoked"),
                "{log}"
            );
            assert!(log.contains("Chaîne d'audit intacte"));
            assert!(log.contains("format=csv"));
            let (st, _) = page(&auditor, &h, "/it/codes").await;
            assert_eq!(st, 403);
        },
    )
    .await;

    step_async(
        "sign out (form with the token): the cookie no longer opens pages",
        async {
            let r = agent
                .post(h.url("/logout"))
                .form(&[("_csrf", csrf_of(&mine).as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303);
            let r = agent.get(h.url("/mon-acces")).send().await.unwrap();
            assert_eq!(r.status(), 303);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsden_technician_sees_only_their_department() {
    let h = Harness::start_lenient().await;
    h.slapd.modify(
        "dn: cn=dsi-dsden,ou=groups,dc=academie,dc=test\nchangetype: add\nobjectClass: groupOfNames\ncn: dsi-dsden\nmember: uid=pdurand,ou=people,dc=academie,dc=test\n",
    );
    let it = h.login("tleroux").await;
    let mut ids = Vec::new();
    for uid in ["mdupont", "fnoel"] {
        let code = h.code_for(&it, uid, &format!("pc-{uid}")).await;
        let r = h.enrol(&code, uid, &laptop_key().0).await;
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["device_id"]
                .as_i64()
                .unwrap(),
        );
    }
    let (tech, _) = sign_in(&h, "pdurand", "/").await;
    let (st, list) = page(&tech, &h, "/it/devices").await;
    assert_eq!(st, 200);
    assert!(
        list.contains("pc-fnoel") && !list.contains("pc-mdupont"),
        "{list}"
    );
    let (st, _) = page(&tech, &h, &format!("/it/devices/{}/revoke", ids[0])).await;
    assert_eq!(st, 404);
    let (st, _) = page(&tech, &h, "/it/users/mdupont").await;
    assert_eq!(st, 404);
    let (st, _) = page(&tech, &h, "/it/users/fnoel").await;
    assert_eq!(st, 200);
}

/// Uploads `csv` on the bulk page; returns the status and the page.
async fn upload(b: &reqwest::Client, h: &Harness, csv: &str) -> (u16, String) {
    let (_, form) = page(b, h, "/it/bulk").await;
    let pat = "action=\"/it/bulk?_csrf=";
    let at = form.find(pat).expect("upload form") + pat.len();
    let token = form[at..].split('"').next().unwrap().to_string();
    let part = reqwest::multipart::Part::text(csv.to_string())
        .file_name("dsden.csv")
        .mime_str("text/csv")
        .unwrap();
    let r = b
        .post(h.url(&format!("/it/bulk?_csrf={token}")))
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", part)
                .text("ttl", "7d"),
        )
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_codes_are_all_or_nothing_and_followed_on_the_board() {
    let h = Harness::start_lenient().await;
    let (it, _) = sign_in(&h, "tleroux", "/").await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM enrolment_codes")
            .fetch_one(h.store.pool())
            .await
            .unwrap()
    };

    // A bad row and an unknown agent: errors by line, nothing issued.
    let (st, page_) = upload(&it, &h, "user,device\nmdupont,pc-1\n,pc-2\nsbernard\n").await;
    assert_eq!(st, 422);
    assert!(
        page_.contains("ligne 3") && page_.contains("ligne 4"),
        "{page_}"
    );
    assert!(!page_.contains("ligne 2 "));
    let (st, page_) = upload(&it, &h, "user,device\nmdupont,pc-1\nnobody,pc-2\n").await;
    assert_eq!(st, 422);
    assert!(
        page_.contains("ligne 3") && page_.contains("nobody"),
        "{page_}"
    );
    assert_eq!(count().await, 0);

    // Three agents: three sheets in one document, one batch.
    let (st, sheets) = upload(
        &it,
        &h,
        "user,device\nmdupont,pc-1\nsbernard,pc-2\nfnoel,pc-3\n",
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(sheets.matches("class=\"sheet\"").count(), 3);
    assert_eq!(count().await, 3);
    let at = sheets.find("<p class=\"code\">").unwrap() + 16;
    let code = sheets[at..].split('<').next().unwrap().to_string();
    let user = if sheets[..at].contains("— mdupont") {
        "mdupont"
    } else {
        "unknown"
    };
    assert_eq!(user, "mdupont", "sheets in CSV order");
    assert_eq!(
        h.enrol(&code, "mdupont", &laptop_key().0).await.status(),
        201
    );
    let id = h.store.batches().await.unwrap()[0].id;
    let (st, board) = page(&it, &h, &format!("/it/batches/{id}")).await;
    assert_eq!(st, 200);
    assert!(board.contains("<dd id=\"issued\">3</dd>"), "{board}");
    assert!(board.contains("<dd id=\"used\">1</dd>"));
    assert!(board.contains("<dd id=\"pending\">2</dd>"));
    assert!(board.contains("<dd id=\"expired\">0</dd>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_pages_in_the_page_and_the_api() {
    let h = Harness::start_lenient().await;
    // 52 laptops for mdupont (pc-00 … pc-51), straight through the store.
    let marie = sesame::directory::Directory::lookup(&*h.directory, "mdupont")
        .await
        .unwrap()
        .unwrap();
    let pool = sesame::store::AddressPool {
        network: "100.64.0.0/24".parse().unwrap(),
        reserved: vec!["100.64.0.1".parse().unwrap()],
    };
    let ctx = sesame::audit::AuditContext::new("tleroux", None);
    for i in 0..52 {
        let code = h
            .store
            .create_code(
                &sesame::store::NewCode {
                    username: "mdupont".into(),
                    device_name: format!("pc-{i:02}"),
                    ttl: std::time::Duration::from_secs(3600),
                },
                &ctx,
            )
            .await
            .unwrap()
            .code;
        let req = sesame::store::EnrolRequest {
            code: &code,
            user: &marie,
            public_key: laptop_key().1,
            hostname: &"portable".parse().expect("hostname"),
            key_lifetime: None,
        };
        h.store.enrol(&req, &pool, &ctx).await.unwrap();
    }

    // The page: 50 devices, then a link to the next page, which holds the other two.
    let (b, _) = sign_in(&h, "tleroux", "/it/devices").await;
    let (status, first) = page(&b, &h, "/it/devices").await;
    assert_eq!(status, 200);
    assert!(first.contains("50 appareil(s) sur cette page"), "{first}");
    assert!(first.contains("pc-49") && !first.contains("pc-50"));
    let at = first.find("rel=\"next\" href=\"").expect("next page link") + 17;
    let next = first[at..].split('"').next().unwrap().replace("&amp;", "&");
    let (_, second) = page(&b, &h, &next).await;
    assert!(second.contains("2 appareil(s) sur cette page"));
    assert!(second.contains("pc-50") && second.contains("pc-51") && !second.contains("pc-49"));
    assert!(second.contains("Première page") && !second.contains("rel=\"next\""));
    // A search narrow enough for one page has no pager.
    let (_, found) = page(&b, &h, "/it/devices?q=PC-5&status=active").await;
    assert!(found.contains("2 appareil(s)</p>") && !found.contains("rel=\"next\""));

    // The API: the same list, paged on request, the next page in the Link header.
    let api = h.login("tleroux").await;
    let get = |path: &str| api.get(h.url(path)).send();
    let r = get("/api/v1/devices?q=pc-0&limit=4").await.unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    let names: Vec<String> = r
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["pc-00", "pc-01", "pc-02", "pc-03"]);
    assert!(
        link.ends_with(">; rel=\"next\"") && link.contains("q=pc-0"),
        "{link}"
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let r = get(next).await.unwrap();
    let page2: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(page2[0]["name"], "pc-04");
    assert_eq!(page2.len(), 4);
    // Without limit, everything (as before); bad parameters are JSON errors.
    let r = get("/api/v1/devices").await.unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Vec<serde_json::Value>>().await.unwrap().len(), 52);
    for bad in [
        "/api/v1/devices?status=perdu",
        "/api/v1/devices?limit=0",
        "/api/v1/devices?after=x",
    ] {
        let (status, code) = harness::error_of(get(bad).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mon_acces_shows_each_laptops_last_connection() {
    let h = Harness::start_lenient().await;
    let it = h.login("tleroux").await;
    let mut ids = Vec::new();
    for name in ["pc-bureau", "pc-maison"] {
        let code = h.code_for(&it, "mdupont", name).await;
        let r = h.enrol(&code, "mdupont", &laptop_key().0).await;
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["device_id"]
                .as_i64()
                .unwrap(),
        );
    }
    // The gateway saw pc-bureau twice (the later one counts), pc-maison never.
    let mut last = 0;
    for _ in 0..2 {
        let ev = sesame::audit::NewAuditEvent::new(
            sesame::audit::Action::TunnelSessionStarted,
            &sesame::audit::AuditContext::new("mdupont", None),
            format!("device:{}", ids[0]),
        )
        .details(serde_json::json!({"device_id": ids[0], "username": "mdupont"}));
        last = h.store.append_audit(&ev).await.unwrap().ts;
    }
    let (b, _) = sign_in(&h, "mdupont", "/mon-acces").await;
    let (_, mine) = page(&b, &h, "/mon-acces").await;
    let shown = sesame::time::format(last);
    let shown = shown.as_str();
    let row = |name: &str| {
        let at = mine.find(name).unwrap();
        mine[at..].split("</tr>").next().unwrap().to_string()
    };
    assert!(row("pc-bureau").contains(shown), "{}", row("pc-bureau"));
    assert!(row("pc-maison").contains("jamais"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_says_when_the_chain_cannot_be_checked() {
    let h = Harness::start_lenient().await;
    let (b, _) = sign_in(&h, "cgarnier", "/audit/log").await;
    let (status, log) = page(&b, &h, "/audit/log").await;
    assert_eq!(status, 200);
    assert!(log.contains("Chaîne d'audit intacte"));
    // Views share one verification for a while (a walk of the whole chain costs seconds on a
    // large log); "verify now" walks again.
    let checked = |log: &str| -> u64 {
        let marker = "Chaîne d'audit intacte</strong> : ";
        let at = log.find(marker).expect(log) + marker.len();
        log[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let first = checked(&log);
    let (_, again) = page(&b, &h, "/audit/log").await;
    assert_eq!(checked(&again), first, "the same verification is shown");
    assert!(again.contains("href=\"/audit/log?verify=now\""));
    let (_, fresh) = page(&b, &h, "/audit/log?verify=now").await;
    assert!(
        checked(&fresh) > first,
        "each view is audited: a new walk sees more events"
    );
    // A damaged checkpoint file: the page says the chain cannot be checked, and still shows
    // the log and its exports.
    std::fs::write(&h.config.audit.checkpoint_file, "pas du JSON\n").unwrap();
    let (status, log) = page(&b, &h, "/audit/log?verify=now").await;
    assert_eq!(status, 200);
    assert!(
        log.contains("Vérification de la chaîne impossible"),
        "{log}"
    );
    assert!(log.contains("auth.login") && log.contains("format=csv"));
    // A bad date is said above the form, not ignored.
    let (status, bad) = page(&b, &h, "/audit/log?since=lundi").await;
    assert_eq!(status, 200);
    assert!(bad.contains("role=\"alert\"") && bad.contains("value=\"lundi\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_pages_with_its_filters() {
    let h = Harness::start_lenient().await;
    for _ in 0..205 {
        let ev = sesame::audit::NewAuditEvent::new(
            sesame::audit::Action::AuthLogin,
            &sesame::audit::AuditContext::new("mdupont", None),
            "mdupont",
        );
        h.store.append_audit(&ev).await.unwrap();
    }
    let (b, _) = sign_in(&h, "cgarnier", "/audit/log").await;
    let logins = h
        .store
        .list_audit(&sesame::store::AuditFilter {
            action: Some("auth.login".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, first) = page(&b, &h, "/audit/log?action=auth.login").await;
    assert!(first.contains("200 événement(s), les plus anciens d'abord sur cette page"));
    let at = first.find("rel=\"next\" href=\"").expect("next page") + 17;
    let next = first[at..].split('"').next().unwrap().replace("&amp;", "&");
    assert_eq!(
        next,
        format!("/audit/log?after={}&action=auth.login", logins[199].id)
    );
    let (_, second) = page(&b, &h, &next).await;
    let rest = logins.len() - 200;
    assert!(second.contains(&format!("{rest} événement(s)")), "{rest}");
    assert!(second.contains("Première page") && !second.contains("rel=\"next\""));
    assert!(!second.contains("audit.read"), "the filter is kept");
}

/// How many events of `action` about `target` with `outcome` the log holds.
async fn audited(h: &Harness, action: &str, target: &str, outcome: &str) -> usize {
    let filter = sesame::audit::AuditFilter {
        action: Some(action.into()),
        ..Default::default()
    };
    h.store
        .list_audit(&filter)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.target == target && e.outcome.as_str() == outcome)
        .count()
}

/// The service audits each login, enrolment and rotation once, success or refusal, whichever
/// adapter called it: the JSON API or the sign-in form (which once went through the API handler,
/// and must not audit a second time now that it calls the service itself). No page enrols or
/// rotates, and the CLI has none of these three flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_enrolments_and_rotations_are_audited_once_by_every_adapter() {
    let h = Harness::start_lenient().await;

    // Sign-in through the API: a refusal, then a success.
    let api = h.browser();
    assert_eq!(api.login_with("mdupont", "wrong").await.status(), 401);
    assert_eq!(audited(&h, "auth.login", "mdupont", "denied").await, 1);
    assert_eq!(api.login("mdupont").await.status(), 200);
    assert_eq!(audited(&h, "auth.login", "mdupont", "success").await, 1);
    assert_eq!(audited(&h, "auth.login", "mdupont", "denied").await, 1);

    // Sign-in through the form: the same, once each.
    let r = browser()
        .post(h.url("/login"))
        .form(&[
            ("username", "sbernard"),
            ("password", "wrong"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(audited(&h, "auth.login", "sbernard", "denied").await, 1);
    let (_, r) = sign_in(&h, "sbernard", "/").await;
    assert_eq!(r.status(), 303);
    assert_eq!(audited(&h, "auth.login", "sbernard", "success").await, 1);
    assert_eq!(audited(&h, "auth.login", "sbernard", "denied").await, 1);

    // Enrolment through the API: a wrong password, then the laptop.
    let it = h.login("tleroux").await;
    let code = h.code_for(&it.http, "mdupont", "portable-marie").await;
    let (key, _) = laptop_key();
    let r = reqwest::Client::new()
        .post(h.url("/api/v1/enrol"))
        .json(&serde_json::json!({
            "code": code, "username": "mdupont", "password": "wrong",
            "public_key": key, "hostname": "pc-marie",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(audited(&h, "enrol.rejected", "mdupont", "denied").await, 1);
    let r = h.enrol(&code, "mdupont", &key).await;
    assert_eq!(r.status(), 201);
    let cfg: serde_json::Value = r.json().await.unwrap();
    let device = format!("device:{}", cfg["device_id"]);
    let token = cfg["device_token"].as_str().unwrap().to_string();
    assert_eq!(audited(&h, "enrol.completed", &device, "success").await, 1);
    assert_eq!(audited(&h, "enrol.rejected", "mdupont", "denied").await, 1);

    // Rotation through the API: a key that is not one, then a new key.
    let r = api.rotate(&token, "not-a-key").await;
    assert_eq!(r.status(), 400);
    assert_eq!(audited(&h, "device.rotated", &device, "failure").await, 1);
    let (new_key, _) = laptop_key();
    let r = api.rotate(&token, &new_key).await;
    assert_eq!(r.status(), 200);
    assert_eq!(audited(&h, "device.rotated", &device, "success").await, 1);
    assert_eq!(audited(&h, "device.rotated", &device, "failure").await, 1);
}
