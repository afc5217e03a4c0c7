//! Memory of an enrolled peer without a session, measured with a counting allocator:
//! 10,000 peers in the table must cost at most 2 KiB each (a live Tunn is ~11 KiB more).
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use boringtun::x25519::StaticSecret;
use sesame::gateway::{Engine, PeerSpec};
use sesame::policy::{Rule, RuleSet};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const PEERS: u32 = 10_000;

fn spec(n: u32) -> PeerSpec {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&n.to_le_bytes());
    PeerSpec {
        public_key: key,
        address: Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 2)) + n),
        // A realistic grant: two resources, three rules.
        rules: RuleSet::new([
            "198.18.10.10/32 tcp:443,8443".parse::<Rule>().unwrap(),
            "198.18.10.0/28 icmp".parse::<Rule>().unwrap(),
            "198.18.20.10/32 tcp:443".parse::<Rule>().unwrap(),
        ]),
        label: format!("jdupont — PC-GESTION-{n:05}"),
        persistent_keepalive: None,
    }
}

#[test]
fn idle_enrolled_peer_costs_at_most_2_kib() {
    let engine = Engine::new(StaticSecret::from([7u8; 32]), Duration::from_secs(120));
    let before = LIVE.load(Ordering::Relaxed);
    let specs: Vec<PeerSpec> = (0..PEERS).map(spec).collect();
    engine.peers.set(specs);
    let after = LIVE.load(Ordering::Relaxed);
    let per_peer = (after - before) / PEERS as isize;
    eprintln!("idle peer: {per_peer} bytes");
    assert!(per_peer > 0);
    assert!(per_peer <= 2048, "an idle peer costs {per_peer} bytes");
    assert_eq!(engine.peers.load().len(), PEERS as usize);
}
