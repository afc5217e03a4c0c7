//! The userspace WireGuard gateway: multi-peer boringtun engine, per-peer policy and conntrack, TUN/UDP workers.
//!
//! Shape: [`engine`] is the sans-IO core (parse, peer lookup, anti-spoof, policy,
//! conntrack, timers); [`tun`], [`udp`] and the workers are the thin I/O shell.

pub mod conntrack;
pub mod engine;
pub mod flowlog;
pub mod keys;
pub mod packet;
pub mod peers;
pub mod ratelimit;
pub mod replay;
pub mod stats;
pub mod table;
mod tun;
pub mod uapi;
pub mod window;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::fastpath::udp;

use crate::config::{GatewayConfig, StaticPeer};
use crate::key::{PrivateKey, PublicKey};
use crate::policy::Policy;
pub use engine::Engine;
use flowlog::SessionEnd;
pub use flowlog::{EndReason, FlowLog, FlowRecord, LostCounts, RecordKind};
pub use peers::{PeerIdentity, PeerSpec, SetReport};
pub use stats::{DropCounters, DropReason, PeerStats};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Tun(#[from] tun::TunError),
    #[error(
        "cannot listen on UDP {addr}: {source} (is another gateway or WireGuard already using this port?)"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start packet worker thread: {0}")]
    Thread(std::io::Error),
}

/// The running data plane. Dropping it without [`Gateway::shutdown`] also stops it.
pub struct Gateway {
    handle: GatewayHandle,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    interface: String,
}

/// What the rest of the program uses to steer and observe the data plane.
#[derive(Clone)]
pub struct GatewayHandle {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("public_key", &self.public_key().to_base64())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Creates the TUN device with the gateway's tunnel address, binds UDP, starts workers.
    pub fn start(cfg: &GatewayConfig, private_key: PrivateKey) -> Result<Gateway, GatewayError> {
        Gateway::start_audited(cfg, private_key, None)
    }

    /// [`Gateway::start`], with session and flow records sent to `flow_log` when given.
    pub fn start_audited(
        cfg: &GatewayConfig,
        private_key: PrivateKey,
        flow_log: Option<Arc<FlowLog>>,
    ) -> Result<Gateway, GatewayError> {
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.threads
        };
        let mut engine = Engine::new(private_key, cfg.flow_idle_timeout);
        if let Some(log) = flow_log {
            engine = engine.with_flow_log(log);
        }
        let engine = Arc::new(engine);
        let (tun_queues, offloads) = tun::open(&cfg.interface, threads)?;
        tun::configure(
            &cfg.interface,
            cfg.address,
            cfg.tunnel_network.prefix_len(),
            cfg.mtu,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let slot = (usize::from(cfg.mtu) + 128).max(2048);
        let mut gateway = Gateway {
            handle: GatewayHandle {
                engine: Arc::clone(&engine),
            },
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(threads),
            interface: cfg.interface.clone(),
        };
        for (i, tun) in tun_queues.into_iter().enumerate() {
            let udp = udp::bind(cfg.listen).map_err(|source| GatewayError::Bind {
                addr: cfg.listen,
                source,
            })?;
            let udp_offloads = udp::enable_offloads(std::os::fd::AsRawFd::as_raw_fd(&udp));
            if i == 0 {
                tracing::info!(?udp_offloads, "UDP offloads");
            }
            let w = worker::Worker {
                engine: Arc::clone(&engine),
                tun,
                offloads,
                udp,
                udp_offloads,
                stop: Arc::clone(&stop),
                slot,
            };
            let t = std::thread::Builder::new()
                .name(format!("sesame-gw-{i}"))
                .spawn(move || w.run())
                .map_err(GatewayError::Thread)?;
            gateway.threads.push(t);
        }
        tracing::info!(
            interface = %cfg.interface,
            listen = %cfg.listen,
            threads,
            tun_offload = ?offloads,
            public_key = %engine.public_key(),
            "gateway data plane started"
        );
        Ok(gateway)
    }

    pub fn handle(&self) -> GatewayHandle {
        self.handle.clone()
    }

    /// Stops the workers and waits for them; the TUN device goes away with its last queue.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // After the workers flushed their windows: every open session ends now.
        self.handle.engine.end_sessions(EndReason::GatewayStopped);
        tracing::info!(interface = %self.interface, "gateway data plane stopped");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_and_join();
        }
    }
}

impl GatewayHandle {
    /// Applies the desired peer set atomically: unchanged peers keep their sessions, a
    /// removed peer's session is cut at once. Cheap when little changed: one lookup per
    /// peer, and the new snapshot shares every table shard no change landed in.
    pub fn set_peers(&self, desired: Vec<PeerSpec>) {
        self.set_peers_because(desired, &HashMap::new());
    }

    /// [`GatewayHandle::set_peers`]; the session of a removed peer ends with the reason
    /// `reasons` gives for its key ([`EndReason::Removed`] if none).
    pub fn set_peers_because(
        &self,
        desired: Vec<PeerSpec>,
        reasons: &HashMap<PublicKey, EndReason>,
    ) {
        let mut r = self.engine.peers.set(desired);
        self.sessions_ended(std::mem::take(&mut r.ended), reasons);
        if r.duplicates > 0 {
            tracing::warn!(
                skipped = r.duplicates,
                "peers with a public key or address already used were skipped"
            );
        }
        tracing::info!(
            added = r.added,
            removed = r.removed,
            updated = r.updated,
            unchanged = r.unchanged,
            "gateway peers applied"
        );
    }

    /// Adds or changes one peer without restating the others. Rules and label change in
    /// place (session kept); a new address or keepalive replaces the peer (new session). Returns
    /// false, leaving the table as it was, when another peer already holds the address.
    pub fn upsert_peer(&self, spec: PeerSpec) -> bool {
        let mut r = self.engine.peers.upsert(spec);
        self.sessions_ended(std::mem::take(&mut r.ended), &HashMap::new());
        if r.duplicates > 0 {
            tracing::warn!("peer skipped: its address belongs to another peer");
            return false;
        }
        tracing::debug!(
            added = r.added,
            replaced = r.removed,
            "gateway peer applied"
        );
        true
    }

    /// Removes one peer and cuts its session at once; false if there was no such peer.
    pub fn remove_peer(&self, public_key: &PublicKey) -> bool {
        self.remove_peer_because(public_key, EndReason::Removed)
    }

    /// [`GatewayHandle::remove_peer`]; its session ends with `reason`.
    pub fn remove_peer_because(&self, public_key: &PublicKey, reason: EndReason) -> bool {
        match self.engine.peers.remove_ending(public_key) {
            None => false,
            Some(ended) => {
                self.sessions_ended(
                    ended.into_iter().collect(),
                    &HashMap::from([(*public_key, reason)]),
                );
                true
            }
        }
    }

    fn sessions_ended(&self, ended: Vec<SessionEnd>, reasons: &HashMap<PublicKey, EndReason>) {
        for mut end in ended {
            end.reason = reasons
                .get(&end.peer.public_key)
                .copied()
                .unwrap_or(EndReason::Removed);
            self.engine.record(FlowRecord::SessionEnded(end));
        }
    }

    /// Audit records lost because the queue was full, per kind (zero when auditing is off).
    /// Flow and session records waiting for the audit writer.
    pub fn audit_queue_depth(&self) -> u64 {
        self.engine.flow_log().map_or(0, |l| l.depth())
    }

    pub fn audit_lost(&self) -> LostCounts {
        self.engine.flow_log().map(|l| l.lost()).unwrap_or_default()
    }

    /// How long an access window stays open without a packet to a protected resource
    /// (`[mfa] idle`; 30 min until set).
    pub fn set_mfa_idle(&self, idle: std::time::Duration) {
        self.engine.set_mfa_idle(idle);
    }

    pub fn public_key(&self) -> PublicKey {
        self.engine.public_key()
    }

    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.engine.peer_stats()
    }

    /// Starts a handshake towards each `(public key, endpoint)` at the next timer tick (after
    /// a restart, from the peer cache): laptops are back without waiting for their own timer.
    pub fn initiate_handshakes(&self, targets: Vec<(PublicKey, std::net::SocketAddr)>) {
        self.engine.initiate_handshakes(targets);
    }

    /// Handshake initiations received from configured peers since start.
    pub fn handshakes_received(&self) -> u64 {
        self.engine
            .handshakes_received
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn drop_counters(&self) -> DropCounters {
        self.engine.drops.snapshot()
    }
}

/// The config's static `[[peer]]`s as peers, their resources compiled to rules and labelled
/// `static:NAME`: what `sesame gateway` runs and what the control plane publishes first.
pub fn static_peers(policy: &Policy, peers: &[StaticPeer]) -> Vec<PeerSpec> {
    peers
        .iter()
        .map(|p| {
            // A static peer has no second factor: its protected resources stay closed.
            let (rules, protected) =
                policy.split_rules_for_resources(p.resources.iter().map(String::as_str));
            PeerSpec {
                public_key: p.public_key,
                address: p.address,
                rules,
                protected,
                mfa_until_ms: None,
                label: PeerIdentity::Static {
                    name: p.name.clone(),
                }
                .label(),
                persistent_keepalive: p.persistent_keepalive,
            }
        })
        .collect()
}

/// One line for logs: every non-zero drop counter.
pub fn format_drops(d: &DropCounters) -> String {
    let mut s = String::new();
    for (reason, n) in d.iter() {
        if n > 0 {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("{}={n}", reason.name()));
        }
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}
