//! The control plane: computes the desired peer set and publishes it to the gateway; directory sync.
//!
//! The gateway is reached through [`PeerSink`] so the control plane can be unit-tested with a
//! stand-in; `sesame serve` (`commands::serve`) plugs in the real `GatewayHandle` (see `sink`).
//! It never names the portal: the portal reaches it as a `service::Publisher`. A site gateway's
//! control plane is the portals' feed instead of the store: [`site_gateway`].

pub mod audit_jobs;
pub mod desired;
pub mod emergency;
pub mod failstatic;
pub mod feed_peers;
pub mod flow_audit;
pub mod leader;
pub mod peer_cache;
pub mod plane;
pub mod reload;
pub mod sink;
pub mod site_gateway;
pub mod sites;
pub mod sync;

pub use desired::{desired_peers, has_role, resources_for, ActiveDevice};
pub use plane::{ControlError, ControlPlane};

use std::collections::HashMap;

use crate::gateway::EndReason;
pub use crate::gateway::{PeerIdentity, PeerSpec};
use crate::key::PublicKey;
pub use sync::{
    DirectorySync, SyncError, SyncMode, SyncPlan, SyncReport, SyncSafety, UserPlan,
    ABSENCE_CONFIRMATIONS,
};

pub use crate::service::GatewayStats;

/// Where the desired peer set goes: the gateway's desired-state API.
pub trait PeerSink: Send + Sync + 'static {
    /// Replaces the whole peer set (diffed by the gateway; removed peers are cut at once).
    fn set_peers(&self, peers: Vec<PeerSpec>);
    /// Adds or replaces one peer (same public key) and leaves the others alone; false if the
    /// sink cannot or would not apply it (the caller then publishes the whole set). The
    /// default refuses, so a sink without incremental updates always gets whole sets.
    fn upsert_peer(&self, _peer: PeerSpec) -> bool {
        false
    }
    /// Removes one peer; false if the sink had no such peer or cannot remove one alone.
    fn remove_peer(&self, _public_key: &PublicKey) -> bool {
        false
    }
    /// Where each peer's traffic last came from (kept in the peer cache across restarts).
    fn endpoints(&self) -> Vec<(PublicKey, std::net::SocketAddr)> {
        Vec::new()
    }
    /// Starts a handshake towards each peer's last endpoint (after a restart).
    fn initiate_handshakes(&self, _targets: Vec<(PublicKey, std::net::SocketAddr)>) {}
    /// [`PeerSink::set_peers`], saying why each removed key goes (its session's end reason).
    fn set_peers_because(&self, peers: Vec<PeerSpec>, _reasons: HashMap<PublicKey, EndReason>) {
        self.set_peers(peers)
    }
    /// [`PeerSink::remove_peer`], saying why.
    fn remove_peer_because(&self, public_key: &PublicKey, _reason: EndReason) -> bool {
        self.remove_peer(public_key)
    }
    /// The gateway's public key (devices dial it; no device may reuse it).
    fn public_key(&self) -> PublicKey;
    /// Current counters.
    fn stats(&self) -> GatewayStats;
}

/// How the portal and the pages reach the control plane (they never name `ControlPlane`).
impl crate::service::Publisher for ControlPlane {
    fn gateway_public_key(&self) -> PublicKey {
        ControlPlane::gateway_public_key(self)
    }
    fn gateway_stats(&self) -> GatewayStats {
        ControlPlane::gateway_stats(self)
    }
    fn publish_now(&self) -> crate::service::BoxFuture<'_, ()> {
        Box::pin(ControlPlane::publish_now(self))
    }
}
