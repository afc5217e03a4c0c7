//! Tamper evidence of the audit log on SQLite AND PostgreSQL: one test per attack by someone who
//! holds the database but not the audit key, the signed retention purge and periodic
//! checkpoints, and PostgreSQL least privilege for the service role. The commands
//! (`sesame keygen --audit`, `sesame audit verify`) are tested in `audit_verify_cli.rs`.
// Tests may be long journeys: the 100-line rule is for production code.
#![allow(clippy::too_many_lines)]

use crate::both_backends;
use crate::common;
use sesame::control::leader::Leadership;

use std::sync::Arc;
use std::time::Duration;

use common::store_db::*;
use sesame::audit::checkpoint::{self, Checkpoint, CheckpointReason, Sealer};
use sesame::audit::AuditVerification;
use sesame::audit::{Action, AuditContext, AuditEvent, NewAuditEvent};
use sesame::control::audit_jobs::{run_checkpoints, Retention};
use sesame::store::{AuditFilter, Backend, Store};

both_backends!(
    untouched_chain_verifies_with_its_checkpoints,
    modified_field_is_found,
    deleted_row_is_found,
    inserted_forged_row_is_found,
    swapped_rows_are_found,
    truncated_tail_is_found,
    truncation_then_forged_appends_are_found,
    anchor_moved_forward_with_rows_deleted_is_found,
    hashes_recomputed_without_the_key_are_found,
    forged_checkpoints_are_found,
    retention_task_purges_old_events_behind_a_signed_checkpoint,
    periodic_checkpoints_follow_the_head,
);

const DAY: Duration = Duration::from_secs(86_400);

/// Events 1–5, checkpoint (event 6), events 7–10, checkpoint (event 11), event 12: the two
/// signed heads are events 5 and 10.
async fn fill(db: &Db, sealer: &Sealer) {
    let batch = |from: usize, n: usize| (from..from + n).map(login_event).collect::<Vec<_>>();
    db.store
        .append_audit_batch(&batch(1, 5))
        .await
        .expect("1-5");
    let cp = db
        .store
        .checkpoint_audit(sealer, CheckpointReason::Interval)
        .await
        .expect("checkpoint 1");
    assert_eq!((cp.first_id, cp.last_id, cp.events), (1, 5, 5));
    db.clock.advance(HOUR);
    db.store
        .append_audit_batch(&batch(7, 4))
        .await
        .expect("7-10");
    let cp = db
        .store
        .checkpoint_audit(sealer, CheckpointReason::Interval)
        .await
        .expect("checkpoint 2");
    assert_eq!((cp.last_id, cp.events), (10, 10));
    db.store.append_audit(&login_event(12)).await.expect("12");
}

async fn verify(db: &Db, sealer: &Sealer) -> AuditVerification {
    let key = sealer.key.verifying_key();
    db.store
        .verify_audit_with(Some((
            Some(&key),
            &checkpoint::read_file(&sealer.file).expect("file"),
        )))
        .await
        .expect("verify")
}

/// What someone with full control of the database does first: remove the append-only guards.
async fn drop_guards(db: &Db) {
    match db.store.backend() {
        Backend::Sqlite => {
            for t in [
                "audit_events_no_update",
                "audit_events_no_delete",
                "audit_retention_no_delete",
                "audit_retention_forward_only",
            ] {
                exec(&db.store, &format!("DROP TRIGGER {t}")).await;
            }
        }
        Backend::Postgres => {
            exec(&db.store, "ALTER TABLE audit_events DISABLE TRIGGER USER").await;
            exec(
                &db.store,
                "ALTER TABLE audit_retention DISABLE TRIGGER USER",
            )
            .await;
        }
    }
}

fn broken_at(v: &AuditVerification) -> i64 {
    match v {
        AuditVerification::Broken { id, .. } => *id,
        AuditVerification::Intact { events } => panic!("tampering not seen ({events} events)"),
    }
}

fn reason(v: &AuditVerification) -> &str {
    match v {
        AuditVerification::Broken { reason, .. } => reason,
        AuditVerification::Intact { .. } => "",
    }
}

async fn events(db: &Db) -> Vec<AuditEvent> {
    db.store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list")
}

async fn untouched_chain_verifies_with_its_checkpoints(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    assert_eq!(
        verify(&db, &sealer).await,
        AuditVerification::Intact { events: 12 }
    );
    let cps = checkpoint::read_file(&sealer.file).expect("file");
    assert_eq!(cps.len(), 2);
    let logged = events(&db).await;
    assert_eq!(logged[5].action, "audit.checkpoint");
    assert_eq!(
        logged[5].details,
        cps[0].to_json(),
        "the log records the same checkpoint"
    );
    assert_eq!(cps[1].last_hash, logged[9].hash);
    // Another key does not vouch for these checkpoints.
    let (_o, other) = test_sealer();
    let key = other.key.verifying_key();
    let v = db
        .store
        .verify_audit_with(Some((
            Some(&key),
            &checkpoint::read_file(&sealer.file).expect("file"),
        )))
        .await
        .expect("verify");
    assert_eq!(broken_at(&v), 5);
    assert!(reason(&v).contains("not signed by the audit key"), "{v:?}");
}

async fn modified_field_is_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    drop_guards(&db).await;
    exec(
        &db.store,
        "UPDATE audit_events SET actor = 'mallory' WHERE id = 3",
    )
    .await;
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 3);
    assert!(reason(&v).contains("content"), "{v:?}");
}

async fn deleted_row_is_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    drop_guards(&db).await;
    exec(&db.store, "DELETE FROM audit_events WHERE id = 8").await;
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 8);
    assert!(reason(&v).contains("missing"), "{v:?}");
}

async fn inserted_forged_row_is_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    drop_guards(&db).await;
    // Make room at id 4 and insert a well-formed event there that links to event 3.
    for id in (4..=12).rev() {
        exec(
            &db.store,
            &format!("UPDATE audit_events SET id = {} WHERE id = {id}", id + 1),
        )
        .await;
    }
    let three = events(&db).await.remove(2);
    let mut forged = AuditEvent {
        id: 4,
        actor: "mallory".into(),
        target: "mallory".into(),
        prev_hash: three.hash.clone(),
        ..three
    };
    forged.hash = forged.compute_hash();
    sqlx::query(
        "INSERT INTO audit_events (id, ts, actor, action, target, outcome, source_ip, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(forged.id)
    .bind(forged.ts)
    .bind(&forged.actor)
    .bind(&forged.action)
    .bind(&forged.target)
    .bind(forged.outcome.as_str())
    .bind(forged.source_ip.as_deref())
    .bind(sesame::audit::canonical_json(&forged.details))
    .bind(&forged.prev_hash)
    .bind(&forged.hash)
    .execute(db.store.pool())
    .await
    .expect("insert forged");
    let v = verify(&db, &sealer).await;
    // The forged row links correctly; the shifted one after it cannot.
    assert_eq!(broken_at(&v), 5);
    assert!(reason(&v).contains("event 4"), "{v:?}");
}

async fn swapped_rows_are_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    drop_guards(&db).await;
    exec(&db.store, "UPDATE audit_events SET id = -1 WHERE id = 3").await;
    exec(&db.store, "UPDATE audit_events SET id = 3 WHERE id = 4").await;
    exec(&db.store, "UPDATE audit_events SET id = 4 WHERE id = -1").await;
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 3);
}

async fn truncated_tail_is_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    drop_guards(&db).await;
    exec(&db.store, "DELETE FROM audit_events WHERE id >= 9").await;
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 9);
    assert!(reason(&v).contains("truncated"), "{v:?}");
    // Also when every event is gone.
    exec(&db.store, "DELETE FROM audit_events").await;
    assert_eq!(broken_at(&verify(&db, &sealer).await), 1);
}

async fn truncation_then_forged_appends_are_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    drop_guards(&db).await;
    exec(&db.store, "DELETE FROM audit_events WHERE id >= 9").await;
    // Re-appended through the normal path: the hash links are perfect again.
    let forged: Vec<NewAuditEvent> = (0..5).map(|i| login_event(100 + i)).collect();
    db.store.append_audit_batch(&forged).await.expect("append");
    assert_eq!(
        db.store.verify_audit().await.expect("links"),
        AuditVerification::Intact { events: 13 },
        "hash links alone cannot see it"
    );
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 10);
    assert!(reason(&v).contains("rewritten"), "{v:?}");
}

async fn anchor_moved_forward_with_rows_deleted_is_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    // A legitimate purge first: its anchor is signed, and the chain verifies.
    db.clock.advance(30 * DAY);
    db.store.append_audit(&login_event(13)).await.expect("13");
    let removed = db
        .store
        .purge_audit(10 * DAY, &AuditContext::system(), &sealer)
        .await
        .expect("purge");
    assert_eq!(removed, 12);
    assert_eq!(
        verify(&db, &sealer).await,
        AuditVerification::Intact { events: 3 }
    );
    // The attack, with the guards still in place: move the anchor past the end and
    // empty the table.
    let last = events(&db).await.pop().expect("last");
    sqlx::query("UPDATE audit_retention SET purge_before_id = $1, anchor_hash = $2")
        .bind(last.id + 1000)
        .bind(&last.hash)
        .execute(db.store.pool())
        .await
        .expect("the database lets the anchor move forward");
    exec(&db.store, "DELETE FROM audit_events").await;
    assert_eq!(
        db.store.verify_audit().await.expect("links"),
        AuditVerification::Intact { events: 0 },
        "hash links alone cannot see it"
    );
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 13, "from the last signed anchor");
    assert!(reason(&v).contains("no signed purge checkpoint"), "{v:?}");
}

async fn hashes_recomputed_without_the_key_are_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    drop_guards(&db).await;
    // Rewrite event 3 and recompute every hash after it: a chain that links perfectly.
    let mut all = events(&db).await;
    all[2].actor = "mallory".into();
    for i in 2..all.len() {
        if i > 2 {
            all[i].prev_hash = all[i - 1].hash.clone();
        }
        all[i].hash = all[i].compute_hash();
        sqlx::query("UPDATE audit_events SET actor = $1, prev_hash = $2, hash = $3 WHERE id = $4")
            .bind(&all[i].actor)
            .bind(&all[i].prev_hash)
            .bind(&all[i].hash)
            .bind(all[i].id)
            .execute(db.store.pool())
            .await
            .expect("rewrite");
    }
    assert_eq!(
        db.store.verify_audit().await.expect("links"),
        AuditVerification::Intact { events: 12 }
    );
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 5, "the first signed head after the change");
    assert!(reason(&v).contains("events 1..=5 were rewritten"), "{v:?}");
}

async fn forged_checkpoints_are_found(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    // An audit.checkpoint event the key never signed, for a head the file covers, appended
    // through the normal path.
    let (_o, other) = test_sealer();
    let fake = Checkpoint::sign(
        &other.key,
        &sesame::audit::checkpoint::ChainHead {
            first_id: 1,
            anchor_hash: sesame::audit::GENESIS_HASH.into(),
            last_id: 8,
            last_hash: events(&db).await[7].hash.clone(),
        },
        T0,
        CheckpointReason::Interval,
    );
    db.store
        .append_audit(
            &NewAuditEvent::new(
                Action::AuditCheckpoint,
                &AuditContext::system(),
                "audit_events",
            )
            .details(fake.to_json()),
        )
        .await
        .expect("append");
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 13);
    assert!(reason(&v).contains("not in the checkpoint file"), "{v:?}");
    // A line added to the file by someone without the key.
    checkpoint::append_to_file(&sealer.file, &fake).expect("append line");
    let v = verify(&db, &sealer).await;
    assert_eq!(broken_at(&v), 8);
    assert!(reason(&v).contains("checkpoint 3"), "{v:?}");
}

async fn retention_task_purges_old_events_behind_a_signed_checkpoint(db: Db) {
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    // "0" keeps everything, whatever their age.
    db.clock.advance(500 * DAY);
    let keep_all = Retention {
        store: db.store.clone(),
        sealer: Arc::clone(&sealer),
        keep: Duration::ZERO,
        leader: Leadership::alone(),
    };
    assert_eq!(keep_all.purge_now().await.expect("purge"), 0);
    assert_eq!(events(&db).await.len(), 12);

    db.store
        .append_audit(&login_event(13))
        .await
        .expect("recent");
    // A portal that does not hold the jobs lease purges nothing (another one does).
    let follower = Retention {
        store: db.store.clone(),
        sealer: Arc::clone(&sealer),
        keep: 400 * DAY,
        leader: Leadership::new("another-portal"),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(follower.run(Duration::from_millis(50), stop_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true).expect("stop");
    task.await.expect("task");
    assert_eq!(events(&db).await.len(), 13, "a follower never purges");
    let retention = Retention {
        store: db.store.clone(),
        sealer: Arc::clone(&sealer),
        keep: 400 * DAY,
        leader: Leadership::alone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(retention.run(Duration::from_secs(3600), stop_rx));
    // The task purges at start; wait for it (bounded).
    let mut purged = false;
    for _ in 0..200 {
        if events(&db).await.iter().any(|e| e.action == "audit.purged") {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).expect("stop");
    task.await.expect("task");
    assert!(purged, "the retention task purged");
    let left = events(&db).await;
    assert_eq!(
        left.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["auth.login", "audit.checkpoint", "audit.purged"]
    );
    assert_eq!(left[0].id, 13);
    assert_eq!(left[2].details["removed"], 12);
    let cps = checkpoint::read_file(&sealer.file).expect("file");
    let purge = cps.last().expect("purge checkpoint");
    assert_eq!(purge.reason, CheckpointReason::Purge);
    assert_eq!((purge.first_id, purge.last_id, purge.events), (13, 13, 1));
    assert!(purge.signed_by(&sealer.key.verifying_key()));
    assert_eq!(purge.anchor_hash, left[0].prev_hash);
    assert_eq!(
        verify(&db, &sealer).await,
        AuditVerification::Intact { events: 3 }
    );
}

async fn periodic_checkpoints_follow_the_head(db: Db) {
    let (_k, sealer) = test_sealer();
    db.store.append_audit(&login_event(1)).await.expect("1");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_checkpoints(
        db.store.clone(),
        Arc::clone(&sealer),
        Duration::from_millis(100),
        Leadership::alone(),
        stop_rx,
    ));
    let mut cps = Vec::new();
    for _ in 0..100 {
        cps = checkpoint::read_file(&sealer.file).expect("file");
        if cps.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).expect("stop");
    task.await.expect("task");
    assert!(cps.len() >= 2, "{cps:?}");
    // Each one signs the head, which includes the previous checkpoint's own event.
    assert_eq!((cps[0].last_id, cps[1].last_id), (1, 2));
    assert_eq!(cps[0].reason, CheckpointReason::Interval);
    assert!(matches!(
        verify(&db, &sealer).await,
        AuditVerification::Intact { .. }
    ));
}

/// The service role may only INSERT and SELECT on the audit tables; it still appends,
/// checkpoints and purges; the grants are those of docs/audit-postgres-grants.sql.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_service_role_cannot_change_the_audit_log() {
    let pg = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("PostgreSQL");
    let cluster = pg.cluster();
    let owner = format!("{}_owner", pg.name);
    let app = format!("{}_app", pg.name);
    let admin = |sql: &str| {
        let out = cluster.psql(&pg.name, sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    admin(&format!(
        "CREATE ROLE {owner} LOGIN; CREATE ROLE {app} LOGIN; ALTER DATABASE {db} OWNER TO {owner}; ALTER SCHEMA public OWNER TO {owner}",
        db = pg.name
    ));
    let role_url = |role: &str| pg.url.replacen("postgres@", &format!("{role}@"), 1);
    // The owner runs the migrations (any sesame command connecting with its URL does).
    let owner_store = Store::connect(&role_url(&owner))
        .await
        .expect("owner migrates");
    let grants = include_str!("../../docs/audit-postgres-grants.sql").replace("sesame_app", &app);
    sqlx::raw_sql(&grants)
        .execute(owner_store.pool())
        .await
        .expect("grants");
    owner_store.close().await;

    let clock = Arc::new(sesame::time::ManualClock::new(T0));
    let store = Store::connect(&role_url(&app))
        .await
        .expect("the service role connects without DDL rights")
        .with_clock(clock.clone());
    let db = Db {
        store,
        clock,
        url: role_url(&app),
        guard: Guard::Postgres(pg),
    };
    let (_k, sealer) = test_sealer();
    fill(&db, &sealer).await;
    db.store
        .create_code(
            &sesame::store::NewCode {
                username: "alice".into(),
                device_name: "pc-1".into(),
                ttl: HOUR,
            },
            &it_staff(),
        )
        .await
        .expect("working tables are writable");
    // Sessions and flows also keep audit_last_seen (migration 0007): the service role may
    // write that derived table, still not the events.
    let flow = NewAuditEvent::new(
        Action::FlowAllowed,
        &AuditContext::new("alice", None),
        "device:7",
    )
    .details(serde_json::json!({"device_id": 7, "resource": "paie", "bytes": 10}));
    let written = db
        .store
        .append_audit_batch(&[flow.clone(), flow])
        .await
        .expect("the service role appends flows");
    let last = db.store.last_flow(7, "paie").await.expect("last flow");
    assert_eq!(last.map(|e| e.id), Some(written[1].id));

    for attack in [
        "UPDATE audit_events SET actor = 'mallory' WHERE id = 3",
        "DELETE FROM audit_events WHERE id = 3",
        "TRUNCATE audit_events",
        "DROP TABLE audit_events",
        "ALTER TABLE audit_events DISABLE TRIGGER USER",
        "UPDATE audit_retention SET purge_before_id = 1000",
        "DROP FUNCTION audit_purge(BIGINT, BIGINT)",
    ] {
        let e = sqlx::query(attack)
            .execute(db.store.pool())
            .await
            .expect_err(attack);
        let msg = e.to_string();
        assert!(
            msg.contains("permission denied") || msg.contains("must be owner"),
            "{attack}: {msg}"
        );
    }
    // The purge function refuses an anchor no checkpoint recorded.
    let e = sqlx::query("SELECT audit_purge(3, 0)")
        .execute(db.store.pool())
        .await
        .expect_err("unvouched purge");
    assert!(e.to_string().contains("does not vouch"), "{e}");

    db.clock.advance(30 * DAY);
    let removed = db
        .store
        .purge_audit(10 * DAY, &AuditContext::system(), &sealer)
        .await
        .expect("the service role purges through audit_purge()");
    assert_eq!(removed, 15, "12 events, enrol.code_created and two flows");
    assert_eq!(
        verify(&db, &sealer).await,
        AuditVerification::Intact { events: 2 }
    );
    // An enrolment and a revocation: the change log's triggers write as the service role.
    let code = code_for(&db, "carla", "pc-9").await;
    let enrolled = enrol(&db, &code, &person("carla"), key(9), "100.64.0.0/24")
        .await
        .expect("the service role enrols (change log included)");
    db.store
        .revoke_device(enrolled.device.id, "test", &it_staff())
        .await
        .expect("and revokes");
    assert!(db.store.peer_change_seq().await.expect("seq") >= 2);
    db.store.prune_peer_changes(1).await.expect("and prunes");
    // The second factor's and the site gateways' tables.
    db.store
        .mfa_open_window(
            enrolled.device.id,
            "carla",
            "agent",
            T0 + 400 * DAY.as_millis() as i64,
        )
        .await
        .expect("an access window");
    db.store
        .replace_site_token("dsden56", &"ab".repeat(32), &it_staff())
        .await
        .expect("a site token");
    let site_event = NewAuditEvent::new(
        Action::FlowAllowed,
        &AuditContext::new("carla", None),
        "device:9",
    );
    db.store
        .append_site_events("dsden56", &[(1, site_event)])
        .await
        .expect("a site's events");
}
