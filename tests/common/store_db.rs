//! Store test harness: a fresh store on SQLite or PostgreSQL with a hand-moved clock, the
//! `both_backends!` macro (`use crate::both_backends;`), and shared helpers.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use sesame::audit::checkpoint::{AuditKey, Sealer};
use sesame::audit::{Action, AuditContext, NewAuditEvent};
use sesame::directory::DirectoryUser;
use sesame::store::{AddressPool, AuditFilter, EnrolRequest, Enrolled, NewCode, Store, StoreError};
use sesame::time::ManualClock;

/// 2026-01-05 09:00:00 UTC, in unix ms: every test starts there.
pub const T0: i64 = 1_767_603_600_000;
pub const HOUR: Duration = Duration::from_secs(3600);
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
pub const STATIC_PEER_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);

pub enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] super::postgres::PgDatabase),
}

pub struct Db {
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub url: String,
    pub guard: Guard,
}

pub async fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/sub/dir/sesame.db", dir.path().display());
    open(url, Guard::Sqlite(dir)).await
}

pub async fn postgres_db() -> Db {
    let db = tokio::task::spawn_blocking(super::postgres::database)
        .await
        .expect("start PostgreSQL");
    open(db.url.clone(), Guard::Postgres(db)).await
}

pub async fn open(url: String, guard: Guard) -> Db {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .with_clock(clock.clone());
    Db {
        store,
        clock,
        url,
        guard,
    }
}

/// Runs `$name(Db)` once on SQLite and once on PostgreSQL (`<name>::sqlite`, `<name>::postgres`).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::store_db::sqlite_db().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::store_db::postgres_db().await).await
            }
        }
    )*};
}

/// The database at `old_url` migrated only up to (not including) migration `before` ("0019"),
/// from a copy of `migrations/{flavour}` ("sqlite", "postgres") in `dir`: to write rows as an
/// older release did, then [`Store::connect`] to run the migrations under test on them.
pub async fn schema_before(
    old_url: &str,
    flavour: &str,
    dir: &std::path::Path,
    before: &str,
) -> sqlx::AnyPool {
    let old = dir.join("migrations");
    std::fs::create_dir(&old).expect("dir");
    let src = format!("{}/migrations/{flavour}", env!("CARGO_MANIFEST_DIR"));
    for f in std::fs::read_dir(&src).expect("migrations") {
        let name = f.expect("entry").file_name();
        if name.to_string_lossy().as_ref() < before {
            std::fs::copy(format!("{src}/{}", name.to_string_lossy()), old.join(&name))
                .expect("copy");
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(old_url).await.expect("old db");
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .expect("migrator")
        .run(&pool)
        .await
        .expect("old schema");
    pool
}

/// For migrations under test on a database an older release wrote: `mod NAME` with a test on
/// SQLite and one on PostgreSQL, each calling `NAME(old_url, url, flavour, dir)` (the URL that
/// creates the database, the one the store opens, "sqlite" or "postgres", a scratch folder for
/// [`schema_before`]). `use crate::old_database_tests;`.
#[macro_export]
macro_rules! old_database_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}/old.db", dir.path().display());
                super::$name(&format!("{url}?mode=rwc"), &url, "sqlite", dir.path()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = tokio::task::spawn_blocking($crate::common::postgres::database)
                    .await
                    .expect("start PostgreSQL");
                super::$name(&db.url, &db.url, "postgres", dir.path()).await
            }
        }
    )*};
}

pub fn person(name: &str) -> DirectoryUser {
    DirectoryUser {
        username: name.to_string(),
        dn: format!("uid={name},ou=people,dc=example,dc=org"),
        display_name: format!("{name} Dupré"),
        groups: vec!["cn=personnels-administratifs,ou=groups,dc=example,dc=org".into()],
        disabled: false,
    }
}

pub fn key(n: u8) -> sesame::key::PublicKey {
    let mut k = [n; 32];
    k[0] = 0xA0;
    sesame::key::PublicKey::from_bytes(k).expect("key")
}

pub fn pool(net: &str) -> AddressPool {
    AddressPool {
        network: net.parse().expect("network"),
        reserved: vec![GATEWAY_IP, STATIC_PEER_IP],
    }
}

pub fn it_staff() -> AuditContext {
    AuditContext::new("admin-dsi", Some("198.18.0.7".into()))
}

pub async fn code_for(db: &Db, user: &str, device: &str) -> String {
    db.store
        .create_code(
            &NewCode {
                username: user.into(),
                device_name: device.into(),
                ttl: 72 * HOUR,
            },
            &it_staff(),
        )
        .await
        .expect("create code")
        .code
}

pub async fn enrol(
    db: &Db,
    code: &str,
    user: &DirectoryUser,
    k: sesame::key::PublicKey,
    net: &str,
) -> Result<Enrolled, StoreError> {
    db.store
        .enrol(
            &EnrolRequest {
                code,
                user,
                public_key: k,
                hostname: &"pc-compta-01".parse().expect("hostname"),
                key_lifetime: Some(180 * 24 * HOUR),
            },
            &pool(net),
            &AuditContext::new(user.username.clone(), Some("198.18.0.20".into())),
        )
        .await
}

/// (devices, users, audit events) currently stored.
pub async fn counts(db: &Db) -> (usize, usize, usize) {
    let devices = db.store.list_devices(None).await.expect("devices").len();
    let users = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
        .fetch_one(db.store.pool())
        .await
        .expect("count users");
    let audit = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("audit")
        .len();
    (devices, usize::try_from(users).expect("count"), audit)
}

/// A fresh audit signing key and checkpoint file in their own temp folder (kept alive by the
/// returned guard).
pub fn test_sealer() -> (tempfile::TempDir, Arc<Sealer>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = AuditKey::generate(&dir.path().join("audit.key")).expect("audit key");
    let sealer = Sealer {
        key,
        file: dir.path().join("audit-checkpoints.jsonl"),
    };
    (dir, Arc::new(sealer))
}

/// A login event of `user{i}` with `{"n": i}` details (audit tests).
pub fn login_event(i: usize) -> NewAuditEvent {
    let ctx = AuditContext::new(format!("user{i}"), Some("198.18.0.9".into()));
    NewAuditEvent::new(Action::AuthLogin, &ctx, format!("user{i}"))
        .details(serde_json::json!({ "n": i }))
}

/// Runs one SQL statement on the store's pool (as whoever holds the database would).
pub async fn exec(store: &Store, statement: &str) {
    sqlx::query(statement)
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// The audit events of `action` in the log, oldest first.
pub async fn audit_of(store: &Store, action: &str) -> Vec<sesame::audit::AuditEvent> {
    store
        .list_audit(&AuditFilter {
            action: Some(action.into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit")
}

/// Enrols one device (a fresh key) for each of `users` through the store, as the portal does
/// (code, then enrolment; the user stored with their groups), addresses from `net`; returns
/// the devices' ids. For answers longer than a page (the access review's).
pub async fn enrol_many(store: &Store, users: &[DirectoryUser], net: &str) -> Vec<i64> {
    let mut ids = Vec::with_capacity(users.len());
    for u in users {
        let code = store
            .create_code(
                &NewCode {
                    username: u.username.clone(),
                    device_name: format!("pc-{}", u.username),
                    ttl: HOUR,
                },
                &it_staff(),
            )
            .await
            .expect("create code")
            .code;
        let enrolled = store
            .enrol(
                &EnrolRequest {
                    code: &code,
                    user: u,
                    public_key: sesame::key::PrivateKey::generate().public_key(),
                    hostname: &"pc-bulk".parse().expect("hostname"),
                    key_lifetime: None,
                },
                &pool(net),
                &AuditContext::new(u.username.clone(), None),
            )
            .await
            .expect("enrol");
        ids.push(enrolled.device.id);
    }
    ids
}

/// PostgreSQL (its cluster preloads pg_stat_statements; the extension created by the test): calls,
/// since the last reset, of the statements of this database whose text contains `needle`.
pub async fn statement_calls(store: &Store, needle: &str) -> i64 {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT query, calls FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(store.pool())
    .await
    .expect("pg_stat_statements");
    rows.iter()
        .filter(|r| r.get::<String, _>("query").contains(needle))
        .map(|r| r.get::<i64, _>("calls"))
        .sum()
}
