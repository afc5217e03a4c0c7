//! Gateway series read from the data plane's counters at scrape time: peers, sessions, handshakes, traffic, drops.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::gateway::{DropReason, GatewayHandle};

/// Reads a [`GatewayHandle`] on each scrape (no work on the packet path).
#[derive(Debug)]
pub struct GatewayCollector {
    pub gateway: GatewayHandle,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for GatewayCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let peers = self.gateway.peer_stats();
        let sum = |f: fn(&crate::gateway::PeerStats) -> u64| peers.iter().map(f).sum::<u64>();
        let connected = peers.iter().filter(|p| p.session_active).count();
        let handshaken = peers.iter().filter(|p| p.last_handshake.is_some()).count();
        gauge(
            &mut enc,
            "sesame_gateway_peers",
            "Peers configured on the gateway (enrolled devices and static peers).",
            peers.len() as i64,
        )?;
        gauge(
            &mut enc,
            "sesame_gateway_peers_connected",
            "Peers with a live WireGuard session.",
            connected as i64,
        )?;
        gauge(
            &mut enc,
            "sesame_gateway_peers_handshaken",
            "Peers that completed at least one handshake since they were configured.",
            handshaken as i64,
        )?;
        counter(
            &mut enc,
            "sesame_gateway_rx_bytes",
            "Bytes received from peers (decrypted) by the current peers.",
            sum(|p| p.rx_bytes),
        )?;
        counter(
            &mut enc,
            "sesame_gateway_rx_packets",
            "Packets received from peers (decrypted) by the current peers.",
            sum(|p| p.rx_packets),
        )?;
        counter(
            &mut enc,
            "sesame_gateway_tx_bytes",
            "Bytes sent to the current peers (before encryption).",
            sum(|p| p.tx_bytes),
        )?;
        counter(
            &mut enc,
            "sesame_gateway_tx_packets",
            "Packets sent to the current peers (before encryption).",
            sum(|p| p.tx_packets),
        )?;
        counter(
            &mut enc,
            "sesame_gateway_handshakes",
            "Handshake initiations received from configured peers.",
            self.gateway.handshakes_received(),
        )?;
        let drops = self.gateway.drop_counters();
        counter(
            &mut enc,
            "sesame_gateway_cookies_sent",
            "Cookie replies sent instead of answering a handshake (gateway under load).",
            drops.get(DropReason::CookieSent),
        )?;
        let mut family = enc.encode_descriptor(
            "sesame_gateway_dropped_packets",
            "Packets dropped by the gateway, by reason.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, n) in drops.iter() {
            let labels = [("reason", reason.name())];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        gauge(
            &mut enc,
            "sesame_audit_queue_depth",
            "Flow and session audit records waiting for the audit writer.",
            i64::try_from(self.gateway.audit_queue_depth()).unwrap_or(i64::MAX),
        )?;
        let mut family = enc.encode_descriptor(
            "sesame_audit_records_lost",
            "Flow and session audit records lost because the audit queue was full, by kind.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, n) in self.gateway.audit_lost().iter() {
            let labels = [("kind", kind.name())];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
