//! A legitimate login's latency before and during a flood of failed logins with 16 KiB
//! usernames (as large as the API's 16 KiB body limit lets through), each from its own source (X-Forwarded-For from a trusted local proxy, addresses
//! of 198.18.0.0/15 that are never contacted), against the real `sesame serve` and slapd.
//! Prints p50/p99 of both phases, the flood's rate and serve's memory (docs/hardening.md has
//! the figures); the assertions are on behaviour only: every legitimate login succeeds, every
//! flood request is refused as a failure, and serve's memory stays bounded.
//!
//! `SESAME_FLOOD_FAILURES` sets the flood's size (default 5,000 to keep CI short; the issue's
//! figure is 100,000). Needs root (network namespace, TUN).
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::too_many_lines)]

use crate::common;
use crate::require_root;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::durability::{Backend, Crashable, PORTAL};
use common::slapd::password_of;

const USER: &str = "mdupont";
/// The largest username the API lets through: the JSON body (`BODY_LIMIT`, 16 KiB) holds it
/// and the rest of the request; a larger one is refused (413) before the limiter sees it.
const NAME_BYTES: usize = 16 * 1024 - 64;
const FLOOD_CLIENTS: usize = 8;
/// Legitimate logins measured before the flood.
const BASELINE_LOGINS: usize = 200;
/// Requests of the control flood at most (it only has to last long enough to measure).
const CONTROL_MAX: usize = 20_000;
/// Pause between two legitimate logins (one user at a time, as a person would).
const PROBE_PAUSE: Duration = Duration::from_millis(20);
/// Serve may grow by this much over the whole flood (the limiter alone is a few MiB).
const MAX_GROWTH_KIB: u64 = 64 * 1024;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The n-th flood source: 198.18.0.0/15 holds 131,072 addresses.
fn source(n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n as u32 % 131_072))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Phase {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
}

impl Phase {
    fn p(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        percentile(&l, q)
    }

    fn line(&self, name: &str) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        format!(
            "{name:<8} logins {:>4}  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            l.len(),
            percentile(&l, 0.50).as_secs_f64() * 1e3,
            percentile(&l, 0.99).as_secs_f64() * 1e3,
            l.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        )
    }
}

async fn legit_login(client: &reqwest::Client) -> (u16, Duration) {
    let body = serde_json::json!({"username": USER, "password": password_of(USER)});
    let t = Instant::now();
    let status = match client
        .post(format!("{PORTAL}/api/v1/login"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    (status, t.elapsed())
}

/// Legitimate logins one after the other until `stop` (or `count` of them).
async fn probe(client: reqwest::Client, count: usize, stop: Arc<AtomicBool>) -> Phase {
    let mut p = Phase {
        latencies: Vec::new(),
        statuses: BTreeMap::new(),
    };
    while p.latencies.len() < count && !stop.load(Ordering::Acquire) {
        let (st, took) = legit_login(&client).await;
        *p.statuses.entry(st).or_default() += 1;
        p.latencies.push(took);
        tokio::time::sleep(PROBE_PAUSE).await;
    }
    p
}

/// What one flood sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Failed logins: a 16 KiB username (all different) and a wrong password.
    Failures,
    /// The peer: requests of the same size and route that the portal refuses as malformed
    /// (the password is not a string) before the limiter, the directory or the audit log.
    Control,
}

struct Flood {
    statuses: BTreeMap<u16, usize>,
    took: Duration,
    /// The legitimate logins measured meanwhile.
    during: Phase,
}

/// `count` requests of `kind` from [`FLOOD_CLIENTS`] clients, each from its own source
/// (X-Forwarded-For), while one legitimate user logs in again and again.
async fn flood(client: &reqwest::Client, kind: Kind, count: usize) -> Flood {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(client.clone(), usize::MAX, stop.clone()));
    let started = Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..FLOOD_CLIENTS {
        let (client, next) = (client.clone(), next.clone());
        flooders.push(tokio::spawn(async move {
            let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
            let mut name = "x".repeat(NAME_BYTES);
            loop {
                let n = next.fetch_add(1, Ordering::AcqRel);
                if n >= count {
                    break statuses;
                }
                // All different (the prefix), each from its own address.
                name.replace_range(..10, &format!("{n:010}"));
                let body = match kind {
                    Kind::Failures => serde_json::json!({"username": name, "password": "wrong"}),
                    Kind::Control => serde_json::json!({"username": name, "password": 0}),
                };
                let st = match client
                    .post(format!("{PORTAL}/api/v1/login"))
                    .header("x-forwarded-for", source(n).to_string())
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *statuses.entry(st).or_default() += 1;
            }
        }));
    }
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for f in flooders {
        for (st, n) in f.await.unwrap() {
            *statuses.entry(st).or_default() += n;
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Release);
    Flood {
        statuses,
        took,
        during: prober.await.unwrap(),
    }
}

#[test]
fn legitimate_login_latency_before_and_during_a_flood_of_huge_usernames() {
    require_root!("a network namespace and a TUN device for sesame serve");
    let failures: usize = std::env::var("SESAME_FLOOD_FAILURES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let controls = failures.min(CONTROL_MAX);
    // The spray ceiling off: this test measures the per-key limiter's memory and a login's
    // latency under the whole flood (tests/plain/spray.rs covers the ceiling).
    let c = Crashable::start_with(
        Backend::Sqlite,
        "trusted_proxies = [\"127.0.0.1\"]\nspray_ceiling = 0",
    );
    let pid = c.serve_pid();
    // The runtime's threads are created here, in the namespace of this thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (before, control, attack, rss) = rt.block_on(async {
        let client = reqwest::Client::new();
        // Warm-up (first LDAP connections, first session writes), then the baseline.
        let never = Arc::new(AtomicBool::new(false));
        probe(client.clone(), 20, never.clone()).await;
        let before = probe(client.clone(), BASELINE_LOGINS, never).await;
        let control = flood(&client, Kind::Control, controls).await;
        let rss_before = rss_kib(pid);
        let attack = flood(&client, Kind::Failures, failures).await;
        (before, control, attack, (rss_before, rss_kib(pid)))
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for (f, n, what) in [
        (&control, controls, "malformed (control)"),
        (&attack, failures, "failed logins"),
    ] {
        println!(
            "flood: {n} {what}, {NAME_BYTES}-byte usernames, one source each, \
             {FLOOD_CLIENTS} clients: {:.1} s ({:.0}/s); answers {:?}",
            f.took.as_secs_f64(),
            n as f64 / f.took.as_secs_f64(),
            f.statuses
        );
    }
    println!("{}", before.line("before"));
    println!("{}", control.during.line("control"));
    println!("{}", attack.during.line("during"));
    println!(
        "during/control p50 ratio {:.2}, p99 ratio {:.2}",
        attack.during.p(0.50).as_secs_f64() / control.during.p(0.50).as_secs_f64(),
        attack.during.p(0.99).as_secs_f64() / control.during.p(0.99).as_secs_f64()
    );
    println!(
        "serve RSS: {} KiB before the failures, {} KiB after (+{} KiB); load average {}",
        rss.0,
        rss.1,
        rss.1.saturating_sub(rss.0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (phase, p) in [
        ("before", &before),
        ("control", &control.during),
        ("during", &attack.during),
    ] {
        assert!(!p.latencies.is_empty(), "{phase}: no login measured");
        assert_eq!(
            p.statuses.keys().collect::<Vec<_>>(),
            vec![&200],
            "{phase}: the owner from an untouched source is never refused: {:?}",
            p.statuses
        );
    }
    assert_eq!(
        control.statuses.get(&400).copied().unwrap_or(0),
        controls,
        "the control flood is refused as malformed: {:?}",
        control.statuses
    );
    assert_eq!(
        attack.statuses.get(&401).copied().unwrap_or(0),
        failures,
        "each failed login is a plain failure (no source repeats): {:?}",
        attack.statuses
    );
    assert!(
        rss.1.saturating_sub(rss.0) < MAX_GROWTH_KIB,
        "serve grew by {} KiB over the flood",
        rss.1.saturating_sub(rss.0)
    );
}
