//! Flow and session records of the data plane: per-worker aggregation tables, the bounded queue to the audit writer, loss counters.
//!
//! Each packet worker owns a [`WorkerFlows`]: plain hash tables keyed by peer index, touched
//! without any lock, reused window after window (no allocation per packet once warm). At the
//! end of each `[audit] flow_window` the worker turns its tables into [`FlowRecord`]s and
//! offers them to the bounded queue of the shared [`FlowLog`] with `try_send`: a full queue
//! never blocks a worker, the record is counted as lost (per kind) instead. The consumer
//! (`control::flow_audit`) merges the workers' records of one window and writes the events.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hash};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::packet::{PacketInfo, Transport};
use super::peers::Peer;
use crate::policy::{ResourceId, IPPROTO_TCP, IPPROTO_UDP};

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

/// The shared side of flow auditing: the window, the queue's sending end, loss counters.
#[derive(Debug)]
pub struct FlowLog {
    window: Duration,
    tx: SyncSender<FlowRecord>,
    lost: [AtomicU64; 4],
    /// Records in the queue now (sent, not yet received by the consumer).
    queued: AtomicU64,
    /// Unix ms of the first loss not yet reported (0: none).
    first_loss_ms: AtomicI64,
}

impl FlowLog {
    /// A log aggregating over `window`, with a queue of `capacity` records, and its receiver.
    pub fn new(window: Duration, capacity: usize) -> (Arc<FlowLog>, Receiver<FlowRecord>) {
        let (tx, rx) = sync_channel(capacity);
        let log = FlowLog {
            window: window.max(Duration::from_millis(100)),
            tx,
            lost: Default::default(),
            queued: AtomicU64::new(0),
            first_loss_ms: AtomicI64::new(0),
        };
        (Arc::new(log), rx)
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Offers a record to the queue; never blocks. A full queue counts it as lost.
    pub fn send(&self, record: FlowRecord) {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => {
                self.lost[r.kind() as usize].fetch_add(1, Ordering::Relaxed);
                let _ = self.first_loss_ms.compare_exchange(
                    0,
                    wall_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// The consumer took one record off the queue.
    pub fn received(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Records waiting in the queue now (for metrics).
    pub fn depth(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Records lost so far, per kind (for metrics and `audit.overflow`).
    pub fn lost(&self) -> LostCounts {
        LostCounts(std::array::from_fn(|i| {
            self.lost[i].load(Ordering::Relaxed)
        }))
    }

    /// When the first loss since the last call happened (None: no loss since).
    pub fn take_first_loss(&self) -> Option<i64> {
        match self.first_loss_ms.swap(0, Ordering::Relaxed) {
            0 => None,
            t => Some(t),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeniedKey {
    peer: u32,
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
    reason: DenyReason,
}

/// The destination as one integer (IPv4 in the low bits): hashed in one step.
fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) ^ (1 << 127),
    }
}

/// Two integer writes instead of one per field (a denied packet to a new destination is
/// hashed on this path): equal keys give equal writes, as `Eq` needs.
impl Hash for DeniedKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(addr_bits(self.dst));
        let port = self.port.map_or(0, |p| 1 << 16 | u64::from(p));
        state.write_u64(
            u64::from(self.peer) << 32
                | u64::from(self.proto) << 24
                | (self.reason as u64) << 20
                | port,
        );
    }
}

#[derive(Debug)]
struct DeniedAgg {
    peer: PeerRef,
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

#[derive(Debug, Default)]
struct PeerDenied {
    distinct: usize,
    overflow: Option<Overflowed>,
    /// The device as its first denied packet of the window named it: each new destination
    /// clones it (one reference count) instead of reading the peer's label again.
    peer: Option<PeerRef>,
}

impl PeerDenied {
    fn peer_ref(&mut self, peer: &Peer) -> PeerRef {
        match &self.peer {
            // The index may have passed to another device within the window: check the key.
            Some(r) if r.public_key == peer.public_key => r.clone(),
            _ => self.peer.insert(PeerRef::of(peer)).clone(),
        }
    }
}

/// One worker's tables for the current window. Only its worker touches it: no lock.
#[derive(Debug)]
pub struct WorkerFlows {
    log: Arc<FlowLog>,
    /// A clock pair to turn `Instant`s into wall time, re-anchored at each window.
    base: Instant,
    base_ms: i64,
    window_start_ms: i64,
    deadline: Instant,
    /// Where each device × resource aggregate is in `aggs`.
    allowed: Map<(u32, ResourceId), usize>,
    aggs: Vec<AllowedAgg>,
    /// The aggregate the last allowed packet went to: the next one of a batch usually goes
    /// there too, without hashing.
    last_allowed: Option<((u32, ResourceId), usize)>,
    denied: Map<DeniedKey, DeniedAgg>,
    per_peer: Map<u32, PeerDenied>,
    hasher: Hasher,
}

impl WorkerFlows {
    /// Tables for a worker; `now` and `now_ms` are the same moment on both clocks.
    pub fn new(log: Arc<FlowLog>, now: Instant, now_ms: i64) -> WorkerFlows {
        let mut w = WorkerFlows {
            log,
            base: now,
            base_ms: now_ms,
            window_start_ms: now_ms,
            deadline: now,
            allowed: Map::with_capacity_and_hasher(64, Hasher::default()),
            aggs: Vec::with_capacity(64),
            last_allowed: None,
            denied: Map::with_capacity_and_hasher(64, Hasher::default()),
            per_peer: Map::with_capacity_and_hasher(16, Hasher::default()),
            hasher: Hasher::default(),
        };
        w.anchor(now, now_ms);
        w
    }

    fn anchor(&mut self, now: Instant, now_ms: i64) {
        let window = millis(self.log.window).max(1);
        self.base = now;
        self.base_ms = now_ms;
        self.window_start_ms = now_ms - now_ms.rem_euclid(window);
        let left = u64::try_from(self.window_start_ms + window - now_ms).unwrap_or(0);
        self.deadline = now + Duration::from_millis(left);
    }

    fn ms(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.base) {
            Some(d) => self.base_ms.saturating_add(millis(d)),
            None => self
                .base_ms
                .saturating_sub(millis(self.base.saturating_duration_since(t))),
        }
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

    /// Entries held now (allowed + denied): bounded by peers × (resources + cap + 1).
    pub fn entries(&self) -> usize {
        self.aggs.len() + self.denied.len() + self.per_peer.len()
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
                let i = match self.allowed.entry(key) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(v) => {
                        self.aggs.push(AllowedAgg {
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
                        *v.insert(self.aggs.len() - 1)
                    }
                };
                self.last_allowed = Some((key, i));
                i
            }
        };
        let Some(a) = self.aggs.get_mut(i) else {
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
        let key = DeniedKey {
            peer: peer.index,
            dst,
            proto,
            port,
            reason,
        };
        // One hash of the key whether it is new or not.
        let vacant = match self.denied.entry(key) {
            Entry::Occupied(e) => {
                let d = e.into_mut();
                d.count += 1;
                d.last = now;
                return;
            }
            Entry::Vacant(v) => v,
        };
        let p = self.per_peer.entry(peer.index).or_default();
        if p.distinct < MAX_DENIED_PER_PEER {
            p.distinct += 1;
            vacant.insert(DeniedAgg {
                peer: p.peer_ref(peer),
                count: 1,
                first: now,
                last: now,
            });
            return;
        }
        let o = p.overflow.get_or_insert_with(|| Overflowed {
            peer: PeerRef::of(peer),
            reason,
            count: 0,
            first: now,
            last: now,
            distinct: Distinct::new(),
        });
        o.count += 1;
        o.last = now;
        let port = port.map_or(0, |p| 1 << 16 | u32::from(p));
        let rest = u32::from(proto) << 24 | port;
        o.distinct
            .insert(self.hasher.hash_one((addr_bits(dst), rest)));
    }

    /// Sends every record of the window to the queue (never blocks) and empties the tables,
    /// keeping their capacity.
    pub fn flush(&mut self) {
        let window_start_ms = self.window_start_ms;
        self.allowed.clear();
        self.last_allowed = None;
        let mut aggs = std::mem::take(&mut self.aggs);
        for a in aggs.drain(..) {
            let resource = a.resource;
            let mut ports = a.ports[..a.nports].to_vec();
            ports.sort_unstable();
            self.log.send(FlowRecord::Allowed(AllowedFlow {
                peer: a.peer,
                resource,
                window_start_ms,
                first_ms: self.ms(a.first),
                last_ms: self.ms(a.last),
                packets_out: a.packets_out,
                bytes_out: a.bytes_out,
                packets_in: a.packets_in,
                bytes_in: a.bytes_in,
                protocols: a.protocols,
                ports,
                ports_truncated: a.ports_truncated,
            }));
        }
        self.aggs = aggs;
        let mut denied = std::mem::take(&mut self.denied);
        for (k, d) in denied.drain() {
            self.log.send(FlowRecord::Denied(DeniedFlow {
                peer: d.peer,
                dst: Some(k.dst),
                proto: k.proto,
                port: k.port,
                reason: k.reason,
                count: d.count,
                window_start_ms,
                first_ms: self.ms(d.first),
                last_ms: self.ms(d.last),
                destinations: 1,
            }));
        }
        self.denied = denied;
        let mut per_peer = std::mem::take(&mut self.per_peer);
        for (_, p) in per_peer.drain() {
            if let Some(o) = p.overflow {
                self.log.send(FlowRecord::Denied(DeniedFlow {
                    peer: o.peer,
                    dst: None,
                    proto: 0,
                    port: None,
                    reason: o.reason,
                    count: o.count,
                    window_start_ms,
                    first_ms: self.ms(o.first),
                    last_ms: self.ms(o.last),
                    destinations: o.distinct.estimate(),
                }));
            }
        }
        self.per_peer = per_peer;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "flowlog_tests.rs"]
mod tests;
