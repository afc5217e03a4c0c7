//! `sesame keygen --audit` and `sesame audit verify` (database and offline `--export`): exit
//! codes, the first bad id on stdout, and `sesame serve` refusing a readable audit key.
#![allow(clippy::too_many_lines)]

use crate::common;
use crate::common::cli::{self, text};
use crate::common::config::TestConfig;

use std::sync::Arc;
use std::time::Duration;

use common::store_db::*;
use sesame::audit::checkpoint::{self, Checkpoint, CheckpointReason, Sealer};
use sesame::audit::AuditContext;
use sesame::store::{AuditFilter, Store};

const DAY: Duration = Duration::from_secs(86_400);

/// `sesame ARGS…` run through sudo by the auditor: `SUDO_USER` (over `USER`) is who the CLI
/// records as the reader (`cli:auditrice`).
fn run(args: &[&str]) -> std::process::Output {
    cli::sesame(args).env("SUDO_USER", "auditrice").output()
}

/// `sesame keygen --audit`, `sesame audit verify` exit codes with the database, then offline on
/// an export, with and without a forged line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keygen_verify_and_offline_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: &std::path::Path| path.to_str().expect("utf-8").to_string();
    let url = format!("sqlite://{}", s(&p("sesame.db")));
    let config = p("sesame.toml");
    // The audit files default to the gateway key's folder.
    TestConfig::new()
        .database(&url)
        .gateway("private_key_file = \"gw.key\"")
        .write(&config);

    let out = run(&["keygen", "--audit", "--out", &s(&p("audit.key"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = text(&out.stdout).trim().to_string();
    let key = checkpoint::AuditKey::load(&p("audit.key")).expect("key");
    assert_eq!(key.public_base64(), public);
    let again = run(&["keygen", "--audit", "--out", &s(&p("audit.key"))]);
    assert_eq!(again.status.code(), Some(1), "never overwrites");

    let store = Store::connect(&url).await.expect("open");
    let sealer = Sealer {
        key,
        file: p("audit-checkpoints.jsonl"),
    };
    store
        .append_audit_batch(&(1..=5).map(login_event).collect::<Vec<_>>())
        .await
        .expect("append");
    store
        .checkpoint_audit(&sealer, CheckpointReason::Interval)
        .await
        .expect("checkpoint");
    store.append_audit(&login_event(7)).await.expect("append");

    let cfg = s(&config);
    let out = run(&["audit", "verify", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "intact: 7 events\n");
    // The verification is recorded after the walk: audit.read by the CLI's user (event 8).
    let read = audit_of(&store, "audit.read").await;
    let [read] = &read[..] else {
        panic!("{read:?}")
    };
    assert_eq!((read.id, read.actor.as_str()), (8, "cli:auditrice"));
    assert_eq!(read.target, "audit:verify");
    assert_eq!(read.details["query"], "verify");
    assert_eq!(read.details["filter"], serde_json::json!({}));
    // --checkpoints: a file whose checkpoint another key signed (recorded too: event 9).
    let (_o, other) = test_sealer();
    let head = sesame::audit::checkpoint::ChainHead {
        first_id: 1,
        anchor_hash: sesame::audit::GENESIS_HASH.into(),
        last_id: 4,
        last_hash: "f".repeat(64),
    };
    let foreign = Checkpoint::sign(&other.key, &head, T0, CheckpointReason::Interval);
    checkpoint::append_to_file(&p("other.jsonl"), &foreign).expect("other file");
    let out = run(&[
        "audit",
        "verify",
        "--config",
        &cfg,
        "--checkpoints",
        &s(&p("other.jsonl")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "4\n");
    let after = store
        .list_audit(&AuditFilter {
            after_id: Some(8),
            ..AuditFilter::default()
        })
        .await
        .expect("after 8");
    let [last] = &after[..] else {
        panic!("{after:?}")
    };
    assert_eq!((last.id, last.action.as_str()), (9, "audit.read"));
    assert_eq!(
        last.details["filter"]["checkpoints"],
        s(&p("other.jsonl")),
        "the file given is recorded"
    );

    let out = run(&["audit", "export", "--config", &cfg, "--format", "jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let export = text(&out.stdout);
    std::fs::write(p("export.jsonl"), &export).expect("export");
    let cps = s(&p("audit-checkpoints.jsonl"));
    let offline = |file: &str, key: &str| {
        run(&[
            "audit",
            "verify",
            "--export",
            file,
            "--checkpoints",
            &cps,
            "--public-key",
            key,
        ])
    };
    let out = offline(&s(&p("export.jsonl")), &public);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // 7 events and the two verifications' audit.read.
    assert_eq!(text(&out.stdout), "intact: 9 events\n");
    // Another public key: the checkpoint is not its signature.
    let out = offline(&s(&p("export.jsonl")), &other.key.public_base64());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "5\n");
    // One forged line.
    let forged = export.replacen("\"actor\":\"user3\"", "\"actor\":\"mallory\"", 1);
    assert_ne!(forged, export);
    std::fs::write(p("forged.jsonl"), forged).expect("forged");
    let out = offline(&s(&p("forged.jsonl")), &public);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "3\n", "the forged line's id");
    assert!(
        text(&out.stderr).contains("event 3"),
        "{}",
        text(&out.stderr)
    );
    // A copy cut short before the signed head.
    let short: String = export.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(p("short.jsonl"), short).expect("short");
    let out = offline(&s(&p("short.jsonl")), &public);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "5\n");
    // --export needs the checkpoints and the key.
    let out = run(&["audit", "verify", "--export", &s(&p("export.jsonl"))]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // The documented order: copy the checkpoint file, then export. A checkpoint written in
    // between signs a head newer than the copy: its event is not held against the copy.
    std::fs::copy(&cps, p("copy.jsonl")).expect("copy");
    store
        .checkpoint_audit(&sealer, CheckpointReason::Interval)
        .await
        .expect("checkpoint");
    let out = run(&["audit", "export", "--config", &cfg, "--format", "jsonl"]);
    std::fs::write(p("export2.jsonl"), &out.stdout).expect("export");
    let out = run(&[
        "audit",
        "verify",
        "--export",
        &s(&p("export2.jsonl")),
        "--checkpoints",
        &s(&p("copy.jsonl")),
        "--public-key",
        &public,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // 10 events (two verifications and the first export recorded as audit.read) and the
    // checkpoint: an export holds the reads before it, never its own.
    assert_eq!(text(&out.stdout), "intact: 11 events\n");

    // The database's tail truncated below the signed head.
    exec(&store, "DROP TRIGGER audit_events_no_delete").await;
    exec(&store, "DELETE FROM audit_events WHERE id >= 4").await;
    let out = run(&["audit", "verify", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "4\n");
    store.close().await;
}

/// `sesame serve` refuses an audit key that group or others can read, naming the fix, before
/// it starts anything.
#[test]
fn serve_refuses_a_readable_audit_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("audit.key");
    let out = run(&["keygen", "--audit", "--out", key.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("sesame.toml");
    TestConfig::new()
        .portal("listen = \"127.0.0.1:0\"")
        .gateway("private_key_file = \"gw.key\"")
        .database("sqlite://db/sesame.db")
        .table(
            "directory",
            "url = \"ldap://127.0.0.1:389\"\nbind_dn = \"cn=sesame\"\nbind_password_file = \"ldap.password\"\n\
             user_base = \"ou=people\"\ngroup_base = \"ou=groups\"",
        )
        .write(&config);
    let out = run(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
    assert!(!dir.path().join("db").exists(), "nothing started");
}

/// Offline verification of an export taken after a retention purge: the copy starts at the
/// signed anchor and verifies; a copy missing its first lines does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_export_after_a_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: &std::path::Path| path.to_str().expect("utf-8").to_string();
    let url = format!("sqlite://{}", s(&p("sesame.db")));
    let config = p("sesame.toml");
    TestConfig::new().database(&url).write(&config);
    let clock = Arc::new(sesame::time::ManualClock::new(T0));
    let store = Store::connect(&url)
        .await
        .expect("open")
        .with_clock(clock.clone());
    let (_k, sealer) = test_sealer();
    store
        .append_audit_batch(&(1..=5).map(login_event).collect::<Vec<_>>())
        .await
        .expect("old");
    clock.advance(30 * DAY);
    store.append_audit(&login_event(6)).await.expect("recent");
    let removed = store
        .purge_audit(10 * DAY, &AuditContext::system(), &sealer)
        .await
        .expect("purge");
    assert_eq!(removed, 5);
    store.close().await;

    let out = run(&[
        "audit",
        "export",
        "--config",
        &s(&config),
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let export = text(&out.stdout);
    let public = sealer.key.public_base64();
    let verify_copy = |lines: &str| {
        std::fs::write(p("copy.jsonl"), lines).expect("copy");
        run(&[
            "audit",
            "verify",
            "--export",
            &s(&p("copy.jsonl")),
            "--checkpoints",
            &s(&sealer.file),
            "--public-key",
            &public,
        ])
    };
    let out = verify_copy(&export);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "intact: 3 events\n");
    let cut: String = export.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let out = verify_copy(&cut);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "6\n", "from the signed anchor on");
}

/// Set to a folder, [`a_rewritten_and_resigned_log_is_caught_by_the_journal_copy`] records its
/// run there instead: config, audit key, database, checkpoint file and the captured journal.
const JOURNAL_RUN: &str = "SESAME_TEST_JOURNAL_RUN";

/// The recorded run, alone in its process: ten events and two checkpoints, logs captured as
/// `sesame serve` writes them (text, and JSON lines) into `checkpoints.log` and
/// `checkpoints-json.log`, as journald holds them.
async fn record_a_run(dir: &std::path::Path) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let p = |name: &str| dir.join(name);
    let url = format!("sqlite://{}", p("sesame.db").to_str().expect("utf-8"));
    TestConfig::new()
        .database(&url)
        .gateway("private_key_file = \"gw.key\"")
        .write(&p("sesame.toml"));
    let sealer = Sealer {
        key: checkpoint::AuditKey::generate(&p("audit.key")).expect("key"),
        file: p("audit-checkpoints.jsonl"),
    };
    let (text_log, json_log) = (Captured::default(), Captured::default());
    let (t, j) = (text_log.clone(), json_log.clone());
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || t.0.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(move || j.0.clone()),
        );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let store = Store::connect(&url).await.expect("open");
    store
        .append_audit_batch(&(1..=5).map(login_event).collect::<Vec<_>>())
        .await
        .expect("1-5");
    tracing::info!("an unrelated line between two checkpoints");
    store
        .checkpoint_audit(&sealer, CheckpointReason::Interval)
        .await
        .expect("checkpoint 1");
    store
        .append_audit_batch(&(7..=10).map(login_event).collect::<Vec<_>>())
        .await
        .expect("7-10");
    store
        .checkpoint_audit(&sealer, CheckpointReason::Interval)
        .await
        .expect("checkpoint 2");
    store.append_audit(&login_event(12)).await.expect("12");
    let journal_text = p("checkpoints.log");
    std::fs::write(&journal_text, text_log.journal()).expect("journal");
    std::fs::write(p("checkpoints-json.log"), json_log.journal()).expect("journal");
    assert_eq!(
        checkpoint::read_file(&journal_text).expect("text lines"),
        checkpoint::read_file(&sealer.file).expect("file"),
        "{}",
        text_log.journal()
    );
}

/// Where tracing writes in the test.
#[derive(Clone, Default)]
struct Captured(sesame::telemetry::MemoryLog);

impl Captured {
    /// What was written, each line as journald shows it in full (`journalctl -u sesame`).
    fn journal(&self) -> String {
        self.0
            .text()
            .lines()
            .map(|l| format!("Dec 07 12:00:00 rectorat-vpn sesame[123]: {l}\n"))
            .collect()
    }
}

/// Someone holding the whole server rewrites an event, recomputes the chain, re-signs every
/// checkpoint with the audit key and replaces the checkpoint file: `verify` passes with the
/// server's own file, and fails with the checkpoints' log lines captured during the run (text
/// and `[log] format = "json"`, as journald holds them).
///
/// The run whose lines are captured happens in a child process running only this test
/// ([`JOURNAL_RUN`]), as `sesame serve` writes its own journal: tracing's call-site interest is
/// process-wide, and other tests' threads registering subscribers beside the capture lost the
/// checkpoints' lines in CI three times, even with the interest cache rebuilt before each one.
#[tokio::test]
async fn a_rewritten_and_resigned_log_is_caught_by_the_journal_copy() {
    if let Some(dir) = std::env::var_os(JOURNAL_RUN) {
        return record_a_run(std::path::Path::new(&dir)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: &std::path::Path| path.to_str().expect("utf-8").to_string();
    let name = module_path!().split_once("::").expect("crate::module").1;
    let name = format!("{name}::a_rewritten_and_resigned_log_is_caught_by_the_journal_copy");
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", &name, "--test-threads=1", "--nocapture"])
        .env(JOURNAL_RUN, dir.path())
        .output()
        .expect("run the recorded run");
    assert!(
        child.status.success() && text(&child.stdout).contains("1 passed"),
        "{}{}",
        text(&child.stdout),
        text(&child.stderr)
    );
    let url = format!("sqlite://{}", s(&p("sesame.db")));
    let config = p("sesame.toml");
    let sealer = Sealer {
        key: checkpoint::AuditKey::load(&p("audit.key")).expect("key"),
        file: p("audit-checkpoints.jsonl"),
    };
    let store = Store::connect(&url).await.expect("open");
    let (journal_text, journal_json) = (p("checkpoints.log"), p("checkpoints-json.log"));

    let cfg = s(&config);
    let verify = |checkpoints: Option<&std::path::Path>| {
        let mut args = vec!["audit".to_string(), "verify".into(), "--config".into()];
        args.push(cfg.clone());
        if let Some(c) = checkpoints {
            args.extend(["--checkpoints".into(), s(c)]);
        }
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for c in [None, Some(&*journal_text), Some(&*journal_json)] {
        let out = verify(c);
        assert_eq!(out.status.code(), Some(0), "{c:?}: {}", text(&out.stderr));
    }

    // The rewrite: triggers dropped, event 3 changed, every hash after it recomputed, each
    // audit.checkpoint event and the checkpoint file re-signed with the server's audit key.
    for t in [
        "audit_events_no_update",
        "audit_events_no_delete",
        "audit_retention_no_delete",
        "audit_retention_forward_only",
    ] {
        exec(&store, &format!("DROP TRIGGER {t}")).await;
    }
    let mut all = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    all[2].actor = "mallory".into();
    let mut resigned = Vec::new();
    for i in 2..all.len() {
        if all[i].action == "audit.checkpoint" {
            let head = checkpoint::ChainHead {
                first_id: 1,
                anchor_hash: sesame::audit::GENESIS_HASH.into(),
                last_id: all[i - 1].id,
                last_hash: all[i - 1].hash.clone(),
            };
            let ts = sesame::time::parse("ts", all[i].details["ts"].as_str().expect("ts"), 0)
                .expect("ts");
            let cp = Checkpoint::sign(&sealer.key, &head, ts, CheckpointReason::Interval);
            all[i].details = cp.to_json();
            resigned.push(cp);
        }
        all[i].prev_hash = all[i - 1].hash.clone();
        all[i].hash = all[i].compute_hash();
        sqlx::query(
            "UPDATE audit_events SET actor = $1, details = $2, prev_hash = $3, hash = $4 WHERE id = $5",
        )
        .bind(&all[i].actor)
        .bind(sesame::audit::canonical_json(&all[i].details))
        .bind(&all[i].prev_hash)
        .bind(&all[i].hash)
        .bind(all[i].id)
        .execute(store.pool())
        .await
        .expect("rewrite");
    }
    assert_eq!(resigned.len(), 2);
    std::fs::remove_file(&sealer.file).expect("old file");
    for cp in &resigned {
        checkpoint::append_to_file(&sealer.file, cp).expect("new file");
    }

    // The server's own (rewritten) file vouches for the rewritten log.
    let out = verify(None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The copy that left the server does not: the first head it signed differs.
    for c in [&journal_text, &journal_json] {
        let out = verify(Some(c));
        assert_eq!(out.status.code(), Some(1), "{c:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "5\n");
        assert!(
            text(&out.stderr).contains("rewritten"),
            "{}",
            text(&out.stderr)
        );
    }
    // A marked line that is not a checkpoint is an error naming its line.
    let mut lines = std::fs::read_to_string(&journal_text).expect("read");
    lines.push_str("Dec 07 13:00:00 rectorat-vpn sesame[123]: SESAME_AUDIT_CHECKPOINT {\"ts\":\n");
    let n = lines.lines().count();
    std::fs::write(&journal_text, lines).expect("write");
    let out = verify(Some(&journal_text));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains(&format!("checkpoints.log:{n}:")),
        "{}",
        text(&out.stderr)
    );
    store.close().await;
}
