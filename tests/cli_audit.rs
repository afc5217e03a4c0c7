//! `sesame audit export|verify` against a real SQLite file filled through the store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sesame::audit::{Action, AuditContext, NewAuditEvent};
use sesame::store::{AuditFilter, Store};

fn sesame(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "off")
        .output()
        .expect("run sesame")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn event(i: usize) -> NewAuditEvent {
    let ctx = AuditContext::new(["alice", "system"][i % 2], Some("198.18.0.9".into()));
    NewAuditEvent::new(Action::AuthLogin, &ctx, format!("t{i}"))
        .details(serde_json::json!({"n": i, "note": "virgule, \"guillemets\""}))
}

async fn setup(n: usize) -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/sesame.db", dir.path().display());
    let config = dir.path().join("sesame.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{url}\"\n")).expect("config");
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
        assert_eq!(sesame::store::parse_rfc3339(&row[1]), Some(ev.ts));
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
    assert_eq!(text(&out.stdout).lines().count(), 1001);
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
