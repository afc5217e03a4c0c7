//! What an idle publisher pays to notice changes, at 1,000 / 10,000 / 100,000 devices, on SQLite
//! and PostgreSQL, in one run (issue 21): the aggregate over the whole `devices` table it ran
//! every second before migration 0015 (kept verbatim in `sesame_bench::fill::SCAN`, the
//! "before"), against the change log's last sequence it reads now (`Store::peer_change_seq`;
//! the rows after it are read only when it moved), on the same database. On PostgreSQL it also
//! times a revocation's commit to its `NOTIFY` reaching a listener (another portal).
//!
//! Prints `RESULT change_detect_BACKEND_N_{scan,log} µs` (per poll, mean) and
//! `RESULT change_detect_postgres_N_notify µs`; `--sizes 1000,10000,100000`,
//! `--polls N` (per measurement), `--backends sqlite,postgres`.

// A report tool: its lines are its output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use sesame::audit::AuditContext;
use sesame::store::Store;
use sesame_bench::args::Args;
use sesame_bench::fill::{fill, Mix, SCAN};
use sesame_bench::tunn::result;

#[allow(clippy::unwrap_used)]
#[path = "../../../tests/common/postgres.rs"]
mod postgres;

/// Mean time of `polls` runs of `f`, in µs.
async fn mean_us<F, Fut>(polls: u32, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?; // warm
    let started = Instant::now();
    for _ in 0..polls {
        f().await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(polls))
}

async fn measure(backend: &str, url: &str, sizes: &[usize], polls: u32) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    let mut filled = 0;
    for &n in sizes {
        fill(&store, filled, n, Mix::Plain, 0).await?;
        filled = n;
        let pool = store.pool().clone();
        let scan = mean_us(polls, || {
            let pool = pool.clone();
            async move {
                sqlx::query(SCAN).fetch_one(&pool).await?;
                Ok(())
            }
        })
        .await?;
        // Idle: the last sequence has not moved, nothing more is read.
        let log = mean_us(polls, || {
            let store = store.clone();
            async move {
                store.peer_change_seq().await?;
                Ok(())
            }
        })
        .await?;
        result(&format!("change_detect_{backend}_{n}_scan"), scan, "us");
        result(&format!("change_detect_{backend}_{n}_log"), log, "us");
        println!(
            "{backend} {n} devices: scan {scan:.0} µs, log {log:.0} µs per poll ({:.1}x); at one poll a second: {:.3} % / {:.4} % of a core",
            scan / log,
            scan / 1e4,
            log / 1e4
        );
        if let Some(mut listener) = store.listen_peer_changes().await? {
            // Another portal's revocation: from the commit to the notification.
            let id: i64 = sqlx::query_scalar("SELECT MAX(id) FROM devices WHERE status = 'active'")
                .fetch_one(store.pool())
                .await?;
            let started = Instant::now();
            store
                .revoke_device(id, "bench", &AuditContext::system())
                .await?;
            let committed = started.elapsed();
            tokio::time::timeout(Duration::from_secs(5), listener.next()).await??;
            let notified = started.elapsed();
            result(
                &format!("change_detect_{backend}_{n}_notify"),
                (notified - committed).as_secs_f64() * 1e6,
                "us",
            );
            println!(
                "{backend} {n} devices: revocation committed in {committed:?}, notified {:?} after the commit",
                notified - committed
            );
        }
    }
    store.close().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let sizes: String = args.get("sizes", "1000,10000,100000".to_string())?;
    let sizes: Vec<usize> = sizes
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let polls: u32 = args.get("polls", 200)?;
    let backends: String = args.get("backends", "sqlite,postgres".to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for backend in backends.split(',') {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}/bench.db", dir.path().display());
                rt.block_on(measure("sqlite", &url, &sizes, polls))?;
            }
            "postgres" => {
                let db = postgres::database();
                rt.block_on(measure("postgres", &db.url, &sizes, polls))?;
            }
            other => anyhow::bail!("--backends: unknown {other:?} (sqlite, postgres)"),
        }
    }
    Ok(())
}
