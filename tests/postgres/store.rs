//! Enrolment codes and the enrol transaction on a fresh SQLite file AND a throwaway PostgreSQL
//! cluster (each test written once, run as `<test>::sqlite` and `<test>::postgres`); connection
//! and schema checks.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::store_db::*;
use sesame::audit::{AuditContext, AuditVerification};
use sesame::store::{
    AuditFilter, CodeState, DeviceStatus, EnrolRequest, NewCode, Store, StoreError,
};

both_backends!(
    code_lifecycle_pending_to_redeemed_then_reuse_refused,
    expired_code_is_refused_and_nothing_written,
    code_for_another_user_is_refused_and_stays_pending,
    unknown_or_malformed_code_is_refused,
    addresses_lowest_first_skip_reserved_and_exhaust,
    duplicate_public_key_is_typed_and_nothing_written,
    unique_violation_from_the_database_maps_to_public_key_in_use,
    bulk_code_creation_is_all_or_nothing,
    concurrent_enrolments_get_distinct_addresses_and_one_chain,
    failure_late_in_enrolment_rolls_everything_back,
    concurrent_enrolments_with_refusals_and_a_failure_each_get_their_own_answer,
    concurrent_logins_of_the_same_people_all_get_their_sessions,
    user_groups_follow_the_directory_across_login_batches,
    every_change_of_the_peer_set_is_logged_and_nothing_else,
);

async fn code_lifecycle_pending_to_redeemed_then_reuse_refused(db: Db) {
    let code = code_for(&db, "Alice", "portable-compta").await;
    let stored = db.store.code(&code).await.expect("lookup").expect("exists");
    assert_eq!(stored.state, CodeState::Pending);
    assert_eq!(stored.username, "alice", "usernames are stored lower-case");
    assert_eq!(stored.expires_at, T0 + 72 * 3_600_000);
    assert_eq!(stored.created_by, "admin-dsi");
    assert_ne!(stored.code_hash, code, "only the hash is stored");

    // Typed over the phone: lower case, spaces instead of dashes.
    let typed = code.to_lowercase().replace('-', " ");
    db.clock.advance(HOUR);
    let alice = person("alice");
    let e = enrol(&db, &typed, &alice, key(1), "100.64.0.0/24")
        .await
        .expect("enrol");
    assert_eq!(e.device.username, "alice");
    assert_eq!(e.device.name, "portable-compta");
    assert_eq!(e.device.hostname, "pc-compta-01");
    assert_eq!(e.device.tunnel_address, Ipv4Addr::new(100, 64, 0, 2));
    assert_eq!(e.device.status, DeviceStatus::Active);
    assert_eq!(e.device.created_at, T0 + 3_600_000);
    assert_eq!(e.device.expires_at, Some(T0 + 3_600_000 + 180 * 86_400_000));
    assert_eq!(e.token.len(), 43, "32 bytes base64url");

    let stored = db.store.code(&code).await.expect("lookup").expect("exists");
    assert_eq!(
        stored.state,
        CodeState::Redeemed {
            at: T0 + 3_600_000,
            device_id: Some(e.device.id)
        }
    );
    let by_token = db.store.device_by_token(&e.token).await.expect("by token");
    assert_eq!(by_token.as_ref(), Some(&e.device));
    assert_eq!(db.store.device_by_token("nope").await.expect("query"), None);
    assert_eq!(
        db.store.device(e.device.id).await.expect("by id"),
        Some(e.device.clone())
    );
    let user = db.store.user("ALICE").await.expect("user").expect("stored");
    assert_eq!(user.display_name, "alice Dupré");

    let before = counts(&db).await;
    let again = enrol(&db, &code, &alice, key(2), "100.64.0.0/24").await;
    assert!(
        matches!(again, Err(StoreError::CodeAlreadyUsed)),
        "{again:?}"
    );
    assert_eq!(
        counts(&db).await,
        before,
        "a refused enrolment writes nothing"
    );

    let actions: Vec<String> = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["enrol.code_created", "enrol.completed"]);
}

async fn expired_code_is_refused_and_nothing_written(db: Db) {
    let code = db
        .store
        .create_code(
            &NewCode {
                username: "bob".into(),
                device_name: "pc-bob".into(),
                ttl: HOUR,
            },
            &it_staff(),
        )
        .await
        .expect("code")
        .code;
    db.clock.advance(HOUR - Duration::from_millis(1));
    assert_eq!(
        db.store.code(&code).await.expect("q").expect("c").state,
        CodeState::Pending
    );
    db.clock.advance(Duration::from_millis(1));
    assert_eq!(
        db.store.code(&code).await.expect("q").expect("c").state,
        CodeState::Expired
    );
    let before = counts(&db).await;
    let r = enrol(&db, &code, &person("bob"), key(1), "100.64.0.0/24").await;
    assert!(matches!(r, Err(StoreError::CodeExpired)), "{r:?}");
    assert_eq!(counts(&db).await, before);
    assert_eq!(before.0, 0);
}

async fn code_for_another_user_is_refused_and_stays_pending(db: Db) {
    let code = code_for(&db, "alice", "pc-alice").await;
    let before = counts(&db).await;
    let r = enrol(&db, &code, &person("mallory"), key(1), "100.64.0.0/24").await;
    assert!(matches!(r, Err(StoreError::CodeWrongUser)), "{r:?}");
    assert_eq!(counts(&db).await, before);
    assert_eq!(
        db.store.code(&code).await.expect("q").expect("c").state,
        CodeState::Pending
    );
    // The right user can still use it.
    enrol(&db, &code, &person("alice"), key(1), "100.64.0.0/24")
        .await
        .expect("alice enrols");
}

async fn unknown_or_malformed_code_is_refused(db: Db) {
    for code in ["ABCD-EFGH-JKMN", "0000-0000-0000", "", "ABCD"] {
        let r = enrol(&db, code, &person("alice"), key(1), "100.64.0.0/24").await;
        assert!(
            matches!(r, Err(StoreError::CodeNotFound)),
            "{code:?}: {r:?}"
        );
        assert_eq!(db.store.code(code).await.expect("query"), None);
    }
    assert_eq!(counts(&db).await, (0, 0, 0));
}

async fn addresses_lowest_first_skip_reserved_and_exhaust(db: Db) {
    // 100.64.0.0/29: hosts .1-.6; .1 is the gateway, .3 a static peer.
    let net = "100.64.0.0/29";
    let alice = person("alice");
    let mut got = Vec::new();
    for i in 0..4u8 {
        let code = code_for(&db, "alice", &format!("pc-{i}")).await;
        let e = enrol(&db, &code, &alice, key(i + 1), net)
            .await
            .expect("enrol");
        got.push(e.device.tunnel_address.to_string());
    }
    assert_eq!(
        got,
        ["100.64.0.2", "100.64.0.4", "100.64.0.5", "100.64.0.6"]
    );

    let code = code_for(&db, "alice", "pc-5").await;
    let before = counts(&db).await;
    let r = enrol(&db, &code, &alice, key(9), net).await;
    match r {
        Err(StoreError::AddressPoolExhausted { network }) => {
            assert_eq!(network.to_string(), net)
        }
        other => panic!("expected AddressPoolExhausted, got {other:?}"),
    }
    assert_eq!(counts(&db).await, before);
    assert_eq!(
        db.store.code(&code).await.expect("q").expect("c").state,
        CodeState::Pending
    );

    // A revoked device keeps its address: still exhausted.
    let first = db.store.list_devices(None).await.expect("list")[0].clone();
    db.store
        .revoke_device(first.id, "test", &it_staff())
        .await
        .expect("revoke");
    let r = enrol(&db, &code, &alice, key(9), net).await;
    assert!(
        matches!(r, Err(StoreError::AddressPoolExhausted { .. })),
        "{r:?}"
    );
    // A bigger network has room again, after the old addresses.
    let e = enrol(&db, &code, &alice, key(9), "100.64.0.0/24")
        .await
        .expect("enrol");
    assert_eq!(e.device.tunnel_address, Ipv4Addr::new(100, 64, 0, 7));
}

async fn duplicate_public_key_is_typed_and_nothing_written(db: Db) {
    let c1 = code_for(&db, "alice", "pc-1").await;
    let c2 = code_for(&db, "bob", "pc-2").await;
    enrol(&db, &c1, &person("alice"), key(7), "100.64.0.0/24")
        .await
        .expect("first");
    let before = counts(&db).await;
    let r = enrol(&db, &c2, &person("bob"), key(7), "100.64.0.0/24").await;
    assert!(matches!(r, Err(StoreError::PublicKeyInUse)), "{r:?}");
    assert_eq!(
        counts(&db).await,
        before,
        "no device, no user, no audit row"
    );
    assert_eq!(db.store.user("bob").await.expect("q"), None);
    assert_eq!(
        db.store.code(&c2).await.expect("q").expect("c").state,
        CodeState::Pending
    );
}

async fn unique_violation_from_the_database_maps_to_public_key_in_use(db: Db) {
    let c1 = code_for(&db, "alice", "pc-1").await;
    let e = enrol(&db, &c1, &person("alice"), key(7), "100.64.0.0/24")
        .await
        .expect("enrol");
    // Bypass the pre-check: the UNIQUE constraint itself must map to the typed error.
    let err = sqlx::query(
        "INSERT INTO devices (username, name, hostname, public_key, tunnel_address, status, token_hash, created_at) \
         VALUES ('alice', 'x', 'x', $1, '100.64.0.99', 'active', 'h', 0)",
    )
    .bind(e.device.public_key_base64())
    .execute(db.store.pool())
    .await
    .expect_err("duplicate key refused by the database");
    let mapped = StoreError::from(err);
    assert!(matches!(mapped, StoreError::PublicKeyInUse), "{mapped:?}");
}

async fn bulk_code_creation_is_all_or_nothing(db: Db) {
    let good = |u: &str| NewCode {
        username: u.into(),
        device_name: format!("pc-{u}"),
        ttl: 72 * HOUR,
    };
    let mut bad = good("carol");
    bad.device_name = "  ".into();
    let r = db
        .store
        .create_codes(&[good("alice"), good("bob"), bad], &it_staff())
        .await;
    match r {
        Err(StoreError::InvalidInput(m)) => assert!(m.contains("entry 2"), "{m}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(counts(&db).await, (0, 0, 0));
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM enrolment_codes")
        .fetch_one(db.store.pool())
        .await
        .expect("count");
    assert_eq!(n, 0);

    let codes = db
        .store
        .create_codes(&[good("alice"), good("bob")], &it_staff())
        .await
        .expect("codes");
    assert_eq!(codes.len(), 2);
    assert_ne!(codes[0].code, codes[1].code);
    assert_eq!(counts(&db).await.2, 2, "one audit row per code");
}

async fn concurrent_enrolments_get_distinct_addresses_and_one_chain(db: Db) {
    const N: u8 = 12;
    let mut codes = Vec::new();
    for i in 0..N {
        codes.push(code_for(&db, &format!("user{i}"), "pc").await);
    }
    let store = db.store.clone();
    let mut tasks = Vec::new();
    for (i, code) in codes.into_iter().enumerate() {
        let store = store.clone();
        let i = u8::try_from(i).expect("small");
        tasks.push(tokio::spawn(async move {
            let user = person(&format!("user{i}"));
            store
                .enrol(
                    &EnrolRequest {
                        code: &code,
                        user: &user,
                        public_key: key(i + 1),
                        hostname: &"pc".parse().expect("hostname"),
                        key_lifetime: None,
                    },
                    &pool("100.64.0.0/24"),
                    &AuditContext::system(),
                )
                .await
        }));
    }
    let mut addrs = HashSet::new();
    for t in tasks {
        let e = t.await.expect("join").expect("enrol");
        assert!(addrs.insert(e.device.tunnel_address));
        assert_eq!(e.device.expires_at, None);
    }
    assert_eq!(addrs.len(), usize::from(N));
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact {
            events: 2 * u64::from(N)
        }
    );
}

/// Enrolments are group-committed with a savepoint each: among concurrent ones, refusals
/// (code used twice, code of another user, key used twice) and a database error injected
/// into one of them fail alone; every other one is written whole, nothing half-written.
async fn concurrent_enrolments_with_refusals_and_a_failure_each_get_their_own_answer(db: Db) {
    const GOOD: u8 = 16;
    let inject = match db.store.backend() {
        sesame::store::Backend::Sqlite => vec![
            "CREATE TRIGGER inject_failure BEFORE INSERT ON devices WHEN NEW.hostname = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
        sesame::store::Backend::Postgres => vec![
            "CREATE FUNCTION inject_failure() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.hostname = 'boom' THEN RAISE EXCEPTION 'injected failure'; END IF; \
             RETURN NEW; END; $$",
            "CREATE TRIGGER inject_failure BEFORE INSERT ON devices \
             FOR EACH ROW EXECUTE FUNCTION inject_failure()",
        ],
    };
    for sql in &inject {
        exec(&db.store, sql).await;
    }
    // (user, code owner, key, hostname, expected outcome)
    let mut cases: Vec<(String, String, u8, &str, &str)> = Vec::new();
    for i in 0..GOOD {
        let u = format!("user{i}");
        cases.push((u.clone(), u, i + 1, "pc", "ok"));
    }
    cases.push(("twice".into(), "twice".into(), 100, "pc", "used"));
    cases.push(("mallory".into(), "victim".into(), 101, "pc", "wrong_user"));
    cases.push(("samekey".into(), "samekey".into(), 1, "pc", "key_in_use"));
    cases.push(("boom".into(), "boom".into(), 102, "boom", "db_error"));
    let mut codes = Vec::new();
    for (_, owner, ..) in &cases {
        codes.push(code_for(&db, owner, "pc").await);
    }
    // The "twice" code is presented a second time, with another key.
    let twice = codes[usize::from(GOOD)].clone();
    codes[usize::from(GOOD)] = twice.clone();
    let mut tasks = Vec::new();
    let spawn = |user: String, code: String, k: u8, host: &'static str| {
        let store = db.store.clone();
        tokio::spawn(async move {
            store
                .enrol(
                    &EnrolRequest {
                        code: &code,
                        user: &person(&user),
                        public_key: key(k),
                        hostname: &host.parse().expect("hostname"),
                        key_lifetime: None,
                    },
                    &pool("100.64.0.0/24"),
                    &AuditContext::system(),
                )
                .await
        })
    };
    // "twice" goes first so the retry of its code is the refused one.
    let first_twice = spawn("twice".into(), twice.clone(), 103, "pc")
        .await
        .expect("join")
        .expect("the first use of a code enrols");
    for ((user, _, k, host, _), code) in cases.iter().zip(&codes) {
        tasks.push(spawn(user.clone(), code.clone(), *k, host));
    }
    let mut addrs = HashSet::from([first_twice.device.tunnel_address]);
    let mut enrolled = 1;
    let mut key1_winners = 0;
    for ((user, _, _, _, expected), t) in cases.iter().zip(tasks) {
        let r = t.await.expect("join");
        match (*expected, r) {
            ("ok", Ok(e)) => {
                assert!(
                    addrs.insert(e.device.tunnel_address),
                    "{user}: address reused"
                );
                enrolled += 1;
                key1_winners += usize::from(e.device.public_key == key(1));
            }
            ("used", Err(StoreError::CodeAlreadyUsed)) => {}
            ("wrong_user", Err(StoreError::CodeWrongUser)) => {}
            // user0 and samekey race for key 1: exactly one wins.
            ("key_in_use", Err(StoreError::PublicKeyInUse)) => {}
            ("key_in_use", Ok(e)) => {
                assert!(addrs.insert(e.device.tunnel_address));
                enrolled += 1;
                key1_winners += 1;
            }
            ("db_error", Err(StoreError::Database(e))) => {
                assert!(e.to_string().contains("injected failure"), "{e}")
            }
            ("ok", Err(StoreError::PublicKeyInUse)) if user == "user0" => {}
            (want, got) => panic!("{user}: expected {want}, got {got:?}"),
        }
    }
    assert_eq!(key1_winners, 1, "one device holds key 1");
    assert_eq!(enrolled, usize::from(GOOD) + 1);
    // Nothing half-written: devices and events are exactly those of the successes.
    let devices = db.store.list_devices(None).await.expect("devices");
    assert_eq!(devices.len(), enrolled);
    assert!(devices.iter().all(|d| d.hostname != "boom"));
    let codes_created = cases.len() as u64;
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact {
            events: codes_created + enrolled as u64
        }
    );
    for (owner, code) in [
        ("boom", &codes[codes.len() - 1]),
        ("victim", &codes[usize::from(GOOD) + 1]),
    ] {
        assert_eq!(
            db.store.code(code).await.expect("q").expect("c").state,
            CodeState::Pending,
            "{owner}'s code stays usable"
        );
    }
}

async fn failure_late_in_enrolment_rolls_everything_back(db: Db) {
    let code = code_for(&db, "alice", "pc-alice").await;
    // Inject a failure at the last write but one (marking the code redeemed), after the user
    // and the device rows were written inside the transaction.
    let inject: &[&str] = match db.store.backend() {
        sesame::store::Backend::Sqlite => &[
            "CREATE TRIGGER inject_failure BEFORE UPDATE ON enrolment_codes \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
        sesame::store::Backend::Postgres => &[
            "CREATE FUNCTION inject_failure() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END; $$",
            "CREATE TRIGGER inject_failure BEFORE UPDATE ON enrolment_codes \
             FOR EACH ROW EXECUTE FUNCTION inject_failure()",
        ],
    };
    for sql in inject {
        exec(&db.store, sql).await;
    }
    let before = counts(&db).await;
    let r = enrol(&db, &code, &person("alice"), key(1), "100.64.0.0/24").await;
    match r {
        Err(StoreError::Database(e)) => assert!(e.to_string().contains("injected failure"), "{e}"),
        other => panic!("expected the injected database error, got {other:?}"),
    }
    assert_eq!(
        counts(&db).await,
        before,
        "no user, device or audit row left behind"
    );
    assert_eq!(before, (0, 0, 1));
    assert_eq!(
        db.store.code(&code).await.expect("q").expect("c").state,
        CodeState::Pending
    );
    let remove = match db.store.backend() {
        sesame::store::Backend::Sqlite => "DROP TRIGGER inject_failure",
        sesame::store::Backend::Postgres => "DROP TRIGGER inject_failure ON enrolment_codes",
    };
    sqlx::raw_sql(remove)
        .execute(db.store.pool())
        .await
        .expect("remove injection");
    let e = enrol(&db, &code, &person("alice"), key(1), "100.64.0.0/24")
        .await
        .expect("enrols once the failure is gone");
    assert_eq!(e.device.tunnel_address, Ipv4Addr::new(100, 64, 0, 2));
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    // URL paths are percent-decoded (as sqlx does): `%20` is a space, `%25` a percent sign.
    let path = dir.path().join("a b/c%d/sesame.db");
    let url = format!("sqlite://{}/a%20b/c%25d/sesame.db", dir.path().display());
    let store = Store::connect(&url).await.expect("connect");
    assert!(path.exists(), "file and parent directories created");
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["a b"], "no stray file under another name");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(sync, 2, "synchronous = FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(fk, 1);
    store
        .create_code(
            &NewCode {
                username: "alice".into(),
                device_name: "pc".into(),
                ttl: HOUR,
            },
            &it_staff(),
        )
        .await
        .expect("code");
    store.close().await;
    // Reopening applies no migration twice and keeps the data.
    let store = Store::connect(&url).await.expect("reconnect");
    assert_eq!(
        store
            .list_audit(&AuditFilter::default())
            .await
            .expect("audit")
            .len(),
        1
    );
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_and_bad_urls_are_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let r = Store::connect(&format!("postgres://sesame:secret@127.0.0.1:{port}/sesame")).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = Store::connect("mysql://x@y/z").await;
    assert!(matches!(r, Err(StoreError::InvalidUrl(_))), "{r:?}");
    // Several hosts, none answering: unavailable too, not a bad URL.
    let r = Store::connect(&format!(
        "postgres://sesame:secret@127.0.0.1:{port},127.0.0.1:{port}/sesame?target_session_attrs=read-write"
    ))
    .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    // A bad host list is named, the password is not.
    let r = Store::connect("postgres://sesame:secret@127.0.0.1:5432,127.0.0.1:x/sesame").await;
    let Err(e @ StoreError::PgUrl { .. }) = r else {
        panic!("{r:?}")
    };
    let text = format!("{e}: {}", std::error::Error::source(&e).expect("source"));
    assert!(text.contains("the port \"x\""), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn migrations_are_numbered_the_same_for_both_databases() {
    let names = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let sqlite = names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"));
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite,
        names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
    );
}

#[tokio::test]
async fn every_postgres_table_and_column_is_commented() {
    let db = postgres_db().await;
    const UNCOMMENTED: &str = "SELECT c.relname || COALESCE('.' || a.attname, '') FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE c.relkind = 'r' AND c.relname <> '_sqlx_migrations' \
           AND (obj_description(c.oid, 'pg_class') IS NULL \
                OR (a.attname IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL)) \
         ORDER BY 1";
    let missing: Vec<String> = sqlx::query_scalar(UNCOMMENTED)
        .fetch_all(db.store.pool())
        .await
        .expect("query catalog");
    assert!(missing.is_empty(), "uncommented: {missing:?}");
    // The check does see an uncommented column.
    sqlx::query("ALTER TABLE users ADD COLUMN probe TEXT")
        .execute(db.store.pool())
        .await
        .expect("alter");
    let missing: Vec<String> = sqlx::query_scalar(UNCOMMENTED)
        .fetch_all(db.store.pool())
        .await
        .expect("query catalog");
    assert_eq!(missing, ["users.probe"]);
}

/// Concurrent logins are written by the group committer, users and sessions one statement per
/// batch: the same person logging in several times in one batch (PostgreSQL refuses to update
/// a row twice in one statement) still gets every session, and one user row.
async fn concurrent_logins_of_the_same_people_all_get_their_sessions(db: Db) {
    const N: usize = 30;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let store = db.store.clone();
        tasks.spawn(async move {
            // Three people, ten logins each, interleaved.
            let name = format!("agent{}", i % 3);
            let mut user = person(&name);
            user.display_name = format!("Agent {i}");
            let session = sesame::store::NewSession {
                username: name.clone(),
                roles: vec!["vpn_user".into()],
                ttl: HOUR,
            };
            let r = store.record_login(&user, &session, login_event(i)).await;
            (name, r)
        });
    }
    let mut tokens = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, r) = joined.expect("task");
        let (token, _) = r.unwrap_or_else(|e| panic!("login of {name}: {e}"));
        tokens.push((name, token));
    }
    assert_eq!(tokens.len(), N);
    for (name, token) in &tokens {
        let s = db
            .store
            .session(token)
            .await
            .expect("read")
            .expect("session stored");
        assert_eq!(&s.username, name);
    }
    for i in 0..3 {
        let name = format!("agent{i}");
        let u = db.store.user(&name).await.expect("read").expect("user row");
        assert!(u.display_name.starts_with("Agent "), "{}", u.display_name);
    }
    let events = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(events.len(), N, "one auth.login event per login");
}

/// `user_groups` (the device list's scope filter) is rewritten at a login only for users whose
/// groups changed: an unchanged user keeps their rows, a changed one gets exactly the new ones,
/// in the same batch, and a new user gets theirs.
async fn user_groups_follow_the_directory_across_login_batches(db: Db) {
    let rows = |name: &'static str| {
        let pool = db.store.pool().clone();
        async move {
            let mut dns: Vec<String> = sqlx::query_scalar(
                "SELECT group_dn FROM user_groups WHERE username = $1 ORDER BY group_dn",
            )
            .bind(name)
            .fetch_all(&pool)
            .await
            .expect("read user_groups");
            dns.sort();
            dns
        }
    };
    let login = |user: sesame::directory::DirectoryUser, i: usize| {
        let store = db.store.clone();
        async move {
            let session = sesame::store::NewSession {
                username: user.username.clone(),
                roles: vec!["vpn_user".into()],
                ttl: HOUR,
            };
            store
                .record_login(&user, &session, login_event(i))
                .await
                .expect("login");
        }
    };
    let paie = "CN=Gestionnaires-Paie,OU=Groups,DC=example,DC=org";
    let mut anne = person("anne");
    anne.groups.push(paie.into());
    login(anne.clone(), 0).await;
    login(person("bruno"), 1).await;
    let base = vec!["cn=personnels-administratifs,ou=groups,dc=example,dc=org".to_string()];
    let mut with_paie = vec![
        "cn=gestionnaires-paie,ou=groups,dc=example,dc=org".to_string(),
        base[0].clone(),
    ];
    with_paie.sort();
    assert_eq!(rows("anne").await, with_paie, "normalized DNs");
    assert_eq!(rows("bruno").await, base);

    // One batch: anne unchanged, bruno gains the group, carla is new.
    let mut bruno = person("bruno");
    bruno.groups.push(paie.into());
    let holder = db.store.write_tx().await.expect("writer transaction");
    let tasks = [
        tokio::spawn(login(anne.clone(), 2)),
        tokio::spawn(login(bruno, 3)),
        tokio::spawn(login(person("carla"), 4)),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.rollback().await.expect("release the writer");
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(rows("anne").await, with_paie);
    assert_eq!(rows("bruno").await, with_paie);
    assert_eq!(rows("carla").await, base);

    // anne leaves the group.
    anne.groups.retain(|g| g != paie);
    login(anne, 5).await;
    assert_eq!(rows("anne").await, base);
    assert_eq!(rows("bruno").await, with_paie);

    // Rows in another form than the canonical one (as migration 0008 filled them in, lower-cased
    // only) are rewritten at the next login even though the user's groups did not change.
    exec(
        &db.store,
        "DELETE FROM user_groups WHERE username = 'carla'",
    )
    .await;
    exec(
        &db.store,
        "INSERT INTO user_groups (username, group_dn) \
         VALUES ('carla', 'cn=personnels-administratifs, ou=groups, dc=example, dc=org')",
    )
    .await;
    login(person("carla"), 6).await;
    assert_eq!(rows("carla").await, base);
}

/// The change log (migration 0015) the publishers read instead of scanning `devices`: one row
/// per change of the peer set, in the change's transaction, and none for what changes nothing
/// (a login rewriting the same user row). The control plane skips the full recomputation for a
/// device it has just published when the log shows that device's `enrolled` row only.
async fn every_change_of_the_peer_set_is_logged_and_nothing_else(db: Db) {
    let s = &db.store;
    let kinds = |since: i64| async move {
        s.peer_changes_since(since, 100)
            .await
            .expect("changes")
            .into_iter()
            .map(|c| (c.kind, c.device_id))
            .collect::<Vec<_>>()
    };
    let before = s.peer_change_seq().await.expect("seq");
    let code = code_for(&db, "alice", "pc").await;
    let e = enrol(&db, &code, &person("alice"), key(1), "100.64.0.0/24")
        .await
        .expect("enrol");
    assert_eq!(
        kinds(before).await,
        [("enrolled".into(), Some(e.device.id))]
    );
    let after = s.peer_change_seq().await.expect("seq");
    // A login: the same user row again, nothing logged; its groups changed: logged.
    s.upsert_user(&person("alice")).await.expect("login");
    assert_eq!(kinds(after).await, []);
    let mut moved = person("alice");
    moved
        .groups
        .push("cn=paie,ou=groups,dc=example,dc=org".into());
    s.upsert_user(&moved).await.expect("sync");
    assert_eq!(kinds(after).await, [("user".into(), None)]);
    // A window opened and closed; a revocation.
    let mark = s.peer_change_seq().await.expect("seq");
    s.mfa_open_window(e.device.id, "alice", "agent", T0 + 60_000)
        .await
        .expect("open");
    assert!(s
        .mfa_close_window(e.device.id, "down")
        .await
        .expect("close"));
    s.revoke_device(e.device.id, "stolen", &it_staff())
        .await
        .expect("revoke");
    assert_eq!(
        kinds(mark).await,
        [
            ("window".into(), Some(e.device.id)),
            ("window".into(), Some(e.device.id)),
            ("device".into(), Some(e.device.id)),
        ]
    );
    // Pruning keeps the rows behind the last one that were asked for.
    let last = s.peer_change_seq().await.expect("seq");
    assert!(s.prune_peer_changes(2).await.expect("prune") >= 3);
    let kept = s.peer_changes_since(0, 100).await.expect("changes");
    assert_eq!(
        kept.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [last - 1, last]
    );
}
