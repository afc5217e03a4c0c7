//! Prometheus metrics (prometheus-client): the registry, the portal/control series, and the listener apart from the portal.
//!
//! Counters are updated where things happen; the gateway's are read from its handle at scrape
//! time ([`gateway::GatewayCollector`]). Other parts add their own series through
//! [`Metrics::register`] or [`Metrics::register_collector`] (e.g. the audit writer's queue).

pub mod gateway;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use crate::listen::ListenLimits;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// A site (the feed's series).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Site {
    site: String,
}

fn outcome(ok: bool) -> Outcome {
    Outcome {
        outcome: if ok { "success" } else { "failure" },
    }
}

/// Latency buckets from 1 ms to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// Every series of the process, and the registry they are exposed through.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    logins: Family<Outcome, Counter>,
    enrolments: Family<Outcome, Counter>,
    rotations: Counter,
    revocations: Counter,
    rate_limited: Counter,
    spray_episodes: Counter,
    spray_refused: Counter,
    suspensions: Counter,
    sync_held: Counter,
    ldap_seconds: Histogram,
    database_seconds: Histogram,
    sync_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    sync_seconds: Histogram,
    sync_errors: Counter,
    sync_changes: Counter,
    reloads: Family<Outcome, Counter>,
    jobs_leader: Gauge,
    leader_changes: Counter,
    feed_waiting: Family<Site, Gauge>,
    feed_last_request: Family<Site, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// A site gateway's feed request while it is held (`sesame_feed_waiting`); dropped with the
/// answer.
#[derive(Debug)]
pub struct FeedRequest(Gauge);

impl Drop for FeedRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            logins: Family::default(),
            enrolments: Family::default(),
            rotations: Counter::default(),
            revocations: Counter::default(),
            rate_limited: Counter::default(),
            spray_episodes: Counter::default(),
            spray_refused: Counter::default(),
            suspensions: Counter::default(),
            sync_held: Counter::default(),
            ldap_seconds: latency_histogram(),
            database_seconds: latency_histogram(),
            sync_last_success: Gauge::default(),
            jobs_leader: Gauge::default(),
            leader_changes: Counter::default(),
            sync_seconds: latency_histogram(),
            sync_errors: Counter::default(),
            sync_changes: Counter::default(),
            reloads: Family::default(),
            feed_waiting: Family::default(),
            feed_last_request: Family::default(),
        };
        m.register(
            "sesame_logins",
            "Portal logins by outcome.",
            m.logins.clone(),
        );
        m.register(
            "sesame_enrolments",
            "Device enrolments by outcome.",
            m.enrolments.clone(),
        );
        m.register(
            "sesame_rotations",
            "Device key rotations.",
            m.rotations.clone(),
        );
        m.register(
            "sesame_revocations",
            "Devices revoked (by IT staff or directory sync).",
            m.revocations.clone(),
        );
        m.register(
            "sesame_rate_limited",
            "Login or enrolment attempts refused by the brute-force limiter.",
            m.rate_limited.clone(),
        );
        m.register(
            "sesame_auth_spray_detected",
            "Password sprays detected: failures across accounts over [portal] spray_ceiling per minute (one per episode).",
            m.spray_episodes.clone(),
        );
        m.register(
            "sesame_auth_spray_refused",
            "Attempts of clients never signed in before refused during a password spray.",
            m.spray_refused.clone(),
        );
        m.register(
            "sesame_ldap_request_seconds",
            "Time the directory took to answer a bind or a lookup.",
            m.ldap_seconds.clone(),
        );
        m.register(
            "sesame_database_query_seconds",
            "Time the database took to answer the gateway publisher (change log and active devices).",
            m.database_seconds.clone(),
        );
        m.register_directory_and_jobs();
        m.register(
            "sesame_config_reloads",
            "Configuration reloads (SIGHUP) by outcome.",
            m.reloads.clone(),
        );
        m
    }

    /// The directory sync's and the singleton jobs' series.
    fn register_directory_and_jobs(&self) {
        self.register(
            "sesame_jobs_leader",
            "1 while this portal holds the jobs lease and runs the singleton jobs (directory sync, key expiry, audit retention and checkpoints), else 0.",
            self.jobs_leader.clone(),
        );
        self.register(
            "sesame_jobs_leader_changes",
            "Times this portal took or lost the jobs lease.",
            self.leader_changes.clone(),
        );
        self.register(
            "sesame_directory_sync_last_success_timestamp_seconds",
            "Unix time of the last directory sync pass that succeeded (0: none yet).",
            self.sync_last_success.clone(),
        );
        self.register(
            "sesame_directory_sync_duration_seconds",
            "Duration of directory sync passes.",
            self.sync_seconds.clone(),
        );
        self.register(
            "sesame_directory_sync_errors",
            "Directory sync passes that failed (grants kept as they were).",
            self.sync_errors.clone(),
        );
        self.register(
            "sesame_directory_sync_changes",
            "Users whose groups changed plus devices revoked, over all sync passes.",
            self.sync_changes.clone(),
        );
        self.register(
            "sesame_device_suspensions",
            "Devices suspended by the directory sync (user left vpn_users, disabled, absent).",
            self.suspensions.clone(),
        );
        self.register(
            "sesame_feed_waiting",
            "Requests of each site's gateway held on the peer feed now (long-polls): 0 for a site means its gateway is not polling this portal.",
            self.feed_waiting.clone(),
        );
        self.register(
            "sesame_feed_last_request_timestamp_seconds",
            "Unix time of the last feed request of each site's gateway to this portal.",
            self.feed_last_request.clone(),
        );
        self.register(
            "sesame_directory_sync_held",
            "Directory sync passes that applied nothing: over directory.max_changes_per_sync.",
            self.sync_held.clone(),
        );
    }

    /// Adds a series (a `Counter` gets the `_total` suffix in the output).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// Adds series computed at scrape time.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry.lock().register_collector(collector);
    }

    pub fn login(&self, ok: bool) {
        self.logins.get_or_create(&outcome(ok)).inc();
    }
    pub fn enrolment(&self, ok: bool) {
        self.enrolments.get_or_create(&outcome(ok)).inc();
    }
    pub fn rotation(&self) {
        self.rotations.inc();
    }
    pub fn revocation(&self) {
        self.revocations.inc();
    }
    pub fn suspension(&self) {
        self.suspensions.inc();
    }
    pub fn sync_held(&self) {
        self.sync_held.inc();
    }
    pub fn spray_detected(&self) {
        self.spray_episodes.inc();
    }
    pub fn spray_refused(&self) {
        self.spray_refused.inc();
    }
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }
    pub fn ldap_latency(&self, d: Duration) {
        self.ldap_seconds.observe(d.as_secs_f64());
    }
    pub fn database_latency(&self, d: Duration) {
        self.database_seconds.observe(d.as_secs_f64());
    }
    /// One directory sync pass: its duration and, when it succeeded, how much it changed.
    pub fn directory_sync(&self, took: Duration, changes: Option<usize>) {
        self.sync_seconds.observe(took.as_secs_f64());
        match changes {
            Some(n) => {
                self.sync_changes.inc_by(n as u64);
                let now_ms = crate::time::now_ms();
                self.sync_last_success.set(now_ms as f64 / 1000.0);
            }
            None => {
                self.sync_errors.inc();
            }
        }
    }
    /// This portal took (`true`) or lost the jobs lease.
    /// A feed request of `site`'s gateway, authenticated: its time is the site's last request,
    /// and it counts as waiting until the returned guard is dropped.
    pub fn feed_request(&self, site: &str) -> FeedRequest {
        let site = Site {
            site: site.to_string(),
        };
        let now = crate::time::now_ms() as f64 / 1000.0;
        self.feed_last_request.get_or_create(&site).set(now);
        let waiting = self.feed_waiting.get_or_create(&site).clone();
        waiting.inc();
        FeedRequest(waiting)
    }
    pub fn jobs_leader(&self, leading: bool) {
        self.jobs_leader.set(i64::from(leading));
        self.leader_changes.inc();
    }
    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&outcome(ok)).inc();
    }

    /// The text exposition format (OpenMetrics text, which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bounds on the metrics listener: a scraper sends its request head at once and reads a page
/// of text; anything slower is not Prometheus (a slow-loris is cut, few may connect).
pub const LIMITS: ListenLimits = ListenLimits {
    header_read_timeout: Duration::from_secs(5),
    max_connections: 32,
    grace: Duration::from_secs(1),
};

/// Binds the metrics listener now (a busy port stops start-up).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let hint_for = |e: &std::io::Error| crate::listen::privileged_port_hint(addr, e);
    let context = |hint: &str| {
        format!("cannot listen on {addr} for metrics ([metrics] listen): is the port in use?{hint}")
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        let msg = context(hint_for(&e));
        anyhow::Error::new(e).context(msg)
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| anyhow::Error::new(e).context(context("")))?;
    Ok(listener)
}

/// The metrics router: `GET /metrics`, nothing else.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.render(),
                )
            }
        }),
    )
}

/// Serves `GET /metrics` until `shutdown` completes, within [`LIMITS`] (through the same
/// listener code as the portal).
pub async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::listen::serve_named("metrics", listener, None, router(metrics), shutdown, LIMITS).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Reads until the server closes (at most 15 s): what it sent, and when it closed.
    async fn read_to_close(s: &mut TcpStream) -> (String, Option<std::time::Instant>) {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
        let closed = r.ok().map(|_| std::time::Instant::now());
        (String::from_utf8_lossy(&buf).into_owned(), closed)
    }

    #[tokio::test]
    async fn a_slow_loris_on_the_metrics_listener_is_cut_and_scrapes_go_on() {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::new());
        tokio::spawn(serve(listener, metrics, std::future::pending()));
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n")
            .await
            .expect("write");
        // Meanwhile a scraper is answered.
        let mut scrape = TcpStream::connect(addr).await.expect("connect");
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let (page, _) = read_to_close(&mut scrape).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("sesame_logins"), "{page}");
        let (answer, closed) = read_to_close(&mut slow).await;
        let closed = closed.expect("the listener cuts a request head that never ends");
        let held = closed - started;
        assert!(held >= LIMITS.header_read_timeout, "cut after {held:?}");
        assert!(
            held < LIMITS.header_read_timeout * 2,
            "held {held:?}, timeout {:?}",
            LIMITS.header_read_timeout
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer:?}"
        );
    }

    #[test]
    fn counters_move_in_the_rendered_text() {
        let m = Metrics::new();
        m.login(true);
        m.login(false);
        m.login(false);
        m.directory_sync(Duration::from_millis(20), Some(3));
        m.directory_sync(Duration::from_millis(20), None);
        let text = m.render();
        assert!(
            text.contains("sesame_logins_total{outcome=\"failure\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sesame_logins_total{outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sesame_directory_sync_changes_total 3"),
            "{text}"
        );
        assert!(
            text.contains("sesame_directory_sync_errors_total 1"),
            "{text}"
        );
        assert!(
            text.contains("sesame_directory_sync_duration_seconds_count 2"),
            "{text}"
        );
    }
}
