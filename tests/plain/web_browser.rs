//! The web portal in headless Chromium (chromedriver), against a real slapd and a real SQLite
//! file: the journeys of IT staff, an agent and an auditor; 403 pages; delegated (DSDEN)
//! technicians; a technician removed from the IT group losing the IT pages with the same
//! cookie. Every page visited is screenshotted (target/web-screenshots/) and checked with
//! axe-core.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::harness;

use common::audit_events;
use common::browser::Browser;
use common::slapd::password_of;
use common::store_db;
use harness::{laptop_key, Harness};
use sesame::directory::DirectoryUser;

async fn sign_in(b: &mut Browser, h: &Harness, uid: &str, next: &str) {
    b.visit(
        &h.url(&format!("/login?next={next}")),
        &format!("login-{uid}"),
    )
    .await;
    b.fill("username", uid).await;
    b.fill("password", password_of(uid)).await;
    b.click("form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_agent_and_auditor_in_the_browser() {
    let h = Harness::start_lenient().await;
    let mut it = Browser::start("it_agent_auditor").await;
    sign_in(&mut it, &h, "tleroux", "/it/bulk").await;
    assert_eq!(it.path().await, "/it/bulk");
    it.check("it-bulk").await;
    // A CSV of three agents, uploaded through the file input.
    let csv = h.dir.path().join("rentree.csv");
    std::fs::write(
        &csv,
        "user,device\nmdupont,portable-marie\nsbernard,portable-sophie\nfnoel,portable-franck\n",
    )
    .unwrap();
    it.attach("file", &csv).await;
    it.fill("ttl", "7d").await;
    it.click("form.stack button[type=submit]").await;
    let sheets = it.check("it-bulk-sheets").await;
    assert_eq!(
        sheets.matches("class=\"sheet\"").count(),
        3,
        "one sheet per agent"
    );
    let at = sheets.find("<p class=\"code\">").expect("sheet") + 16;
    let code = sheets[at..].split('<').next().unwrap().to_string();
    assert!(
        sheets[..at].contains("mdupont"),
        "the first sheet is mdupont's"
    );

    // The agent enrols (the API, as the agent does) and appears on the board and the list.
    let r = h.enrol(&code, "mdupont", &laptop_key().0).await;
    assert_eq!(r.status(), 201);
    it.click("a[href^='/it/batches/']").await;
    let board = it.check("it-batch-board").await;
    assert!(
        board.contains("<dd id=\"used\">1</dd>") && board.contains("<dd id=\"pending\">2</dd>")
    );
    it.visit(&h.url("/it/dashboard"), "it-dashboard").await;
    let list = it.visit(&h.url("/it/devices"), "it-devices").await;
    assert!(list.contains("portable-marie"));
    it.fill("q", "marie").await;
    it.click("form.inline button[type=submit]").await;
    assert!(it
        .check("it-devices-search")
        .await
        .contains("portable-marie"));
    // Revoke, with confirmation and a reason.
    it.click("td a[href$='/revoke']").await;
    it.check("it-revoke-confirm").await;
    it.fill("reason", "ordinateur volé").await;
    it.click("button.danger").await;
    let after = it.check("it-devices-after-revoke").await;
    assert!(after.contains("ordinateur volé"), "reason shown");
    it.visit(&h.url("/it/users/mdupont"), "it-user").await;
    it.close().await;

    // The agent: Mon accès shows the device revoked; an IT page is the 403 page.
    let mut agent = Browser::start("agent").await;
    sign_in(&mut agent, &h, "mdupont", "/mon-acces").await;
    let mine = agent.check("mon-acces").await;
    assert!(mine.contains("portable-marie") && mine.contains("révoqué"));
    let denied = agent.visit(&h.url("/it/devices"), "agent-it-403").await;
    assert!(denied.contains("Accès refusé"));
    let en = agent
        .visit(&h.url("/mon-acces?lang=en"), "mon-acces-en")
        .await;
    assert!(en.contains("My devices"));
    agent.close().await;

    // The auditor finds the enrolment and the revocation, and exports CSV.
    let mut auditor = Browser::start("auditor").await;
    sign_in(&mut auditor, &h, "cgarnier", "/audit/log").await;
    let log = auditor.check("audit-log").await;
    assert!(log.contains("enrol.completed") && log.contains("device.revoked"));
    auditor.fill("action", "device.revoked").await;
    auditor.click("form.inline button[type=submit]").await;
    let filtered = auditor.check("audit-log-revoked").await;
    assert!(filtered.contains("device.revoked") && !filtered.contains("enrol.completed"));
    let csv = auditor
        .fetch_text("/api/v1/audit/events?format=csv&action=device.revoked")
        .await;
    assert!(
        csv.lines().count() >= 2 && csv.contains("device.revoked"),
        "{csv}"
    );
    auditor.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsden_scope_and_directory_removal_in_the_browser() {
    let h = Harness::start_lenient().await;
    h.slapd.modify(
        "dn: cn=dsi-dsden,ou=groups,dc=academie,dc=test\nchangetype: add\nobjectClass: groupOfNames\ncn: dsi-dsden\nmember: uid=pdurand,ou=people,dc=academie,dc=test\n",
    );
    let api = h.login("tleroux").await;
    for uid in ["mdupont", "fnoel"] {
        let code = h.code_for(&api, uid, &format!("pc-{uid}")).await;
        assert_eq!(h.enrol(&code, uid, &laptop_key().0).await.status(), 201);
    }
    let mut tech = Browser::start("dsden").await;
    sign_in(&mut tech, &h, "pdurand", "/it/devices").await;
    let list = tech.check("dsden-devices").await;
    assert!(list.contains("pc-fnoel") && !list.contains("pc-mdupont"));
    let other = tech
        .visit(&h.url("/it/users/mdupont"), "dsden-other-user")
        .await;
    assert!(other.contains("Page introuvable"));
    tech.close().await;

    // A technician removed from the IT group loses the IT pages with the same cookie after
    // one directory sync (every sync_interval, 60 s by default).
    h.slapd.add_to_group("rmoreau", "dsi");
    let mut it = Browser::start("removed_technician").await;
    sign_in(&mut it, &h, "tleroux", "/it/devices").await;
    assert!(it.check("before-removal").await.contains("pc-mdupont"));
    h.slapd.remove_from_group("tleroux", "dsi");
    h.sync().sync_once().await.unwrap();
    let denied = it.visit(&h.url("/it/devices"), "after-removal").await;
    assert!(denied.contains("Accès refusé"));
    it.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_flows_and_access_review_in_the_browser() {
    let h = Harness::start_lenient().await;
    // mdupont's laptop enrols (paie through gestionnaires-paie), opens a session and reaches
    // paie: the gateway's records, appended through the store as the flow writer does.
    let api = h.login("tleroux").await;
    let code = h.code_for(&api, "mdupont", "portable-marie").await;
    let r = h.enrol(&code, "mdupont", &laptop_key().0).await;
    assert_eq!(r.status(), 201);
    let device = r.json::<serde_json::Value>().await.unwrap()["device_id"]
        .as_i64()
        .unwrap();
    let now = h.store.now_ms();
    for ev in [
        audit_events::session_started(device, "mdupont", now - 120_000),
        audit_events::flow(Some(device), Some("mdupont"), "paie", now - 100_000, 4_000),
        audit_events::flow(Some(device), Some("mdupont"), "paie", now - 40_000, 8_000),
    ] {
        h.store.append_audit(&ev).await.unwrap();
    }

    let mut auditor = Browser::start("auditor_flows_review").await;
    sign_in(&mut auditor, &h, "cgarnier", "/audit/log").await;
    let log = auditor.check("audit-log-chain").await;
    assert!(log.contains("Chaîne d'audit intacte"), "chain status shown");
    assert!(log.contains("href=\"/audit/flows\"") && log.contains("href=\"/audit/access-review\""));

    // Flows to paie: one device, bytes summed over both windows (in 3/4, out 1/4), port 443.
    auditor.click("a[href='/audit/flows']").await;
    auditor.check("audit-flows-form").await;
    auditor.select("resource", "paie").await;
    auditor.click("form.inline button[type=submit]").await;
    let flows = auditor.check("audit-flows-paie").await;
    assert_eq!(auditor.path().await, "/audit/flows");
    let table = &flows[flows.find("id=\"flows\"").expect("flows table")..];
    assert_eq!(table.matches("<tr>").count(), 2, "header + one device");
    assert!(table.contains("mdupont") && table.contains(&format!("#{device}")));
    assert!(table.contains("<td>9000</td>") && table.contains("<td>3000</td>"));
    assert!(table.contains("<td>443</td>"));
    let csv = auditor
        .fetch_text("/api/v1/audit/flows?format=csv&resource=paie")
        .await;
    assert!(
        csv.lines()
            .nth(1)
            .unwrap_or("")
            .starts_with(&format!("mdupont,{device},")),
        "{csv}"
    );
    let json = auditor
        .fetch_text("/api/v1/audit/flows?format=json&resource=paie")
        .await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["flows"][0]["ports"], serde_json::json!([443]), "{json}");
    // A range before the records finds nothing; a bad date is shown, not a blank page.
    let empty = auditor
        .visit(
            &h.url("/audit/flows?resource=paie&until=2020-01-01"),
            "audit-flows-empty",
        )
        .await;
    assert!(
        empty.contains("0 appareil(s)"),
        "nothing before the records"
    );
    let bad = auditor
        .visit(
            &h.url("/audit/flows?resource=paie&since=hier"),
            "audit-flows-bad-date",
        )
        .await;
    assert!(bad.contains("role=\"alert\"") && bad.contains("2026-01-31"));

    // Access review by resource, then by user, with the group and grant that open it.
    auditor.click("a[href='/audit/access-review']").await;
    auditor.check("audit-review-form").await;
    auditor.select("review-resource", "paie").await;
    auditor.click("#by-resource").await;
    let review = auditor.check("audit-review-paie").await;
    let table = &review[review.find("id=\"review\"").expect("review table")..];
    assert_eq!(
        table.matches("<tr>").count(),
        2,
        "header + mdupont's laptop"
    );
    assert!(table.contains("portable-marie") && table.contains("cn=gestionnaires-paie,"));
    assert!(table.contains("<td>#1</td>"), "grant #1");
    assert!(table.contains("tunnel.session_started") && table.contains("8000 octets"));
    auditor.fill("review-user", "mdupont").await;
    auditor.click("#by-user").await;
    let by_user = auditor.check("audit-review-mdupont").await;
    assert!(
        by_user.contains("portable-marie")
            && by_user.contains("href=\"/api/v1/audit/access-review?format=csv&amp;user=mdupont\"")
    );
    let json = auditor
        .fetch_text("/api/v1/audit/access-review?format=json&user=mdupont")
        .await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["entries"][0]["device_id"].as_i64(), Some(device));
    let en = auditor
        .visit(
            &h.url("/audit/access-review?lang=en&user=mdupont"),
            "audit-review-en",
        )
        .await;
    assert!(en.contains("Access review") && en.contains("Last flow"));
    // Longer than a page: 100 entries, the total, and a link to the next page (axe-clean too);
    // the API pages on request, its CSV holds everything.
    let payroll: Vec<DirectoryUser> = (0..120)
        .map(|i| DirectoryUser {
            groups: vec![
                "cn=personnels-administratifs,ou=groups,dc=academie,dc=test".into(),
                "cn=gestionnaires-paie,ou=groups,dc=academie,dc=test".into(),
            ],
            ..store_db::person(&format!("paie{i:03}"))
        })
        .collect();
    store_db::enrol_many(&h.store, &payroll, "100.64.0.0/24").await;
    let first = auditor
        .visit(
            &h.url("/audit/access-review?resource=paie"),
            "audit-review-page-1",
        )
        .await;
    let table = &first[first.find("id=\"review\"").expect("review table")..];
    assert_eq!(table.matches("<tr>").count(), 101, "header + 100 entries");
    assert!(
        first.contains("121 accès ouvert(s) maintenant"),
        "the total"
    );
    assert!(first.contains("100 accès sur cette page, sur 121"));
    assert!(first.contains("portable-marie") && !first.contains("Première page"));
    auditor.click("a[rel=next]").await;
    let second = auditor.check("audit-review-page-2").await;
    let table = &second[second.find("id=\"review\"").expect("review table")..];
    assert_eq!(table.matches("<tr>").count(), 22, "header + the last 21");
    assert!(second.contains("pc-paie119") && !second.contains("portable-marie"));
    assert!(second.contains("Première page") && !second.contains("rel=\"next\""));
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = auditor
            .fetch_text(&format!(
                "/api/v1/audit/access-review?resource=paie&limit=50{cursor}"
            ))
            .await;
        let v: serde_json::Value = serde_json::from_str(&page).unwrap();
        assert_eq!(v["total"], 121, "{page}");
        seen.extend(
            v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["device_id"].as_i64().unwrap()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 121);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "by device id, once each"
    );
    let csv = auditor
        .fetch_text("/api/v1/audit/access-review?format=csv&resource=paie")
        .await;
    assert_eq!(csv.lines().count(), 122, "header + every entry");
    // Every look was audited.
    let reads = h
        .store
        .list_audit(&sesame::store::AuditFilter {
            action: Some("audit.read".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let queries: Vec<&str> = reads
        .iter()
        .filter_map(|e| e.details["query"].as_str())
        .collect();
    assert!(
        queries.contains(&"flows") && queries.contains(&"access_review"),
        "{queries:?}"
    );
    auditor.close().await;

    // Read-only for the auditor's eyes only: an agent gets the 403 page.
    let mut agent = Browser::start("agent_audit_403").await;
    sign_in(&mut agent, &h, "mdupont", "/mon-acces").await;
    let denied = agent
        .visit(&h.url("/audit/access-review"), "agent-review-403")
        .await;
    assert!(denied.contains("Accès refusé"));
    agent.close().await;
}

/// An IT login asks for the second factor; IT registers one on the web with the registration
/// code (QR code, first code, recovery codes); an agent opens the access window of a stock
/// WireGuard laptop on /mon-acces with a valid code. Every page axe-clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_factor_in_the_browser() {
    let h = Harness::start_mfa("").await;
    // The agent's laptop first (IT's API login needs no code until IT has a factor).
    let (device, secret) = h.enrol_with_factor("mdupont", "portable-wireguard").await;
    let reg = crate::common::cli::sesame(&["mfa", "code", "--user", "tleroux"])
        .config(h.dir.path().join("sesame.toml"))
        .ok();

    let mut it = Browser::start("second_factor_it").await;
    sign_in(&mut it, &h, "tleroux", "/it/devices").await;
    let step = it.check("mfa-register-code").await;
    assert!(step.contains("Code d'enregistrement"), "{step}");
    it.fill("registration_code", reg.trim()).await;
    it.click("form.stack button[type=submit]").await;
    let qr = it.check("mfa-register-qr").await;
    assert!(qr.contains("<svg"), "the QR code inline");
    let at = qr.find("id=\"mfa-secret\">").unwrap() + 16;
    let it_secret = qr[at..].split('<').next().unwrap().to_string();
    it.fill("code", &harness::totp_code(&it_secret, 0)).await;
    it.click("form.stack button[type=submit]").await;
    let codes = it.check("mfa-recovery-codes").await;
    assert!(codes.contains("10 codes de secours"), "{codes}");
    it.click("main a[href^='/login']").await;
    // The IT login now asks for the code.
    it.check("login-with-code").await;
    it.fill("username", "tleroux").await;
    it.fill("password", password_of("tleroux")).await;
    it.fill("otp", &harness::totp_code(&it_secret, 1)).await;
    it.click("form button[type=submit]").await;
    assert_eq!(it.path().await, "/it/devices");
    it.close().await;

    let mut agent = Browser::start("second_factor_agent").await;
    sign_in(&mut agent, &h, "mdupont", "/mon-acces").await;
    let mine = agent.check("mon-acces-mfa-closed").await;
    assert!(mine.contains("accès fermé"), "{mine}");
    agent.select("unlock-device", &device.to_string()).await;
    agent
        .fill("unlock-code", &harness::totp_code(&secret, 1))
        .await;
    agent.click("#acces-protege form button[type=submit]").await;
    let open = agent.check("mon-acces-mfa-open").await;
    assert!(
        open.contains("Accès ouvert (portable-wireguard) jusqu'au"),
        "{open}"
    );
    assert_eq!(h.store.open_windows().await.unwrap().len(), 1);
    agent.close().await;
}
