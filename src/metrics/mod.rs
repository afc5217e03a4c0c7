//! Prometheus metrics (prometheus-client): the registry, the portal/control series, and the listener apart from the portal.
//!
//! Counters are updated where things happen; the gateway's are read from its handle at scrape
//! time ([`gateway::GatewayCollector`]). Other parts add their own series through
//! [`Metrics::register`] or [`Metrics::register_collector`] (e.g. the audit writer's queue).

pub mod gateway;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
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
    suspensions: Counter,
    sync_held: Counter,
    ldap_seconds: Histogram,
    database_seconds: Histogram,
    sync_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    sync_seconds: Histogram,
    sync_errors: Counter,
    sync_changes: Counter,
    reloads: Family<Outcome, Counter>,
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
            suspensions: Counter::default(),
            sync_held: Counter::default(),
            ldap_seconds: latency_histogram(),
            database_seconds: latency_histogram(),
            sync_last_success: Gauge::default(),
            sync_seconds: latency_histogram(),
            sync_errors: Counter::default(),
            sync_changes: Counter::default(),
            reloads: Family::default(),
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
            "sesame_ldap_request_seconds",
            "Time the directory took to answer a bind or a lookup.",
            m.ldap_seconds.clone(),
        );
        m.register(
            "sesame_database_query_seconds",
            "Time the database took to answer the gateway publisher (device table fingerprint and active devices).",
            m.database_seconds.clone(),
        );
        m.register(
            "sesame_directory_sync_last_success_timestamp_seconds",
            "Unix time of the last directory sync pass that succeeded (0: none yet).",
            m.sync_last_success.clone(),
        );
        m.register(
            "sesame_directory_sync_duration_seconds",
            "Duration of directory sync passes.",
            m.sync_seconds.clone(),
        );
        m.register(
            "sesame_directory_sync_errors",
            "Directory sync passes that failed (grants kept as they were).",
            m.sync_errors.clone(),
        );
        m.register(
            "sesame_directory_sync_changes",
            "Users whose groups changed plus devices revoked, over all sync passes.",
            m.sync_changes.clone(),
        );
        m.register(
            "sesame_device_suspensions",
            "Devices suspended by the directory sync (user left vpn_users, disabled, absent).",
            m.suspensions.clone(),
        );
        m.register(
            "sesame_directory_sync_held",
            "Directory sync passes that applied nothing: over directory.max_changes_per_sync.",
            m.sync_held.clone(),
        );
        m.register(
            "sesame_config_reloads",
            "Configuration reloads (SIGHUP) by outcome.",
            m.reloads.clone(),
        );
        m
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
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.sync_last_success.set(now);
            }
            None => {
                self.sync_errors.inc();
            }
        }
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

/// Binds the metrics listener now (a busy port stops start-up).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = crate::portal::listen::privileged_port_hint(addr, &e);
        anyhow::Error::new(e).context(format!(
            "cannot listen on {addr} for metrics ([metrics] listen): is the port in use?{hint}"
        ))
    })
}

/// Serves `GET /metrics` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
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
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
