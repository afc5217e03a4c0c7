//! Data plane counters: per peer traffic and per reason drops, lock-free, readable by the rest of the program.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Why the data plane dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A UDP datagram that is not a well-formed WireGuard message.
    Malformed,
    /// A handshake or cookie message with a bad MAC1 (not meant for this gateway).
    InvalidMac,
    /// A handshake from a key that is not enrolled, or data for an unknown index.
    UnknownPeer,
    /// A data message for a peer with no live session.
    NoSession,
    /// Decryption failed (bad tag, replayed or too old counter).
    DecryptFailed,
    /// A decrypted packet that is not valid IP.
    BadInnerPacket,
    /// The inner source is not the peer's tunnel address.
    SpoofedSource,
    /// The destination is not in the peer's rules (default deny).
    PolicyDenied,
    /// A packet towards a laptop that answers no flow the laptop opened.
    NoFlowForReply,
    /// The peer's flow table was full of live flows: its least recently used flow was evicted
    /// (the new flow's packet itself goes on; the evicted flow's replies are dropped).
    FlowTableFull,
    /// A packet from the TUN device towards an address no peer has.
    NoPeerForDestination,
    /// A packet from the TUN device that is not valid IP.
    TunMalformed,
    /// A handshake over the per-source-IP limit (which applies only while under load).
    RateLimited,
    /// A cookie reply was sent instead of answering a handshake (gateway under load).
    CookieSent,
    /// The peer has no known endpoint to send to.
    NoEndpoint,
    /// A sendmmsg/write to the network or the TUN device failed.
    IoError,
    /// A handshake initiation whose TAI64N timestamp is not newer than the peer's last one
    /// (a replay), even after the peer's session was freed.
    ReplayedHandshake,
    /// A packet to a protected (`mfa = true`) resource outside the device's access window.
    MfaRequired,
}

impl DropReason {
    pub const ALL: [DropReason; 18] = [
        DropReason::Malformed,
        DropReason::InvalidMac,
        DropReason::UnknownPeer,
        DropReason::NoSession,
        DropReason::DecryptFailed,
        DropReason::BadInnerPacket,
        DropReason::SpoofedSource,
        DropReason::PolicyDenied,
        DropReason::NoFlowForReply,
        DropReason::FlowTableFull,
        DropReason::NoPeerForDestination,
        DropReason::TunMalformed,
        DropReason::RateLimited,
        DropReason::CookieSent,
        DropReason::NoEndpoint,
        DropReason::IoError,
        DropReason::ReplayedHandshake,
        DropReason::MfaRequired,
    ];

    /// Stable snake_case name (metrics label).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::InvalidMac => "invalid_mac",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::NoSession => "no_session",
            DropReason::DecryptFailed => "decrypt_failed",
            DropReason::BadInnerPacket => "bad_inner_packet",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::PolicyDenied => "policy_denied",
            DropReason::NoFlowForReply => "no_flow_for_reply",
            DropReason::FlowTableFull => "flow_table_full",
            DropReason::NoPeerForDestination => "no_peer_for_destination",
            DropReason::TunMalformed => "tun_malformed",
            DropReason::RateLimited => "rate_limited",
            DropReason::CookieSent => "cookie_sent",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::IoError => "io_error",
            DropReason::ReplayedHandshake => "replayed_handshake",
            DropReason::MfaRequired => "mfa_required",
        }
    }
}

/// Drop counters, shared by all workers.
#[derive(Debug, Default)]
pub struct Drops {
    counts: [AtomicU64; DropReason::ALL.len()],
}

impl Drops {
    #[inline]
    pub fn add(&self, reason: DropReason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DropCounters {
        DropCounters {
            counts: DropReason::ALL.map(|r| (r, self.counts[r as usize].load(Ordering::Relaxed))),
        }
    }
}

/// A copy of the drop counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters {
    counts: [(DropReason, u64); DropReason::ALL.len()],
}

impl DropCounters {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize].1
    }

    /// Every reason with its count, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        self.counts.iter().copied()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// Traffic counters of one peer (plaintext IP bytes).
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub rx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
}

impl PeerCounters {
    #[inline]
    pub fn rx(&self, bytes: usize) {
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn tx(&self, bytes: usize) {
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
    }
}

/// What `GatewayHandle::peer_stats()` reports for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub public_key: crate::key::PublicKey,
    pub label: String,
    pub address: Ipv4Addr,
    pub endpoint: Option<SocketAddr>,
    /// Bytes/packets received from the peer (decrypted, forwarded or not).
    pub rx_bytes: u64,
    pub rx_packets: u64,
    /// Bytes/packets sent to the peer (before encryption).
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub last_handshake: Option<SystemTime>,
    pub session_active: bool,
    /// Flows the peer has open.
    pub flows: usize,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_slot() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let d = Drops::default();
        d.add(DropReason::SpoofedSource);
        d.add(DropReason::SpoofedSource);
        d.add(DropReason::Malformed);
        let s = d.snapshot();
        assert_eq!(s.get(DropReason::SpoofedSource), 2);
        assert_eq!(s.get(DropReason::Malformed), 1);
        assert_eq!(s.get(DropReason::PolicyDenied), 0);
        assert_eq!(s.total(), 3);
    }
}
