//! A site gateway's series, read at scrape time: feed lag, cache age, peers fed, feed errors
//! (label `site`), and, once the event shipper runs, its spool and deliveries.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::control::site_gateway::feed::FeedStatus;
use crate::control::site_gateway::spool::Spool;
use crate::time;

/// Reads the feed loop's status on each scrape.
pub struct SiteCollector {
    pub site: String,
    pub status: Arc<FeedStatus>,
    pub spool: Arc<Spool>,
}

impl std::fmt::Debug for SiteCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteCollector")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// Registers the site gateway's series.
pub fn register(
    metrics: &crate::metrics::Metrics,
    site: &str,
    status: Arc<FeedStatus>,
    spool: Arc<Spool>,
) {
    metrics.register_collector(Box::new(SiteCollector {
        site: site.to_string(),
        status,
        spool,
    }));
}

/// Seconds since `ms` (unix ms), or -1 when it never happened.
fn age_s(ms: i64, now: i64) -> f64 {
    if ms == 0 {
        -1.0
    } else {
        (now - ms).max(0) as f64 / 1000.0
    }
}

impl Collector for SiteCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels = [("site", self.site.as_str())];
        let now = time::now_ms();
        let s = &self.status;
        let gauges: [(&str, &str, f64); 4] = [
            (
                "sesame_site_spooled_records",
                "Audit records waiting in the spool for a portal.",
                self.spool.len() as f64,
            ),
            (
                "sesame_site_feed_lag_seconds",
                "Seconds since the last good answer of a portal's feed (-1: none since start).",
                age_s(s.last_answer_ms.load(Ordering::Relaxed), now),
            ),
            (
                "sesame_site_cache_age_seconds",
                "Age of the peer set this site gateway serves, by its cache's write time (-1: no cache).",
                age_s(s.cache_written_ms.load(Ordering::Relaxed), now),
            ),
            (
                "sesame_site_peers",
                "Peers the feed gave this site (expired keys included until they leave).",
                s.peers.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(
                enc.encode_descriptor(name, help, None, g.metric_type())?
                    .encode_family(&labels)?,
            )?;
        }
        let sp = &self.spool;
        let counters: [(&str, &str, u64); 5] = [
            (
                "sesame_site_events_spooled",
                "Audit records written to the spool since start (records a previous run left included).",
                sp.spooled.load(Ordering::Relaxed),
            ),
            (
                "sesame_site_events_delivered",
                "Audit records a portal took.",
                sp.delivered.load(Ordering::Relaxed),
            ),
            (
                "sesame_site_events_dropped",
                "Audit records dropped because the spool was full (the newest; an audit.overflow record says how many).",
                sp.dropped.load(Ordering::Relaxed),
            ),
            (
                "sesame_site_feed_errors",
                "Feed requests that failed (portal unreachable, refused or answering an error).",
                s.errors.load(Ordering::Relaxed),
            ),
            (
                "sesame_site_feed_unauthorized",
                "Feed requests a portal refused with 401 (site token wrong or replaced).",
                s.unauthorized.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(
                enc.encode_descriptor(name, help, None, c.metric_type())?
                    .encode_family(&labels)?,
            )?;
        }
        Ok(())
    }
}
