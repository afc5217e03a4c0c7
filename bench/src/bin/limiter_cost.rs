//! What the shared login failure limits (issue 21, `login_failures`) cost a login on PostgreSQL:
//! the check every attempt makes (one primary-key read of 3 keys) and the count a failure makes
//! (one upsert of 3 rows), each beside a bare `SELECT 1` round trip on the same pool, rounds
//! interleaved, one run. 10% of the checked accounts have failure rows (the rest have none, as
//! on a normal morning). Prints `RESULT limiter_<step>_p50 … us` and `…_p99 … us` lines.
//!
//! `limiter_cost [--rounds 3000]` (a throwaway cluster: the tests' fixture)

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use sesame::service::ratelimit::{shared_keys, FailureLimiter};
use sesame::store::Store;
use sesame_bench::args::Args;
use sesame_bench::tunn::result;

// The tests' throwaway-cluster fixture, reused rather than copied.
#[allow(clippy::unwrap_used)]
#[path = "../../../tests/common/postgres.rs"]
mod postgres;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ip_of(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC612_0000 | (i & 0xffff)))
}

async fn measure(url: &str, rounds: u32) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    let limiter = FailureLimiter::new();
    let accounts = 1000;
    // Failures on one account in ten.
    for a in (0..accounts).step_by(10) {
        let keys = shared_keys(&format!("user{a}"), ip_of(a));
        let kept = limiter.kept_until(store.now_ms());
        let rows: Vec<(&str, i64)> = keys.iter().map(String::as_str).zip(kept).collect();
        store.count_failure(&rows, limiter.windows()).await?;
    }
    let (mut select1, mut check, mut failure) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(store.pool()).await?;
        select1.push(t.elapsed().as_secs_f64() * 1e6);

        let a = r % accounts;
        let keys = shared_keys(&format!("user{a}"), ip_of(a));
        let t = Instant::now();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let counts = store.failure_counts(&refs).await?;
        let verdict = limiter.judge_shared(&keys, &counts, false, store.now_ms());
        check.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(verdict.is_ok());

        // A failure from a new source on one of the accounts (never over a limit: judged only).
        let keys = shared_keys(&format!("user{a}"), ip_of(10_000 + r));
        let t = Instant::now();
        let kept = limiter.kept_until(store.now_ms());
        let rows: Vec<(&str, i64)> = keys.iter().map(String::as_str).zip(kept).collect();
        store.count_failure(&rows, limiter.windows()).await?;
        failure.push(t.elapsed().as_secs_f64() * 1e6);
    }
    for (name, mut v) in [("select1", select1), ("check", check), ("failure", failure)] {
        v.sort_by(f64::total_cmp);
        result(&format!("limiter_{name}_p50"), percentile(&v, 0.5), "us");
        result(&format!("limiter_{name}_p99"), percentile(&v, 0.99), "us");
    }
    store.close().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let rounds: u32 = args.get("rounds", 3000)?;
    let db = postgres::database();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(measure(&db.url, rounds))
}
