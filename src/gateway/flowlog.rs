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
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::packet::{PacketInfo, Transport};
use super::peers::Peer;
use crate::ip_proto;
use crate::policy::ResourceId;
use crate::time::duration_ms;

mod queue;
mod records;
pub use queue::{FlowLog, FlowReceiver};
pub use records::{
    AllowedFlow, DeniedFlow, DenyReason, EndReason, FlowRecord, LostCounts, PeerRef, ProtoSet,
    RecordKind, SessionEnd, SessionMark, SessionStart, WindowClosed, WindowEnd,
};

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

/// A clock pair to turn `Instant`s into wall time (Unix ms).
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    base_ms: i64,
}

impl Clock {
    fn ms(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.base) {
            Some(d) => self.base_ms.saturating_add(duration_ms(d)),
            None => self
                .base_ms
                .saturating_sub(duration_ms(self.base.saturating_duration_since(t))),
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
            2 => DenyReason::UnsolicitedInbound,
            _ => DenyReason::MfaRequired,
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
        let window = duration_ms(self.log.window()).max(1);
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
        let port = matches!(proto, ip_proto::TCP | ip_proto::UDP).then_some(port);
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
