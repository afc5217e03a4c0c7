//! The real [`PeerSink`]: the gateway's desired-state API.

use std::collections::HashMap;

use crate::gateway::{EndReason, GatewayHandle, PeerSpec};

use super::{GatewayStats, PeerSink};
use crate::key::PublicKey;

impl PeerSink for GatewayHandle {
    fn set_peers(&self, peers: Vec<PeerSpec>) {
        GatewayHandle::set_peers(self, peers);
    }

    fn upsert_peer(&self, peer: PeerSpec) -> bool {
        GatewayHandle::upsert_peer(self, peer)
    }

    fn remove_peer(&self, public_key: &PublicKey) -> bool {
        GatewayHandle::remove_peer(self, public_key)
    }

    fn set_peers_because(&self, peers: Vec<PeerSpec>, reasons: HashMap<PublicKey, EndReason>) {
        GatewayHandle::set_peers_because(self, peers, &reasons);
    }

    fn remove_peer_because(&self, public_key: &PublicKey, reason: EndReason) -> bool {
        GatewayHandle::remove_peer_because(self, public_key, reason)
    }

    fn public_key(&self) -> PublicKey {
        GatewayHandle::public_key(self)
    }

    fn endpoints(&self) -> Vec<(PublicKey, std::net::SocketAddr)> {
        self.peer_stats()
            .into_iter()
            .filter_map(|p| p.endpoint.map(|e| (p.public_key, e)))
            .collect()
    }

    fn initiate_handshakes(&self, targets: Vec<(PublicKey, std::net::SocketAddr)>) {
        GatewayHandle::initiate_handshakes(self, targets);
    }

    fn stats(&self) -> GatewayStats {
        let peers = self.peer_stats();
        let drops = self.drop_counters();
        GatewayStats {
            peers: peers.len() as u64,
            active_sessions: peers.iter().filter(|p| p.session_active).count() as u64,
            rx_bytes: peers.iter().map(|p| p.rx_bytes).sum(),
            tx_bytes: peers.iter().map(|p| p.tx_bytes).sum(),
            drops: drops
                .iter()
                .map(|(reason, n)| (reason.name().to_string(), n))
                .collect(),
            audit_lost: self
                .audit_lost()
                .iter()
                .map(|(kind, n)| (kind.name().to_string(), n))
                .collect(),
        }
    }
}

/// The sink of `sesame portal`: no local gateway. The control plane still computes the set
/// (the site feeds read it); nothing is applied here. Laptops dial the first `[[site]]`.
pub struct NoLocalGateway {
    config: crate::config::LiveConfig,
}

impl NoLocalGateway {
    pub fn new(config: crate::config::LiveConfig) -> Self {
        NoLocalGateway { config }
    }
}

impl PeerSink for NoLocalGateway {
    fn set_peers(&self, _peers: Vec<PeerSpec>) {}

    /// Nothing runs here: one peer's update is applied as trivially as a whole set.
    fn upsert_peer(&self, _peer: PeerSpec) -> bool {
        true
    }

    /// Likewise for a removal (false would ask the publisher for the whole set).
    fn remove_peer(&self, _public_key: &PublicKey) -> bool {
        true
    }

    /// The first `[[site]]`'s key (`sesame portal` refuses to start without one).
    fn public_key(&self) -> PublicKey {
        let config = self.config.get();
        config
            .sites
            .first()
            .map(|s| s.public_key)
            .unwrap_or_else(|| PublicKey::from_bytes([9; 32]).expect("a fixed valid key"))
    }

    fn stats(&self) -> GatewayStats {
        GatewayStats::default()
    }
}
