//! The audit append on SQLite AND PostgreSQL: batches written many rows per statement keep the
//! chain and the index columns exactly as single appends do, and keep each device's last
//! session and last flow (`audit_last_seen`, migration 0007, its backfill included).
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;

use common::audit_events::chained;
use common::store_db::*;
use sesame::audit::AuditVerification;
use sesame::audit::{Action, AuditContext, NewAuditEvent, GENESIS_HASH};
use sesame::store::{AuditFilter, Backend, INSERT_ROWS};

both_backends!(
    multirow_batches_chain_like_single_appends,
    last_seen_follows_the_latest_session_and_flow,
);

fn flow(device: i64, resource: &str, bytes: u64) -> NewAuditEvent {
    NewAuditEvent::new(
        Action::FlowAllowed,
        &AuditContext::new(format!("user{device}"), Some("198.18.0.9".into())),
        format!("device:{device}"),
    )
    .details(serde_json::json!({
        "device_id": device,
        "username": format!("user{device}"),
        "resource": resource,
        "bytes": bytes,
    }))
}

fn session(device: i64, action: Action) -> NewAuditEvent {
    NewAuditEvent::new(
        action,
        &AuditContext::new(format!("user{device}"), Some("198.18.0.9".into())),
        format!("device:{device}"),
    )
    .details(serde_json::json!({"device_id": device, "username": format!("user{device}")}))
}

async fn multirow_batches_chain_like_single_appends(db: Db) {
    let first = db
        .store
        .append_audit(&session(1, Action::TunnelSessionStarted))
        .await
        .expect("single");
    // Spans three INSERT statements.
    let n = 2 * INSERT_ROWS + 50;
    let events: Vec<NewAuditEvent> = (0..n)
        .map(|i| {
            flow(
                (i % 7) as i64,
                if i % 2 == 0 { "paie" } else { "wiki" },
                i as u64,
            )
        })
        .collect();
    db.clock.advance(HOUR);
    let batch = db.store.append_audit_batch(&events).await.expect("batch");
    let last = db
        .store
        .append_audit(&session(1, Action::TunnelSessionEnded))
        .await
        .expect("single after");

    // The chain a single append builds, event after event, recomputed here from the inputs.
    let mut prev = first.hash.clone();
    assert_eq!(first.prev_hash, GENESIS_HASH);
    for (i, (ev, got)) in events.iter().zip(&batch).enumerate() {
        let want = chained(ev, 2 + i as i64, T0 + 3_600_000, &prev);
        assert_eq!(got, &want, "event {}", want.id);
        prev = want.hash;
    }
    assert_eq!(last.prev_hash, prev);
    assert_eq!(last.id, n as i64 + 2);

    // Read back exactly as computed, row by row.
    let all = db
        .store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), n + 2);
    assert_eq!(&all[1..=n], &batch[..]);
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Intact {
            events: n as u64 + 2
        }
    );

    // The index columns of every row of every statement.
    let ids = |f: AuditFilter| {
        let store = db.store.clone();
        async move {
            store
                .list_audit(&f)
                .await
                .expect("filter")
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    let want_device3: Vec<i64> = (0..n)
        .filter(|i| i % 7 == 3)
        .map(|i| 2 + i as i64)
        .collect();
    assert_eq!(
        ids(AuditFilter {
            device: Some(3),
            ..AuditFilter::default()
        })
        .await,
        want_device3
    );
    let want_user5_wiki: Vec<i64> = (0..n)
        .filter(|i| i % 7 == 5 && i % 2 == 1)
        .map(|i| 2 + i as i64)
        .collect();
    assert_eq!(
        ids(AuditFilter {
            user: Some("user5".into()),
            resource: Some("wiki".into()),
            ..AuditFilter::default()
        })
        .await,
        want_user5_wiki
    );
}

async fn last_seen_follows_the_latest_session_and_flow(db: Db) {
    // Device 1 reaches paie many times (the same key several times in one statement and across
    // statements), device 2 reaches paie once and wiki twice; device 3 only has a session.
    let mut events = vec![
        session(1, Action::TunnelSessionStarted),
        session(2, Action::TunnelSessionStarted),
    ];
    events.extend((0..INSERT_ROWS + 20).map(|i| flow(1, "paie", i as u64)));
    events.push(flow(2, "paie", 7));
    events.push(flow(2, "wiki", 8));
    events.push(session(2, Action::TunnelSessionEnded));
    events.push(flow(2, "wiki", 9));
    events.push(session(3, Action::TunnelSessionStarted));
    // Not sessions nor flows: no effect.
    events.push(session(1, Action::AuthLogin));
    let w = db.store.append_audit_batch(&events).await.expect("batch");
    let id_of = |bytes: u64, device: i64| {
        w.iter()
            .find(|e| {
                e.details["bytes"] == serde_json::json!(bytes)
                    && e.details["device_id"] == serde_json::json!(device)
            })
            .map(|e| e.id)
            .expect("written")
    };

    let check = |label: &'static str| {
        let store = db.store.clone();
        let w = w.clone();
        async move {
            let sessions = store.last_sessions(&[1, 2, 3, 4]).await.expect(label);
            let got: Vec<(i64, &str)> = sessions
                .iter()
                .map(|(d, e)| (*d, e.action.as_str()))
                .collect();
            assert_eq!(
                got,
                [
                    (1, "tunnel.session_started"),
                    (2, "tunnel.session_ended"),
                    (3, "tunnel.session_started")
                ],
                "{label}"
            );
            assert_eq!(sessions[&1].id, w[0].id, "{label}");
            let flows = store.last_flows(&[1, 2, 3], None).await.expect(label);
            let got: Vec<(i64, &str, i64)> = flows
                .iter()
                .map(|((d, r), e)| (*d, r.as_str(), e.id))
                .collect();
            assert_eq!(
                got,
                [
                    (1, "paie", id_of(INSERT_ROWS as u64 + 19, 1)),
                    (2, "paie", id_of(7, 2)),
                    (2, "wiki", id_of(9, 2)),
                ],
                "{label}"
            );
            let paie = store
                .last_flows(&[1, 2, 3], Some("paie"))
                .await
                .expect(label);
            assert_eq!(paie.len(), 2, "{label}");
            assert_eq!(
                store.last_flow(2, "wiki").await.expect(label).map(|e| e.id),
                Some(id_of(9, 2)),
                "{label}"
            );
            assert_eq!(store.last_flow(3, "paie").await.expect(label), None);
        }
    };
    check("kept by the append").await;

    // The migration's backfill derives the same rows from the log alone.
    sqlx::query("DELETE FROM audit_last_seen")
        .execute(db.store.pool())
        .await
        .expect("clear");
    assert!(db
        .store
        .last_sessions(&[1, 2, 3])
        .await
        .expect("cleared")
        .is_empty());
    let migration = match db.store.backend() {
        Backend::Sqlite => include_str!("../../migrations/sqlite/0007_audit_last_seen.sql"),
        Backend::Postgres => include_str!("../../migrations/postgres/0007_audit_last_seen.sql"),
    };
    let start = migration
        .find("INSERT INTO audit_last_seen")
        .expect("backfill statement");
    let len = migration[start..].find(";\n").expect("statement end") + 1;
    let backfill = &migration[start..start + len];
    sqlx::raw_sql(backfill)
        .execute(db.store.pool())
        .await
        .expect("backfill");
    check("backfilled").await;

    // A later batch moves them on.
    db.clock.advance(HOUR);
    let more = db
        .store
        .append_audit_batch(&[flow(1, "paie", 1), session(3, Action::TunnelSessionEnded)])
        .await
        .expect("later");
    let last = db
        .store
        .last_flow(1, "paie")
        .await
        .expect("flow")
        .expect("some");
    assert_eq!((last.id, last.ts), (more[0].id, T0 + 3_600_000));
    let s = db
        .store
        .last_session(3)
        .await
        .expect("session")
        .expect("some");
    assert_eq!(s.id, more[1].id);
}

/// Every pooled SQLite connection runs with the page cache and WAL checkpoint interval the append
/// rate was measured with (bench/REPORT.md, "Audit inserts, before/after (auditins)"); SQLite's
/// defaults are a 2,000 KiB cache and a checkpoint every 1,000 pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_connections_keep_the_append_cache_and_checkpoint_settings() {
    let db = sqlite_db().await;
    let pool = db.store.pool();
    let mut held = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        let mut conn = pool.acquire().await.expect("connection");
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut *conn)
            .await
            .expect("cache_size");
        let checkpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .expect("wal_autocheckpoint");
        assert_eq!((cache, checkpoint), (-8192, 10_000));
        held.push(conn);
    }
}
