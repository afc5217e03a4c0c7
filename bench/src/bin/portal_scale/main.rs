//! A real `sesame portal` process at 1,000 / 10,000 / 100,000 enrolled devices (issue 21), on
//! SQLite and PostgreSQL, in one run: its idle CPU (utime + stime over the window, and the bursts
//! in it: the periodic jobs; the whole set is recomputed every 15 min only), one revocation's time to a waiting site
//! feed (long-poll), and p50/p99 of the IT device list (first page and a search), the IT
//! dashboard and the access review (by resource, by user), sequential and concurrent. Beside
//! them, in the same run on the same database, the whole-table poll the publisher ran every
//! second before the change log (the "before" of the idle CPU).
//!
//! The store is filled in bulk (`sesame_bench::fill`, realistic mix: grants on two sites, 5 %
//! revoked, 1 % disabled); the directory is a closed loopback port (the sync fails, stored
//! groups stay); the IT session is a session row opened through the store for a user whose
//! stored groups make them IT staff and auditor (as a web login against the directory would).
//!
//! `portal_scale [--sizes 1000,10000,100000] [--backends sqlite,postgres] [--idle SECS]
//! [--requests N] [--clients N] [--budget SECS] [--propagations N] [--perf] [--explain]
//! [--smoke]` (`--explain`: the plans of the device search and of the active devices' read);
//! `--sesame PATH` (default: `sesame` beside this binary). Prints `RESULT portal_scale_…` lines
//! and a summary table.

// A report tool: its lines are its output.
#![allow(clippy::print_stdout)]

mod measure;
mod process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sesame::directory::DirectoryUser;
use sesame::store::{NewSession, Store};
use sesame_bench::args::Args;
use sesame_bench::fill::{fill, Mix, SCAN};
use sesame_bench::tunn::result;

use measure::{quantile, Feed};
use process::PortalProcess;

#[allow(clippy::unwrap_used)]
#[path = "../../../../tests/common/postgres.rs"]
mod postgres;

struct Opts {
    sizes: Vec<usize>,
    idle: Duration,
    requests: usize,
    clients: usize,
    budget: Duration,
    propagations: usize,
    perf: bool,
    explain: bool,
    sesame: PathBuf,
}

/// One summary line of the final table.
struct Row {
    backend: &'static str,
    n: usize,
    text: String,
}

/// The pages measured, by label.
fn pages(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("it_devices", "/it/devices".to_string()),
        ("it_devices_search", format!("/it/devices?q=u{}", n / 2 + 1)),
        ("it_dashboard", "/it/dashboard".to_string()),
        (
            "review_resource",
            "/audit/access-review?resource=paie".to_string(),
        ),
        (
            "review_user",
            format!("/audit/access-review?user=u{}", n / 2 + 1),
        ),
    ]
}

/// Users whose device is in the `rectorat` feed (granted `rh`, VPN user, not revoked, enabled),
/// from `from` up.
fn in_feed(from: usize, to: usize) -> impl Iterator<Item = usize> {
    let mix = Mix::Realistic;
    (from..to).filter(move |&m| {
        mix.groups(m).contains(&sesame_bench::fill::RH)
            && mix.groups(m).contains(&sesame_bench::fill::VPN_USERS)
            && !mix.revoked(m)
            && !mix.disabled(m)
    })
}

async fn mean_scan_us(store: &Store, polls: u32) -> anyhow::Result<f64> {
    sqlx::query(SCAN).fetch_one(store.pool()).await?;
    let t = Instant::now();
    for _ in 0..polls {
        sqlx::query(SCAN).fetch_one(store.pool()).await?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(polls))
}

/// The machine's 1, 5 and 15 minute load averages (2 cores, shared).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `HH:MM:SS.mmm` of a Unix time, UTC (the portal's log lines carry the same clock).
fn utc(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `perf record -g` of the portal for `secs`, then its flat profile into `out`.
fn perf(pid: u32, secs: u64, out: &Path) -> anyhow::Result<()> {
    let data = out.with_extension("data");
    let rec = std::process::Command::new("perf")
        .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &secs.to_string()])
        .output()
        .context("running perf record")?;
    anyhow::ensure!(
        rec.status.success(),
        "perf record: {}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let rep = std::process::Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--percent-limit",
            "0.5",
            "-g",
            "none",
            "-i",
        ])
        .arg(&data)
        .output()
        .context("running perf report")?;
    let inclusive = std::process::Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--children",
            "--percent-limit",
            "3",
            "-g",
            "none",
            "-i",
        ])
        .arg(&data)
        .output()
        .context("running perf report --children")?;
    let mut text = rep.stdout;
    text.extend_from_slice(b"\n\n==== inclusive (--children) ====\n");
    text.extend_from_slice(&inclusive.stdout);
    std::fs::write(out, text)?;
    Ok(())
}

/// What every size of one backend shares.
struct Ctx<'a> {
    backend: &'static str,
    opts: &'a Opts,
    store: Store,
    config: PathBuf,
    base: String,
    http: reqwest::Client,
    feed: Arc<Feed>,
    postmaster: Option<u32>,
}

async fn run_backend(
    backend: &'static str,
    url: &str,
    pg_port: Option<u16>,
    opts: &Opts,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    let dir = tempfile::Builder::new().prefix("portal_scale-").tempdir()?;
    let (config, base) = process::write_config(dir.path(), url)?;
    let token = process::site_token(&opts.sesame, &config)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .build()?;
    let feed = Arc::new(Feed {
        http: http.clone(),
        url: format!("{base}/api/v1/gateway/feed"),
        token,
    });
    let ctx = Ctx {
        backend,
        opts,
        store,
        config,
        base,
        http,
        feed,
        postmaster: pg_port.and_then(process::postmaster_of),
    };
    let mut filled = 0;
    let mut next_victim = 0;
    for &n in &opts.sizes {
        let load_before = loadavg();
        let t = Instant::now();
        fill(&ctx.store, filled, n, Mix::Realistic, ctx.store.now_ms()).await?;
        filled = n;
        if backend == "postgres" {
            // What autovacuum does after a bulk load, done now rather than in the idle window.
            sqlx::query("VACUUM ANALYZE")
                .execute(ctx.store.pool())
                .await?;
        }
        let fill_time = t.elapsed();
        if opts.explain {
            let plans = measure::explain(
                &ctx.store,
                backend == "postgres",
                &format!("u{}", n / 2 + 1),
            )
            .await?;
            println!("{backend} {n}: plans\n{plans}");
        }
        let text = measure_size(&ctx, n, &mut next_victim).await?;
        let text = format!(
            "load average {load_before} before, {} after; fill {:.1} s\n{text}",
            loadavg(),
            fill_time.as_secs_f64()
        );
        println!("==== {backend} {n} devices\n{text}");
        rows.push(Row { backend, n, text });
    }
    ctx.store.close().await;
    Ok(())
}

/// The device search from the bench, a rare and a common text, with the trigram index and with
/// the statement before migration 0019, side by side: one line each.
async fn search_lines(store: &Store, backend: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut search_lines = Vec::new();
    for (label, text) in [
        ("rare", format!("u{}", n / 2 + 1)),
        ("common", "pc-1".into()),
    ] {
        let [(a50, amax, rows), (b50, bmax, _)] = measure::search_index(store, &text, 20).await?;
        result(
            &format!("portal_scale_{backend}_{n}_search_{label}_p50"),
            ms(a50),
            "ms",
        );
        result(
            &format!("portal_scale_{backend}_{n}_search_{label}_before_p50"),
            ms(b50),
            "ms",
        );
        search_lines.push(format!(
            "device search {text:?} ({label}, {rows} rows in the page) from the bench: p50 {:.2} ms, max {:.2} ms over 20; with the statement before migration 0019: p50 {:.2} ms, max {:.2} ms (ratio {:.1})",
            ms(a50), ms(amax), ms(b50), ms(bmax), b50.as_secs_f64() / a50.as_secs_f64().max(1e-9)
        ));
    }
    Ok(search_lines)
}

/// Median time of three `Store::active_devices` calls from this process: what the publisher's
/// full pass, the access review and a delegated dashboard read first.
async fn store_read(store: &Store) -> anyhow::Result<(Duration, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..3 {
        let t = Instant::now();
        rows = store.active_devices().await?.len();
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[1], rows))
}

/// `--propagations` revocations of devices in the `rectorat` feed, from the middle of the
/// users up (never one revoked already), each timed to the waiting feed request.
async fn propagations(
    ctx: &Ctx<'_>,
    n: usize,
    next_victim: &mut usize,
) -> anyhow::Result<Vec<measure::Propagation>> {
    let mut props = Vec::new();
    for m in in_feed((*next_victim).max(n / 2), n).take(ctx.opts.propagations) {
        let (id, key): (i64, String) = sqlx::query_as(
            "SELECT id, public_key FROM devices WHERE username = $1 AND status = 'active'",
        )
        .bind(sesame_bench::fill::username(m))
        .fetch_one(ctx.store.pool())
        .await?;
        props.push(measure::propagation(&ctx.store, &ctx.feed, id, &key).await?);
        *next_victim = m + 1;
    }
    Ok(props)
}

/// One size: the portal started on the filled store, idle, propagation, pages; the summary.
async fn measure_size(ctx: &Ctx<'_>, n: usize, next_victim: &mut usize) -> anyhow::Result<String> {
    let (backend, opts) = (ctx.backend, ctx.opts);
    let scan = mean_scan_us(&ctx.store, 20).await?;
    let (read, read_rows) = store_read(&ctx.store).await?;
    let [(count_p50, count_max, counted), (before_p50, before_max, _)] =
        measure::review_count(&ctx.store, backend == "postgres", 20).await?;
    let search_lines = search_lines(&ctx.store, backend, n).await?;
    let mut portal = PortalProcess::start(&opts.sesame, &ctx.config, &ctx.base)?;
    let ready = portal
        .wait_ready(&ctx.http, Duration::from_secs(600))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = measure::idle(portal.pid(), opts.idle, ctx.postmaster).await?;
    if opts.perf && Some(&n) == opts.sizes.last() {
        let out = std::env::temp_dir().join(format!("portal_scale-perf-{backend}-{n}.txt"));
        match perf(portal.pid(), 35, &out) {
            Ok(()) => println!(
                "{backend} {n}: perf profile of 35 s idle in {}",
                out.display()
            ),
            Err(e) => println!("{backend} {n}: no perf profile: {e:#}"),
        }
    }
    let t = Instant::now();
    let full = ctx.feed.get(None, 0).await?;
    let full_time = t.elapsed();
    let props = propagations(ctx, n, next_victim).await?;
    let page_lines = measure_pages(ctx, n).await?;
    let log = portal.log();
    let panicked = log.contains("panicked");
    let kept = std::env::temp_dir().join(format!("portal_scale-{backend}-{n}.log"));
    std::fs::write(&kept, &log)?;
    drop(portal);
    anyhow::ensure!(!panicked, "the portal panicked");

    let share = idle.share();
    let scan_share = scan / 1e4; // one poll a second, µs → % of a core
    result(&format!("portal_scale_{backend}_{n}_idle_pct"), share, "%");
    result(&format!("portal_scale_{backend}_{n}_scan_us"), scan, "us");
    result(
        &format!("portal_scale_{backend}_{n}_active_devices"),
        ms(read),
        "ms",
    );
    let mut seen: Vec<Duration> = props.iter().map(|p| p.seen).collect();
    seen.sort();
    let (p50, pmax) = (quantile(&seen, 0.5), quantile(&seen, 1.0));
    result(
        &format!("portal_scale_{backend}_{n}_propagation_p50"),
        ms(p50),
        "ms",
    );
    result(
        &format!("portal_scale_{backend}_{n}_propagation_max"),
        ms(pmax),
        "ms",
    );
    let commits: Vec<String> = props
        .iter()
        .map(|p| format!("{:.1} ms", ms(p.commit)))
        .collect();
    Ok(format!(
        "portal ready in {:.2} s (its log: {}); Store::active_devices from the bench: {:.0} ms for {read_rows} rows\n\
         review count of paie from the bench ({counted} devices; a review page after a change pays it): p50 {:.1} ms, max {:.1} ms over 20; with the indexes before migration 0018: p50 {:.1} ms, max {:.1} ms\n\
         {}\n\
         idle from {} (UTC): {}\n\
         before (the scan once a second, {scan:.0} µs a poll in this run): + {scan_share:.3} % of a core\n\
         feed: full set {} peers, {} bytes in {:.1} ms; revocation → waiting feed: p50 {:.1} ms, max {:.1} ms over {} (commit {})\n  {}",
        ready.as_secs_f64(),
        kept.display(),
        ms(read),
        ms(count_p50),
        ms(count_max),
        ms(before_p50),
        ms(before_max),
        search_lines.join("\n"),
        utc(idle.started_at),
        idle.describe(),
        full.peers,
        full.bytes,
        ms(full_time),
        ms(p50),
        ms(pmax),
        seen.len(),
        commits.join(", "),
        page_lines.join("\n  ")
    ))
}

/// The IT pages, with a session of an IT technician who is also an auditor (the stored groups
/// a web login would have left).
async fn measure_pages(ctx: &Ctx<'_>, n: usize) -> anyhow::Result<Vec<String>> {
    let (backend, opts) = (ctx.backend, ctx.opts);
    let admin = ctx
        .store
        .upsert_user(&DirectoryUser {
            username: "it-bench".into(),
            dn: "uid=it-bench,ou=people,dc=ac".into(),
            display_name: "IT bench".into(),
            groups: vec![process::IT_STAFF.into(), process::AUDITORS.into()],
            disabled: false,
        })
        .await?;
    let (session, _) = ctx
        .store
        .create_session(&NewSession {
            username: admin.username,
            roles: vec!["it_staff".into(), "auditor".into()],
            ttl: Duration::from_secs(3600),
        })
        .await?;
    let cookie = format!("sesame={session}");
    let mut lines = Vec::new();
    for (label, path) in pages(n) {
        let url = format!("{}{path}", ctx.base);
        let p = measure::page(
            &ctx.http,
            &url,
            &cookie,
            opts.requests,
            opts.clients,
            opts.budget,
        )
        .await?;
        let (s50, s99) = (quantile(&p.sequential, 0.5), quantile(&p.sequential, 0.99));
        let (c50, c99) = (quantile(&p.concurrent, 0.5), quantile(&p.concurrent, 0.99));
        for (what, v) in [
            ("seq_p50", s50),
            ("seq_p99", s99),
            ("conc_p50", c50),
            ("conc_p99", c99),
        ] {
            result(
                &format!("portal_scale_{backend}_{n}_{label}_{what}"),
                ms(v),
                "ms",
            );
        }
        let errors = if p.errors > 0 {
            format!(", {} answers 503 request_timeout", p.errors)
        } else {
            String::new()
        };
        let line = format!(
            "{label} ({path}, {} bytes{errors}): sequential p50 {:.1} ms p99 {:.1} ms (n={}); {} clients p50 {:.1} ms p99 {:.1} ms (n={}, {:.1} req/s)",
            p.bytes,
            ms(s50),
            ms(s99),
            p.sequential.len(),
            opts.clients,
            ms(c50),
            ms(c99),
            p.concurrent.len(),
            p.concurrent.len() as f64 / p.concurrent_wall.as_secs_f64()
        );
        println!("{backend} {n}: {line}");
        lines.push(line);
    }
    Ok(lines)
}

fn opts(args: &Args) -> anyhow::Result<(Opts, Vec<String>)> {
    let smoke = args.flag("smoke");
    let sizes: String = args.get(
        "sizes",
        if smoke {
            "200,1000"
        } else {
            "1000,10000,100000"
        }
        .to_string(),
    )?;
    let sizes = sizes
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<Vec<usize>, _>>()?;
    anyhow::ensure!(
        sizes.windows(2).all(|w| w[0] < w[1]),
        "--sizes: increasing sizes"
    );
    let backends: String = args.get("backends", "sqlite,postgres".to_string())?;
    let exe = std::env::current_exe()?;
    let sesame = match args.str("sesame") {
        Some(p) => PathBuf::from(p),
        None => exe.with_file_name("sesame"),
    };
    anyhow::ensure!(
        sesame.exists(),
        "{} missing: cargo build --release -p sesame",
        sesame.display()
    );
    Ok((
        Opts {
            sizes,
            idle: Duration::from_secs(args.get("idle", if smoke { 3 } else { 65 })?),
            requests: args.get("requests", if smoke { 20 } else { 200 })?,
            clients: args.get("clients", if smoke { 4 } else { 10 })?,
            budget: Duration::from_secs(args.get("budget", if smoke { 5 } else { 30 })?),
            propagations: args.get("propagations", if smoke { 2 } else { 5 })?,
            perf: args.flag("perf"),
            explain: args.flag("explain"),
            sesame,
        },
        backends.split(',').map(String::from).collect(),
    ))
}

/// SIGINT or SIGTERM, as an error.
async fn stop_signal() -> anyhow::Error {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => anyhow::anyhow!("interrupted (SIGINT)"),
                _ = term.recv() => anyhow::anyhow!("terminated (SIGTERM)"),
            }
        }
        (Err(e), _) | (_, Err(e)) => anyhow::anyhow!("cannot watch the stop signals: {e}"),
    }
}

fn main() -> anyhow::Result<()> {
    let (opts, backends) = opts(&Args::from_env()?)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    // The portal is started from this (main) thread: it dies with the benchmark. SIGINT and
    // SIGTERM end the run through the drops (portal killed, cluster stopped and removed).
    for backend in &backends {
        match backend.as_str() {
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}/bench.db", dir.path().display());
                let r = rt.block_on(async {
                    tokio::select! {
                        r = run_backend("sqlite", &url, None, &opts, &mut rows) => r,
                        e = stop_signal() => Err(e),
                    }
                });
                if let Err(e) = r {
                    println!("{backend}: FAILED: {e:#}");
                    failed.push(backend.clone());
                }
            }
            "postgres" => {
                // Stopped and removed on drop, on error and panic included.
                let cluster = postgres::PgCluster::start();
                cluster.create_database("scale");
                let url = cluster.url("scale");
                let r = rt.block_on(async {
                    tokio::select! {
                        r = run_backend("postgres", &url, Some(cluster.port()), &opts, &mut rows) => r,
                        e = stop_signal() => Err(e),
                    }
                });
                if let Err(e) = r {
                    println!("{backend}: FAILED: {e:#}");
                    failed.push(backend.clone());
                }
            }
            other => anyhow::bail!("--backends: unknown {other:?} (sqlite, postgres)"),
        }
    }
    println!("\n==== summary ({} s idle windows)", opts.idle.as_secs());
    for r in &rows {
        println!("-- {} {} devices\n{}", r.backend, r.n, r.text);
    }
    anyhow::ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
    Ok(())
}
