#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::time::ManualClock;

const T0: i64 = 1_800_000_000_000;

async fn store() -> (tempfile::TempDir, Store, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_clock(clock.clone());
    (dir, store, clock)
}

/// A device row of `user` (windows reference devices).
async fn device(store: &Store, user: &str, id: i64) {
    sqlx::query(
        "INSERT INTO users (username, dn, display_name, last_sync) VALUES ($1, $2, $1, 0) \
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(user)
    .bind(format!("uid={user},dc=test"))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (id, username, name, hostname, public_key, tunnel_address, \
         token_hash, created_at) VALUES ($1, $2, 'pc', 'pc', $3, $4, $5, 0)",
    )
    .bind(id)
    .bind(user)
    .bind(format!("key{id}"))
    .bind(format!("100.64.0.{id}"))
    .bind(format!("token{id}"))
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn registration_codes_work_once_for_their_user_until_they_expire() {
    let (_dir, store, clock) = store().await;
    let code = store
        .mfa_issue_registration_code("Alice", Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(store
        .mfa_registration_code_usable("alice", &code)
        .await
        .unwrap());
    assert!(!store
        .mfa_registration_code_usable("bob", &code)
        .await
        .unwrap());
    store
        .mfa_begin_registration("alice", "totp", "sealed")
        .await
        .unwrap();
    let err = store
        .mfa_confirm("bob", Some(&code), 1, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MfaRegistrationCode), "{err}");
    store
        .mfa_confirm(
            "alice",
            Some(&code.to_lowercase()),
            1,
            &["h1".into(), "h2".into()],
        )
        .await
        .unwrap();
    let f = store.mfa_factor("ALICE").await.unwrap().unwrap();
    assert!(f.is_registered());
    assert_eq!(f.secret_enc.as_deref(), Some("sealed"));
    assert_eq!(f.pending_secret_enc, None);
    assert_eq!(f.last_step, Some(1));
    assert!(!store
        .mfa_registration_code_usable("alice", &code)
        .await
        .unwrap());
    store
        .mfa_begin_registration("alice", "totp", "other")
        .await
        .unwrap();
    let err = store
        .mfa_confirm("alice", Some(&code), 2, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MfaRegistrationCode),
        "used once: {err}"
    );
    // A new code replaces the unused one; it expires.
    let first = store
        .mfa_issue_registration_code("alice", Duration::from_secs(60))
        .await
        .unwrap();
    let second = store
        .mfa_issue_registration_code("alice", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!store
        .mfa_registration_code_usable("alice", &first)
        .await
        .unwrap());
    clock.advance(Duration::from_secs(61));
    assert!(!store
        .mfa_registration_code_usable("alice", &second)
        .await
        .unwrap());
}

#[tokio::test]
async fn confirming_needs_a_pending_registration_and_steps_are_spent_once() {
    let (_dir, store, _clock) = store().await;
    let err = store.mfa_confirm("alice", None, 1, &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::MfaNotPending), "{err}");
    store
        .mfa_begin_registration("alice", "totp", "s")
        .await
        .unwrap();
    assert!(
        !store.mfa_accept_step("alice", 5).await.unwrap(),
        "pending is no factor"
    );
    store
        .mfa_confirm("alice", None, 5, &["r1".into()])
        .await
        .unwrap();
    assert!(
        !store.mfa_accept_step("alice", 5).await.unwrap(),
        "the confirming step"
    );
    assert!(!store.mfa_accept_step("alice", 4).await.unwrap());
    assert!(store.mfa_accept_step("alice", 6).await.unwrap());
    assert!(!store.mfa_accept_step("alice", 6).await.unwrap());
    assert!(store.mfa_use_recovery_code("alice", "r1").await.unwrap());
    assert!(!store.mfa_use_recovery_code("alice", "r1").await.unwrap());
    assert!(store.mfa_remove_factor("alice").await.unwrap());
    assert_eq!(store.mfa_factor("alice").await.unwrap(), None);
    assert!(!store.mfa_remove_factor("alice").await.unwrap());
}

/// `user`'s TOTP factor, registered and confirmed at `step`.
async fn confirmed(store: &Store, user: &str, step: i64) {
    store
        .mfa_begin_registration(user, "totp", "s")
        .await
        .unwrap();
    store.mfa_confirm(user, None, step, &[]).await.unwrap();
}

#[tokio::test]
async fn an_unlock_spends_its_step_with_the_window_or_writes_nothing() {
    let (_dir, store, _clock) = store().await;
    confirmed(&store, "alice", 5).await;
    for id in [1, 2] {
        device(&store, "alice", id).await;
    }
    let ctx = crate::audit::AuditContext::new("alice", None);
    let opening = |device_id: i64, step: i64| WindowOpening {
        device_id,
        username: "Alice".into(),
        source: "agent".into(),
        expires_at: T0 + 60_000,
        step: Some(step),
        audit: vec![crate::audit::NewAuditEvent::new(
            crate::audit::Action::MfaWindowOpened,
            &ctx,
            "device",
        )],
    };
    assert!(store.mfa_unlock(opening(1, 6)).await.unwrap());
    let open = store.open_windows().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].device_id, open[0].until_ms), (1, T0 + 60_000));
    let events = store.list_audit(&Default::default()).await.unwrap().len();
    assert_eq!(events, 1);
    // Step 6 again, or an older one, for another device: no window, no event, no step spent.
    assert!(!store.mfa_unlock(opening(2, 6)).await.unwrap());
    assert!(!store.mfa_unlock(opening(2, 5)).await.unwrap());
    assert_eq!(store.open_windows().await.unwrap().len(), 1);
    assert_eq!(
        store.list_audit(&Default::default()).await.unwrap().len(),
        events
    );
    assert_eq!(
        store.mfa_factor("alice").await.unwrap().unwrap().last_step,
        Some(6)
    );
}

#[tokio::test]
async fn a_login_spends_its_step_with_the_session_or_writes_nothing() {
    let (_dir, store, _clock) = store().await;
    confirmed(&store, "alice", 5).await;
    let user = crate::directory::DirectoryUser {
        username: "Alice".into(),
        dn: "uid=alice,dc=test".into(),
        display_name: "Alice".into(),
        groups: vec![],
        disabled: false,
    };
    let session = crate::store::NewSession {
        username: "alice".into(),
        roles: vec!["it_staff".into()],
        ttl: Duration::from_secs(60),
    };
    let event = |what: &str| {
        let ctx = crate::audit::AuditContext::new("alice", None);
        crate::audit::NewAuditEvent::new(crate::audit::Action::AuthLogin, &ctx, what)
    };
    let (id, _) = store
        .record_login_with(&user, &session, vec![event("first")], Some(6))
        .await
        .unwrap()
        .expect("step 6 was never spent");
    assert!(store.session(&id).await.unwrap().is_some());
    assert_eq!(
        store.mfa_factor("alice").await.unwrap().unwrap().last_step,
        Some(6)
    );
    // The same step again (a replay racing the first login): nothing of this login is written.
    let events = store.list_audit(&Default::default()).await.unwrap().len();
    assert!(store
        .record_login_with(&user, &session, vec![event("second")], Some(6))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.list_audit(&Default::default()).await.unwrap().len(),
        events
    );
    assert!(!store.mfa_accept_step("alice", 6).await.unwrap());
}

#[tokio::test]
async fn open_windows_lists_devices_until_they_expire_or_close() {
    let (_dir, store, clock) = store().await;
    for (id, user) in [(1, "alice"), (2, "alice"), (3, "bob")] {
        device(&store, user, id).await;
    }
    assert_eq!(store.open_windows().await.unwrap(), vec![]);
    store
        .mfa_open_window(1, "alice", "agent", T0 + 10_000)
        .await
        .unwrap();
    store
        .mfa_open_window(2, "alice", "web", T0 + 20_000)
        .await
        .unwrap();
    store
        .mfa_open_window(3, "bob", "web", T0 + 5_000)
        .await
        .unwrap();
    let open = store.open_windows().await.unwrap();
    assert_eq!(
        open,
        vec![
            OpenWindow {
                device_id: 1,
                until_ms: T0 + 10_000,
                last_activity_ms: T0
            },
            OpenWindow {
                device_id: 2,
                until_ms: T0 + 20_000,
                last_activity_ms: T0
            },
            OpenWindow {
                device_id: 3,
                until_ms: T0 + 5_000,
                last_activity_ms: T0
            },
        ]
    );
    // Web logout closes the web windows of that user only.
    assert_eq!(
        store
            .mfa_close_user_windows("alice", Some("web"), "logout")
            .await
            .unwrap(),
        vec![2]
    );
    let w = store.mfa_window(2).await.unwrap().unwrap();
    assert_eq!(w.close_reason.as_deref(), Some("logout"));
    assert!(!w.is_open(T0));
    clock.advance(Duration::from_secs(6));
    let ids: Vec<i64> = store
        .open_windows()
        .await
        .unwrap()
        .iter()
        .map(|w| w.device_id)
        .collect();
    assert_eq!(ids, vec![1], "bob's expired");
    assert!(store.mfa_close_window(1, "down").await.unwrap());
    assert!(!store.mfa_close_window(1, "down").await.unwrap());
    assert_eq!(store.open_windows().await.unwrap(), vec![]);
    // Reopening replaces the row.
    store
        .mfa_open_window(1, "alice", "agent", T0 + 60_000)
        .await
        .unwrap();
    assert!(store
        .mfa_window(1)
        .await
        .unwrap()
        .unwrap()
        .is_open(store.now_ms()));
}

#[tokio::test]
async fn a_batch_of_steps_gets_the_verdicts_of_its_steps_one_after_the_other() {
    let (_dir, store, _clock) = store().await;
    confirmed(&store, "alice", 5).await;
    confirmed(&store, "bob", 5).await;
    store
        .mfa_begin_registration("carol", "totp", "s")
        .await
        .unwrap();
    let step = |who: &str, s: i64| Some((who.to_string(), s));
    let steps = [
        step("alice", 6),
        step("bob", 5),
        step("alice", 7),
        step("carol", 6),
        None,
        step("alice", 7),
        step("bob", 6),
        step("dave", 1),
    ];
    let mut tx = store.write_tx().await.unwrap();
    let verdicts = accept_steps(&mut tx, &steps, T0).await.unwrap();
    tx.commit().await.unwrap();
    // bob's 5 was the confirming step, alice's second 7 a replay within the batch, carol's
    // factor only pending, dave without one.
    assert_eq!(
        verdicts,
        [true, false, true, false, false, false, true, false]
    );
    let last = |f: Option<Factor>| f.and_then(|f| f.last_step.zip(f.last_used_at));
    assert_eq!(
        last(store.mfa_factor("alice").await.unwrap()),
        Some((7, T0))
    );
    assert_eq!(last(store.mfa_factor("bob").await.unwrap()), Some((6, T0)));
    assert_eq!(
        store.mfa_factor("carol").await.unwrap().unwrap().last_step,
        None
    );
}

#[tokio::test]
async fn windows_written_together_keep_each_devices_last_one() {
    let (_dir, store, _clock) = store().await;
    for id in [1, 2] {
        device(&store, "alice", id).await;
    }
    let opening = |device_id: i64, expires_at: i64| WindowOpening {
        device_id,
        username: "Alice".into(),
        source: "agent".into(),
        expires_at,
        step: None,
        audit: Vec::new(),
    };
    store
        .mfa_open_window(1, "alice", "web", T0 + 5_000)
        .await
        .unwrap();
    assert!(store.mfa_close_window(1, "down").await.unwrap());
    let (a, b, c) = (
        opening(1, T0 + 10_000),
        opening(2, T0 + 20_000),
        opening(1, T0 + 30_000),
    );
    let mut tx = store.write_tx().await.unwrap();
    write_windows(&mut tx, &[&a, &b, &c], T0).await.unwrap();
    tx.commit().await.unwrap();
    let mut open = store.open_windows().await.unwrap();
    open.sort_by_key(|w| w.device_id);
    let ends: Vec<(i64, i64)> = open.iter().map(|w| (w.device_id, w.until_ms)).collect();
    assert_eq!(ends, [(1, T0 + 30_000), (2, T0 + 20_000)]);
    let w = store.mfa_window(1).await.unwrap().unwrap();
    assert_eq!(
        (w.source.as_str(), w.closed_at, w.username.as_str()),
        ("agent", None, "alice")
    );
}

#[tokio::test]
async fn a_device_token_reads_the_device_with_its_owners_factor() {
    let (_dir, store, _clock) = store().await;
    device(&store, "alice", 1).await;
    device(&store, "bob", 2).await;
    for (id, token) in [(1, "tok-a"), (2, "tok-b")] {
        let key = crate::key::PublicKey::from_bytes([id as u8; 32]).unwrap();
        sqlx::query("UPDATE devices SET token_hash = $1, public_key = $2 WHERE id = $3")
            .bind(crate::store::hash_secret(token))
            .bind(key.to_base64())
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
    }
    confirmed(&store, "alice", 5).await;
    let (d, f) = store.mfa_device_by_token("tok-a").await.unwrap().unwrap();
    assert_eq!((d.id, d.username.as_str()), (1, "alice"));
    assert_eq!(f, store.mfa_factor("alice").await.unwrap());
    assert_eq!(f.unwrap().last_step, Some(5));
    let (d, f) = store.mfa_device_by_token("tok-b").await.unwrap().unwrap();
    assert_eq!((d.id, f), (2, None));
    assert!(store.mfa_device_by_token("tok-c").await.unwrap().is_none());
}
