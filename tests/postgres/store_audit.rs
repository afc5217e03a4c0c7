//! The audit chain (append-only, hash-chained, filterable, tamper-evident) and web sessions, on
//! SQLite AND PostgreSQL.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;

use std::time::Duration;

use common::store_db::*;
use sesame::audit::AuditVerification;
use sesame::audit::{Action, AuditContext, NewAuditEvent, Outcome, GENESIS_HASH};
use sesame::store::{AuditFilter, NewSession, StoreError};

both_backends!(
    audit_is_append_only_chained_and_filterable,
    audit_verify_detects_tampering,
    sessions_expire_touch_and_purge,
    retention_purge_moves_the_anchor_and_nothing_else_can_delete,
    grouped_logins_and_audit_events_are_all_durable_and_chained,
    one_batch_of_logins_audits_and_an_enrolment_keeps_one_chain,
);

async fn audit_is_append_only_chained_and_filterable(db: Db) {
    let ev = |actor: &str, action: Action, target: &str| NewAuditEvent {
        actor: actor.into(),
        action,
        target: target.into(),
        outcome: Outcome::Success,
        source_ip: Some("198.18.0.5".into()),
        details: serde_json::json!({"z": 1, "a": ["é", null]}),
    };
    let e1 = db
        .store
        .append_audit(&ev("alice", Action::AuthLogin, "alice"))
        .await
        .expect("e1");
    db.clock.advance(HOUR);
    let batch = db
        .store
        .append_audit_batch(&[
            ev("system", Action::DirectorySync, "bob"),
            NewAuditEvent {
                outcome: Outcome::Denied,
                ..ev("bob", Action::AuthLogin, "bob")
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
                action: Action::ConfigReloaded,
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

async fn retention_purge_moves_the_anchor_and_nothing_else_can_delete(db: Db) {
    let (_keys, sealer) = test_sealer();
    let ev = |i: i32| NewAuditEvent {
        actor: "system".into(),
        action: Action::DirectorySync,
        target: format!("n{i}"),
        outcome: Outcome::Success,
        source_ip: None,
        details: serde_json::json!({ "i": i }),
    };
    let day = Duration::from_secs(86_400);
    let old = db
        .store
        .append_audit_batch(&[ev(1), ev(2), ev(3)])
        .await
        .expect("old events");
    db.clock.advance(10 * day);
    db.store
        .append_audit_batch(&[ev(4), ev(5)])
        .await
        .expect("recent events");
    assert_eq!(
        db.store
            .purge_audit(30 * day, &AuditContext::system(), &sealer)
            .await
            .expect("nothing that old"),
        0
    );
    let removed = db
        .store
        .purge_audit(5 * day, &AuditContext::system(), &sealer)
        .await
        .expect("purge");
    assert_eq!(removed, 3);
    let left = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5, 6, 7]);
    assert_eq!(
        left[0].prev_hash, old[2].hash,
        "the chain still links to the purged part"
    );
    assert_eq!(
        left[2].action, "audit.checkpoint",
        "signed before the purge"
    );
    assert_eq!(left[2].details["first_id"], 4);
    assert_eq!(left[2].details["anchor_hash"], old[2].hash.as_str());
    assert_eq!(left[3].action, "audit.purged");
    assert_eq!(left[3].details["removed"], 3);
    assert_eq!(left[3].details["through_id"], 3);
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact { events: 4 }
    );

    // Retained events still cannot be deleted, and the anchor cannot move back or vanish.
    let del = sqlx::query("DELETE FROM audit_events WHERE id = 4")
        .execute(db.store.pool())
        .await
        .expect_err("retained event");
    assert!(matches!(StoreError::from(del), StoreError::AuditAppendOnly));
    let back = sqlx::query("UPDATE audit_retention SET purge_before_id = 1")
        .execute(db.store.pool())
        .await
        .expect_err("backwards");
    assert!(back.to_string().contains("append-only"), "{back}");
    let gone = sqlx::query("DELETE FROM audit_retention")
        .execute(db.store.pool())
        .await
        .expect_err("anchor kept");
    assert!(gone.to_string().contains("append-only"), "{gone}");

    // Everything old: only this purge's checkpoint and record stay, and ids go on.
    db.clock.advance(10 * day);
    let removed = db
        .store
        .purge_audit(5 * day, &AuditContext::system(), &sealer)
        .await
        .expect("purge all");
    assert_eq!(removed, 4);
    let left = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(
        left.iter().map(|e| e.id).collect::<Vec<_>>(),
        [8, 9],
        "ids are never reused"
    );
    assert_eq!(left[1].action, "audit.purged");
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact { events: 2 }
    );

    // Moving the anchor forward without purging would hide events: verify reports it.
    sqlx::query("UPDATE audit_retention SET purge_before_id = 10")
        .execute(db.store.pool())
        .await
        .expect("forward move is allowed by the database");
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Broken {
            id: 8,
            reason: "event below the retention anchor".into()
        }
    );
}

/// Concurrent logins and audit appends go through the group committer (store::group): every
/// caller that got Ok finds its rows, the chain stays linear, and a bad item (empty username)
/// fails alone, not the batch it shared.
async fn grouped_logins_and_audit_events_are_all_durable_and_chained(db: Db) {
    const N: usize = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let store = db.store.clone();
        tasks.spawn(async move {
            let name = if i == 7 {
                "  ".to_string()
            } else {
                format!("agent{i:02}")
            };
            let ev = NewAuditEvent {
                actor: name.clone(),
                action: Action::AuthLogin,
                target: name.clone(),
                outcome: Outcome::Success,
                source_ip: Some("198.18.0.9".into()),
                details: serde_json::json!({}),
            };
            if i % 2 == 1 {
                let session = NewSession {
                    username: name.clone(),
                    roles: vec!["vpn_user".into()],
                    ttl: HOUR,
                };
                let r = store.record_login(&person(&name), &session, ev).await;
                (i, name, r.map(|(token, _)| Some(token)))
            } else {
                let r = store.append_audit_grouped(ev).await;
                (i, name, r.map(|()| None))
            }
        });
    }
    let mut ok_logins = Vec::new();
    let mut ok_events = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, name, r) = joined.expect("task");
        match r {
            Ok(Some(token)) => {
                ok_logins.push((name, token));
                ok_events += 1;
            }
            Ok(None) => ok_events += 1,
            Err(e) => {
                assert_eq!(i, 7, "only the empty username fails, got {e} for {name}");
                assert!(matches!(e, StoreError::InvalidInput(_)), "{e}");
            }
        }
    }
    assert_eq!(ok_logins.len(), N / 2 - 1);
    assert_eq!(ok_events, N - 1);
    for (name, token) in &ok_logins {
        let s = db
            .store
            .session(token)
            .await
            .expect("read")
            .expect("session stored");
        assert_eq!(&s.username, name);
        assert_eq!(s.roles, vec!["vpn_user".to_string()]);
        assert!(
            db.store.user(name).await.expect("read").is_some(),
            "user row for {name}"
        );
    }
    let all = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), N - 1);
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact {
            events: (N - 1) as u64
        }
    );
}

/// Logins queued while the writer is busy are committed as ONE batch, with a lone audit event
/// and an enrolment among them: the enrolment appends its event inside the batch and the
/// logins' and lone events are appended after it from the head read then (`append_many`), so
/// the chain verifies and every login has its `auth.login` event.
async fn one_batch_of_logins_audits_and_an_enrolment_keeps_one_chain(db: Db) {
    const N: usize = 30;
    let code = code_for(&db, "paie01", "portable-paie").await;
    // The writer is busy: everything submitted now queues in the committer.
    let holder = db.store.write_tx().await.expect("writer transaction");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        if i == 1 {
            // The committer starts with the first write and takes it alone into a batch that
            // waits for the writer; what queues from now on is committed after it. (On a loaded
            // machine, without this pause, the committer could start after every write queued
            // and take them all into that first batch, at the time of before.)
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let store = db.store.clone();
        tasks.spawn(async move {
            let name = format!("agent{i:02}");
            let session = NewSession {
                username: name.clone(),
                roles: vec!["vpn_user".into()],
                ttl: HOUR,
            };
            let ev = NewAuditEvent::new(
                Action::AuthLogin,
                &AuditContext::new(name.clone(), Some("198.18.0.9".into())),
                name.clone(),
            );
            store
                .record_login(&person(&name), &session, ev)
                .await
                .map(|_| ())
        });
    }
    for i in 0..2 {
        let store = db.store.clone();
        tasks.spawn(async move {
            let ev = NewAuditEvent::new(
                Action::AuthLogin,
                &AuditContext::new(format!("intrus{i}"), Some("198.18.0.66".into())),
                format!("intrus{i}"),
            )
            .outcome(Outcome::Failure);
            store.append_audit_grouped(ev).await
        });
    }
    let enrolment = {
        let store = db.store.clone();
        let code = code.clone();
        tokio::spawn(async move {
            let user = person("paie01");
            store
                .enrol(
                    &sesame::store::EnrolRequest {
                        code: &code,
                        user: &user,
                        public_key: key(9),
                        hostname: &"pc-paie-01".parse().expect("hostname"),
                        key_lifetime: None,
                    },
                    &pool("100.64.0.0/24"),
                    &AuditContext::new("paie01", Some("198.18.0.20".into())),
                )
                .await
        })
    };
    // Time for every task to queue, generous for a loaded CI (the first item's batch may
    // already wait for the writer, with the time of before): what queues after it is committed
    // at the later time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    db.clock.advance(HOUR);
    holder.rollback().await.expect("release the writer");
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("committed");
    }
    enrolment.await.expect("task").expect("enrolled");

    let all = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    // The code's creation, N logins, 2 refusals, the enrolment.
    assert_eq!(all.len(), N + 4);
    let logins = all
        .iter()
        .filter(|e| e.action == "auth.login" && e.outcome == Outcome::Success)
        .count();
    assert_eq!(logins, N, "one auth.login event per login");
    let later = all.iter().filter(|e| e.ts == T0 + 3_600_000).count();
    assert!(
        later > N / 2,
        "the queued writes shared a batch: {later} of {} events at the later time",
        N + 3
    );
    assert!(
        all.iter()
            .any(|e| e.ts == T0 + 3_600_000 && e.action == "enrol.completed"),
        "the enrolment was in the batch: {:?}",
        all.iter().map(|e| (&e.action, e.ts)).collect::<Vec<_>>()
    );
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact {
            events: (N + 4) as u64
        }
    );
}
