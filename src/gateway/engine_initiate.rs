//! Gateway-initiated handshakes: after a restart the gateway knows each peer's last endpoint
//! (from the peer cache) and starts the handshake itself, so a stock WireGuard laptop, which
//! would otherwise wait for its own ~15 s retransmit timer, is back within a timer period.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use boringtun::noise::{Tunn, TunnResult};

use super::{Engine, Output, Peer};
use crate::gateway::stats::DropReason;
use crate::key::PublicKey;

impl Engine {
    /// A fresh session state machine for `peer` (created on its first handshake).
    pub(super) fn new_tunn(&self, peer: &Peer) -> Box<Tunn> {
        Box::new(Tunn::new(
            self.secret.clone(),
            peer.public_key.to_dalek(),
            None,
            peer.persistent_keepalive,
            peer.index,
            Some(Arc::clone(&self.limiter)),
        ))
    }

    /// Queues a handshake initiation towards each `(public key, endpoint)`; the next timer
    /// tick sends them. Peers not in the table, or already in session, are skipped then.
    pub fn initiate_handshakes(&self, targets: Vec<(PublicKey, SocketAddr)>) {
        self.initiations.lock().extend(targets);
    }

    /// Sends the queued initiations (from `tick`, on a worker that owns a socket).
    pub(super) fn initiate_pending(&self, scratch: &mut [u8], out: &mut impl Output) {
        let pending = {
            let mut q = self.initiations.lock();
            if q.is_empty() {
                return;
            }
            std::mem::take(&mut *q)
        };
        let table = self.peers.load();
        for (key, endpoint) in pending {
            let Some(peer) = table.by_key(&key) else {
                continue;
            };
            let mut st = peer.state.lock();
            if peer.removed.load(Ordering::Acquire) || st.tunn.is_some() {
                continue;
            }
            let mut tunn = self.new_tunn(peer);
            match tunn.format_handshake_initiation(scratch, false) {
                TunnResult::WriteToNetwork(d) => out.to_network(endpoint, d),
                _ => {
                    self.drops.add(DropReason::Malformed);
                    continue;
                }
            }
            st.endpoint = Some(endpoint);
            st.tunn = Some(tunn);
            peer.live.store(true, Ordering::Release);
        }
    }
}
