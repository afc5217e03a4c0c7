//! What the data plane records: session marks and ends, allowed and denied flows, record kinds and loss counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::super::peers::Peer;
use crate::key::PublicKey;
use crate::policy::ResourceId;

/// Which peer a record is about: its key, and its label when the record was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRef {
    pub public_key: PublicKey,
    pub label: Arc<String>,
}

impl PeerRef {
    pub fn of(peer: &Peer) -> PeerRef {
        PeerRef {
            public_key: peer.public_key,
            label: peer.label.load_full(),
        }
    }
}

/// Why a tunnel session ended (`tunnel.session_ended` `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// boringtun expired the session (no handshake for too long).
    Expired,
    /// The device was revoked (by IT staff, expiry of its key, or directory sync).
    Revoked,
    /// The device's key was replaced by a rotation.
    Rotated,
    /// The control plane removed the peer for another reason (config change).
    Removed,
    /// The gateway stopped.
    GatewayStopped,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
            EndReason::Rotated => "rotated",
            EndReason::Removed => "removed",
            EndReason::GatewayStopped => "gateway_stopped",
        }
    }
}

/// Why a packet was denied (`flow.denied` `reason`). Malformed packets are only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The device's grants do not allow the destination.
    NoGrant,
    /// The inner source is not the device's tunnel address.
    SpoofedSource,
    /// A packet towards the laptop that answers no flow the laptop opened.
    UnsolicitedInbound,
    /// A packet to a protected (`mfa = true`) resource outside the device's access window.
    MfaRequired,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoGrant => "no_grant",
            DenyReason::SpoofedSource => "spoofed_source",
            DenyReason::UnsolicitedInbound => "unsolicited_inbound",
            DenyReason::MfaRequired => "mfa_required",
        }
    }
}

/// Where a session started and the peer's counters then (kept in the peer's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMark {
    pub started_ms: i64,
    pub endpoint: SocketAddr,
    rx_bytes: u64,
    rx_packets: u64,
    tx_bytes: u64,
    tx_packets: u64,
}

impl SessionMark {
    pub fn new(peer: &Peer, endpoint: SocketAddr, started_ms: i64) -> SessionMark {
        let c = &peer.counters;
        SessionMark {
            started_ms,
            endpoint,
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            rx_packets: c.rx_packets.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            tx_packets: c.tx_packets.load(Ordering::Relaxed),
        }
    }

    /// The session's end: counters since the mark (rx = laptop → gateway).
    pub fn end(
        self,
        peer: &Peer,
        endpoint: Option<SocketAddr>,
        reason: EndReason,
        ended_ms: i64,
    ) -> SessionEnd {
        let c = &peer.counters;
        let since = |now: &AtomicU64, then: u64| now.load(Ordering::Relaxed).saturating_sub(then);
        SessionEnd {
            peer: PeerRef::of(peer),
            endpoint: endpoint.unwrap_or(self.endpoint),
            started_ms: self.started_ms,
            ended_ms,
            rx_bytes: since(&c.rx_bytes, self.rx_bytes),
            rx_packets: since(&c.rx_packets, self.rx_packets),
            tx_bytes: since(&c.tx_bytes, self.tx_bytes),
            tx_packets: since(&c.tx_packets, self.tx_packets),
            reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStart {
    pub peer: PeerRef,
    pub endpoint: SocketAddr,
    pub started_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    pub peer: PeerRef,
    /// The laptop's last endpoint.
    pub endpoint: SocketAddr,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub reason: EndReason,
}

/// A set of IP protocol numbers (256 bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtoSet([u64; 4]);

impl ProtoSet {
    pub fn insert(&mut self, proto: u8) {
        self.0[usize::from(proto >> 6)] |= 1 << (proto & 63);
    }

    pub fn union(&mut self, other: ProtoSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..=255u8).filter(move |p| self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0)
    }
}

/// Traffic of one device to one resource during one window (both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedFlow {
    pub peer: PeerRef,
    pub resource: ResourceId,
    pub window_start_ms: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Laptop → resource.
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Replies, resource → laptop.
    pub packets_in: u64,
    pub bytes_in: u64,
    pub protocols: ProtoSet,
    /// Destination ports seen (sorted, at most [`MAX_PORTS`](super::MAX_PORTS)).
    pub ports: Vec<u16>,
    pub ports_truncated: bool,
}

/// Denied packets of one device to one destination during one window; `dst: None` is the
/// summary of the destinations beyond [`MAX_DENIED_PER_PEER`](super::MAX_DENIED_PER_PEER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedFlow {
    pub peer: PeerRef,
    pub dst: Option<IpAddr>,
    pub proto: u8,
    pub port: Option<u16>,
    pub reason: DenyReason,
    pub count: u64,
    pub window_start_ms: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// For the summary: how many distinct destinations it folds in (estimated); else 1.
    pub destinations: u64,
}

/// Why the gateway closed an access window on its own (`mfa.window_closed` `reason`); the
/// other reasons (down, logout, reset, revoked) come from the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowEnd {
    /// The window's end (`mfa_until_ms`) passed.
    Expired,
    /// No packet to a protected resource for `[mfa] idle`.
    Idle,
}

impl WindowEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowEnd::Expired => "expired",
            WindowEnd::Idle => "idle",
        }
    }

    /// The reason as [`WindowEnd::as_str`] writes it; anything else is none.
    pub fn parse(s: &str) -> Option<WindowEnd> {
        [WindowEnd::Expired, WindowEnd::Idle]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// An access window the gateway closed: its live flows to protected resources were cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowClosed {
    pub peer: PeerRef,
    /// The window's end as the control plane sent it.
    pub until_ms: i64,
    /// When the gateway closed it (its wall clock).
    pub closed_ms: i64,
    pub reason: WindowEnd,
    /// Live flows to protected resources cut.
    pub flows_cut: usize,
}

/// What goes through the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowRecord {
    SessionStarted(SessionStart),
    SessionEnded(SessionEnd),
    Allowed(AllowedFlow),
    Denied(DeniedFlow),
    WindowClosed(WindowClosed),
}

/// The kinds of record, for loss counters (named as their audit actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    FlowAllowed,
    FlowDenied,
    SessionStarted,
    SessionEnded,
    WindowClosed,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::FlowAllowed,
        RecordKind::FlowDenied,
        RecordKind::SessionStarted,
        RecordKind::SessionEnded,
        RecordKind::WindowClosed,
    ];

    /// The audit action name of this kind of record.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::FlowAllowed => "flow.allowed",
            RecordKind::FlowDenied => "flow.denied",
            RecordKind::SessionStarted => "tunnel.session_started",
            RecordKind::SessionEnded => "tunnel.session_ended",
            RecordKind::WindowClosed => "mfa.window_closed",
        }
    }
}

impl FlowRecord {
    pub fn kind(&self) -> RecordKind {
        match self {
            FlowRecord::SessionStarted(_) => RecordKind::SessionStarted,
            FlowRecord::SessionEnded(_) => RecordKind::SessionEnded,
            FlowRecord::Allowed(_) => RecordKind::FlowAllowed,
            FlowRecord::Denied(_) => RecordKind::FlowDenied,
            FlowRecord::WindowClosed(_) => RecordKind::WindowClosed,
        }
    }
}

/// Records lost because the queue was full, per kind (cumulative since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostCounts(pub [u64; RecordKind::ALL.len()]);

impl LostCounts {
    pub fn get(&self, kind: RecordKind) -> u64 {
        self.0[kind as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (RecordKind, u64)> + '_ {
        RecordKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }
}
