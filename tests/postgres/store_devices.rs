//! Devices (rotation, revocation, key expiry) and users, on SQLite AND PostgreSQL.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;

use std::time::Duration;

use common::store_db::*;
use sesame::audit::AuditContext;
use sesame::store::{DeviceStatus, Rotation, StoreError};

both_backends!(
    rotate_key_replaces_key_checks_uniqueness_and_audits,
    revoke_device_and_all_devices_of_a_user,
    expired_keys_revoke_their_devices,
    users_upsert_and_lookup,
);

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

    let r = db
        .store
        .rotate_key(a.device.id, &key(2), &Rotation::default(), &ctx)
        .await;
    assert!(matches!(r, Err(StoreError::PublicKeyInUse)), "{r:?}");
    let r = db
        .store
        .rotate_key(a.device.id, &key(1), &Rotation::default(), &ctx)
        .await;
    assert!(
        matches!(r, Err(StoreError::PublicKeyInUse)),
        "its own key: {r:?}"
    );
    assert_eq!(
        db.store.device(a.device.id).await.expect("q"),
        Some(a.device.clone())
    );

    let v0 = db.store.peer_change_seq().await.expect("seq");
    let lifetime = Rotation {
        key_lifetime: Some(30 * 24 * HOUR),
        ..Rotation::default()
    };
    let (rotated, token) = db
        .store
        .rotate_key(a.device.id, &key(3), &lifetime, &ctx)
        .await
        .expect("rotate");
    // A new token; the enrolment's one is dead.
    assert_ne!(token, a.token);
    assert!(db
        .store
        .device_by_token(&a.token)
        .await
        .expect("q")
        .is_none());
    assert_eq!(
        db.store
            .device_by_token(&token)
            .await
            .expect("q")
            .map(|d| d.id),
        Some(a.device.id)
    );
    assert!(db.store.peer_change_seq().await.expect("seq") > v0);
    assert_eq!(rotated.public_key, key(3));
    assert_eq!(rotated.rotated_at, Some(T0 + 24 * 3_600_000));
    assert_eq!(rotated.expires_at, Some(T0 + 31 * 24 * 3_600_000));
    assert_eq!(rotated.tunnel_address, a.device.tunnel_address);
    // A rotated-away key is no longer held by any device.
    let r = db
        .store
        .rotate_key(b.device.id, &key(1), &Rotation::default(), &ctx)
        .await;
    assert!(
        r.is_ok(),
        "old key of a rotated device is no longer held: {r:?}"
    );

    db.store
        .revoke_device(b.device.id, "lost", &it_staff())
        .await
        .expect("revoke");
    let r = db
        .store
        .rotate_key(b.device.id, &key(4), &Rotation::default(), &ctx)
        .await;
    assert!(
        matches!(r, Err(StoreError::DeviceRevoked(id)) if id == b.device.id),
        "{r:?}"
    );
    let r = db
        .store
        .rotate_key(9999, &key(4), &Rotation::default(), &ctx)
        .await;
    assert!(matches!(r, Err(StoreError::DeviceNotFound(9999))), "{r:?}");

    let rot = audit_of(&db.store, "device.rotated").await;
    assert_eq!(rot.len(), 2);
    assert_eq!(rot[0].target, format!("device:{}", a.device.id));
    assert_eq!(
        rot[0].details["new_public_key"],
        rotated.public_key_base64()
    );

    // Rotations are spaced: a second one within the interval is refused, nothing changed.
    let spaced = Rotation {
        key_lifetime: Some(30 * 24 * HOUR),
        max_lifetime: Some(60 * 24 * HOUR),
        min_interval: Duration::from_secs(600),
    };
    let r = db
        .store
        .rotate_key(a.device.id, &key(5), &spaced, &ctx)
        .await;
    assert!(
        matches!(
            r,
            Err(StoreError::RotationTooSoon {
                retry_after_secs: 600
            })
        ),
        "{r:?}"
    );
    // Enrolled on day 0, max lifetime 60 days: a rotation on day 40 expires on day 60, not 70...
    db.clock.advance(39 * 24 * HOUR);
    let (d, _) = db
        .store
        .rotate_key(a.device.id, &key(5), &spaced, &ctx)
        .await
        .expect("rotate on day 40");
    assert_eq!(
        d.expires_at,
        Some(a.device.created_at + 60 * 24 * 3_600_000)
    );
    // ...and past day 60 no rotation extends it: enrol again.
    db.clock.advance(21 * 24 * HOUR);
    let r = db
        .store
        .rotate_key(a.device.id, &key(6), &spaced, &ctx)
        .await;
    assert!(
        matches!(r, Err(StoreError::DeviceTooOld(id)) if id == a.device.id),
        "{r:?}"
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
    let v0 = db.store.peer_change_seq().await.expect("seq");
    assert_eq!(db.store.peer_change_seq().await.expect("seq"), v0, "stable");
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
    let v1 = db.store.peer_change_seq().await.expect("seq");
    assert!(v1 > v0, "a revocation is logged");
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
    let audit = audit_of(&db.store, "device.revoked").await;
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[2].actor, "system");
    assert_eq!(audit[2].details["reason"], "left vpn_users");
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
    let audit = audit_of(&db.store, "device.expired").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "system");
    assert_eq!(audit[0].target, format!("device:{}", a.device.id));
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
