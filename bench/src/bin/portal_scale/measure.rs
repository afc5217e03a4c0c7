//! The three measurements of one portal at one size: its idle CPU (and where the bursts are),
//! one revocation's time to a waiting site feed, and the IT pages' latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sesame::audit::AuditContext;
use sesame::store::Store;
use sesame_bench::sys::process_cpu;

/// Idle CPU over a window, sampled every [`SAMPLE`].
pub struct Idle {
    pub wall: Duration,
    pub cpu: Duration,
    /// Runs of consecutive samples each above [`BURST`] of CPU: (CPU, wall, start from the
    /// window's start) of each.
    pub bursts: Vec<(Duration, Duration, Duration)>,
    /// When the window started (Unix time), to line the bursts up with the portal's log.
    pub started_at: std::time::SystemTime,
    /// The PostgreSQL server's CPU over the same window (PostgreSQL only).
    pub server: Option<Duration>,
}

const SAMPLE: Duration = Duration::from_millis(250);
/// A sample with at least this much CPU (two clock ticks: 8 % of a core over the sample) is
/// part of a burst of work (a full recomputation), not of the idle background.
const BURST: Duration = Duration::from_millis(20);

impl Idle {
    pub fn share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64() * 100.0
    }

    pub fn burst_cpu(&self) -> Duration {
        self.bursts.iter().map(|b| b.0).sum()
    }

    /// The window in one line: share of a core, CPU, the bursts, the server's share.
    pub fn describe(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let bursts: Vec<String> = self
            .bursts
            .iter()
            .map(|(cpu, wall, at)| {
                format!(
                    "{:.0} ms CPU in {:.2} s at +{:.1} s",
                    ms(*cpu),
                    wall.as_secs_f64(),
                    at.as_secs_f64()
                )
            })
            .collect();
        let server = self
            .server
            .map(|s| {
                format!(
                    "; PostgreSQL server {:.3} % of a core",
                    s.as_secs_f64() / self.wall.as_secs_f64() * 100.0
                )
            })
            .unwrap_or_default();
        format!(
            "{:.3} % of a core over {:.0} s ({:.0} ms CPU), {:.3} % outside {} bursts [{}]{server}",
            self.share(),
            self.wall.as_secs_f64(),
            ms(self.cpu),
            self.background_share(),
            self.bursts.len(),
            bursts.join(", ")
        )
    }

    /// The share of a core outside the bursts.
    pub fn background_share(&self) -> f64 {
        (self.cpu.saturating_sub(self.burst_cpu())).as_secs_f64() / self.wall.as_secs_f64() * 100.0
    }
}

/// Samples the portal's CPU time (utime + stime of /proc/PID/stat) for `window`.
pub async fn idle(pid: u32, window: Duration, server: Option<u32>) -> anyhow::Result<Idle> {
    let server_cpu = |pm: Option<u32>| pm.map(super::process::server_cpu).transpose();
    let s0 = server_cpu(server)?;
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let first = process_cpu(pid)?;
    let mut last = first;
    let mut bursts = Vec::new();
    let mut current: Option<(Duration, Duration, Duration)> = None;
    let mut tick = tokio::time::interval(SAMPLE);
    tick.tick().await;
    while started.elapsed() < window {
        tick.tick().await;
        let now = process_cpu(pid)?;
        let delta = now.saturating_sub(last);
        last = now;
        if delta >= BURST {
            let at = started.elapsed().saturating_sub(SAMPLE);
            let b = current.get_or_insert((Duration::ZERO, Duration::ZERO, at));
            b.0 += delta;
            b.1 += SAMPLE;
        } else if let Some(b) = current.take() {
            bursts.push(b);
        }
    }
    bursts.extend(current);
    let wall = started.elapsed();
    let server = match (s0, server_cpu(server)?) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(Idle {
        wall,
        cpu: last.saturating_sub(first),
        bursts,
        server,
        started_at,
    })
}

/// The site feed as a gateway reads it.
pub struct Feed {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

/// What an answer of the feed says.
pub struct FeedAnswer {
    pub version: u64,
    pub generation: String,
    pub peers: usize,
    pub removed: Vec<String>,
    pub bytes: usize,
}

impl Feed {
    pub async fn get(&self, since: Option<(u64, &str)>, wait: u64) -> anyhow::Result<FeedAnswer> {
        let mut url = format!("{}?site={}&wait={wait}", self.url, super::process::SITE);
        if let Some((v, g)) = since {
            url.push_str(&format!("&since={v}&generation={g}"));
        }
        let r = self.http.get(&url).bearer_auth(&self.token).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        anyhow::ensure!(
            status == 200,
            "feed answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let list = |k: &str| v[k].as_array().map(Vec::len).unwrap_or(0);
        Ok(FeedAnswer {
            version: v["version"].as_u64().context("feed: no version")?,
            generation: v["generation"]
                .as_str()
                .context("feed: no generation")?
                .to_string(),
            peers: list("peers"),
            removed: v["removed"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            bytes: body.len(),
        })
    }
}

/// One revocation's propagation: the commit's duration, and from the revocation's start to
/// the waiting feed request's answer naming the device's key.
pub struct Propagation {
    pub commit: Duration,
    pub seen: Duration,
}

/// Revokes device `id` (key `key`) through the store, as `sesame devices revoke` does from
/// another process, while a feed request waits (long-poll) after the current version.
pub async fn propagation(
    store: &Store,
    feed: &Arc<Feed>,
    id: i64,
    key: &str,
) -> anyhow::Result<Propagation> {
    let now = feed.get(None, 0).await?;
    let (mut version, generation) = (now.version, now.generation);
    let waiting = {
        let (feed, generation) = (Arc::clone(feed), generation.clone());
        tokio::spawn(async move { feed.get(Some((version, &generation)), 30).await })
    };
    // The request is parked in the portal before the change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    store
        .revoke_device(id, "portal_scale", &AuditContext::system())
        .await?;
    let commit = started.elapsed();
    let mut answer = waiting.await??;
    while !answer.removed.iter().any(|k| k == key) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the revocation of device {id} did not reach the feed within 60 s"
        );
        anyhow::ensure!(
            answer.generation == generation,
            "the feed changed generation"
        );
        version = answer.version;
        answer = feed.get(Some((version, &generation)), 30).await?;
    }
    Ok(Propagation {
        commit,
        seen: started.elapsed(),
    })
}

/// Latencies of one page: sequential and concurrent runs.
pub struct PageTimes {
    pub sequential: Vec<Duration>,
    pub concurrent: Vec<Duration>,
    pub concurrent_wall: Duration,
    pub bytes: usize,
    /// Answers other than 200 (503 `request_timeout`), counted in the latencies too.
    pub errors: usize,
}

/// `q`-quantile (0..=1) of sorted `v`, nearest rank.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// One GET: its time, its body's size, and its status when it is not 200 (an answer all the
/// same: the portal's 503 `request_timeout` comes after [`REQUEST_TIMEOUT`](sesame::portal::routes::REQUEST_TIMEOUT)).
async fn get_page(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
) -> anyhow::Result<(Duration, usize, Option<u16>)> {
    let t = Instant::now();
    let r = http
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let body = r.bytes().await?;
    let took = t.elapsed();
    anyhow::ensure!(
        status == 200 || status == 503,
        "GET {url}: {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    Ok((took, body.len(), (status != 200).then_some(status.as_u16())))
}

/// `requests` GETs of `url` one after the other, then `requests` more from `clients`
/// concurrent clients; each run stops early after `budget` (the count says how many ran).
pub async fn page(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    requests: usize,
    clients: usize,
    budget: Duration,
) -> anyhow::Result<PageTimes> {
    let (_, bytes, _) = get_page(http, url, cookie).await?; // warm
    let mut sequential = Vec::with_capacity(requests);
    let mut errors = 0;
    let started = Instant::now();
    while sequential.len() < requests && started.elapsed() < budget {
        let (took, _, error) = get_page(http, url, cookie).await?;
        sequential.push(took);
        errors += usize::from(error.is_some());
    }
    let started = Instant::now();
    let per_client = requests.div_ceil(clients);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, cookie) = (http.clone(), url.to_string(), cookie.to_string());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(per_client);
            let mut errors = 0;
            while times.len() < per_client && started.elapsed() < budget {
                let (took, _, error) = get_page(&http, &url, &cookie).await?;
                times.push(took);
                errors += usize::from(error.is_some());
            }
            anyhow::Ok((times, errors))
        }));
    }
    let mut concurrent = Vec::with_capacity(requests);
    for t in tasks {
        let (times, e) = t.await??;
        concurrent.extend(times);
        errors += e;
    }
    let concurrent_wall = started.elapsed();
    sequential.sort();
    concurrent.sort();
    Ok(PageTimes {
        sequential,
        concurrent,
        concurrent_wall,
        bytes,
        errors,
    })
}

/// The device list's search before migration 0019: every device's text matched in id order.
const SEARCH_BEFORE_0019: &str = "SELECT d.id FROM devices d \
    WHERE (d.search_text LIKE $1 ESCAPE '\\' OR d.tunnel_address LIKE $1 ESCAPE '\\') \
    ORDER BY d.id LIMIT 51";

/// The plans of the device list's text search (`Store::device_search_plan`, one page of 50, and
/// the statement before migration 0019) and of `Store::active_devices`' join: `EXPLAIN` on
/// PostgreSQL (`ANALYZE, BUFFERS` for the hand-written ones), `EXPLAIN QUERY PLAN` on SQLite.
pub async fn explain(store: &Store, postgres: bool, text: &str) -> anyhow::Result<String> {
    let search = sesame::store::DeviceSearch {
        text: Some(text.into()),
        limit: Some(50),
        ..Default::default()
    };
    let mut out = format!(
        "  Store::search_devices({text:?})\n{}",
        indent(&store.device_search_plan(&search).await?)
    );
    let before = SEARCH_BEFORE_0019.replace("$1", &format!("'%{text}%'"));
    let active = "SELECT d.*, u.* FROM devices d JOIN users u ON u.username = d.username \
        WHERE d.status = 'active' AND d.suspended_at IS NULL ORDER BY d.id";
    for sql in [before.as_str(), active] {
        let prefix = if postgres {
            "EXPLAIN (ANALYZE, BUFFERS) "
        } else {
            "EXPLAIN QUERY PLAN "
        };
        let rows = sqlx::query(&format!("{prefix}{sql}"))
            .fetch_all(store.pool())
            .await?;
        out.push_str(&format!("  {sql}\n"));
        for row in rows {
            use sqlx::Row as _;
            // PostgreSQL: one text column; SQLite: (id, parent, notused, detail).
            let line: String = if postgres {
                row.try_get(0)?
            } else {
                row.try_get(3)?
            };
            out.push_str(&format!("    {line}\n"));
        }
    }
    Ok(out)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// One page (50) of the device search for `text` through `Store::search_devices` (the trigram
/// index), then with the statement before migration 0019 (a match against every device in id
/// order), `rounds` each: (after, before) as (p50, max, rows of the page).
pub async fn search_index(
    store: &Store,
    text: &str,
    rounds: usize,
) -> anyhow::Result<[(Duration, Duration, u64); 2]> {
    let search = sesame::store::DeviceSearch {
        text: Some(text.into()),
        limit: Some(50),
        ..Default::default()
    };
    let pattern = format!("%{}%", sesame::text::fold(text));
    let (mut after, mut before) = (Vec::new(), Vec::new());
    let (mut rows_after, mut rows_before) = (0, 0);
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        rows_after = store.search_devices(&search).await?.0.len() as u64;
        after.push(t.elapsed());
        let t = Instant::now();
        let ids: Vec<i64> = sqlx::query_scalar(SEARCH_BEFORE_0019)
            .bind(&pattern)
            .fetch_all(store.pool())
            .await?;
        before.push(t.elapsed());
        rows_before = ids.len().min(50) as u64;
    }
    anyhow::ensure!(
        rows_after == rows_before,
        "{text}: {rows_after} devices with the index, {rows_before} without"
    );
    after.sort();
    before.sort();
    let stats = |v: &[Duration], rows| (quantile(v, 0.5), quantile(v, 1.0), rows);
    Ok([stats(&after, rows_after), stats(&before, rows_before)])
}

/// The two indexes as they were before migration 0018 (narrower: the count visited rows).
const INDEXES_BEFORE_0018: &str = "DROP INDEX user_groups_group_dn; \
    CREATE INDEX user_groups_group_dn ON user_groups (group_dn); \
    DROP INDEX devices_username; \
    CREATE INDEX devices_username ON devices (username)";
/// Migration 0018 itself (the same on both backends), to put the indexes back.
const MIGRATION_0018: &str =
    include_str!("../../../../migrations/sqlite/0018_covering_indexes.sql");

/// The review's count of `paie` with the store's indexes, then with those before migration
/// 0018 (rebuilt on this throwaway store, then put back): (after, before) as
/// (p50, max, count) over `rounds` each.
pub async fn review_count(
    store: &Store,
    postgres: bool,
    rounds: usize,
) -> anyhow::Result<[(Duration, Duration, u64); 2]> {
    let after = time_count(store, rounds).await?;
    rebuild(store, INDEXES_BEFORE_0018, postgres).await?;
    let before = time_count(store, rounds).await?;
    rebuild(store, MIGRATION_0018, postgres).await?;
    Ok([after, before])
}

/// Runs `statements` (`;`-separated, `--` comments allowed); on PostgreSQL refreshes the
/// statistics then, as autovacuum would (the portal never analyzes a SQLite store).
async fn rebuild(store: &Store, statements: &str, postgres: bool) -> anyhow::Result<()> {
    let code: String = statements
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut tx = store.pool().begin().await?;
    for stmt in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::query(stmt).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    if postgres {
        sqlx::query("ANALYZE").execute(store.pool()).await?;
    }
    Ok(())
}

/// Times `rounds` counts of the devices granted `paie` (`Store::review_granted_count`, what the
/// first access-review page of a resource pays after each change of the peer set, the portal's
/// count cache aside): (p50, max, the count).
async fn time_count(store: &Store, rounds: usize) -> anyhow::Result<(Duration, Duration, u64)> {
    let granting = [sesame_bench::fill::PAIE.to_string()];
    let vpn_users = [sesame_bench::fill::VPN_USERS.to_string()];
    let to = sesame::store::GrantedTo {
        granting: &granting,
        vpn_users: &vpn_users,
    };
    let mut times = Vec::with_capacity(rounds);
    let mut count = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        count = store.review_granted_count(to).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((quantile(&times, 0.5), quantile(&times, 1.0), count))
}
