//! The control plane: computes the desired peer set and publishes it to the gateway; directory sync.
//!
//! The gateway is reached through [`PeerSink`] so the control plane can be unit-tested with a
//! stand-in; `sesame serve` plugs in the real `GatewayHandle` (see `sink`).

pub mod desired;
pub mod flow_audit;
pub mod plane;
pub mod reload;
pub mod serve;
pub mod sink;
pub mod sync;

pub use desired::{
    desired_peers, has_role, resources_for, ActiveDevice, DesiredPeer, PeerIdentity,
};
pub use plane::{ControlError, ControlPlane};

use std::collections::HashMap;

use crate::gateway::EndReason;
pub use sync::{DirectorySync, SyncError, SyncReport};

/// Counters the gateway exposes, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub peers: u64,
    pub active_sessions: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped packets by reason.
    pub drops: Vec<(String, u64)>,
    /// Flow and session audit records lost because the queue was full, by kind.
    pub audit_lost: Vec<(String, u64)>,
}

/// Where the desired peer set goes: the gateway's desired-state API.
pub trait PeerSink: Send + Sync + 'static {
    /// Replaces the whole peer set (diffed by the gateway; removed peers are cut at once).
    fn set_peers(&self, peers: Vec<DesiredPeer>);
    /// Adds or replaces one peer (same public key) and leaves the others alone; false if the
    /// sink cannot or would not apply it (the caller then publishes the whole set). The
    /// default refuses, so a sink without incremental updates always gets whole sets.
    fn upsert_peer(&self, _peer: DesiredPeer) -> bool {
        false
    }
    /// Removes one peer; false if the sink had no such peer or cannot remove one alone.
    fn remove_peer(&self, _public_key: &[u8; 32]) -> bool {
        false
    }
    /// [`PeerSink::set_peers`], saying why each removed key goes (its session's end reason).
    fn set_peers_because(&self, peers: Vec<DesiredPeer>, _reasons: HashMap<[u8; 32], EndReason>) {
        self.set_peers(peers)
    }
    /// [`PeerSink::remove_peer`], saying why.
    fn remove_peer_because(&self, public_key: &[u8; 32], _reason: EndReason) -> bool {
        self.remove_peer(public_key)
    }
    /// The gateway's public key (devices dial it; no device may reuse it).
    fn public_key(&self) -> [u8; 32];
    /// Current counters.
    fn stats(&self) -> GatewayStats;
}
