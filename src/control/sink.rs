//! The real [`PeerSink`]: the gateway's desired-state API.

use std::collections::HashMap;

use crate::gateway::{EndReason, GatewayHandle, PeerSpec};

use super::{DesiredPeer, GatewayStats, PeerSink};

fn spec(p: DesiredPeer) -> PeerSpec {
    PeerSpec {
        public_key: p.public_key,
        address: p.address,
        rules: p.rules,
        label: p.label,
        persistent_keepalive: p.persistent_keepalive,
    }
}

impl PeerSink for GatewayHandle {
    fn set_peers(&self, peers: Vec<DesiredPeer>) {
        GatewayHandle::set_peers(self, peers.into_iter().map(spec).collect());
    }

    fn upsert_peer(&self, peer: DesiredPeer) -> bool {
        GatewayHandle::upsert_peer(self, spec(peer))
    }

    fn remove_peer(&self, public_key: &[u8; 32]) -> bool {
        GatewayHandle::remove_peer(self, public_key)
    }

    fn set_peers_because(&self, peers: Vec<DesiredPeer>, reasons: HashMap<[u8; 32], EndReason>) {
        GatewayHandle::set_peers_because(self, peers.into_iter().map(spec).collect(), &reasons);
    }

    fn remove_peer_because(&self, public_key: &[u8; 32], reason: EndReason) -> bool {
        GatewayHandle::remove_peer_because(self, public_key, reason)
    }

    fn public_key(&self) -> [u8; 32] {
        GatewayHandle::public_key(self)
    }

    fn endpoints(&self) -> Vec<([u8; 32], std::net::SocketAddr)> {
        self.peer_stats()
            .into_iter()
            .filter_map(|p| p.endpoint.map(|e| (p.public_key, e)))
            .collect()
    }

    fn initiate_handshakes(&self, targets: Vec<([u8; 32], std::net::SocketAddr)>) {
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
