//! The peer set: desired-state diffing and single-peer changes over [`PeerTable`] snapshots swapped atomically.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use boringtun::noise::Tunn;
use parking_lot::Mutex;

use super::conntrack::FlowTable;
use super::flowlog::{wall_ms, EndReason, SessionEnd, SessionMark};
use super::stats::PeerCounters;
pub use super::table::PeerTable;
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
///
/// `repr(C)`: what `Peers::set` reads for each of 10,000 specs (key, address, keepalive,
/// mark, rules, label) comes first, together, ahead of the counters the workers write.
#[repr(C)]
pub struct Peer {
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
    pub persistent_keepalive: Option<u16>,
    /// Upper 24 bits of every session index boringtun gives this peer's sessions.
    pub index: u32,
    /// Scratch for [`Peers::set`] (under its writer lock): call number × 2, +1 when kept.
    mark: AtomicU64,
    /// Policy can change without cutting the session.
    pub rules: ArcSwap<RuleSet>,
    pub label: ArcSwap<String>,
    /// Whether `state.tunn` is `Some`: lets the timer pass skip idle peers without locking.
    pub live: AtomicBool,
    /// Set when the peer leaves the table; a worker still holding it stops using it.
    pub removed: AtomicBool,
    pub counters: PeerCounters,
    pub state: Mutex<PeerState>,
}

/// The mutable part of a peer, behind its own lock.
#[derive(Default)]
pub struct PeerState {
    /// Created on the first handshake, freed when the session expires (a Tunn is ~11 KiB).
    pub tunn: Option<Box<Tunn>>,
    /// Where the peer's last authenticated datagram came from.
    pub endpoint: Option<SocketAddr>,
    /// TAI64N of the newest initiation seen from the peer: kept when the session is freed, so
    /// a replayed initiation is refused (boringtun's own check dies with the `Tunn`).
    pub last_initiation: Option<super::replay::Tai64N>,
    pub flows: FlowTable,
    /// The current tunnel session, for `tunnel.session_*` records (None: no session). Boxed:
    /// only peers with a session pay for it.
    pub session: Option<Box<SessionMark>>,
}

impl Peer {
    fn new(spec: PeerSpec, index: u32, rules: &mut Interner) -> Peer {
        Peer {
            public_key: spec.public_key,
            index,
            address: spec.address,
            persistent_keepalive: spec.persistent_keepalive,
            rules: ArcSwap::new(rules.share(spec.rules)),
            label: ArcSwap::from_pointee(spec.label),
            state: Mutex::new(PeerState::default()),
            counters: PeerCounters::default(),
            live: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            mark: AtomicU64::new(0),
        }
    }

    /// Cuts the session at once and forgets flows; returns the session it ended, if any
    /// (reason [`EndReason::Removed`] until the caller knows better).
    pub fn cut(&self) -> Option<SessionEnd> {
        let mut st = self.state.lock();
        st.tunn = None;
        st.flows.clear();
        let endpoint = st.endpoint.take();
        self.live.store(false, Ordering::Release);
        let mark = st.session.take()?;
        Some(mark.end(self, endpoint, EndReason::Removed, wall_ms()))
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

/// What `Peers::set` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetReport {
    pub added: usize,
    pub removed: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Specs skipped because their key or address was already taken by an earlier spec.
    pub duplicates: usize,
    /// Sessions the removals cut.
    pub ended: Vec<SessionEnd>,
}

/// The single writer's state.
#[derive(Debug, Default)]
struct Writer {
    /// Last session index handed out (indices are not reused until they wrap).
    next_index: u32,
    /// Number of the current `set` call, for [`Peer::mark`].
    generation: u64,
    rules: Interner,
}

/// Distinct rule sets remembered by the [`Interner`].
const INTERNED: usize = 32;

/// Rule sets shared between peers: devices of the same groups get equal grants, so peers hold
/// one `Arc<RuleSet>` per distinct grant rather than a copy each (a few hundred bytes per
/// peer). The [`INTERNED`] most recently used distinct sets are remembered, most recent
/// first: a linear scan, as grants are few and unequal ones differ early.
#[derive(Debug, Default)]
struct Interner {
    recent: Vec<Arc<RuleSet>>,
}

impl Interner {
    fn share(&mut self, rules: RuleSet) -> Arc<RuleSet> {
        if let Some(i) = self.recent.iter().position(|r| **r == rules) {
            self.recent[..=i].rotate_right(1);
            return Arc::clone(&self.recent[0]);
        }
        let shared = Arc::new(rules);
        self.recent.truncate(INTERNED - 1);
        self.recent.insert(0, Arc::clone(&shared));
        shared
    }
}

/// The live table plus its single writer.
#[derive(Debug, Default)]
pub struct Peers {
    current: ArcSwap<PeerTable>,
    writer: Mutex<Writer>,
}

/// Whether a kept peer's spec equals it; updates rules and label in place (no new session),
/// taking them out of the spec.
fn update_in_place(p: &Peer, spec: &mut PeerSpec, rules: &mut Interner, report: &mut SetReport) {
    let mut changed = false;
    if **p.rules.load() != spec.rules {
        p.rules.store(rules.share(std::mem::take(&mut spec.rules)));
        changed = true;
    }
    if **p.label.load() != spec.label {
        p.label.store(Arc::new(std::mem::take(&mut spec.label)));
        changed = true;
    }
    if changed {
        report.updated += 1;
    } else {
        report.unchanged += 1;
    }
}

/// Specs whose keys `Peers::set` looks up together.
const LOOKUP_RUN: usize = 16;

/// Desired lists at least this long are freed by [`free_later`] on a thread of their own.
const FREE_AWAY: usize = 1024;

/// Frees a long desired list off the caller's path (a short-lived thread: `set` is called on
/// reconciles, not per packet); a short one, or one no thread could be started for, here.
fn free_later(desired: Vec<PeerSpec>) {
    if desired.len() < FREE_AWAY {
        return;
    }
    // On failure the closure, and the list with it, is dropped right here.
    let _ = std::thread::Builder::new()
        .name("sesame-peers-free".into())
        .spawn(move || drop(desired));
}

impl Writer {
    /// A 24-bit index held by no peer of `old` (which may still have sessions) nor of `next`.
    fn fresh_index(&mut self, old: &PeerTable, next: &PeerTable) -> u32 {
        loop {
            self.next_index = if self.next_index >= MAX_INDEX {
                1
            } else {
                self.next_index + 1
            };
            let candidate = self.next_index;
            if !old.has_index(candidate) && !next.has_index(candidate) {
                return candidate;
            }
        }
    }
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
    /// key, address or keepalive changed are replaced; removed peers are cut at once. When a
    /// key or address appears twice, the first spec wins.
    ///
    /// Cost: one lookup per spec, no allocation per unchanged peer; the new snapshot shares
    /// every shard nothing changed in, so adding one peer to 10,000 copies a few small shards.
    /// What the list still holds afterwards (labels and rules of unchanged peers, a few
    /// allocations each: about half the call's time with 10,000 peers) is freed on a thread of
    /// its own when the list is long.
    pub fn set(&self, mut desired: Vec<PeerSpec>) -> SetReport {
        let report = self.apply(&mut desired);
        free_later(desired);
        report
    }

    fn apply(&self, desired: &mut [PeerSpec]) -> SetReport {
        let mut w = self.writer.lock();
        w.generation += 1;
        // A peer's mark says, for this call: its key was seen (`seen`), and it is kept (`kept`).
        let seen = w.generation << 1;
        let kept = seen | 1;
        let old = self.current.load_full();
        let mut report = SetReport::default();
        let mut fresh: Vec<PeerSpec> = Vec::new();
        // Keys and addresses claimed by specs that need a new peer (usually few).
        let mut fresh_keys: HashSet<[u8; 32]> = HashSet::new();
        let mut fresh_addrs: HashSet<Ipv4Addr> = HashSet::new();
        let mut kept_count = 0usize;
        let address_free = |addr: &Ipv4Addr, fresh_addrs: &HashSet<Ipv4Addr>| {
            !fresh_addrs.contains(addr)
                && old
                    .by_address(*addr)
                    .is_none_or(|q| q.mark.load(Ordering::Relaxed) != kept)
        };
        // Keys are looked up a run at a time: the lookups are independent, so their cache
        // misses overlap instead of following one another (10,000 peers do not stay in cache).
        for run in desired.chunks_mut(LOOKUP_RUN) {
            let mut found = [None; LOOKUP_RUN];
            for (f, spec) in found.iter_mut().zip(run.iter()) {
                *f = old.by_key(&spec.public_key);
            }
            for (spec, found) in run.iter_mut().zip(found) {
                match found {
                    Some(p) => {
                        if p.mark.load(Ordering::Relaxed) >> 1 == seen >> 1 {
                            report.duplicates += 1;
                            continue;
                        }
                        if p.address == spec.address
                            && p.persistent_keepalive == spec.persistent_keepalive
                        {
                            if fresh_addrs.contains(&spec.address) {
                                // An earlier new spec took this address: the old peer goes.
                                p.mark.store(seen, Ordering::Relaxed);
                                report.duplicates += 1;
                                continue;
                            }
                            p.mark.store(kept, Ordering::Relaxed);
                            kept_count += 1;
                            update_in_place(p, spec, &mut w.rules, &mut report);
                            continue;
                        }
                        p.mark.store(seen, Ordering::Relaxed);
                    }
                    None => {
                        if !fresh_keys.insert(spec.public_key) {
                            report.duplicates += 1;
                            continue;
                        }
                    }
                }
                if !address_free(&spec.address, &fresh_addrs) {
                    report.duplicates += 1;
                    continue;
                }
                fresh_addrs.insert(spec.address);
                fresh.push(PeerSpec {
                    rules: std::mem::take(&mut spec.rules),
                    label: std::mem::take(&mut spec.label),
                    ..*spec
                });
            }
        }
        if kept_count == old.len() && fresh.is_empty() {
            return report;
        }
        let mut table = PeerTable::clone(&old);
        let mut gone = Vec::new();
        if kept_count < old.len() {
            for p in old.iter() {
                if p.mark.load(Ordering::Relaxed) != kept {
                    table.remove(p);
                    gone.push(Arc::clone(p));
                }
            }
        }
        for spec in fresh {
            let index = w.fresh_index(&old, &table);
            table.insert(Arc::new(Peer::new(spec, index, &mut w.rules)));
            report.added += 1;
        }
        self.current.store(Arc::new(table));
        for p in gone {
            p.removed.store(true, Ordering::Release);
            report.ended.extend(p.cut());
            report.removed += 1;
        }
        report
    }

    /// Adds one peer or changes it in place (rules, label); a new address or keepalive
    /// replaces it (new session). Refused (reported as a duplicate) when another peer holds
    /// the address.
    pub fn upsert(&self, mut spec: PeerSpec) -> SetReport {
        let mut w = self.writer.lock();
        let old = self.current.load_full();
        let mut report = SetReport::default();
        let existing = old.by_key(&spec.public_key);
        if let Some(p) = existing {
            if p.address == spec.address && p.persistent_keepalive == spec.persistent_keepalive {
                update_in_place(p, &mut spec, &mut w.rules, &mut report);
                return report;
            }
        }
        if old
            .by_address(spec.address)
            .is_some_and(|q| q.public_key != spec.public_key)
        {
            report.duplicates += 1;
            return report;
        }
        let mut table = PeerTable::clone(&old);
        if let Some(p) = existing {
            table.remove(p);
        }
        let index = w.fresh_index(&old, &table);
        table.insert(Arc::new(Peer::new(spec, index, &mut w.rules)));
        report.added += 1;
        self.current.store(Arc::new(table));
        if let Some(p) = existing {
            p.removed.store(true, Ordering::Release);
            report.ended.extend(p.cut());
            report.removed += 1;
        }
        report
    }

    /// Removes one peer and cuts its session at once. False if no peer has this key.
    pub fn remove(&self, public_key: &[u8; 32]) -> bool {
        self.remove_ending(public_key).is_some()
    }

    /// [`Peers::remove`], returning the session it ended (inner None: no session was up).
    pub fn remove_ending(&self, public_key: &[u8; 32]) -> Option<Option<SessionEnd>> {
        let _w = self.writer.lock();
        let old = self.current.load_full();
        let p = old.by_key(public_key)?;
        let mut table = PeerTable::clone(&old);
        table.remove(p);
        self.current.store(Arc::new(table));
        p.removed.store(true, Ordering::Release);
        Some(p.cut())
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
        assert_eq!(after.len(), 10_000);

        // Adding one peer copies only the shard it lands in; the rest is shared.
        let r = peers.set((0..=10_001).filter(|n| *n != 7).map(spec).collect());
        assert_eq!((r.added, r.removed, r.duplicates), (1, 0, 0));
        let plus = peers.snapshot();
        assert_eq!(plus.len(), 10_001);
        assert_eq!(
            plus.shards_shared_with(&after),
            super::super::table::SHARDS - 1
        );
        assert!(Arc::ptr_eq(
            &kept,
            plus.by_key(&spec(5).public_key).unwrap()
        ));
        // The same set again changes nothing: the very same snapshot stays.
        let r = peers.set((0..=10_001).filter(|n| *n != 7).map(spec).collect());
        assert_eq!(r.unchanged, 10_001);
        assert!(Arc::ptr_eq(&plus, &peers.snapshot()));
    }

    #[test]
    fn upsert_and_remove_change_one_peer() {
        let peers = Peers::default();
        peers.set((0..1000).map(spec).collect());
        let before = peers.snapshot();
        let kept = Arc::clone(before.by_key(&spec(5).public_key).unwrap());

        let r = peers.upsert(spec(1000));
        assert_eq!((r.added, r.removed), (1, 0));
        let t = peers.snapshot();
        assert_eq!(t.len(), 1001);
        assert!(Arc::ptr_eq(&kept, t.by_key(&spec(5).public_key).unwrap()));
        let new = t.by_key(&spec(1000).public_key).unwrap();
        assert!(Arc::ptr_eq(new, t.by_address(spec(1000).address).unwrap()));
        assert!(Arc::ptr_eq(
            new,
            t.by_receiver_index(new.index << 8).unwrap()
        ));

        // Rules change in place: same Arc.
        let mut changed = spec(5);
        changed.rules = RuleSet::deny_all();
        assert_eq!(peers.upsert(changed).updated, 1);
        let t = peers.snapshot();
        assert!(Arc::ptr_eq(&kept, t.by_key(&spec(5).public_key).unwrap()));
        assert!(kept.rules.load().is_empty());

        // Another peer's address is refused.
        let mut clash = spec(2000);
        clash.address = spec(6).address;
        assert_eq!(peers.upsert(clash.clone()).duplicates, 1);
        assert!(peers.load().by_key(&clash.public_key).is_none());

        // A new address replaces the peer: new Arc, old one cut.
        let mut moved = spec(5);
        moved.address = Ipv4Addr::new(100, 64, 200, 1);
        let r = peers.upsert(moved.clone());
        assert_eq!((r.added, r.removed), (1, 1));
        assert!(kept.removed.load(Ordering::Acquire));
        let t = peers.snapshot();
        assert!(t.by_address(spec(5).address).is_none());
        assert_eq!(
            t.by_address(moved.address).unwrap().public_key,
            moved.public_key
        );
        assert!(t.by_receiver_index(kept.index << 8).is_none());

        let six = Arc::clone(t.by_key(&spec(6).public_key).unwrap());
        six.state.lock().endpoint = Some("198.18.0.2:1".parse().unwrap());
        assert!(peers.remove(&spec(6).public_key));
        assert!(!peers.remove(&spec(6).public_key));
        assert!(six.removed.load(Ordering::Acquire));
        assert!(six.state.lock().endpoint.is_none());
        let t = peers.snapshot();
        assert_eq!(t.len(), 1000);
        assert!(t.by_address(spec(6).address).is_none());
        assert_eq!(t.iter().count(), 1000);
        // The snapshot from before is untouched.
        assert_eq!(before.len(), 1000);
        assert!(before.by_key(&spec(6).public_key).is_some());
    }

    #[test]
    fn first_spec_wins_a_contested_key_or_address() {
        let peers = Peers::default();
        peers.set(vec![spec(1), spec(2)]);
        let two = Arc::clone(peers.load().by_key(&spec(2).public_key).unwrap());
        // A new peer listed before peer 2 takes its address: peer 2 goes.
        let mut taker = spec(3);
        taker.address = spec(2).address;
        let r = peers.set(vec![spec(1), taker.clone(), spec(2), spec(1)]);
        assert_eq!(
            (r.added, r.removed, r.duplicates, r.unchanged),
            (1, 1, 2, 1)
        );
        assert!(two.removed.load(Ordering::Acquire));
        let t = peers.snapshot();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.by_address(spec(2).address).unwrap().public_key,
            taker.public_key
        );
        // Listed after peer 2, the new peer is the one skipped; peer 2 keeps its session.
        peers.set(vec![spec(1), spec(2)]);
        let two = Arc::clone(peers.load().by_key(&spec(2).public_key).unwrap());
        let r = peers.set(vec![spec(1), spec(2), taker.clone()]);
        assert_eq!((r.added, r.removed, r.duplicates), (0, 0, 1));
        assert!(Arc::ptr_eq(
            &two,
            peers.load().by_key(&spec(2).public_key).unwrap()
        ));
        // Two new specs with one key: the first one is added.
        let mut other = spec(4);
        other.public_key = spec(5).public_key;
        let r = peers.set(vec![spec(1), spec(2), spec(5), other]);
        assert_eq!((r.added, r.duplicates), (1, 1));
        assert_eq!(
            peers.load().by_key(&spec(5).public_key).unwrap().address,
            spec(5).address
        );
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

    /// Timing printout, not an assertion: `cargo test --release --lib set_peers_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing printout; run by hand in release"]
    #[allow(clippy::print_stdout)]
    fn set_peers_timing() {
        let peers = Peers::default();
        peers.set((0..10_000).map(spec).collect());
        for round in 0..5u32 {
            let desired: Vec<PeerSpec> = (0..=10_000 + round).map(spec).collect();
            let copy = desired.clone();
            let t = std::time::Instant::now();
            let r = peers.set(desired);
            let e = t.elapsed();
            assert_eq!(r.added, 1);
            let t = std::time::Instant::now();
            drop(copy);
            let d = t.elapsed();
            println!(
                "set_peers adding 1 to {}: {e:?} (freeing the same specs alone: {d:?})",
                10_000 + round
            );
        }
        for round in 0..3u32 {
            let t = std::time::Instant::now();
            let r = peers.upsert(spec(20_000 + round));
            let e = t.elapsed();
            assert_eq!(r.added, 1);
            println!("upsert of 1 into {}: {:?}", peers.load().len() - 1, e);
            let t = std::time::Instant::now();
            assert!(peers.remove(&spec(20_000 + round).public_key));
            println!("remove of 1: {:?}", t.elapsed());
        }
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
