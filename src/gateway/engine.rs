//! The sans-IO data plane: datagram → peer → decrypt → anti-spoof → policy → conntrack → TUN, and back.
//!
//! No syscalls here: the caller passes `now`, the input bytes, a scratch buffer, and an
//! [`Output`] that performs the writes. Every drop is counted by reason; nothing panics.

pub use crate::fastpath::OVERHEAD;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey as DalekPublic, StaticSecret};
use parking_lot::Mutex;

use super::conntrack::{inbound_key, outbound_key, Tracked};
use super::flowlog::{
    DenyReason, EndReason, FlowLog, FlowRecord, SessionMark, SessionStart, WorkerFlows,
};
use super::packet::{self, PacketInfo, Transport};
use super::peers::{Peer, PeerState, Peers};
use super::ratelimit::HandshakeLimiter;
use super::replay;
use super::stats::{DropReason, Drops};
use crate::key::{PrivateKey, PublicKey};
use crate::policy::ResourceId;
use crate::time::{Clock, SystemClock};

/// Handshake messages per second (all peers together) before the gateway answers with
/// cookies. Each handshake is counted twice (by the engine, then by the peer's Tunn).
pub const HANDSHAKE_LOAD_LIMIT: u64 = 200;
/// Handshakes per second (as the engine counts them, once each) from which the per-source
/// limit applies: the point where the cookie limiter above reaches its own limit.
pub const PER_SOURCE_LOAD: u64 = HANDSHAKE_LOAD_LIMIT / 2;
/// Most flows one peer may have open at once.
pub const MAX_FLOWS_PER_PEER: usize = 4096;
/// How often boringtun's timers run for each live peer.
pub const TIMER_PERIOD: Duration = Duration::from_millis(250);

/// Where the engine's decisions go. The I/O shell implements it over UDP and TUN.
pub trait Output {
    fn to_network(&mut self, dst: SocketAddr, datagram: &[u8]);
    /// Sends the datagram that `fill` writes into a buffer of `need` bytes at least and whose
    /// length it returns (`None`: nothing to send). By default `fill` writes into `scratch`
    /// (`need` bytes at least), handed on to [`Output::to_network`]; an output with send
    /// buffers of its own lets it write there and saves that copy.
    fn to_network_with(
        &mut self,
        dst: SocketAddr,
        _need: usize,
        scratch: &mut [u8],
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) {
        to_network_via(self, dst, scratch, fill);
    }
    fn to_tun(&mut self, packet: &[u8]);
    /// The worker's flow-audit tables, when flow auditing is on.
    fn flows(&mut self) -> Option<&mut WorkerFlows> {
        None
    }
}

/// What [`Output::to_network_with`] does by default: `fill` writes into `scratch`, the datagram
/// goes to [`Output::to_network`] (an output's own fallback too).
pub fn to_network_via<O: Output + ?Sized>(
    out: &mut O,
    dst: SocketAddr,
    scratch: &mut [u8],
    fill: impl FnOnce(&mut [u8]) -> Option<usize>,
) {
    if let Some(n) = fill(scratch) {
        out.to_network(dst, &scratch[..n]);
    }
}

/// The multi-peer WireGuard engine, shared by all workers (`&self` everywhere).
pub struct Engine {
    secret: StaticSecret,
    public: DalekPublic,
    /// `public`, as the rest of Sesame carries keys.
    key: PublicKey,
    pub peers: Peers,
    limiter: Arc<RateLimiter>,
    handshakes: Mutex<HandshakeLimiter>,
    pub drops: Drops,
    /// Handshake initiations from configured peers that reached their session (metrics).
    pub handshakes_received: std::sync::atomic::AtomicU64,
    flow_idle: Duration,
    ticks: Mutex<TickState>,
    /// Handshakes the gateway must initiate at the next tick (after a restart), see
    /// `engine_initiate.rs`.
    initiations: Mutex<Vec<(PublicKey, SocketAddr)>>,
    /// Where session and flow records go (None: flow auditing off).
    flow_log: Option<Arc<FlowLog>>,
    /// The wall clock access windows are judged by (tests move a `ManualClock`).
    clock: Arc<dyn Clock>,
    /// `[mfa] idle`, in ms (see `engine_window.rs`).
    mfa_idle_ms: AtomicI64,
}

struct TickState {
    last_timers: Option<Instant>,
    last_sweep: Option<Instant>,
}

impl Engine {
    pub fn new(secret: PrivateKey, flow_idle: Duration) -> Engine {
        let key = secret.public_key();
        let secret = secret.to_dalek();
        let public = DalekPublic::from(&secret);
        Engine {
            key,
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_LOAD_LIMIT)),
            secret,
            public,
            peers: Peers::default(),
            handshakes: Mutex::new(HandshakeLimiter::new(PER_SOURCE_LOAD)),
            drops: Drops::default(),
            handshakes_received: std::sync::atomic::AtomicU64::new(0),
            flow_idle,
            ticks: Mutex::new(TickState {
                last_timers: None,
                last_sweep: None,
            }),
            initiations: Mutex::new(Vec::new()),
            flow_log: None,
            clock: Arc::new(SystemClock),
            mfa_idle_ms: AtomicI64::new(crate::time::duration_ms(window::DEFAULT_MFA_IDLE)),
        }
    }

    /// Access windows judged by `clock` instead of the system's (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Engine {
        self.clock = clock;
        self
    }

    /// Turns flow and session auditing on: records go to `log`.
    pub fn with_flow_log(mut self, log: Arc<FlowLog>) -> Engine {
        self.flow_log = Some(log);
        self
    }

    pub fn flow_log(&self) -> Option<&Arc<FlowLog>> {
        self.flow_log.as_ref()
    }

    /// Offers a session record to the audit queue (never blocks).
    pub fn record(&self, record: FlowRecord) {
        if let Some(log) = &self.flow_log {
            log.send(record);
        }
    }

    /// Ends every open session with `reason` (the gateway stops): one record each.
    pub fn end_sessions(&self, reason: EndReason) {
        let now_ms = crate::time::now_ms();
        for peer in self.peers.load().iter() {
            let mut st = peer.state.lock();
            if let Some(mark) = st.session.take() {
                let end = mark.end(peer, st.endpoint, reason, now_ms);
                self.record(FlowRecord::SessionEnded(end));
            }
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// One UDP datagram from `from`. `scratch` must be at least `datagram.len()` and 148 bytes.
    pub fn handle_datagram(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        scratch: &mut [u8],
        out: &mut impl Output,
    ) {
        let receiver = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => return self.drops.add(DropReason::Malformed),
            Ok(Packet::HandshakeInit(_)) => {
                return self.handshake_init(now, from, datagram, scratch, out)
            }
            Ok(Packet::HandshakeResponse(p)) => p.receiver_idx,
            Ok(Packet::PacketCookieReply(p)) => p.receiver_idx,
            Ok(Packet::PacketData(p)) => p.receiver_idx,
        };
        let table = self.peers.load();
        let Some(peer) = table.by_receiver_index(receiver) else {
            return self.drops.add(DropReason::UnknownPeer);
        };
        let mut st = peer.state.lock();
        if st.tunn.is_none() {
            return self.drops.add(DropReason::NoSession);
        }
        self.decapsulate(now, peer, &mut st, from, datagram, scratch, out);
    }

    /// A batch of datagrams (one receive: GRO messages split): as [`Engine::handle_datagram`]
    /// each, but the peer table is read once and a peer's lock is taken once per run of its
    /// data packets, not once per packet. Handshake and cookie messages take the per-datagram
    /// path. A datagram without a source address is counted as malformed.
    pub fn handle_datagrams<'d>(
        &self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (Option<SocketAddr>, &'d [u8])>,
        scratch: &mut [u8],
        out: &mut impl Output,
    ) {
        let table = self.peers.load();
        // The peer whose data packets came last, locked: (its 24-bit index, peer, state).
        let mut held: Option<(u32, &Peer, parking_lot::MutexGuard<'_, PeerState>)> = None;
        for (from, datagram) in datagrams {
            let Some(from) = from else {
                self.drops.add(DropReason::Malformed);
                continue;
            };
            let receiver = match Tunn::parse_incoming_packet(datagram) {
                Ok(Packet::PacketData(p)) => p.receiver_idx,
                _ => {
                    // Rare: release the lock, take the general path.
                    held = None;
                    self.handle_datagram(now, from, datagram, scratch, out);
                    continue;
                }
            };
            let index = receiver >> 8;
            if held.as_ref().is_none_or(|h| h.0 != index) {
                held = None;
                let Some(peer) = table.by_receiver_index(receiver) else {
                    self.drops.add(DropReason::UnknownPeer);
                    continue;
                };
                held = Some((index, peer, peer.state.lock()));
            }
            let Some((_, peer, st)) = held.as_mut() else {
                continue;
            };
            if st.tunn.is_none() {
                self.drops.add(DropReason::NoSession);
                continue;
            }
            self.decapsulate(now, peer, st, from, datagram, scratch, out);
        }
    }

    fn handshake_init(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        scratch: &mut [u8],
        out: &mut impl Output,
    ) {
        let init = match self
            .limiter
            .verify_packet(Some(from.ip()), datagram, scratch)
        {
            Ok(Packet::HandshakeInit(init)) => init,
            Ok(_) => return self.drops.add(DropReason::Malformed),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                self.handshakes.lock().cookie_sent(now);
                out.to_network(from, cookie);
                return self.drops.add(DropReason::CookieSent);
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                return self.drops.add(DropReason::InvalidMac)
            }
            Err(_) => return self.drops.add(DropReason::Malformed),
        };
        // Per source only under load (as Linux and wireguard-go): many laptops share a NAT address.
        if !self.handshakes.lock().allow(from.ip(), now) {
            return self.drops.add(DropReason::RateLimited);
        }
        let Ok(half) = parse_handshake_anon(&self.secret, &self.public, &init) else {
            return self.drops.add(DropReason::UnknownPeer);
        };
        let table = self.peers.load();
        // A low-order key is in no table: refused as unknown, like any stranger.
        let key = PublicKey::from_bytes(half.peer_static_public).ok();
        let Some(peer) = key.and_then(|k| table.by_key(&k)) else {
            return self.drops.add(DropReason::UnknownPeer);
        };
        let mut st = peer.state.lock();
        if peer.removed.load(Ordering::Acquire) {
            return self.drops.add(DropReason::UnknownPeer);
        }
        match replay::initiation_timestamp(
            &self.secret,
            &self.public,
            peer.public_key.as_bytes(),
            datagram,
        ) {
            Some(ts) if st.last_initiation.is_none_or(|last| ts > last) => {
                st.last_initiation = Some(ts);
            }
            Some(_) => return self.drops.add(DropReason::ReplayedHandshake),
            None => return self.drops.add(DropReason::Malformed),
        }
        if st.tunn.is_none() {
            st.tunn = Some(self.new_tunn(peer));
            peer.live.store(true, Ordering::Release);
        }
        self.handshakes_received.fetch_add(1, Ordering::Relaxed);
        let answered = self.decapsulate(now, peer, &mut st, from, datagram, scratch, out);
        if answered && st.session.is_none() {
            let started_ms = crate::time::now_ms();
            st.session = Some(Box::new(SessionMark::new(peer, from, started_ms)));
            self.record(FlowRecord::SessionStarted(SessionStart {
                peer: super::flowlog::PeerRef::of(peer),
                endpoint: from,
                started_ms,
            }));
        }
    }

    /// Decrypts one datagram; true when it was a handshake this engine answered.
    #[allow(clippy::too_many_arguments)]
    fn decapsulate(
        &self,
        now: Instant,
        peer: &Peer,
        st: &mut PeerState,
        from: SocketAddr,
        datagram: &[u8],
        scratch: &mut [u8],
        out: &mut impl Output,
    ) -> bool {
        let Some(tunn) = st.tunn.as_mut() else {
            self.drops.add(DropReason::NoSession);
            return false;
        };
        if scratch.len() < datagram.len().max(148) {
            self.drops.add(DropReason::Malformed);
            return false;
        }
        match tunn.decapsulate(Some(from.ip()), datagram, scratch) {
            TunnResult::WriteToNetwork(reply) => {
                out.to_network(from, reply);
                st.endpoint = Some(from);
                // Packets queued while there was no session go out now.
                while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], scratch) {
                    out.to_network(from, p);
                }
                return datagram.first() == Some(&1);
            }
            TunnResult::WriteToTunnelV4(inner, _) => {
                st.endpoint = Some(from);
                self.filter_from_peer(now, peer, st, inner, out);
            }
            TunnResult::WriteToTunnelV6(..) => {
                st.endpoint = Some(from);
                self.drops.add(DropReason::SpoofedSource);
            }
            TunnResult::Done => {
                // A keepalive, or a handshake response/cookie consumed.
                if datagram.first() == Some(&4) {
                    st.endpoint = Some(from);
                }
            }
            TunnResult::Err(e) => self.drops.add(match e {
                WireGuardError::InvalidAeadTag
                | WireGuardError::InvalidCounter
                | WireGuardError::DuplicateCounter
                | WireGuardError::WrongTai64nTimestamp
                | WireGuardError::InvalidTai64nTimestamp => DropReason::DecryptFailed,
                WireGuardError::NoCurrentSession | WireGuardError::ConnectionExpired => {
                    DropReason::NoSession
                }
                WireGuardError::WrongIndex
                | WireGuardError::WrongKey
                | WireGuardError::UnexpectedPacket => DropReason::UnknownPeer,
                WireGuardError::InvalidPacket => DropReason::BadInnerPacket,
                WireGuardError::InvalidMac => DropReason::InvalidMac,
                WireGuardError::UnderLoad => DropReason::RateLimited,
                _ => DropReason::Malformed,
            }),
        }
        false
    }

    /// A decrypted packet from a laptop: anti-spoof, policy, then conntrack records the flow.
    fn filter_from_peer(
        &self,
        now: Instant,
        peer: &Peer,
        st: &mut PeerState,
        inner: &[u8],
        out: &mut impl Output,
    ) {
        peer.counters.rx(inner.len());
        let Ok(info) = packet::parse(inner) else {
            return self.drops.add(DropReason::BadInnerPacket);
        };
        match self.check_parsed(now, peer, st, &info) {
            Ok(resource) => {
                if let Some(f) = out.flows() {
                    f.allowed(now, peer, resource, &info, inner.len(), true);
                }
                out.to_tun(inner);
            }
            Err(reason) => {
                let why = match reason {
                    DropReason::PolicyDenied => Some(DenyReason::NoGrant),
                    DropReason::SpoofedSource => Some(DenyReason::SpoofedSource),
                    DropReason::MfaRequired => Some(DenyReason::MfaRequired),
                    _ => None,
                };
                if let (Some(why), Some(f)) = (why, out.flows()) {
                    f.denied(now, peer, info.dst, info.proto, info.dport(), why);
                }
                self.drops.add(reason);
            }
        }
    }

    /// The filter alone (also driven by the fuzz target with arbitrary decrypted packets).
    pub fn check_from_peer(
        &self,
        now: Instant,
        peer: &Peer,
        st: &mut PeerState,
        inner: &[u8],
    ) -> Result<ResourceId, DropReason> {
        let info = packet::parse(inner).map_err(|_| DropReason::BadInnerPacket)?;
        self.check_parsed(now, peer, st, &info)
    }

    /// The filter on a parsed packet: the resource whose rule allowed it, or why not.
    fn check_parsed(
        &self,
        now: Instant,
        peer: &Peer,
        st: &mut PeerState,
        info: &PacketInfo,
    ) -> Result<ResourceId, DropReason> {
        if info.src != IpAddr::V4(peer.address) {
            return Err(DropReason::SpoofedSource);
        }
        let resource = match peer
            .rules
            .load()
            .matching(info.dst, info.proto, info.dport())
        {
            Some(resource) => resource,
            // Cold: a peer without protected resources is denied there at once.
            None => self.check_protected(peer, st, info)?,
        };
        if let Some(key) = outbound_key(info) {
            let tracked = st
                .flows
                .outbound(key, now, self.flow_idle, MAX_FLOWS_PER_PEER);
            if tracked == Tracked::EvictedOldest {
                // The packet goes on; the evicted flow's replies will be dropped.
                self.drops.add(DropReason::FlowTableFull);
            }
        }
        Ok(resource)
    }

    /// One packet read from the TUN device: only replies to flows the laptop opened go back.
    pub fn handle_tun_packet(
        &self,
        now: Instant,
        inner: &[u8],
        scratch: &mut [u8],
        out: &mut impl Output,
    ) {
        let info = match packet::parse(inner) {
            Ok(i) => i,
            Err(_) => return self.drops.add(DropReason::TunMalformed),
        };
        let IpAddr::V4(dst) = info.dst else {
            return self.drops.add(DropReason::NoPeerForDestination);
        };
        let table = self.peers.load();
        let Some(peer) = table.by_address(dst) else {
            return self.drops.add(DropReason::NoPeerForDestination);
        };
        let mut st = peer.state.lock();
        let st = &mut *st;
        let opened =
            inbound_key(&info).is_some_and(|key| st.flows.inbound(&key, now, self.flow_idle));
        if !opened {
            if let Some(f) = out.flows() {
                let why = DenyReason::UnsolicitedInbound;
                f.denied(now, peer, info.src, info.proto, info.dport(), why);
            }
            return self.drops.add(DropReason::NoFlowForReply);
        }
        let Some(endpoint) = st.endpoint else {
            return self.drops.add(DropReason::NoEndpoint);
        };
        let Some(tunn) = st.tunn.as_mut() else {
            return self.drops.add(DropReason::NoSession);
        };
        let need = (inner.len() + OVERHEAD).max(148);
        if scratch.len() < need {
            return self.drops.add(DropReason::TunMalformed);
        }
        // Encrypted straight into the output's send buffer where it has one.
        let mut sent = None;
        out.to_network_with(endpoint, need, scratch, |buf| {
            let start = buf.as_ptr();
            match tunn.encapsulate(inner, buf) {
                TunnResult::WriteToNetwork(d) => {
                    debug_assert_eq!(d.as_ptr(), start, "written at 0");
                    sent = Some(true);
                    Some(d.len())
                }
                TunnResult::Done => None,
                _ => {
                    sent = Some(false);
                    None
                }
            }
        });
        match sent {
            Some(true) => {
                peer.counters.tx(inner.len());
                if let Some(f) = out.flows() {
                    // A reply: the resource is the one the laptop's request matched.
                    let rport = match info.transport {
                        Transport::Ports { sport, .. } => sport,
                        _ => 0,
                    };
                    let resource = peer
                        .rules
                        .load()
                        .matching(info.src, info.proto, rport)
                        .or_else(|| {
                            let w = st.window.as_deref()?;
                            w.rules.matching(info.src, info.proto, rport)
                        });
                    if let Some(resource) = resource {
                        f.allowed(now, peer, resource, &info, inner.len(), false);
                    }
                }
            }
            Some(false) => self.drops.add(DropReason::NoSession),
            None => {}
        }
    }
}

#[path = "engine_initiate.rs"]
mod initiate;
#[path = "engine_timers.rs"]
mod timers;
#[path = "engine_window.rs"]
pub mod window;
pub use window::{cut_protected, DEFAULT_MFA_IDLE};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "engine_tests.rs"]
mod tests;
