//! Prometheus counters of the portal and the gateway, rendered as text for `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::GatewayStats;

/// Portal counters; the gateway's are read from its handle at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    pub logins_success: AtomicU64,
    pub logins_failure: AtomicU64,
    pub enrolments_success: AtomicU64,
    pub enrolments_failure: AtomicU64,
    pub rotations: AtomicU64,
    pub revocations: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Devices suspended by the directory sync.
    pub suspensions: AtomicU64,
    /// Directory sync passes held over `max_changes_per_sync`.
    pub sync_held: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn login(&self, ok: bool) {
        inc(if ok {
            &self.logins_success
        } else {
            &self.logins_failure
        });
    }
    pub fn enrolment(&self, ok: bool) {
        inc(if ok {
            &self.enrolments_success
        } else {
            &self.enrolments_failure
        });
    }
    pub fn rotation(&self) {
        inc(&self.rotations);
    }
    pub fn revocation(&self) {
        inc(&self.revocations);
    }
    pub fn rate_limited(&self) {
        inc(&self.rate_limited);
    }
    pub fn suspension(&self) {
        inc(&self.suspensions);
    }
    pub fn sync_held(&self) {
        inc(&self.sync_held);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, gw: &GatewayStats) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "sesame_logins_total",
            "Portal logins by outcome.",
            &[
                ("{outcome=\"success\"}", g(&self.logins_success)),
                ("{outcome=\"failure\"}", g(&self.logins_failure)),
            ],
        );
        counter(
            "sesame_enrolments_total",
            "Device enrolments by outcome.",
            &[
                ("{outcome=\"success\"}", g(&self.enrolments_success)),
                ("{outcome=\"failure\"}", g(&self.enrolments_failure)),
            ],
        );
        counter(
            "sesame_rotations_total",
            "Device key rotations.",
            &[("", g(&self.rotations))],
        );
        counter(
            "sesame_revocations_total",
            "Devices revoked (by IT staff or directory sync).",
            &[("", g(&self.revocations))],
        );
        counter(
            "sesame_device_suspensions_total",
            "Devices suspended by the directory sync (user left vpn_users, disabled, absent).",
            &[("", g(&self.suspensions))],
        );
        counter(
            "sesame_directory_sync_held_total",
            "Directory sync passes that applied nothing: over directory.max_changes_per_sync.",
            &[("", g(&self.sync_held))],
        );
        counter(
            "sesame_rate_limited_total",
            "Login or enrolment attempts refused by the brute-force limiter.",
            &[("", g(&self.rate_limited))],
        );
        counter(
            "sesame_gateway_rx_bytes_total",
            "Bytes received from peers (decrypted).",
            &[("", gw.rx_bytes)],
        );
        counter(
            "sesame_gateway_tx_bytes_total",
            "Bytes sent to peers (before encryption).",
            &[("", gw.tx_bytes)],
        );
        let drops: Vec<(String, u64)> = gw
            .drops
            .iter()
            .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
            .collect();
        let drops_ref: Vec<(&str, u64)> = drops.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        counter(
            "sesame_gateway_dropped_packets_total",
            "Packets dropped by the gateway, by reason.",
            &drops_ref,
        );
        let _ = writeln!(
            out,
            "# HELP sesame_gateway_peers Peers configured on the gateway.\n# TYPE sesame_gateway_peers gauge\nsesame_gateway_peers {}",
            gw.peers
        );
        let _ = writeln!(
            out,
            "# HELP sesame_gateway_active_sessions Peers with a live WireGuard session.\n# TYPE sesame_gateway_active_sessions gauge\nsesame_gateway_active_sessions {}",
            gw.active_sessions
        );
        out
    }
}
