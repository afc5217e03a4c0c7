//! The peer set: desired-state diffing and single-peer changes over [`PeerTable`] snapshots swapped atomically.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use boringtun::noise::Tunn;
use parking_lot::Mutex;

use super::conntrack::FlowTable;
use super::flowlog::{EndReason, SessionEnd, SessionMark};
use super::stats::PeerCounters;
pub use super::table::PeerTable;
use super::window::Window;
use crate::key::PublicKey;
use crate::policy::RuleSet;

/// Desired state of one peer, as the control plane (or the config's `[[peer]]`) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    pub rules: RuleSet,
    /// Rules of the peer's protected (`mfa = true`) resources: reachable only inside its access
    /// window (empty: none, and the peer pays nothing for windows).
    pub protected: RuleSet,
    /// End of the device's access window (unix ms, wall clock); None: no window open.
    pub mfa_until_ms: Option<i64>,
    /// For logs, metrics and audit: [`PeerIdentity::label`].
    pub label: String,
    pub persistent_keepalive: Option<u16>,
}

/// Who a gateway peer is, read back from its label (`device:ID:USER`, `static:NAME`; a bare
/// name, as `sesame gateway` labelled static peers before, reads as a static peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    Device { id: i64, username: String },
    Static { name: String },
}

impl PeerIdentity {
    /// The label the control plane gives this peer.
    pub fn label(&self) -> String {
        match self {
            PeerIdentity::Device { id, username } => format!("device:{id}:{username}"),
            PeerIdentity::Static { name } => format!("static:{name}"),
        }
    }

    pub fn parse(label: &str) -> PeerIdentity {
        if let Some((id, username)) = label
            .strip_prefix("device:")
            .and_then(|rest| rest.split_once(':'))
        {
            if let Ok(id) = id.parse() {
                return PeerIdentity::Device {
                    id,
                    username: username.to_string(),
                };
            }
        }
        let name = label.strip_prefix("static:").unwrap_or(label);
        PeerIdentity::Static {
            name: name.to_string(),
        }
    }
}

/// Session indices are 24 bits: boringtun shifts the peer index left by 8 for its sessions.
pub const MAX_INDEX: u32 = (1 << 24) - 1;

/// One enrolled peer. Without a session it holds no `Tunn`: a few hundred bytes.
///
/// `repr(C)`: what `Peers::set` reads for each of 10,000 specs (key, address, keepalive,
/// mark, rules, label) comes first, together, ahead of the counters the workers write.
#[repr(C)]
pub struct Peer {
    pub public_key: PublicKey,
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
    /// Whether `state.window` is `Some` (the peer has protected resources): lets `Peers::set`
    /// skip the lock of every other peer.
    pub gated: AtomicBool,
    /// Whether `state.window` is open: the timer pass looks at it even without a session.
    pub windowed: AtomicBool,
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
    /// The access window to protected resources; None (a null pointer) for peers without any.
    pub window: Option<Box<Window>>,
}

impl Peer {
    fn new(spec: PeerSpec, index: u32, rules: &mut Interner) -> Peer {
        let window = (!spec.protected.is_empty())
            .then(|| Box::new(Window::new(rules.share(spec.protected), spec.mfa_until_ms)));
        let (gated, windowed) = (
            window.is_some(),
            window.as_ref().is_some_and(|w| w.is_open()),
        );
        Peer {
            public_key: spec.public_key,
            index,
            address: spec.address,
            persistent_keepalive: spec.persistent_keepalive,
            rules: ArcSwap::new(rules.share(spec.rules)),
            label: ArcSwap::from_pointee(spec.label),
            state: Mutex::new(PeerState {
                window,
                ..PeerState::default()
            }),
            counters: PeerCounters::default(),
            live: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            gated: AtomicBool::new(gated),
            windowed: AtomicBool::new(windowed),
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
        Some(mark.end(self, endpoint, EndReason::Removed, crate::time::now_ms()))
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
    // Peers without protected resources on either side skip the lock.
    if !spec.protected.is_empty() || p.gated.load(Ordering::Relaxed) {
        changed |= update_window(p, spec, rules);
    }
    if changed {
        report.updated += 1;
    } else {
        report.unchanged += 1;
    }
}

/// Takes a kept peer's protected rules and window end from its spec; whether they changed. A
/// window the control plane withdraws (down, logout, reset, revocation: the portal audits
/// why) loses its live protected flows at once.
fn update_window(p: &Peer, spec: &mut PeerSpec, rules: &mut Interner) -> bool {
    let mut st = p.state.lock();
    let st = &mut *st;
    let changed = match (st.window.as_deref_mut(), spec.protected.is_empty()) {
        (None, true) => false,
        (Some(w), false) => {
            if !w.differs(&spec.protected, spec.mfa_until_ms) {
                return false;
            }
            let shared = rules.share(std::mem::take(&mut spec.protected));
            if w.update(shared, spec.mfa_until_ms) {
                let cut = super::engine::cut_protected(&mut st.flows, w, &p.rules.load());
                tracing::debug!(peer = %p.label.load(), cut, "access window withdrawn");
            }
            true
        }
        (None, false) => {
            let shared = rules.share(std::mem::take(&mut spec.protected));
            st.window = Some(Box::new(Window::new(shared, spec.mfa_until_ms)));
            true
        }
        (Some(w), true) => {
            if w.is_open() {
                super::engine::cut_protected(&mut st.flows, w, &p.rules.load());
            }
            st.window = None;
            true
        }
    };
    let window = st.window.as_deref();
    p.gated.store(window.is_some(), Ordering::Relaxed);
    p.windowed
        .store(window.is_some_and(Window::is_open), Ordering::Release);
    changed
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
        let mut fresh_keys: HashSet<PublicKey> = HashSet::new();
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
                    protected: std::mem::take(&mut spec.protected),
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
    pub fn remove(&self, public_key: &PublicKey) -> bool {
        self.remove_ending(public_key).is_some()
    }

    /// [`Peers::remove`], returning the session it ended (inner None: no session was up).
    pub fn remove_ending(&self, public_key: &PublicKey) -> Option<Option<SessionEnd>> {
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
#[path = "peers_tests.rs"]
mod tests;
