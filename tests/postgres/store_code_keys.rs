//! Codes stored as keyed hashes (migration 0013) on SQLite AND PostgreSQL: enrolment and
//! second-factor registration codes are HMAC-SHA256 under the portal key, so the database alone
//! does not reveal which code a row holds; codes stored before the key (plain SHA-256) still
//! redeem until they expire.
#![allow(clippy::unwrap_used)]

use crate::both_backends;
use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::store_db::*;
use sesame::audit::AuditContext;
use sesame::store::{
    hash_secret, normalize_code, CodeKey, EnrolRequest, Enrolled, NewCode, Store, StoreError,
};

both_backends!(
    a_stored_code_hash_is_keyed_and_follows_the_key,
    codes_stored_before_the_key_still_redeem_until_they_expire,
);

fn keyed(db: &Db, byte: u8) -> Store {
    db.store
        .clone()
        .with_code_key(Arc::new(CodeKey::from_bytes([byte; 32])))
}

/// `(code_hash, hash_kind)` of every row of `table`.
async fn rows(db: &Db, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(&format!(
        "SELECT code_hash, hash_kind FROM {table} ORDER BY created_at, code_hash"
    ))
    .fetch_all(db.store.pool())
    .await
    .unwrap()
}

async fn redeem(store: &Store, code: &str, user: &str, n: u8) -> Result<Enrolled, StoreError> {
    store
        .enrol(
            &EnrolRequest {
                code,
                user: &person(user),
                public_key: key(n),
                hostname: &"pc-compta-01".parse().unwrap(),
                key_lifetime: None,
            },
            &pool("100.64.0.0/24"),
            &AuditContext::new(user, None),
        )
        .await
}

async fn create(store: &Store, user: &str) -> String {
    store
        .create_code(
            &NewCode {
                username: user.into(),
                device_name: "pc".into(),
                ttl: 72 * HOUR,
            },
            &it_staff(),
        )
        .await
        .unwrap()
        .code
}

async fn a_stored_code_hash_is_keyed_and_follows_the_key(db: Db) {
    let (a, b) = (keyed(&db, 1), keyed(&db, 2));
    let code = create(&a, "alice").await;
    let plain = hash_secret(&normalize_code(&code).unwrap());
    let stored = rows(&db, "enrolment_codes").await;
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].0, plain, "not SHA-256 of the code");
    assert_eq!(stored[0].1, "hmac-sha256");
    assert_eq!(stored[0].0.len(), 64);
    // Found with its key only: neither another key nor no key finds it.
    assert!(a.code(&code).await.unwrap().is_some());
    assert!(b.code(&code).await.unwrap().is_none());
    assert!(db.store.code(&code).await.unwrap().is_none());
    // Nor does an enrolment through a portal holding another key.
    let e = redeem(&b, &code, "alice", 1).await.unwrap_err();
    assert!(matches!(e, StoreError::CodeNotFound), "{e}");

    // The same code under another key is another hash: the hash changes with the key.
    let other = create(&b, "bob").await;
    let stored = rows(&db, "enrolment_codes").await;
    assert_eq!(stored.len(), 2);
    assert_ne!(stored[0].0, stored[1].0);
    assert!(a.code(&other).await.unwrap().is_none());

    // Second-factor registration codes too.
    let reg = a
        .mfa_issue_registration_code("carol", Duration::from_secs(3600))
        .await
        .unwrap();
    let regs: Vec<(String, String)> =
        sqlx::query_as("SELECT code_hash, hash_kind FROM mfa_registration_codes")
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    assert_eq!(regs.len(), 1);
    assert_ne!(regs[0].0, hash_secret(&normalize_code(&reg).unwrap()));
    assert_eq!(regs[0].1, "hmac-sha256");
    assert!(a.mfa_registration_code_usable("carol", &reg).await.unwrap());
    assert!(!b.mfa_registration_code_usable("carol", &reg).await.unwrap());
    a.mfa_begin_registration("carol", "totp", "sealed")
        .await
        .unwrap();
    let e = b
        .mfa_confirm("carol", Some(&reg), 10, &[])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::MfaRegistrationCode), "{e}");
    a.mfa_confirm("carol", Some(&reg), 10, &[]).await.unwrap();
}

async fn codes_stored_before_the_key_still_redeem_until_they_expire(db: Db) {
    // Rows as migration 0013 leaves the codes issued before it: plain SHA-256, hash_kind by
    // default (the column is not written).
    let (fresh, stale, reg) = ("ABCD-EFGH-JKMN", "PQRS-TUVW-XYZ2", "2345-6789-ABCD");
    for (code, user, ttl) in [(fresh, "alice", 72 * HOUR), (stale, "bob", HOUR)] {
        sqlx::query(
            "INSERT INTO enrolment_codes (code_hash, username, device_name, created_by, \
             created_at, expires_at) VALUES ($1, $2, 'pc', 'admin-dsi', $3, $4)",
        )
        .bind(hash_secret(&normalize_code(code).unwrap()))
        .bind(user)
        .bind(T0)
        .bind(T0 + i64::try_from(ttl.as_millis()).unwrap())
        .execute(db.store.pool())
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO mfa_registration_codes (code_hash, username, created_at, expires_at) \
         VALUES ($1, 'carol', $2, $3)",
    )
    .bind(hash_secret(&normalize_code(reg).unwrap()))
    .bind(T0)
    .bind(T0 + 72 * 3_600_000)
    .execute(db.store.pool())
    .await
    .unwrap();
    assert!(rows(&db, "enrolment_codes")
        .await
        .iter()
        .all(|(_, kind)| kind == "sha256"));

    // The server now has its key: the old codes still work, keyed or not.
    db.clock.advance(2 * HOUR);
    let a = keyed(&db, 1);
    let e = redeem(&a, fresh, "alice", 1).await.unwrap();
    assert_eq!(e.device.username, "alice");
    let e = redeem(&a, stale, "bob", 2).await.unwrap_err();
    assert!(matches!(e, StoreError::CodeExpired), "expired: {e}");
    let e = redeem(&a, fresh, "alice", 3).await.unwrap_err();
    assert!(matches!(e, StoreError::CodeAlreadyUsed), "once: {e}");
    assert!(a.mfa_registration_code_usable("carol", reg).await.unwrap());
    a.mfa_begin_registration("carol", "totp", "sealed")
        .await
        .unwrap();
    a.mfa_confirm("carol", Some(reg), 10, &[]).await.unwrap();
    assert!(!a.mfa_registration_code_usable("carol", reg).await.unwrap());
}
