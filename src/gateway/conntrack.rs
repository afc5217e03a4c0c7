//! Connection tracking of one peer: the flows its laptop opened, so that only their replies come back.
//!
//! Flows are kept in last-seen order (hashlink's `LinkedHashMap`, the insertion-ordered map
//! sqlx already uses): expiry pops idle flows from the front and a full table evicts its least
//! recently used flow, both in O(1) per flow, never a scan on the packet path.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::{PacketInfo, Transport};

/// A flow as seen from the laptop: protocol, the remote host, the laptop's port and the
/// remote port (for ICMP echo: the echo identifier and 0). The laptop's own address is
/// implicit: one table per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub remote: IpAddr,
    pub local_port: u16,
    pub remote_port: u16,
}

/// What recording an outbound flow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// Recorded or refreshed.
    Yes,
    /// Recorded after evicting the least recently used flow: the table was full of live flows
    /// (counted as the `flow_table_full` drop reason; that flow's replies are dropped).
    EvictedOldest,
}

/// The tracked flows of one peer, least recently seen first. An idle peer's table is one null
/// pointer: the map (64 bytes inline, then its slots) exists from the first flow to the last.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: Option<Box<Flows>>,
}

type Flows = hashlink::LinkedHashMap<FlowKey, Instant>;

/// Pops flows idle for longer than `idle` from the front (oldest first).
fn expire_front(flows: &mut Flows, now: Instant, idle: Duration) {
    while let Some((_, seen)) = flows.front() {
        if now.saturating_duration_since(*seen) <= idle {
            break;
        }
        flows.pop_front();
    }
}

/// The key of a packet sent by the laptop, if it opens a trackable flow.
pub fn outbound_key(info: &PacketInfo) -> Option<FlowKey> {
    let (local_port, remote_port) = match info.transport {
        Transport::Ports { sport, dport } => (sport, dport),
        Transport::Echo { id, reply: false } => (id, 0),
        // An echo reply or an ICMP error from the laptop answers something it did not open.
        Transport::Echo { reply: true, .. } | Transport::IcmpError(_) => return None,
        Transport::Other => (0, 0),
    };
    Some(FlowKey {
        proto: info.proto,
        remote: info.dst,
        local_port,
        remote_port,
    })
}

/// The key of the flow a packet towards the laptop would answer.
pub fn inbound_key(info: &PacketInfo) -> Option<FlowKey> {
    Some(match info.transport {
        Transport::Ports { sport, dport } => FlowKey {
            proto: info.proto,
            remote: info.src,
            local_port: dport,
            remote_port: sport,
        },
        Transport::Echo { id, reply: true } => FlowKey {
            proto: info.proto,
            remote: info.src,
            local_port: id,
            remote_port: 0,
        },
        // A remote host cannot ping the laptop.
        Transport::Echo { reply: false, .. } => return None,
        // An error about a packet the laptop sent: the quoted packet is laptop -> remote.
        Transport::IcmpError(q) => FlowKey {
            proto: q.proto,
            remote: q.dst,
            local_port: q.sport,
            remote_port: q.dport,
        },
        Transport::Other => FlowKey {
            proto: info.proto,
            remote: info.src,
            local_port: 0,
            remote_port: 0,
        },
    })
}

impl FlowTable {
    /// Records (or refreshes) the flow of an outbound packet already allowed by policy.
    pub fn outbound(&mut self, key: FlowKey, now: Instant, idle: Duration, max: usize) -> Tracked {
        let flows = self.flows.get_or_insert_with(Box::default);
        if let Some(seen) = flows.to_back(&key) {
            *seen = now;
            return Tracked::Yes;
        }
        let mut outcome = Tracked::Yes;
        if flows.len() >= max {
            expire_front(flows, now, idle);
            if flows.len() >= max {
                flows.pop_front();
                outcome = Tracked::EvictedOldest;
            }
        }
        flows.insert(key, now);
        outcome
    }

    /// Whether an inbound packet with this key answers a live flow; refreshes it if so.
    pub fn inbound(&mut self, key: &FlowKey, now: Instant, idle: Duration) -> bool {
        let Some(flows) = self.flows.as_mut() else {
            return false;
        };
        match flows.to_back(key) {
            Some(seen) if now.saturating_duration_since(*seen) <= idle => {
                *seen = now;
                true
            }
            Some(_) => {
                flows.remove(key);
                if flows.is_empty() {
                    self.flows = None;
                }
                false
            }
            None => false,
        }
    }

    /// Forgets flows idle for longer than `idle`: pops them from the front (oldest first), so
    /// the cost is the number of expired flows.
    pub fn expire(&mut self, now: Instant, idle: Duration) {
        if let Some(flows) = self.flows.as_mut() {
            expire_front(flows, now, idle);
            if flows.is_empty() {
                // Give the memory back: an idle peer must stay small.
                self.flows = None;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.flows.as_ref().map_or(0, |f| f.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.flows = None;
    }

    /// Forgets the flows `drop` says so of; returns how many.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&FlowKey) -> bool) -> usize {
        let Some(flows) = self.flows.as_mut() else {
            return 0;
        };
        let before = flows.len();
        flows.retain(|k, _| !drop(k));
        let removed = before - flows.len();
        if flows.is_empty() {
            self.flows = None;
        }
        removed
    }

    /// Whether the table holds any memory beyond its pointer (for tests).
    pub fn is_allocated(&self) -> bool {
        self.flows.is_some()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::gateway::packet::{build, parse};
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    const LAPTOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
    const PAIE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
    const RH: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 10);
    const IDLE: Duration = Duration::from_secs(120);

    fn out(t: &mut FlowTable, p: &[u8], now: Instant) {
        let k = outbound_key(&parse(p).unwrap()).unwrap();
        assert_eq!(t.outbound(k, now, IDLE, 100), Tracked::Yes);
    }

    fn back(t: &mut FlowTable, p: &[u8], now: Instant) -> bool {
        match inbound_key(&parse(p).unwrap()) {
            Some(k) => t.inbound(&k, now, IDLE),
            None => false,
        }
    }

    #[test]
    fn replies_pass_only_for_opened_flows() {
        let now = Instant::now();
        let mut t = FlowTable::default();
        out(&mut t, &build::tcp(LAPTOP, PAIE, 40000, 443, 0x02), now);
        assert!(back(
            &mut t,
            &build::tcp(PAIE, LAPTOP, 443, 40000, 0x12),
            now
        ));
        // Another port, another host, or the remote opening towards the laptop: no.
        assert!(!back(
            &mut t,
            &build::tcp(PAIE, LAPTOP, 443, 40001, 0x12),
            now
        ));
        assert!(!back(
            &mut t,
            &build::tcp(RH, LAPTOP, 443, 40000, 0x12),
            now
        ));
        assert!(!back(
            &mut t,
            &build::tcp(PAIE, LAPTOP, 22, 40000, 0x02),
            now
        ));
        assert!(!back(
            &mut t,
            &build::udp(PAIE, LAPTOP, 443, 40000, b""),
            now
        ));
    }

    #[test]
    fn echo_is_tracked_by_id_and_errors_relate_to_flows() {
        let now = Instant::now();
        let mut t = FlowTable::default();
        out(&mut t, &build::echo(LAPTOP, PAIE, 9, false), now);
        assert!(back(&mut t, &build::echo(PAIE, LAPTOP, 9, true), now));
        assert!(!back(&mut t, &build::echo(PAIE, LAPTOP, 10, true), now));
        assert!(!back(&mut t, &build::echo(PAIE, LAPTOP, 9, false), now));

        let sent = build::udp(LAPTOP, PAIE, 5000, 53, b"q");
        out(&mut t, &sent, now);
        // A router on the way (any source) may report an error about it.
        assert!(back(&mut t, &build::icmp_error(RH, LAPTOP, 11, &sent), now));
        let unrelated = build::udp(LAPTOP, PAIE, 5001, 53, b"q");
        assert!(!back(
            &mut t,
            &build::icmp_error(RH, LAPTOP, 3, &unrelated),
            now
        ));
    }

    #[test]
    fn idle_flows_expire_with_controlled_time() {
        let t0 = Instant::now();
        let mut t = FlowTable::default();
        out(&mut t, &build::udp(LAPTOP, PAIE, 5000, 53, b""), t0);
        let reply = build::udp(PAIE, LAPTOP, 53, 5000, b"");
        assert!(back(&mut t, &reply, t0 + IDLE));
        // The reply refreshed it: still alive one idle period after the reply.
        assert!(back(&mut t, &reply, t0 + IDLE * 2));
        assert!(!back(
            &mut t,
            &reply,
            t0 + IDLE * 3 + Duration::from_secs(1)
        ));
        assert!(t.is_empty());

        out(&mut t, &build::udp(LAPTOP, PAIE, 5000, 53, b""), t0);
        t.expire(t0 + IDLE + Duration::from_secs(1), IDLE);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn table_is_bounded() {
        let now = Instant::now();
        let mut t = FlowTable::default();
        for port in 0..3 {
            let k = outbound_key(&parse(&build::udp(LAPTOP, PAIE, port, 53, b"")).unwrap());
            assert_eq!(t.outbound(k.unwrap(), now, IDLE, 3), Tracked::Yes);
        }
        let k = outbound_key(&parse(&build::udp(LAPTOP, PAIE, 9, 53, b"")).unwrap()).unwrap();
        // Full of live flows: the least recently used one (port 0, the others were refreshed
        // by a reply) is evicted; the table stays at 3.
        let later = now + Duration::from_secs(1);
        for port in 1..3 {
            assert!(back(
                &mut t,
                &build::udp(PAIE, LAPTOP, 53, port, b""),
                later
            ));
        }
        assert_eq!(t.outbound(k, later, IDLE, 3), Tracked::EvictedOldest);
        assert_eq!(t.len(), 3);
        assert!(!back(&mut t, &build::udp(PAIE, LAPTOP, 53, 0, b""), later));
        assert!(back(&mut t, &build::udp(PAIE, LAPTOP, 53, 9, b""), later));
        // Once the old ones are idle, room is made without evicting a live flow.
        let k2 = outbound_key(&parse(&build::udp(LAPTOP, PAIE, 10, 53, b"")).unwrap()).unwrap();
        assert_eq!(t.outbound(k2, later + IDLE * 2, IDLE, 3), Tracked::Yes);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn eviction_and_expiry_are_constant_time_per_flow() {
        // 100,000 flows through a 4,096-entry table: each insertion past the cap evicts one
        // flow; a quadratic scan would take minutes here, this takes milliseconds.
        let now = Instant::now();
        let mut t = FlowTable::default();
        let mut evicted = 0;
        for i in 0..100_000u32 {
            let key = FlowKey {
                proto: 17,
                remote: IpAddr::V4(PAIE),
                local_port: (i % 60_000) as u16,
                remote_port: (i / 60_000) as u16 + 1,
            };
            if t.outbound(key, now, IDLE, 4096) == Tracked::EvictedOldest {
                evicted += 1;
            }
        }
        assert_eq!(t.len(), 4096);
        assert_eq!(evicted, 100_000 - 4096);
        t.expire(now + IDLE * 2, IDLE);
        assert!(t.is_empty());
    }

    proptest! {
        /// Model check: a reply passes iff its reversed 5-tuple was sent out within the idle time.
        #[test]
        fn matches_reference_model(
            ops in proptest::collection::vec((any::<bool>(), 0u16..4, 0u16..4, 0u64..300), 1..60)
        ) {
            let t0 = Instant::now();
            let mut t = FlowTable::default();
            let mut model: HashMap<(u16, u16), u64> = HashMap::new();
            let mut clock = 0u64;
            for (send, lp, rp, dt) in ops {
                clock += dt;
                let now = t0 + Duration::from_secs(clock);
                if send {
                    out(&mut t, &build::udp(LAPTOP, PAIE, lp, rp, b""), now);
                    model.insert((lp, rp), clock);
                } else {
                    let got = back(&mut t, &build::udp(PAIE, LAPTOP, rp, lp, b""), now);
                    let want = model.get(&(lp, rp)).is_some_and(|s| clock - s <= IDLE.as_secs());
                    prop_assert_eq!(got, want);
                    if want { model.insert((lp, rp), clock); } else { model.remove(&(lp, rp)); }
                }
            }
        }
    }
}
