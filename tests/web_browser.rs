//! The web portal in headless Chromium (chromedriver), against a real slapd and a real SQLite
//! file: the journeys of IT staff, an agent and an auditor; 403 pages; delegated (DSDEN)
//! technicians; a technician removed from the IT group losing the IT pages with the same
//! cookie. Every page visited is screenshotted (target/web-screenshots/) and checked with
//! axe-core.
#![allow(clippy::unwrap_used)]

mod common {
    pub mod browser;
    pub mod slapd;
}
#[path = "portal_common/harness.rs"]
mod harness;

use common::browser::Browser;
use common::slapd::password_of;
use harness::{laptop_key, Harness};

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
