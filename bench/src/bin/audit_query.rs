//! Audit query benchmark: a filtered query (one user, one month) and the access review of one
//! resource on a large generated log, p50/p99; beside them, in the same run, the same user query
//! written as before the derived index columns (actor or target, no index) as the peer, and the
//! review's last-use lookups as made before `audit_last_seen` (two log seeks per device).
//!
//! ```text
//! audit_query --dir DIR [--url postgres://…] [--events 10000000] [--users 1000] [--samples 200] [--peer-samples 5]
//! ```
//! The database is a new SQLite file in DIR, or `--url` (an empty database: PostgreSQL).
//! The log is generated through the store's bulk path (`Store::append_audit_bulk`: the real
//! chain, hashes and index columns, 50,000 events per transaction) over 12 months: 85 %
//! `flow.allowed`, 5 % `flow.denied`, 5 % tunnel sessions, 5 % logins, in the shapes the gateway
//! writes. Prints `RESULT audit_<key> <value>` lines (for run.sh) and one JSON line.
// A command-line tool: its result is its stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sesame::audit::review::ReviewSubject;
use sesame::audit::{Action, AuditContext, AuditFilter, NewAuditEvent, Outcome};
use sesame::directory::DirectoryUser;
use sesame::policy::{Policy, Resource};
use sesame::service::review::{access_review, PageAsk, ReviewPolicy};
use sesame::store::{AddressPool, EnrolRequest, NewCode, Store};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400_000;
const MONTH: i64 = 30 * DAY;
const SPAN: i64 = 365 * DAY;
const RESOURCES: usize = 20;
const VPN: &str = "cn=personnels-administratifs,ou=groups,dc=example,dc=org";

fn group(i: usize) -> String {
    format!("cn=groupe-{i},ou=groups,dc=example,dc=org")
}

fn resource(i: usize) -> String {
    format!("ressource-{i}")
}

/// Tiny deterministic generator (xorshift): the same log for every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// User `u`'s groups: the VPN group and 1 to 3 resource groups.
fn groups_of(u: usize) -> Vec<usize> {
    (0..1 + u % 3)
        .map(|k| (u * 7 + k * 5) % RESOURCES)
        .collect()
}

fn event(rng: &mut Rng, users: usize, devices: &[i64], ts: i64) -> NewAuditEvent {
    let d = rng.below(devices.len());
    let u = d % users;
    let (user, device) = (format!("u{u:04}"), devices[d]);
    let ctx = AuditContext::new(
        user.clone(),
        Some(format!("198.18.{}.{}", u / 250, u % 250 + 1)),
    );
    let target = format!("device:{device}");
    let peer = format!("device:{device}:{user}");
    let at = sesame::time::format(ts);
    match rng.below(20) {
        0 => NewAuditEvent::new(Action::AuthLogin, &ctx, user.clone()),
        1 => NewAuditEvent::new(Action::TunnelSessionStarted, &ctx, target).details(
            serde_json::json!({
                "device_id": device, "username": user, "peer": peer, "public_key": "AAAA",
                "endpoint": "198.18.0.9:40000", "started_at": at,
            }),
        ),
        2 => NewAuditEvent::new(Action::FlowDenied, &ctx, target)
            .outcome(Outcome::Denied)
            .details(serde_json::json!({
                "device_id": device, "username": user, "peer": peer, "dst": "198.18.99.1",
                "protocol": "tcp", "port": 22, "count": 3, "reason": "no_grant",
                "window_start": at, "first_seen": at, "last_seen": at,
            })),
        _ => {
            let g = groups_of(u);
            let r = resource(g[rng.below(g.len())]);
            NewAuditEvent::new(Action::FlowAllowed, &ctx, target).details(serde_json::json!({
                "device_id": device, "username": user, "peer": peer, "resource": r,
                "window_start": at, "first_seen": at, "last_seen": at, "packets": 10,
                "bytes": 4000, "packets_in": 6, "bytes_in": 3000, "packets_out": 4,
                "bytes_out": 1000, "protocols": ["tcp"], "ports": [443], "ports_truncated": false,
            }))
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn time<F, Fut>(samples: usize, mut f: F) -> anyhow::Result<(f64, f64, usize)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let mut times = Vec::with_capacity(samples);
    let mut rows = 0;
    for i in 0..samples {
        let t = Instant::now();
        rows += f(i).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        rows / samples.max(1),
    ))
}

/// Users with 1.5 devices each, enrolled for real (codes, addresses, audit): the device ids.
async fn enrol_devices(store: &Store, users: usize) -> anyhow::Result<Vec<i64>> {
    let mut devices = Vec::new();
    let pool = AddressPool {
        network: "100.64.0.0/16".parse()?,
        reserved: vec!["100.64.0.1".parse()?],
    };
    let it = AuditContext::new("bench", None);
    for d in 0..users * 3 / 2 {
        let u = d % users;
        let user = DirectoryUser {
            username: format!("u{u:04}"),
            dn: format!("uid=u{u:04},ou=people,dc=example,dc=org"),
            display_name: format!("Utilisateur {u}"),
            groups: std::iter::once(VPN.to_string())
                .chain(groups_of(u).into_iter().map(group))
                .collect(),
            disabled: false,
        };
        let code = store
            .create_code(
                &NewCode {
                    username: user.username.clone(),
                    device_name: format!("pc-{d}"),
                    ttl: Duration::from_secs(3600),
                },
                &it,
            )
            .await?
            .code;
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(d as u64 + 1).to_le_bytes());
        key[31] = 0x5e;
        let e = store
            .enrol(
                &EnrolRequest {
                    code: &code,
                    user: &user,
                    public_key: sesame::key::PublicKey::from_bytes(key)?,
                    hostname: &"pc".parse().expect("hostname"),
                    key_lifetime: None,
                },
                &pool,
                &it,
            )
            .await?;
        devices.push(e.device.id);
    }
    Ok(devices)
}

/// The log: `n` events evenly over a year, bulk path; the seconds it took.
async fn generate_log(
    store: &Store,
    n: usize,
    users: usize,
    devices: &[i64],
) -> anyhow::Result<f64> {
    let gen_start = Instant::now();
    let mut rng = Rng(0x5e5a_3e00_d00d_f00d);
    let step = SPAN / n.max(1) as i64;
    let mut i = 0usize;
    while i < n {
        let end = (i + 50_000).min(n);
        let batch: Vec<(i64, NewAuditEvent)> = (i..end)
            .map(|k| {
                let ts = T0 + k as i64 * step;
                (ts, event(&mut rng, users, devices, ts))
            })
            .collect();
        store.append_audit_bulk(&batch).await?;
        i = end;
    }
    Ok(gen_start.elapsed().as_secs_f64())
}

/// Access review of one resource, and its peer: the same review's last-use lookups as they
/// were made before migration 0007's table. (p50, p99, rows) of each.
async fn time_reviews(
    store: &Store,
    samples: usize,
) -> anyhow::Result<((f64, f64, usize), (f64, f64, usize))> {
    let mut policy = Policy::new((0..RESOURCES).map(|r| Resource {
        name: resource(r),
        site: "rectorat".into(),
        description: resource(r),
        rules: Vec::new(),
    }));
    for r in 0..RESOURCES {
        policy.grant(&group(r), &[resource(r)])?;
    }
    let vpn = [VPN.to_string()];
    let cfg = ReviewPolicy {
        policy: &policy,
        vpn_users: &vpn,
        static_peers: &[],
    };
    let (r50, r99, r_rows) = time(samples.clamp(1, 50), |i| {
        let store = store.clone();
        let cfg = &cfg;
        async move {
            let review = access_review(
                &store,
                cfg,
                &ReviewSubject::Resource(resource(i % RESOURCES)),
                &PageAsk::default(),
            )
            .await?;
            Ok(review.entries.len())
        }
    })
    .await?;
    // The peer: the same review's last-use lookups as they were made before migration 0007's
    // table (the devices read again, then two index seeks in the log per device, one device at
    // a time), on the same devices (found by one untimed review per resource).
    let mut reviewed: Vec<Vec<i64>> = Vec::with_capacity(RESOURCES);
    for r in 0..RESOURCES {
        let review = access_review(
            store,
            &cfg,
            &ReviewSubject::Resource(resource(r)),
            &PageAsk::default(),
        )
        .await?;
        reviewed.push(review.entries.iter().filter_map(|e| e.device_id).collect());
    }
    let (rp50, rp99, rp_rows) = time(samples.clamp(1, 50), |i| {
        let store = store.clone();
        let ids = reviewed[i % RESOURCES].clone();
        async move {
            store.active_devices().await?;
            let mut found = 0;
            for d in &ids {
                let s = sqlx::query(
                    "SELECT id, ts, details FROM audit_events WHERE device_id = $1 \
                     AND action IN ($2, $3) ORDER BY id DESC LIMIT 1",
                )
                .bind(d)
                .bind(Action::TunnelSessionStarted.as_str())
                .bind(Action::TunnelSessionEnded.as_str())
                .fetch_optional(store.pool())
                .await?;
                let f = sqlx::query(
                    "SELECT id, ts, details FROM audit_events WHERE resource = $1 \
                     AND device_id = $2 AND action = $3 ORDER BY ts DESC, id DESC LIMIT 1",
                )
                .bind(resource(i % RESOURCES))
                .bind(d)
                .bind(Action::FlowAllowed.as_str())
                .fetch_optional(store.pool())
                .await?;
                found += usize::from(s.is_some()) + usize::from(f.is_some());
            }
            Ok(found)
        }
    })
    .await?;
    Ok(((r50, r99, r_rows), (rp50, rp99, rp_rows)))
}

/// `RESULT key value` lines for run.sh, then the whole as one JSON line.
fn print_results(results: &serde_json::Value) {
    if let Some(map) = results.as_object() {
        for (k, v) in map {
            println!("RESULT audit_{k} {v}");
        }
    }
    println!("{results}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = sesame_bench::args::Args::from_env()?;
    let dir: std::path::PathBuf = args.req("dir")?;
    let n: usize = args.get("events", 10_000_000)?;
    let users: usize = args.get("users", 1000)?;
    let samples: usize = args.get("samples", 200)?;
    let peer_samples: usize = args.get("peer-samples", 5)?;
    std::fs::create_dir_all(&dir).context("--dir")?;
    let url: String = args.get("url", format!("sqlite://{}/audit-bench.db", dir.display()))?;
    let store = Store::connect(&url)
        .await
        .context("open the bench database")?;

    // A log generated by an earlier run (same flags) is reused: only the queries are timed again.
    let reuse = store.count_audit().await? >= n as i64;
    let (devices, gen_secs, db_bytes) = if reuse {
        let devices: Vec<i64> = store
            .active_devices()
            .await?
            .iter()
            .map(|d| d.device.id)
            .collect();
        eprintln!(
            "audit_query: reusing the {n}-event log of {}",
            dir.display()
        );
        (devices, 0.0, 0)
    } else {
        let devices = enrol_devices(&store, users).await?;
        let gen_secs = generate_log(&store, n, users, &devices).await?;
        let db_bytes = std::fs::metadata(dir.join("audit-bench.db"))
            .map(|m| m.len())
            .unwrap_or(0);
        (devices, gen_secs, db_bytes)
    };

    // One user, one month (first page, as the API answers).
    let mut rng = Rng(42);
    let mut picks: Vec<(String, i64)> = (0..samples.max(peer_samples))
        .map(|_| {
            (
                format!("u{:04}", rng.below(users)),
                T0 + rng.below(11) as i64 * MONTH,
            )
        })
        .collect();
    picks.truncate(samples.max(peer_samples));
    let (q50, q99, q_rows) = time(samples, |i| {
        let (user, since) = picks[i].clone();
        let store = store.clone();
        async move {
            let f = AuditFilter {
                user: Some(user),
                since: Some(since),
                until: Some(since + MONTH),
                ..AuditFilter::default()
            };
            Ok(store.audit_page(&f, None, 1000).await?.0.len())
        }
    })
    .await?;
    // The peer: the same question as it was asked before the index columns (actor or target,
    // a time range, no index but ts).
    let (p50, p99, p_rows) = time(peer_samples, |i| {
        let (user, since) = picks[i].clone();
        let pool = store.pool().clone();
        async move {
            let rows = sqlx::query(
                "SELECT id FROM audit_events WHERE (actor = $1 OR target = $1) AND ts >= $2 \
                 AND ts < $3 ORDER BY id LIMIT 1000",
            )
            .bind(user)
            .bind(since)
            .bind(since + MONTH)
            .fetch_all(&pool)
            .await?;
            Ok(rows.len())
        }
    })
    .await?;

    let ((r50, r99, r_rows), (rp50, rp99, rp_rows)) = time_reviews(&store, samples).await?;
    store.close().await;
    let results = serde_json::json!({
        "events": n, "users": users, "devices": devices.len(),
        "generate_s": gen_secs, "events_per_s": if reuse { 0.0 } else { n as f64 / gen_secs.max(1e-9) },
        "db_mb": db_bytes as f64 / 1e6,
        "query_p50_ms": q50, "query_p99_ms": q99, "query_rows": q_rows,
        "peer_p50_ms": p50, "peer_p99_ms": p99, "peer_rows": p_rows,
        "review_p50_ms": r50, "review_p99_ms": r99, "review_entries": r_rows,
        "review_peer_p50_ms": rp50, "review_peer_p99_ms": rp99, "review_peer_found": rp_rows,
    });
    print_results(&results);
    Ok(())
}
