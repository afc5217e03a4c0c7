//! Memory of an enrolled peer, measured with a counting allocator: 10,000 idle peers in the
//! table, and peers with a live session and a flow (the engine's own allocations only).
#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::too_many_lines)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use sesame::gateway::engine::Output;
use sesame::gateway::packet::build;
use sesame::gateway::{Engine, PeerSpec};
use sesame::key::{PrivateKey, PublicKey};
use sesame::policy::{Rule, RuleSet};

struct Counting;
thread_local! {
    /// Whether this thread's allocations are counted (the engine's, not the test laptops').
    static COUNTED: Cell<bool> = const { Cell::new(true) };
    /// Bytes this thread allocated and did not free while counted (tests run in parallel).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        let _ = LIVE.try_with(|l| l.set(l.get() + bytes));
    }
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

// SAFETY: forwards to the system allocator, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        // SAFETY: same layout contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const PEERS: u32 = 10_000;

fn rules() -> RuleSet {
    // A realistic grant: two resources, three rules.
    RuleSet::new([
        "198.18.10.10/32 tcp:443,8443".parse::<Rule>().unwrap(),
        "198.18.10.0/28 icmp".parse::<Rule>().unwrap(),
        "198.18.20.10/32 tcp:443".parse::<Rule>().unwrap(),
    ])
}

fn address(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 2)) + n)
}

fn spec(n: u32) -> PeerSpec {
    let mut key = [0xa5u8; 32];
    key[..4].copy_from_slice(&n.to_le_bytes());
    PeerSpec {
        public_key: PublicKey::from_bytes(key).expect("key"),
        address: address(n),
        rules: rules(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: format!("jdupont — PC-GESTION-{n:05}"),
        persistent_keepalive: None,
    }
}

/// Heap bytes per peer that 10,000 enrolled peers built by `spec` hold in the table.
fn idle_bytes_per_peer(spec: impl Fn(u32) -> PeerSpec) -> isize {
    let engine = Engine::new(PrivateKey::from_bytes([7u8; 32]), Duration::from_secs(120));
    let before = live();
    let desired: Vec<PeerSpec> = (0..PEERS).map(spec).collect();
    // A list this long is freed on a thread of its own, out of this thread's count: once
    // every new peer took its label and rules, all it holds is its own buffer.
    let list = (desired.capacity() * std::mem::size_of::<PeerSpec>()) as isize;
    engine.peers.set(desired);
    let after = live() - list;
    assert_eq!(engine.peers.load().len(), PEERS as usize);
    (after - before) / PEERS as isize
}

#[test]
fn idle_enrolled_peer_is_small() {
    // Devices of the same groups share one grant.
    let shared = idle_bytes_per_peer(spec);
    // Every device with a grant of its own (one more rule naming its number).
    let own = idle_bytes_per_peer(|n| {
        let mut s = spec(n);
        let mut rules = s.rules.rules().to_vec();
        rules.push(
            format!("198.19.{}.{}/32 tcp:22", n / 256, n % 256)
                .parse()
                .unwrap(),
        );
        s.rules = RuleSet::new(rules);
        s
    });
    eprintln!("idle peer: {shared} bytes (a grant of its own: {own} bytes)");
    assert!(shared > 0);
    assert!(shared <= 400, "an idle peer costs {shared} bytes");
    assert!(
        own <= 1024,
        "an idle peer with its own grant costs {own} bytes"
    );
}

/// Collects what the engine sends; allocations here are the test's, not the engine's.
#[derive(Default)]
struct Sent {
    net: Vec<Vec<u8>>,
}

impl Output for Sent {
    fn to_network(&mut self, _dst: SocketAddr, datagram: &[u8]) {
        COUNTED.with(|c| c.set(false));
        self.net.push(datagram.to_vec());
        COUNTED.with(|c| c.set(true));
    }
    fn to_tun(&mut self, _packet: &[u8]) {}
}

/// The datagram a laptop's `Tunn` sends.
fn datagram(r: TunnResult<'_>) -> Vec<u8> {
    match r {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("the laptop sent nothing: {other:?}"),
    }
}

/// Runs `f` with this thread's allocations not counted.
fn uncounted<T>(f: impl FnOnce() -> T) -> T {
    COUNTED.with(|c| c.set(false));
    let r = f();
    COUNTED.with(|c| c.set(true));
    r
}

#[test]
fn active_peer_costs_a_session_and_little_more() {
    // Under the engine's handshake load limit (200/s): no cookie round.
    const ACTIVE: u32 = 100;
    let gw = PrivateKey::from_bytes([9u8; 32]);
    let gw_public = gw.public_key().to_dalek();
    let engine = Engine::new(gw, Duration::from_secs(120));
    let (secrets, specs): (Vec<PrivateKey>, Vec<PeerSpec>) = uncounted(|| {
        (0..ACTIVE)
            .map(|n| {
                let mut b = [0u8; 32];
                // Clamping clears the low bits of byte 0: the number goes above them.
                b[1..5].copy_from_slice(&n.to_le_bytes());
                let s = PrivateKey::from_bytes(b);
                let mut spec = spec(n);
                spec.public_key = s.public_key();
                (s, spec)
            })
            .unzip()
    });
    engine.peers.set(specs);
    let mut laptops: Vec<Tunn> = uncounted(|| {
        secrets
            .into_iter()
            .enumerate()
            .map(|(i, s)| Tunn::new(s.to_dalek(), gw_public, None, None, i as u32 + 1, None))
            .collect()
    });
    let mut scratch = uncounted(|| vec![0u8; 4096]);
    let mut buf = uncounted(|| vec![0u8; 4096]);
    let now = Instant::now();
    let before = live();
    for (i, laptop) in laptops.iter_mut().enumerate() {
        let from = SocketAddr::from(([198, 18, 4, i as u8 + 1], 40_000));
        let mut out = uncounted(Sent::default);
        let init = uncounted(|| datagram(laptop.format_handshake_initiation(&mut buf, false)));
        engine.handle_datagram(now, from, &init, &mut scratch, &mut out);
        assert_eq!(out.net.len(), 1, "one handshake response");
        let reply = uncounted(|| datagram(laptop.decapsulate(None, &out.net[0], &mut buf)));
        engine.handle_datagram(now, from, &reply, &mut scratch, &mut out);
        // One flow: a TCP SYN to an allowed resource.
        let data = uncounted(|| {
            let p = build::tcp(
                address(i as u32),
                Ipv4Addr::new(198, 18, 10, 10),
                5000,
                443,
                0x02,
            );
            datagram(laptop.encapsulate(&p, &mut buf))
        });
        engine.handle_datagram(now, from, &data, &mut scratch, &mut out);
        uncounted(|| drop((out, init, reply, data)));
    }
    let after = live();
    let stats = uncounted(|| engine.peer_stats());
    assert_eq!(
        stats.iter().filter(|s| s.session_active).count(),
        ACTIVE as usize
    );
    assert!(stats.iter().all(|s| s.flows == 1));
    let per_peer = (after - before) / ACTIVE as isize;
    eprintln!(
        "active peer, on top of an idle one: {per_peer} bytes (boringtun's Tunn alone: {} bytes)",
        std::mem::size_of::<Tunn>()
    );
    assert!(per_peer > std::mem::size_of::<Tunn>() as isize);
    assert!(
        per_peer <= std::mem::size_of::<Tunn>() as isize + 512,
        "an active peer costs {per_peer} bytes beyond its idle state"
    );
}

/// Inline sizes of the per-peer structs (printed with `--nocapture`; the heap parts are the
/// two tests above).
#[test]
fn per_peer_struct_sizes() {
    use sesame::gateway::conntrack::FlowTable;
    use sesame::gateway::flowlog::SessionMark;
    use sesame::gateway::peers::{Peer, PeerState};
    use sesame::gateway::stats::PeerCounters;
    use std::mem::size_of;
    eprintln!(
        "Peer {} (PeerState {}: FlowTable {}, endpoint {}; counters {}), boxed SessionMark {}, \
         PeerSpec {}, RuleSet {}, Tunn {}",
        size_of::<Peer>(),
        size_of::<PeerState>(),
        size_of::<FlowTable>(),
        size_of::<Option<SocketAddr>>(),
        size_of::<PeerCounters>(),
        size_of::<SessionMark>(),
        size_of::<PeerSpec>(),
        size_of::<RuleSet>(),
        size_of::<Tunn>(),
    );
    assert!(size_of::<Peer>() < 512);
}
