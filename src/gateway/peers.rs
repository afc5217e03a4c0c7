//! The peer table: an immutable snapshot (by key, by tunnel address, by session index) swapped atomically.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use boringtun::noise::Tunn;
use parking_lot::Mutex;

use super::conntrack::FlowTable;
use super::stats::PeerCounters;
use crate::policy::RuleSet;

/// Desired state of one peer, as the control plane (or the config's `[[peer]]`) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
    pub rules: RuleSet,
    pub label: String,
    pub persistent_keepalive: Option<u16>,
}

/// Session indices are 24 bits: boringtun shifts the peer index left by 8 for its sessions.
pub const MAX_INDEX: u32 = (1 << 24) - 1;

/// One enrolled peer. Without a session it holds no `Tunn`: a few hundred bytes.
pub struct Peer {
    pub public_key: [u8; 32],
    /// Upper 24 bits of every session index boringtun gives this peer's sessions.
    pub index: u32,
    pub address: Ipv4Addr,
    pub persistent_keepalive: Option<u16>,
    /// Policy can change without cutting the session.
    pub rules: ArcSwap<RuleSet>,
    pub label: ArcSwap<String>,
    pub state: Mutex<PeerState>,
    pub counters: PeerCounters,
    /// Whether `state.tunn` is `Some`: lets the timer pass skip idle peers without locking.
    pub live: AtomicBool,
    /// Set when the peer leaves the table; a worker still holding it stops using it.
    pub removed: AtomicBool,
}

/// The mutable part of a peer, behind its own lock.
#[derive(Default)]
pub struct PeerState {
    /// Created on the first handshake, freed when the session expires (a Tunn is ~11 KiB).
    pub tunn: Option<Box<Tunn>>,
    /// Where the peer's last authenticated datagram came from.
    pub endpoint: Option<SocketAddr>,
    pub flows: FlowTable,
}

impl Peer {
    fn new(spec: PeerSpec, index: u32) -> Peer {
        Peer {
            public_key: spec.public_key,
            index,
            address: spec.address,
            persistent_keepalive: spec.persistent_keepalive,
            rules: ArcSwap::from_pointee(spec.rules),
            label: ArcSwap::from_pointee(spec.label),
            state: Mutex::new(PeerState::default()),
            counters: PeerCounters::default(),
            live: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        }
    }

    /// Cuts the session at once and forgets flows.
    pub fn cut(&self) {
        let mut st = self.state.lock();
        st.tunn = None;
        st.flows.clear();
        st.endpoint = None;
        self.live.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("index", &self.index)
            .field("address", &self.address)
            .field("label", &self.label.load())
            .finish_non_exhaustive()
    }
}

/// One immutable snapshot of all peers.
#[derive(Debug, Default)]
pub struct PeerTable {
    by_key: HashMap<[u8; 32], Arc<Peer>>,
    by_addr: HashMap<Ipv4Addr, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
}

impl PeerTable {
    pub fn by_key(&self, key: &[u8; 32]) -> Option<&Arc<Peer>> {
        self.by_key.get(key)
    }

    pub fn by_address(&self, addr: Ipv4Addr) -> Option<&Arc<Peer>> {
        self.by_addr.get(&addr)
    }

    /// The peer owning a session index from a data, response or cookie message.
    pub fn by_receiver_index(&self, receiver_index: u32) -> Option<&Arc<Peer>> {
        self.by_index.get(&(receiver_index >> 8))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.by_key.values()
    }
}

/// What `Peers::set` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetReport {
    pub added: usize,
    pub removed: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Specs skipped because their key or address was already taken by an earlier spec.
    pub duplicates: usize,
}

/// The live table plus its single writer.
#[derive(Debug, Default)]
pub struct Peers {
    current: ArcSwap<PeerTable>,
    writer: Mutex<u32>,
}

impl Peers {
    /// The current snapshot; cheap, lock-free.
    pub fn load(&self) -> arc_swap::Guard<Arc<PeerTable>> {
        self.current.load()
    }

    pub fn snapshot(&self) -> Arc<PeerTable> {
        self.current.load_full()
    }

    /// Applies a desired state: unchanged peers keep their `Arc` (and session); peers whose
    /// key, address or keepalive changed are replaced; removed peers are cut at once.
    pub fn set(&self, desired: Vec<PeerSpec>) -> SetReport {
        let mut next_index = self.writer.lock();
        let old = self.current.load_full();
        let mut report = SetReport::default();
        let mut table = PeerTable::default();
        let mut used: HashSet<u32> = HashSet::with_capacity(desired.len());
        let mut fresh = Vec::new();
        let mut seen_keys = HashSet::with_capacity(desired.len());
        let mut seen_addrs = HashSet::with_capacity(desired.len());
        for spec in desired {
            if !seen_keys.insert(spec.public_key) || !seen_addrs.insert(spec.address) {
                report.duplicates += 1;
                continue;
            }
            let peer = match old.by_key.get(&spec.public_key) {
                Some(p)
                    if p.address == spec.address
                        && p.persistent_keepalive == spec.persistent_keepalive =>
                {
                    let mut changed = false;
                    if **p.rules.load() != spec.rules {
                        p.rules.store(Arc::new(spec.rules));
                        changed = true;
                    }
                    if **p.label.load() != spec.label {
                        p.label.store(Arc::new(spec.label));
                        changed = true;
                    }
                    if changed {
                        report.updated += 1;
                    } else {
                        report.unchanged += 1;
                    }
                    used.insert(p.index);
                    Arc::clone(p)
                }
                _ => {
                    // Index assigned below, once every kept index is known.
                    fresh.push(spec);
                    continue;
                }
            };
            table.by_addr.insert(peer.address, Arc::clone(&peer));
            table.by_index.insert(peer.index, Arc::clone(&peer));
            table.by_key.insert(peer.public_key, peer);
        }
        for spec in fresh {
            let index = loop {
                *next_index = if *next_index >= MAX_INDEX {
                    1
                } else {
                    *next_index + 1
                };
                let candidate = *next_index;
                if !used.contains(&candidate) && !old.by_index.contains_key(&candidate) {
                    break candidate;
                }
            };
            used.insert(index);
            report.added += 1;
            let peer = Arc::new(Peer::new(spec, index));
            table.by_addr.insert(peer.address, Arc::clone(&peer));
            table.by_index.insert(peer.index, Arc::clone(&peer));
            table.by_key.insert(peer.public_key, peer);
        }
        self.current.store(Arc::new(table));
        let now = self.current.load();
        for p in old.by_key.values() {
            let kept = now
                .by_key
                .get(&p.public_key)
                .is_some_and(|n| Arc::ptr_eq(n, p));
            if !kept {
                p.removed.store(true, Ordering::Release);
                p.cut();
                report.removed += 1;
            }
        }
        report
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::policy::Rule;

    fn spec(n: u32) -> PeerSpec {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        PeerSpec {
            public_key: key,
            address: Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 2)) + n),
            rules: RuleSet::new(["198.18.10.10/32 tcp:443".parse::<Rule>().unwrap()]),
            label: format!("peer{n}"),
            persistent_keepalive: None,
        }
    }

    #[test]
    fn lookup_by_key_address_and_index() {
        let peers = Peers::default();
        let r = peers.set((0..100).map(spec).collect());
        assert_eq!(r.added, 100);
        let t = peers.load();
        assert_eq!(t.len(), 100);
        let s = spec(42);
        let p = t.by_key(&s.public_key).unwrap();
        assert_eq!(p.address, s.address);
        assert!(Arc::ptr_eq(p, t.by_address(s.address).unwrap()));
        // Any session index of this peer (low 8 bits vary) finds it.
        for low in [0u32, 1, 255] {
            assert!(Arc::ptr_eq(
                p,
                t.by_receiver_index(p.index << 8 | low).unwrap()
            ));
        }
        assert!(t.by_receiver_index(0).is_none());
        assert!(t.by_address(Ipv4Addr::new(100, 64, 9, 9)).is_none());
    }

    #[test]
    fn swap_keeps_unchanged_peers_and_cuts_removed_ones() {
        let peers = Peers::default();
        peers.set((0..10_000).map(spec).collect());
        let before = peers.snapshot();
        let kept = Arc::clone(before.by_key(&spec(5).public_key).unwrap());
        let gone = Arc::clone(before.by_key(&spec(7).public_key).unwrap());
        gone.state.lock().endpoint = Some("198.18.0.2:1".parse().unwrap());

        let mut desired: Vec<PeerSpec> = (0..10_000).filter(|n| *n != 7).map(spec).collect();
        desired.push(spec(10_000));
        for d in desired
            .iter_mut()
            .filter(|d| d.public_key == spec(9).public_key)
        {
            d.rules = RuleSet::deny_all();
        }
        let r = peers.set(desired);
        assert_eq!(
            (r.added, r.removed, r.updated, r.unchanged),
            (1, 1, 1, 9_998)
        );

        let after = peers.snapshot();
        assert!(Arc::ptr_eq(
            &kept,
            after.by_key(&spec(5).public_key).unwrap()
        ));
        assert!(after.by_key(&spec(7).public_key).is_none());
        assert!(gone.removed.load(Ordering::Acquire));
        assert!(gone.state.lock().endpoint.is_none());
        // The rule change applied in place.
        let nine = after.by_key(&spec(9).public_key).unwrap();
        assert!(nine.rules.load().is_empty());
        // The old snapshot is still whole for a worker that holds it.
        assert_eq!(before.len(), 10_000);
        let new = after.by_key(&spec(10_000).public_key).unwrap();
        assert_ne!(new.index, gone.index);
        let indices: HashSet<u32> = after.iter().map(|p| p.index).collect();
        assert_eq!(indices.len(), 10_000);
    }

    #[test]
    fn address_change_replaces_the_peer_and_duplicates_are_skipped() {
        let peers = Peers::default();
        peers.set(vec![spec(1)]);
        let old = Arc::clone(peers.load().by_key(&spec(1).public_key).unwrap());
        let mut moved = spec(1);
        moved.address = Ipv4Addr::new(100, 64, 1, 1);
        let mut dup = spec(2);
        dup.address = moved.address;
        let r = peers.set(vec![moved.clone(), dup]);
        assert_eq!((r.added, r.removed, r.duplicates), (1, 1, 1));
        let t = peers.load();
        assert!(!Arc::ptr_eq(&old, t.by_key(&moved.public_key).unwrap()));
        assert!(t.by_address(spec(1).address).is_none());
    }

    #[test]
    fn idle_peer_is_small() {
        // Inline size; heap parts (label, rules, table entries) are measured in
        // tests/gateway_memory.rs with a counting allocator.
        assert!(
            std::mem::size_of::<Peer>() < 512,
            "{}",
            std::mem::size_of::<Peer>()
        );
    }
}
