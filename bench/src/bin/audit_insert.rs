//! Sustained audit event insert rate on SQLite and PostgreSQL: sesame's batched chain appends
//! (`Store::append_audit_batch`, as the audit writer calls it) against the same rows written by
//! plain INSERTs, one transaction per batch (no chain, no hashing): the peer,
//! measured in the same run on the same database.
//!
//! A second peer inserts the same rows 100 per statement: the headroom of multi-row appends.
//! Prints `RESULT audit_insert_BACKEND_per_s …`, `RESULT audit_raw_BACKEND_per_s …` and
//! `RESULT audit_raw_multirow_BACKEND_per_s …` lines.
//!
//! Hand measurements of what an append costs (bench/REPORT.md, "Audit inserts, before/after"):
//! `--setup-sql "S1; S2"` runs statements once on the migrated database before the run (drop or
//! add an index), `--conn-sql "PRAGMA …; …"` runs statements on every pooled connection (cache
//! size, checkpointing), `--peers false` skips the two raw-INSERT peers, `--users N` writes flow
//! records of N users as the gateway does (see [`event`]).

use std::time::Instant;

use anyhow::Context as _;
use sesame::audit::{Action, AuditContext, NewAuditEvent};
use sesame::store::Store;
use sesame_bench::args::Args;
use sesame_bench::tunn::result;

// The tests' throwaway-cluster fixture, reused rather than copied.
#[allow(clippy::unwrap_used)]
#[path = "../../../tests/common/postgres.rs"]
mod postgres;

/// A flow record: with `users == 0` the default shape (actor `system`, no user, 500 devices: the
/// shape of the report's table); with `users > 0` as the gateway writes them (actor and
/// `username` one of `users` users, `device_id` one of 1.5 × `users` devices), so the user and
/// device indexes get as many insertion points as on a real log.
fn event(i: u64, users: u64) -> NewAuditEvent {
    let mut details = serde_json::json!({
        "resource": "paie",
        "first_seen": "2026-01-05T09:00:00.000Z",
        "last_seen": "2026-01-05T09:01:00.000Z",
        "packets": i % 10_000,
        "bytes": i * 1400,
        "ports": [443, 8443],
    });
    if users == 0 {
        let ctx = AuditContext::system();
        return NewAuditEvent::new(Action::FlowAllowed, &ctx, format!("device:{}", i % 500))
            .details(details);
    }
    let device = i % (users * 3 / 2).max(1);
    let user = format!("user{:04}", device % users);
    details["device_id"] = device.into();
    details["username"] = user.clone().into();
    let ctx = AuditContext::new(user, Some("198.18.1.20".into()));
    NewAuditEvent::new(Action::FlowAllowed, &ctx, format!("device:{device}")).details(details)
}

async fn sesame_rate(store: &Store, events: u64, batch: u64, users: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut done = 0;
    while done < events {
        let n = batch.min(events - done);
        let evs: Vec<NewAuditEvent> = (done..done + n).map(|i| event(i, users)).collect();
        store.append_audit_batch(&evs).await?;
        done += n;
    }
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

/// The same rows, precomputed, inserted one statement each in one transaction per batch, into a
/// plain table of the same shape (no trigger, no chain).
async fn raw_rate(store: &Store, events: u64, batch: u64, users: u64) -> anyhow::Result<f64> {
    let pool = store.pool();
    sqlx::query(
        "CREATE TABLE bench_raw (id BIGINT PRIMARY KEY, ts BIGINT NOT NULL, actor TEXT NOT NULL, \
         action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, source_ip TEXT, \
         details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let hash = "0".repeat(64);
    let start = Instant::now();
    let mut done = 0;
    while done < events {
        let n = batch.min(events - done);
        let mut tx = pool.begin().await?;
        for i in done..done + n {
            let ev = event(i, users);
            sqlx::query(
                "INSERT INTO bench_raw (id, ts, actor, action, target, outcome, source_ip, details, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(i64::try_from(i)?)
            .bind(0_i64)
            .bind(&ev.actor)
            .bind(ev.action.as_str())
            .bind(&ev.target)
            .bind(ev.outcome.as_str())
            .bind(ev.source_ip.as_deref())
            .bind(sesame::audit::canonical_json(&ev.details))
            .bind(&hash)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        done += n;
    }
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

/// The same rows, `ROWS` per multi-row INSERT statement, one transaction per batch: what a
/// multi-row append could reach on this database.
async fn raw_multirow_rate(
    store: &Store,
    events: u64,
    batch: u64,
    users: u64,
) -> anyhow::Result<f64> {
    const ROWS: u64 = 100;
    let pool = store.pool();
    sqlx::query("CREATE TABLE bench_multi AS SELECT * FROM bench_raw WHERE 1 = 0")
        .execute(pool)
        .await?;
    let hash = "0".repeat(64);
    let start = Instant::now();
    let mut done = 0;
    while done < events {
        let n = batch.min(events - done);
        let mut tx = pool.begin().await?;
        let mut i = done;
        while i < done + n {
            let k = ROWS.min(done + n - i);
            let values: Vec<String> = (0..k)
                .map(|r| {
                    let b = r * 10;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7,
                        b + 8,
                        b + 9,
                        b + 10
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO bench_multi (id, ts, actor, action, target, outcome, source_ip, details, prev_hash, hash) VALUES {}",
                values.join(", ")
            );
            let evs: Vec<NewAuditEvent> = (i..i + k).map(|j| event(j, users)).collect();
            let mut q = sqlx::query(&sql);
            for (j, ev) in evs.iter().enumerate() {
                q = q
                    .bind(i64::try_from(i + j as u64)?)
                    .bind(0_i64)
                    .bind(ev.actor.clone())
                    .bind(ev.action.as_str())
                    .bind(ev.target.clone())
                    .bind(ev.outcome.as_str())
                    .bind(ev.source_ip.clone())
                    .bind(sesame::audit::canonical_json(&ev.details))
                    .bind(hash.clone())
                    .bind(hash.clone());
            }
            q.execute(&mut *tx).await?;
            i += k;
        }
        tx.commit().await?;
        done += n;
    }
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

/// Statements of a `--setup-sql` / `--conn-sql` flag (`;`-separated, empty ones skipped).
fn statements(flag: &str) -> impl Iterator<Item = &str> {
    flag.split(';').map(str::trim).filter(|s| !s.is_empty())
}

/// What `--setup-sql`, `--conn-sql` and `--peers` ask for.
struct Variant {
    setup_sql: String,
    conn_sql: String,
    peers: bool,
    /// `--users`: see [`event`].
    users: u64,
}

/// Runs the variant's statements: once, then on every connection of the pool (all held at once,
/// so each is a different connection).
async fn apply(store: &Store, v: &Variant) -> anyhow::Result<()> {
    for s in statements(&v.setup_sql) {
        sqlx::query(s)
            .execute(store.pool())
            .await
            .with_context(|| format!("--setup-sql {s:?}"))?;
    }
    if v.conn_sql.trim().is_empty() {
        return Ok(());
    }
    let mut held = Vec::new();
    for _ in 0..store.pool().options().get_max_connections() {
        let mut conn = store.pool().acquire().await?;
        for s in statements(&v.conn_sql) {
            sqlx::query(s)
                .execute(&mut *conn)
                .await
                .with_context(|| format!("--conn-sql {s:?}"))?;
        }
        held.push(conn);
    }
    Ok(())
}

async fn measure(
    name: &str,
    url: &str,
    events: u64,
    batch: u64,
    variant: &Variant,
) -> anyhow::Result<()> {
    let store = Store::connect(url)
        .await
        .with_context(|| format!("open {name}"))?;
    apply(&store, variant).await?;
    let sesame = sesame_rate(&store, events, batch, variant.users).await?;
    result(&format!("audit_insert_{name}_per_s"), sesame, "events/s");
    if variant.peers {
        let raw = raw_rate(&store, events, batch, variant.users).await?;
        result(&format!("audit_raw_{name}_per_s"), raw, "rows/s");
        let multi = raw_multirow_rate(&store, events, batch, variant.users).await?;
        result(&format!("audit_raw_multirow_{name}_per_s"), multi, "rows/s");
    }
    let check = store.verify_audit().await?;
    anyhow::ensure!(
        matches!(check, sesame::audit::AuditVerification::Intact { events: n } if n == events),
        "{name}: chain not intact after the run: {check:?}"
    );
    store.close().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let events: u64 = args.get("events", 100_000)?;
    let batch: u64 = args.get("batch", 512)?;
    let backends: String = args.get("backends", "sqlite,postgres".to_string())?;
    let variant = Variant {
        setup_sql: args.get("setup-sql", String::new())?,
        conn_sql: args.get("conn-sql", String::new())?,
        peers: args.get("peers", true)?,
        users: args.get("users", 0)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for backend in backends.split(',') {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}/bench.db", dir.path().display());
                rt.block_on(measure("sqlite", &url, events, batch, &variant))?;
            }
            "postgres" => {
                let db = postgres::database();
                rt.block_on(measure("postgres", &db.url, events, batch, &variant))?;
            }
            other => anyhow::bail!("--backends: unknown {other:?} (sqlite, postgres)"),
        }
    }
    Ok(())
}
