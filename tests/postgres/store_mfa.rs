//! The second factor's tables (migration 0011) on SQLite AND PostgreSQL: factors and their
//! steps, recovery and registration codes, access windows and `Store::open_windows`.
#![allow(clippy::too_many_lines, clippy::unwrap_used)]

use crate::both_backends;
use crate::common;

use std::time::Duration;

use common::store_db::*;
use sesame::store::{OpenWindow, StoreError};

both_backends!(
    factor_codes_and_windows,
    concurrent_steps_are_accepted_once_across_portals
);

async fn factor_codes_and_windows(db: Db) {
    let s = &db.store;
    // Registration: a code from IT, spent by the confirmation with the first step.
    let code = s
        .mfa_issue_registration_code("Alice", Duration::from_secs(3600))
        .await
        .expect("issue");
    assert!(s
        .mfa_registration_code_usable("alice", &code)
        .await
        .expect("q"));
    assert!(!s
        .mfa_registration_code_usable("bob", &code)
        .await
        .expect("q"));
    s.mfa_begin_registration("alice", "totp", "sealed")
        .await
        .expect("begin");
    assert!(!s.mfa_accept_step("alice", 10).await.expect("q"), "pending");
    let e = s
        .mfa_confirm("bob", Some(&code), 10, &[])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::MfaRegistrationCode), "{e}");
    s.mfa_confirm(
        "alice",
        Some(&code),
        10,
        &["h1".to_string(), "h2".to_string()],
    )
    .await
    .expect("confirm");
    let e = s
        .mfa_confirm("alice", Some(&code), 11, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::MfaRegistrationCode),
        "used once: {e}"
    );
    let f = s.mfa_factor("alice").await.expect("q").expect("factor");
    assert!(f.is_registered());
    assert_eq!(
        (f.kind.as_str(), f.last_step, f.registered_at),
        ("totp", Some(10), Some(T0))
    );
    assert_eq!(s.mfa_factors().await.expect("q").len(), 1);
    // Steps once, later only; recovery codes once.
    assert!(!s.mfa_accept_step("alice", 10).await.expect("q"));
    assert!(s.mfa_accept_step("alice", 11).await.expect("q"));
    assert!(!s.mfa_accept_step("alice", 11).await.expect("q"));
    assert!(s.mfa_use_recovery_code("alice", "h2").await.expect("q"));
    assert!(!s.mfa_use_recovery_code("alice", "h2").await.expect("q"));
    s.mfa_record_use("carol", "radius")
        .await
        .expect("radius use");
    assert_eq!(
        s.mfa_factor("carol")
            .await
            .expect("q")
            .expect("row")
            .last_used_at,
        Some(T0)
    );

    // Windows of enrolled devices.
    let a = enrol(
        &db,
        &code_for(&db, "alice", "pc-1").await,
        &person("alice"),
        key(1),
        "100.64.0.0/24",
    )
    .await
    .expect("a");
    let b = enrol(
        &db,
        &code_for(&db, "alice", "pc-2").await,
        &person("alice"),
        key(2),
        "100.64.0.0/24",
    )
    .await
    .expect("b");
    let (ia, ib) = (a.device.id, b.device.id);
    s.mfa_open_window(ia, "alice", "agent", T0 + 60_000)
        .await
        .expect("open");
    s.mfa_open_window(ib, "alice", "web", T0 + 120_000)
        .await
        .expect("open");
    assert_eq!(
        s.open_windows().await.expect("q"),
        vec![
            OpenWindow {
                device_id: ia,
                until_ms: T0 + 60_000,
                last_activity_ms: T0
            },
            OpenWindow {
                device_id: ib,
                until_ms: T0 + 120_000,
                last_activity_ms: T0
            },
        ]
    );
    assert_eq!(
        s.mfa_close_user_windows("alice", Some("web"), "logout")
            .await
            .expect("q"),
        vec![ib]
    );
    assert!(
        s.mfa_close_user_windows("alice", None, "reset")
            .await
            .expect("q")
            == vec![ia]
    );
    assert_eq!(s.open_windows().await.expect("q"), vec![]);
    s.mfa_open_window(ia, "alice", "agent", T0 + 60_000)
        .await
        .expect("reopen");
    db.clock.advance(Duration::from_secs(61));
    assert_eq!(s.open_windows().await.expect("q"), vec![], "expired");
    assert!(
        !s.mfa_close_window(ia, "down").await.expect("q"),
        "an ended window is not closed by `down`"
    );
    assert!(
        !s.mfa_gateway_closed_window(ia, T0 + 59_000, "expired")
            .await
            .expect("q"),
        "a report of another window"
    );
    assert!(
        s.mfa_gateway_closed_window(ia, T0 + 60_000, "expired")
            .await
            .expect("q"),
        "the gateway's report"
    );
    assert!(
        !s.mfa_gateway_closed_window(ia, T0 + 60_000, "expired")
            .await
            .expect("q"),
        "reported twice: closed once"
    );
    assert_eq!(
        s.mfa_window(ia)
            .await
            .expect("q")
            .expect("row")
            .close_reason
            .as_deref(),
        Some("expired")
    );
    // The reset removes the factor and its recovery codes.
    assert!(s.mfa_remove_factor("alice").await.expect("q"));
    assert!(!s.mfa_use_recovery_code("alice", "h1").await.expect("q"));
    assert_eq!(s.mfa_factor("alice").await.expect("q"), None);
}

/// Many logins and unlocks at once, from two handles on the same database (two portals, each
/// with its own group committer, so their batches spend several users' steps in one
/// statement): each user's step is accepted once, and a later step after it.
async fn concurrent_steps_are_accepted_once_across_portals(db: Db) {
    let users: Vec<String> = (0..20).map(|i| format!("user{i:02}")).collect();
    for u in &users {
        db.store
            .mfa_begin_registration(u, "totp", "sealed")
            .await
            .expect("begin");
        db.store
            .mfa_confirm(u, None, 10, &[])
            .await
            .expect("confirm");
    }
    let other = sesame::store::Store::connect(&db.url)
        .await
        .expect("a second portal")
        .with_clock(db.clock.clone());
    let stores = [db.store.clone(), other];
    // Every user's steps 10 (spent by the confirmation), 11 four times and 12 twice, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for u in &users {
        for (k, step) in [10, 11, 11, 11, 11, 12, 12].into_iter().enumerate() {
            let (s, u) = (stores[k % 2].clone(), u.clone());
            tasks.spawn(async move { (u.clone(), step, s.mfa_accept_step(&u, step).await) });
        }
    }
    let mut accepted: std::collections::BTreeMap<(String, i64), usize> = Default::default();
    while let Some(r) = tasks.join_next().await {
        let (u, step, verdict) = r.expect("task");
        if verdict.expect("accept") {
            *accepted.entry((u, step)).or_default() += 1;
        }
    }
    for u in &users {
        let got = |step| accepted.get(&(u.clone(), step)).copied().unwrap_or(0);
        assert_eq!(got(10), 0, "{u}: the confirming step");
        assert!(got(11) <= 1 && got(12) == 1, "{u}: {accepted:?}");
        let f = db.store.mfa_factor(u).await.expect("q").expect("factor");
        assert_eq!(f.last_step, Some(12), "{u}");
    }
}
