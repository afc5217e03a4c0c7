//! Flow and session records of the data plane: per-worker aggregation tables, the bounded queue to the audit writer, loss counters.
//!
//! Each packet worker owns a [`WorkerFlows`]: plain tables keyed by integers (peer index,
//! destination), touched without any lock, reused window after window (no allocation per packet
//! once warm). At the end of each `[audit] flow_window` the worker hands its tables whole to the
//! bounded queue of the shared [`FlowLog`] (one queue operation, never blocking; what does not fit
//! is counted as lost, per kind); the records are built from them on the consumer's side
//! (`control::flow_audit`), which merges the workers' records of one window and writes the events.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasher as _;

use hashbrown::HashTable;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::packet::{PacketInfo, Transport};
use super::peers::Peer;
use crate::policy::{ResourceId, IPPROTO_TCP, IPPROTO_UDP};

mod queue;
pub use queue::{FlowLog, FlowReceiver};

/// Most destination ports one `flow.allowed` record lists.
pub const MAX_PORTS: usize = 32;
/// Most distinct denied destinations kept per device per window; the rest is one summary.
pub const MAX_DENIED_PER_PEER: usize = 256;
/// Records the queue holds before new ones are counted as lost.
pub const DEFAULT_QUEUE: usize = 65_536;

/// The tables' hasher: foldhash (hashbrown's default) is several times faster than SipHash on
/// these small keys, and its per-process random seed keeps a laptop from choosing colliding
/// destinations.
type Hasher = foldhash::fast::RandomState;
type Map<K, V> = HashMap<K, V, Hasher>;

/// Unix milliseconds now.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Which peer a record is about: its key, and its label when the record was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRef {
    pub public_key: [u8; 32],
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
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoGrant => "no_grant",
            DenyReason::SpoofedSource => "spoofed_source",
            DenyReason::UnsolicitedInbound => "unsolicited_inbound",
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
    /// Destination ports seen (sorted, at most [`MAX_PORTS`]).
    pub ports: Vec<u16>,
    pub ports_truncated: bool,
}

/// Denied packets of one device to one destination during one window; `dst: None` is the
/// summary of the destinations beyond [`MAX_DENIED_PER_PEER`].
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

/// What goes through the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowRecord {
    SessionStarted(SessionStart),
    SessionEnded(SessionEnd),
    Allowed(AllowedFlow),
    Denied(DeniedFlow),
}

/// The kinds of record, for loss counters (named as their audit actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    FlowAllowed,
    FlowDenied,
    SessionStarted,
    SessionEnded,
}

impl RecordKind {
    pub const ALL: [RecordKind; 4] = [
        RecordKind::FlowAllowed,
        RecordKind::FlowDenied,
        RecordKind::SessionStarted,
        RecordKind::SessionEnded,
    ];

    /// The audit action name of this kind of record.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::FlowAllowed => "flow.allowed",
            RecordKind::FlowDenied => "flow.denied",
            RecordKind::SessionStarted => "tunnel.session_started",
            RecordKind::SessionEnded => "tunnel.session_ended",
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
        }
    }
}

/// Records lost because the queue was full, per kind (cumulative since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostCounts(pub [u64; 4]);

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

/// A clock pair to turn `Instant`s into wall time (Unix ms).
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    base_ms: i64,
}

impl Clock {
    fn ms(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.base) {
            Some(d) => self.base_ms.saturating_add(millis(d)),
            None => self
                .base_ms
                .saturating_sub(millis(self.base.saturating_duration_since(t))),
        }
    }
}

#[derive(Debug)]
struct AllowedAgg {
    peer: PeerRef,
    resource: ResourceId,
    first: Instant,
    last: Instant,
    packets_out: u64,
    bytes_out: u64,
    packets_in: u64,
    bytes_in: u64,
    protocols: ProtoSet,
    ports: [u16; MAX_PORTS],
    nports: usize,
    ports_truncated: bool,
}

/// A denied destination of one device slot, as three plain integers: hashed in three writes,
/// compared without branching on the address family, decoded only on the writer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DeniedKey {
    addr_hi: u64,
    addr_lo: u64,
    /// Bit 63: IPv6; bits 32–62: the device's slot in the window; 24–31: protocol;
    /// 20–23: reason; 16: a port is set; 0–15: the port.
    meta: u64,
}

const V6: u64 = 1 << 63;
const HAS_PORT: u64 = 1 << 16;

impl DeniedKey {
    fn new(slot: usize, dst: IpAddr, proto: u8, port: Option<u16>, reason: DenyReason) -> Self {
        let (family, bits) = match dst {
            IpAddr::V4(v4) => (0, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (V6, u128::from(v6)),
        };
        DeniedKey {
            addr_hi: (bits >> 64) as u64,
            addr_lo: bits as u64,
            meta: family
                | (slot as u64 & 0x7fff_ffff) << 32
                | u64::from(proto) << 24
                | (reason as u64) << 20
                | port.map_or(0, |p| HAS_PORT | u64::from(p)),
        }
    }

    fn slot(self) -> usize {
        ((self.meta >> 32) & 0x7fff_ffff) as usize
    }

    fn dst(self) -> IpAddr {
        let bits = u128::from(self.addr_hi) << 64 | u128::from(self.addr_lo);
        if self.meta & V6 != 0 {
            IpAddr::V6(bits.into())
        } else {
            IpAddr::V4((self.addr_lo as u32).into())
        }
    }

    fn proto(self) -> u8 {
        (self.meta >> 24) as u8
    }

    fn port(self) -> Option<u16> {
        (self.meta & HAS_PORT != 0).then_some(self.meta as u16)
    }

    fn reason(self) -> DenyReason {
        match (self.meta >> 20) & 0xf {
            0 => DenyReason::NoGrant,
            1 => DenyReason::SpoofedSource,
            _ => DenyReason::UnsolicitedInbound,
        }
    }
}

#[derive(Debug)]
struct DeniedEntry {
    key: DeniedKey,
    count: u64,
    first: Instant,
    last: Instant,
}

/// Distinct-count estimate of the folded destinations: linear counting over a fixed bitmap
/// (hand-written: twenty lines, bounded memory, no dependency for one estimate).
#[derive(Debug)]
struct Distinct {
    bits: Box<[u64; DISTINCT_WORDS]>,
}

const DISTINCT_WORDS: usize = 1024; // 65,536 bits: ±2 % up to a few 100,000 destinations

impl Distinct {
    fn new() -> Distinct {
        Distinct {
            bits: Box::new([0; DISTINCT_WORDS]),
        }
    }

    /// Adds a destination by its hash (the same destination always gives the same hash).
    fn insert(&mut self, hash: u64) {
        let bit = (hash % (DISTINCT_WORDS as u64 * 64)) as usize;
        self.bits[bit / 64] |= 1 << (bit % 64);
    }

    fn estimate(&self) -> u64 {
        let m = (DISTINCT_WORDS * 64) as f64;
        let zeros: u32 = self.bits.iter().map(|w| w.count_zeros()).sum();
        let zeros = f64::from(zeros.max(1));
        (m * (m / zeros).ln()).round() as u64
    }
}

/// The summary of one device's destinations beyond the cap.
#[derive(Debug)]
struct Overflowed {
    peer: PeerRef,
    reason: DenyReason,
    count: u64,
    first: Instant,
    last: Instant,
    distinct: Distinct,
}

/// One device's denied destinations in the window so far (by its slot).
#[derive(Debug, Clone, Copy)]
struct PeerDenied {
    distinct: usize,
    /// Where its summary is in [`Tables::summaries`].
    overflow: Option<usize>,
}

/// What one worker aggregated in one window, handed to the queue whole at the window's end and
/// turned into records on the consumer's side; emptied tables come back for a later window.
#[derive(Debug, Default)]
struct Tables {
    /// The devices of the window by slot: each denied destination names its slot, not a copy.
    peers: Vec<PeerRef>,
    aggs: Vec<AllowedAgg>,
    denied: Vec<DeniedEntry>,
    summaries: Vec<Overflowed>,
}

/// One worker's tables for the current window. Only its worker touches it: no lock.
#[derive(Debug)]
pub struct WorkerFlows {
    log: Arc<FlowLog>,
    /// Turns `Instant`s into wall time, re-anchored at each window.
    clock: Clock,
    window_start_ms: i64,
    deadline: Instant,
    /// Where each device × resource aggregate is in `tables.aggs`.
    allowed: Map<(u32, ResourceId), usize>,
    /// The aggregate the last allowed packet went to: the next one of a batch usually goes
    /// there too, without hashing.
    last_allowed: Option<((u32, ResourceId), usize)>,
    /// Where each denied destination is in `tables.denied`: positions only (4 bytes a slot, the
    /// key is compared in the entry), so the index of a flood stays in the core's cache.
    denied: HashTable<u32>,
    /// Each peer index's slot in `tables.peers` (and `per_peer`).
    slots: Map<u32, u32>,
    per_peer: Vec<PeerDenied>,
    tables: Tables,
    hasher: Hasher,
}

impl WorkerFlows {
    /// Tables for a worker; `now` and `now_ms` are the same moment on both clocks.
    pub fn new(log: Arc<FlowLog>, now: Instant, now_ms: i64) -> WorkerFlows {
        let mut w = WorkerFlows {
            log,
            clock: Clock {
                base: now,
                base_ms: now_ms,
            },
            window_start_ms: now_ms,
            deadline: now,
            allowed: Map::with_capacity_and_hasher(64, Hasher::default()),
            last_allowed: None,
            denied: HashTable::with_capacity(64),
            slots: Map::with_capacity_and_hasher(16, Hasher::default()),
            per_peer: Vec::with_capacity(16),
            tables: Tables::default(),
            hasher: Hasher::default(),
        };
        w.anchor(now, now_ms);
        w
    }

    fn anchor(&mut self, now: Instant, now_ms: i64) {
        let window = millis(self.log.window()).max(1);
        self.clock = Clock {
            base: now,
            base_ms: now_ms,
        };
        self.window_start_ms = now_ms - now_ms.rem_euclid(window);
        let left = u64::try_from(self.window_start_ms + window - now_ms).unwrap_or(0);
        self.deadline = now + Duration::from_millis(left);
    }

    /// Whether the window is over at `now` (then call [`WorkerFlows::roll`]).
    #[inline]
    pub fn due(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Sends the window's records and starts the window containing `now_ms`.
    pub fn roll(&mut self, now: Instant, now_ms: i64) {
        self.flush();
        self.anchor(now, now_ms);
    }

    /// Entries held now (allowed + denied + devices): bounded by peers × (resources + cap + 1).
    pub fn entries(&self) -> usize {
        self.tables.aggs.len() + self.tables.denied.len() + self.per_peer.len()
    }

    /// A packet the policy allowed (`outbound`: laptop → resource), or a reply to one.
    #[inline]
    pub fn allowed(
        &mut self,
        now: Instant,
        peer: &Peer,
        resource: ResourceId,
        info: &PacketInfo,
        bytes: usize,
        outbound: bool,
    ) {
        let key = (peer.index, resource);
        let i = match self.last_allowed {
            Some((k, i)) if k == key => i,
            _ => {
                let aggs = &mut self.tables.aggs;
                let i = match self.allowed.entry(key) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(v) => {
                        aggs.push(AllowedAgg {
                            peer: PeerRef::of(peer),
                            resource,
                            first: now,
                            last: now,
                            packets_out: 0,
                            bytes_out: 0,
                            packets_in: 0,
                            bytes_in: 0,
                            protocols: ProtoSet::default(),
                            ports: [0; MAX_PORTS],
                            nports: 0,
                            ports_truncated: false,
                        });
                        *v.insert(aggs.len() - 1)
                    }
                };
                self.last_allowed = Some((key, i));
                i
            }
        };
        let Some(a) = self.tables.aggs.get_mut(i) else {
            return;
        };
        a.last = now;
        let bytes = bytes as u64;
        if outbound {
            a.packets_out += 1;
            a.bytes_out += bytes;
            a.protocols.insert(info.proto);
            if let Transport::Ports { dport, .. } = info.transport {
                if !a.ports[..a.nports].contains(&dport) {
                    if a.nports < MAX_PORTS {
                        a.ports[a.nports] = dport;
                        a.nports += 1;
                    } else {
                        a.ports_truncated = true;
                    }
                }
            }
        } else {
            a.packets_in += 1;
            a.bytes_in += bytes;
        }
    }

    /// The device's slot in this window. The index may have passed to another device within
    /// the window: then the new device gets a slot of its own.
    #[inline]
    fn slot(&mut self, peer: &Peer) -> usize {
        let peers = &mut self.tables.peers;
        let slot = match self.slots.entry(peer.index) {
            Entry::Occupied(e) => {
                let s = *e.get() as usize;
                if peers
                    .get(s)
                    .is_some_and(|r| r.public_key == peer.public_key)
                {
                    return s;
                }
                e.into_mut()
            }
            Entry::Vacant(v) => v.insert(0),
        };
        peers.push(PeerRef::of(peer));
        self.per_peer.push(PeerDenied {
            distinct: 0,
            overflow: None,
        });
        *slot = (peers.len() - 1) as u32;
        peers.len() - 1
    }

    /// A denied packet: `dst`/`port` are the far end (for inbound packets, the sender and the
    /// laptop's port it aimed at).
    #[inline]
    pub fn denied(
        &mut self,
        now: Instant,
        peer: &Peer,
        dst: IpAddr,
        proto: u8,
        port: u16,
        reason: DenyReason,
    ) {
        let port = matches!(proto, IPPROTO_TCP | IPPROTO_UDP).then_some(port);
        let slot = self.slot(peer);
        let key = DeniedKey::new(slot, dst, proto, port, reason);
        // One hash of the key whether it is new or not.
        let hash = self.hasher.hash_one(key);
        let entries = &mut self.tables.denied;
        let same = |&i: &u32| entries.get(i as usize).is_some_and(|e| e.key == key);
        if let Some(&i) = self.denied.find(hash, same) {
            if let Some(d) = entries.get_mut(i as usize) {
                d.count += 1;
                d.last = now;
            }
            return;
        }
        let Some(p) = self.per_peer.get_mut(slot) else {
            return;
        };
        if p.distinct < MAX_DENIED_PER_PEER {
            p.distinct += 1;
            let hasher = &self.hasher;
            let rehash = |&i: &u32| {
                entries
                    .get(i as usize)
                    .map_or(0, |e| hasher.hash_one(e.key))
            };
            self.denied
                .insert_unique(hash, entries.len() as u32, rehash);
            entries.push(DeniedEntry {
                key,
                count: 1,
                first: now,
                last: now,
            });
            return;
        }
        let summaries = &mut self.tables.summaries;
        let i = match p.overflow {
            Some(i) => i,
            None => {
                let peer = self.tables.peers[slot].clone();
                summaries.push(Overflowed {
                    peer,
                    reason,
                    count: 0,
                    first: now,
                    last: now,
                    distinct: Distinct::new(),
                });
                *p.overflow.insert(summaries.len() - 1)
            }
        };
        let Some(o) = summaries.get_mut(i) else {
            return;
        };
        o.count += 1;
        o.last = now;
        o.distinct.insert(self.hasher.hash_one((
            key.addr_hi,
            key.addr_lo,
            key.meta & !(0xf << 20),
        )));
    }

    /// Hands the window's tables to the queue in one operation (never blocks) and starts
    /// again on emptied tables.
    pub fn flush(&mut self) {
        self.allowed.clear();
        self.last_allowed = None;
        self.denied.clear();
        self.slots.clear();
        self.per_peer.clear();
        let tables = std::mem::replace(&mut self.tables, self.log.fresh_tables());
        self.log
            .send_window(self.clock, self.window_start_ms, tables);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "flowlog_tests.rs"]
mod tests;
