//! Store behaviour on a fresh SQLite file AND a throwaway PostgreSQL cluster: each test is written
//! once and run against both (`<test>::sqlite`, `<test>::postgres`).

// Only the fixtures this file needs (tests/common/<name>.rs), without a shared mod.rs.
mod common {
    pub mod postgres;
}

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use sesame::directory::DirectoryUser;
use sesame::store::{
    AddressPool, AuditContext, AuditFilter, AuditVerification, CodeState, DeviceStatus,
    EnrolRequest, Enrolled, ManualClock, NewAuditEvent, NewCode, NewSession, Outcome, Store,
    StoreError, GENESIS_HASH,
};

/// 2026-01-05 09:00:00 UTC, in unix ms: every test starts there.
const T0: i64 = 1_767_603_600_000;
const HOUR: Duration = Duration::from_secs(3600);
const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const STATIC_PEER_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] common::postgres::PgDatabase),
}

struct Db {
    store: Store,
    clock: Arc<ManualClock>,
    #[allow(dead_code)]
    url: String,
    guard: Guard,
}

async fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/sub/dir/sesame.db", dir.path().display());
    open(url, Guard::Sqlite(dir)).await
}

async fn postgres_db() -> Db {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("start PostgreSQL");
    open(db.url.clone(), Guard::Postgres(db)).await
}

async fn open(url: String, guard: Guard) -> Db {
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

/// Runs `$name(Db)` once on SQLite and once on PostgreSQL.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::sqlite_db().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::postgres_db().await).await
            }
        }
    )*};
}

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
    rotate_key_replaces_key_checks_uniqueness_and_audits,
    revoke_device_and_all_devices_of_a_user,
    users_upsert_and_lookup,
    audit_is_append_only_chained_and_filterable,
    audit_verify_detects_tampering,
    sessions_expire_touch_and_purge,
    failure_late_in_enrolment_rolls_everything_back,
    expired_keys_revoke_their_devices,
);

fn person(name: &str) -> DirectoryUser {
    DirectoryUser {
        username: name.to_string(),
        dn: format!("uid={name},ou=people,dc=example,dc=org"),
        display_name: format!("{name} Dupré"),
        groups: vec!["cn=personnels-administratifs,ou=groups,dc=example,dc=org".into()],
        disabled: false,
    }
}

fn key(n: u8) -> [u8; 32] {
    let mut k = [n; 32];
    k[0] = 0xA0;
    k
}

fn pool(net: &str) -> AddressPool {
    AddressPool {
        network: net.parse().expect("network"),
        reserved: vec![GATEWAY_IP, STATIC_PEER_IP],
    }
}

fn it_staff() -> AuditContext {
    AuditContext::new("admin-dsi", Some("198.18.0.7".into()))
}

async fn code_for(db: &Db, user: &str, device: &str) -> String {
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

async fn enrol(
    db: &Db,
    code: &str,
    user: &DirectoryUser,
    k: [u8; 32],
    net: &str,
) -> Result<Enrolled, StoreError> {
    db.store
        .enrol(
            &EnrolRequest {
                code,
                user,
                public_key: k,
                hostname: "pc-compta-01",
                key_lifetime: Some(180 * 24 * HOUR),
            },
            &pool(net),
            &AuditContext::new(user.username.clone(), Some("198.18.0.20".into())),
        )
        .await
}

/// (devices, users, audit events) currently stored.
async fn counts(db: &Db) -> (usize, usize, usize) {
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
                        hostname: "pc",
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

async fn rotate_key_replaces_key_checks_uniqueness_and_audits(db: Db) {
    let c1 = code_for(&db, "alice", "pc-1").await;
    let c2 = code_for(&db, "bob", "pc-2").await;
    let a = enrol(&db, &c1, &person("alice"), key(1), "100.64.0.0/24")
        .await
        .expect("a");
    let b = enrol(&db, &c2, &person("bob"), key(2), "100.64.0.0/24")
        .await
        .expect("b");
    db.clock.advance(24 * HOUR);
    let ctx = AuditContext::new("alice", None);

    let r = db.store.rotate_key(a.device.id, &key(2), None, &ctx).await;
    assert!(matches!(r, Err(StoreError::PublicKeyInUse)), "{r:?}");
    let r = db.store.rotate_key(a.device.id, &key(1), None, &ctx).await;
    assert!(
        matches!(r, Err(StoreError::PublicKeyInUse)),
        "its own key: {r:?}"
    );
    assert_eq!(
        db.store.device(a.device.id).await.expect("q"),
        Some(a.device.clone())
    );

    let v0 = db.store.devices_version().await.expect("version");
    let rotated = db
        .store
        .rotate_key(a.device.id, &key(3), Some(30 * 24 * HOUR), &ctx)
        .await
        .expect("rotate");
    assert_ne!(db.store.devices_version().await.expect("version"), v0);
    assert_eq!(rotated.public_key, key(3));
    assert_eq!(rotated.rotated_at, Some(T0 + 24 * 3_600_000));
    assert_eq!(rotated.expires_at, Some(T0 + 31 * 24 * 3_600_000));
    assert_eq!(rotated.tunnel_address, a.device.tunnel_address);
    // A rotated-away key is no longer held by any device.
    let r = db.store.rotate_key(b.device.id, &key(1), None, &ctx).await;
    assert!(
        r.is_ok(),
        "old key of a rotated device is no longer held: {r:?}"
    );

    db.store
        .revoke_device(b.device.id, "lost", &it_staff())
        .await
        .expect("revoke");
    let r = db.store.rotate_key(b.device.id, &key(4), None, &ctx).await;
    assert!(
        matches!(r, Err(StoreError::DeviceRevoked(id)) if id == b.device.id),
        "{r:?}"
    );
    let r = db.store.rotate_key(9999, &key(4), None, &ctx).await;
    assert!(matches!(r, Err(StoreError::DeviceNotFound(9999))), "{r:?}");

    let rot = db
        .store
        .list_audit(&AuditFilter {
            action: Some("device.rotated".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(rot.len(), 2);
    assert_eq!(rot[0].target, format!("device:{}", a.device.id));
    assert_eq!(
        rot[0].details["new_public_key"],
        rotated.public_key_base64()
    );
}

async fn revoke_device_and_all_devices_of_a_user(db: Db) {
    let mut alice_devices = Vec::new();
    for i in 0..3u8 {
        let c = code_for(&db, "alice", &format!("pc-{i}")).await;
        alice_devices.push(
            enrol(&db, &c, &person("alice"), key(i + 1), "100.64.0.0/24")
                .await
                .expect("enrol")
                .device,
        );
    }
    let c = code_for(&db, "bob", "pc-bob").await;
    let bob = enrol(&db, &c, &person("bob"), key(10), "100.64.0.0/24")
        .await
        .expect("bob");
    let v0 = db.store.devices_version().await.expect("version");
    assert_eq!(
        db.store.devices_version().await.expect("version"),
        v0,
        "stable"
    );
    assert_eq!(
        db.store.list_devices(Some("ALICE")).await.expect("l").len(),
        3
    );
    assert_eq!(db.store.list_devices(None).await.expect("l").len(), 4);
    let users: Vec<String> = db
        .store
        .users_with_active_devices()
        .await
        .expect("u")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(users, ["alice", "bob"]);

    db.clock.advance(HOUR);
    let revoked = db
        .store
        .revoke_device(alice_devices[0].id, "laptop stolen", &it_staff())
        .await
        .expect("revoke");
    assert_eq!(revoked.status, DeviceStatus::Revoked);
    let v1 = db.store.devices_version().await.expect("version");
    assert_ne!(v1, v0, "a revocation changes the version");
    assert_eq!(revoked.revoked_at, Some(T0 + 3_600_000));
    assert_eq!(revoked.revoke_reason.as_deref(), Some("laptop stolen"));
    let r = db
        .store
        .revoke_device(alice_devices[0].id, "again", &it_staff())
        .await;
    assert!(matches!(r, Err(StoreError::DeviceRevoked(_))), "{r:?}");
    let r = db.store.revoke_device(4242, "x", &it_staff()).await;
    assert!(matches!(r, Err(StoreError::DeviceNotFound(4242))), "{r:?}");

    let active: Vec<i64> = db
        .store
        .active_devices()
        .await
        .expect("active")
        .iter()
        .map(|d| d.device.id)
        .collect();
    assert_eq!(
        active,
        [alice_devices[1].id, alice_devices[2].id, bob.device.id]
    );
    let with_user = &db.store.active_devices().await.expect("active")[2];
    assert_eq!(with_user.user.username, "bob");
    assert_eq!(with_user.user.groups.len(), 1);

    let gone = db
        .store
        .revoke_user_devices("alice", "left vpn_users", &AuditContext::system())
        .await
        .expect("revoke all");
    let gone_ids: Vec<i64> = gone.iter().map(|d| d.id).collect();
    assert_eq!(gone_ids, [alice_devices[1].id, alice_devices[2].id]);
    assert!(gone.iter().all(|d| d.status == DeviceStatus::Revoked));
    assert_eq!(db.store.active_devices().await.expect("a").len(), 1);
    assert_eq!(
        db.store.users_with_active_devices().await.expect("u").len(),
        1
    );
    assert!(db
        .store
        .revoke_user_devices("alice", "again", &AuditContext::system())
        .await
        .expect("noop")
        .is_empty());
    let audit = db
        .store
        .list_audit(&AuditFilter {
            action: Some("device.revoked".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[2].actor, "system");
    assert_eq!(audit[2].details["reason"], "left vpn_users");
}

async fn users_upsert_and_lookup(db: Db) {
    let mut u = person("Claire");
    let stored = db.store.upsert_user(&u).await.expect("insert");
    assert_eq!(stored.username, "claire");
    assert_eq!(stored.last_sync, T0);
    db.clock.advance(HOUR);
    u.groups = vec!["cn=a,dc=x".into(), "cn=b,dc=x".into()];
    u.disabled = true;
    db.store.upsert_user(&u).await.expect("update");
    let got = db.store.user("claire").await.expect("q").expect("exists");
    assert_eq!(got.groups, u.groups);
    assert!(got.disabled);
    assert_eq!(got.last_sync, T0 + 3_600_000);
    assert_eq!(got.dn, "uid=Claire,ou=people,dc=example,dc=org");
    assert_eq!(db.store.user("nobody").await.expect("q"), None);
}

async fn audit_is_append_only_chained_and_filterable(db: Db) {
    let ev = |actor: &str, action: &str, target: &str| NewAuditEvent {
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        outcome: Outcome::Success,
        source_ip: Some("198.18.0.5".into()),
        details: serde_json::json!({"z": 1, "a": ["é", null]}),
    };
    let e1 = db
        .store
        .append_audit(&ev("alice", "auth.login", "alice"))
        .await
        .expect("e1");
    db.clock.advance(HOUR);
    let batch = db
        .store
        .append_audit_batch(&[
            ev("system", "directory.sync", "bob"),
            NewAuditEvent {
                outcome: Outcome::Denied,
                ..ev("bob", "auth.login", "bob")
            },
        ])
        .await
        .expect("batch");
    assert_eq!(e1.id, 1);
    assert_eq!(e1.prev_hash, GENESIS_HASH);
    assert_eq!(batch[0].prev_hash, e1.hash);
    assert_eq!(batch[1].prev_hash, batch[0].hash);
    assert_eq!(batch[1].id, 3);
    assert_eq!(batch[1].ts, T0 + 3_600_000);

    let all = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], e1, "read back exactly as written");
    assert_eq!(all[2].outcome, Outcome::Denied);

    let by_user = db
        .store
        .list_audit(&AuditFilter {
            user: Some("bob".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("by user");
    assert_eq!(by_user.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
    let logins_since = db
        .store
        .list_audit(&AuditFilter {
            action: Some("auth.login".into()),
            since: Some(T0 + 1),
            ..AuditFilter::default()
        })
        .await
        .expect("since");
    assert_eq!(logins_since.iter().map(|e| e.id).collect::<Vec<_>>(), [3]);
    let until = db
        .store
        .list_audit(&AuditFilter {
            until: Some(T0 + 1),
            ..AuditFilter::default()
        })
        .await
        .expect("until");
    assert_eq!(until.iter().map(|e| e.id).collect::<Vec<_>>(), [1]);
    let page = db
        .store
        .list_audit(&AuditFilter {
            after_id: Some(1),
            limit: Some(1),
            ..AuditFilter::default()
        })
        .await
        .expect("page");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);

    let upd = sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE id = 1")
        .execute(db.store.pool())
        .await
        .expect_err("UPDATE refused");
    assert!(
        matches!(StoreError::from(upd), StoreError::AuditAppendOnly),
        "UPDATE maps to AuditAppendOnly"
    );
    let del = sqlx::query("DELETE FROM audit_events WHERE id = 3")
        .execute(db.store.pool())
        .await
        .expect_err("DELETE refused");
    assert!(matches!(StoreError::from(del), StoreError::AuditAppendOnly));
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact { events: 3 }
    );
}

async fn audit_verify_detects_tampering(db: Db) {
    for i in 0..3 {
        db.store
            .append_audit(&NewAuditEvent {
                actor: "system".into(),
                action: "config.reloaded".into(),
                target: format!("n{i}"),
                outcome: Outcome::Success,
                source_ip: None,
                details: serde_json::Value::Null,
            })
            .await
            .expect("append");
    }
    // Only a database superuser who removes the protection can change a row; verify sees it.
    match &db.guard {
        Guard::Sqlite(_) => {
            sqlx::query("DROP TRIGGER audit_events_no_update")
                .execute(db.store.pool())
                .await
                .expect("drop trigger");
        }
        Guard::Postgres(pg) => {
            let out = pg.cluster().psql(
                &pg.name,
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete",
            );
            assert!(out.status.success(), "{out:?}");
        }
    }
    sqlx::query("UPDATE audit_events SET target = 'forged' WHERE id = 2")
        .execute(db.store.pool())
        .await
        .expect("tamper");
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Broken {
            id: 2,
            reason: "hash does not match the event's content".into()
        }
    );
}

async fn sessions_expire_touch_and_purge(db: Db) {
    let (token, s) = db
        .store
        .create_session(&NewSession {
            username: "Alice".into(),
            roles: vec!["it_staff".into()],
            ttl: HOUR,
        })
        .await
        .expect("create");
    assert_eq!(s.username, "alice");
    assert_ne!(s.id_hash, token);
    assert_eq!(
        db.store.session(&token).await.expect("get"),
        Some(s.clone())
    );
    assert_eq!(db.store.session("forged").await.expect("get"), None);

    db.clock.advance(HOUR / 2);
    assert!(db
        .store
        .touch_session(&token, Some(HOUR))
        .await
        .expect("touch"));
    let t = db.store.session(&token).await.expect("get").expect("live");
    assert_eq!(t.last_seen, T0 + 1_800_000);
    assert_eq!(t.expires_at, T0 + 1_800_000 + 3_600_000);

    let (other, _) = db
        .store
        .create_session(&NewSession {
            username: "bob".into(),
            roles: vec![],
            ttl: HOUR / 4,
        })
        .await
        .expect("create");
    db.clock.advance(HOUR / 2);
    assert_eq!(
        db.store.session(&other).await.expect("get"),
        None,
        "expired"
    );
    assert!(!db.store.touch_session(&other, Some(HOUR)).await.expect("t"));
    assert!(db.store.session(&token).await.expect("get").is_some());
    assert_eq!(db.store.purge_expired_sessions().await.expect("purge"), 1);
    assert!(db.store.delete_session(&token).await.expect("delete"));
    assert!(!db.store.delete_session(&token).await.expect("delete"));
    assert_eq!(db.store.session(&token).await.expect("get"), None);
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
        sqlx::raw_sql(sql)
            .execute(db.store.pool())
            .await
            .expect("inject");
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

async fn expired_keys_revoke_their_devices(db: Db) {
    let c1 = code_for(&db, "alice", "pc-1").await;
    let c2 = code_for(&db, "bob", "pc-2").await;
    let a = enrol(&db, &c1, &person("alice"), key(1), "100.64.0.0/24")
        .await
        .expect("a");
    db.clock.advance(HOUR);
    let b = enrol(&db, &c2, &person("bob"), key(2), "100.64.0.0/24")
        .await
        .expect("b");
    // Both keys live 180 days; alice's expires one hour before bob's.
    db.clock
        .advance(180 * 24 * HOUR - HOUR - Duration::from_millis(1));
    assert!(db
        .store
        .expire_devices()
        .await
        .expect("none yet")
        .is_empty());
    db.clock.advance(Duration::from_millis(1));
    let gone = db.store.expire_devices().await.expect("expire");
    assert_eq!(gone.iter().map(|d| d.id).collect::<Vec<_>>(), [a.device.id]);
    assert_eq!(gone[0].revoke_reason.as_deref(), Some("key expired"));
    assert_eq!(
        db.store
            .device(b.device.id)
            .await
            .expect("q")
            .expect("b")
            .status,
        DeviceStatus::Active
    );
    let audit = db
        .store
        .list_audit(&AuditFilter {
            action: Some("device.expired".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "system");
    assert_eq!(audit[0].target, format!("device:{}", a.device.id));
}

// ---- backend-specific behaviour ----

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/sesame.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await.expect("connect");
    assert!(path.exists(), "file and parent directories created");
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
