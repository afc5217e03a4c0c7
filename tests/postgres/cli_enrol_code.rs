//! `sesame enrol-code create`: the exact stdout/stderr contract, single and `--csv` bulk, on a
//! real SQLite file (and the bulk path once on PostgreSQL).
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::cli::{self, text};
use crate::common::config::TestConfig;

use sesame::store::{normalize_code, AuditFilter, CodeKey, CodeState, Store};

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    url: String,
}

fn sqlite_env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/db/sesame.db", dir.path().display());
    env_with(dir, url)
}

fn env_with(dir: tempfile::TempDir, url: String) -> Env {
    let config = dir.path().join("sesame.toml");
    // The state files (the portal key the CLI creates) in the test's folder.
    TestConfig::new()
        .database(&url)
        .gateway("private_key_file = \"gateway.key\"")
        .write(&config);
    Env { dir, config, url }
}

impl Env {
    /// The database, hashing codes with the portal key the CLI created (0600, in the test's
    /// folder): a code the CLI printed is found with it, and only with it.
    async fn store(&self) -> Store {
        let path = self.dir.path().join("portal-secret.key");
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&path).expect("key"));
        assert_eq!(mode & 0o777, 0o600, "the portal key is 0600");
        let (key, created) = CodeKey::load_or_create(&path).expect("portal key");
        assert!(!created, "the CLI created the portal key");
        Store::connect(&self.url)
            .await
            .expect("open")
            .with_code_key(std::sync::Arc::new(key))
    }
}

/// `sesame ARGS --config CONFIG`, run by IT staff (`cli::OPERATOR`).
fn sesame(args: &[&str], config: &Path) -> Output {
    cli::sesame(args).config(config).output()
}

fn is_code(s: &str) -> bool {
    s.len() == 14
        && normalize_code(s).is_some()
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[9] == b'-'
}

async fn code_count(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM enrolment_codes")
        .fetch_one(store.pool())
        .await
        .expect("count")
}

#[tokio::test]
async fn create_prints_the_code_alone_on_stdout() {
    let env = sqlite_env();
    let out = sesame(
        &[
            "enrol-code",
            "create",
            "--user",
            "Alice",
            "--device",
            "portable-compta",
            "--ttl",
            "2h",
        ],
        &env.config,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.ends_with('\n'));
    let code = stdout.trim_end_matches('\n');
    assert!(is_code(code), "stdout is only the code: {stdout:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("alice") && stderr.contains("portable-compta"),
        "{stderr}"
    );
    assert!(stderr.contains("valid until"), "{stderr}");

    let store = env.store().await;
    let stored = store.code(code).await.expect("q").expect("stored");
    assert_eq!(stored.state, CodeState::Pending);
    assert_eq!(stored.username, "alice");
    assert_eq!(stored.device_name, "portable-compta");
    assert_eq!(stored.expires_at - stored.created_at, 2 * 3_600_000);
    assert_eq!(stored.created_by, "cli:admin-dsi");
    let audit = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "enrol.code_created");
    assert_eq!(audit[0].actor, "cli:admin-dsi");
    assert!(env.dir.path().join("db/sesame.db").exists());
}

#[tokio::test]
async fn bad_ttl_issues_nothing() {
    let env = sqlite_env();
    // Same bounds as the API (service::codes): 1 minute to 30 days.
    for ttl in ["soon", "0h", "31d", "30s"] {
        let out = sesame(
            &[
                "enrol-code",
                "create",
                "--user",
                "alice",
                "--device",
                "pc",
                "--ttl",
                ttl,
            ],
            &env.config,
        );
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(text(&out.stderr).contains("--ttl"), "{}", text(&out.stderr));
    }
    let store = Store::connect(&env.url).await.expect("open");
    assert_eq!(code_count(&store).await, 0);
}

async fn csv_good_file(env: Env) {
    let csv = env.dir.path().join("codes.csv");
    std::fs::write(
        &csv,
        "user,device\nalice,portable-compta\n bob ,\"pc paie, 2e étage\"\ncarol,pc-carol\n",
    )
    .expect("write csv");
    let out = sesame(
        &["enrol-code", "create", "--csv", csv.to_str().expect("utf8")],
        &env.config,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        ["user", "device", "code", "expires_at"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 3);
    let store = env.store().await;
    let expected = [
        ("alice", "portable-compta"),
        ("bob", "pc paie, 2e étage"),
        ("carol", "pc-carol"),
    ];
    for (row, (user, device)) in rows.iter().zip(expected) {
        assert_eq!(&row[0], user);
        assert_eq!(&row[1], device);
        assert!(is_code(&row[2]), "{:?}", &row[2]);
        let stored = store.code(&row[2]).await.expect("q").expect("stored");
        assert_eq!(stored.username, user);
        assert_eq!(stored.device_name, device);
        assert_eq!(stored.state, CodeState::Pending);
        assert_eq!(
            sesame::time::parse("expires_at", &row[3], 0),
            Ok(stored.expires_at),
            "expires_at is RFC 3339"
        );
        assert_eq!(
            stored.expires_at - stored.created_at,
            72 * 3_600_000,
            "default ttl"
        );
    }
    assert_eq!(code_count(&store).await, 3);
}

#[tokio::test]
async fn csv_good_file_sqlite() {
    csv_good_file(sqlite_env()).await;
}

#[tokio::test]
async fn csv_good_file_postgres() {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    csv_good_file(env_with(dir, db.url.clone())).await;
    drop(db);
}

#[tokio::test]
async fn csv_with_bad_rows_reports_line_numbers_and_issues_no_code() {
    let env = sqlite_env();
    let csv = env.dir.path().join("codes.csv");
    std::fs::write(
        &csv,
        "user,device\nalice,pc-a\nbob,\ncarol,pc-c,extra\ndave,pc-d\nalice,pc-a\n",
    )
    .expect("write csv");
    let out = sesame(
        &["enrol-code", "create", "--csv", csv.to_str().expect("utf8")],
        &env.config,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "no code printed: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    let file = csv.display().to_string();
    for line in [3, 4, 6] {
        assert!(
            stderr.contains(&format!("{file}:{line}: ")),
            "line {line} reported: {stderr}"
        );
    }
    for line in [2, 5] {
        assert!(
            !stderr.contains(&format!("{file}:{line}: ")),
            "good line {line}: {stderr}"
        );
    }
    assert!(stderr.contains("no code issued"), "{stderr}");
    let store = Store::connect(&env.url).await.expect("open");
    assert_eq!(code_count(&store).await, 0);
    assert!(store
        .list_audit(&AuditFilter::default())
        .await
        .expect("a")
        .is_empty());

    // A wrong header is reported as line 1.
    std::fs::write(&csv, "uid,name\nalice,pc\n").expect("write csv");
    let out = sesame(
        &["enrol-code", "create", "--csv", csv.to_str().expect("utf8")],
        &env.config,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{file}:1: ")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(code_count(&store).await, 0);
}
