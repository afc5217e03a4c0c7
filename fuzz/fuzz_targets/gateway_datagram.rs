//! Fuzz the gateway's untrusted path: datagram → peer lookup → decrypt → filter, TUN → conntrack,
//! and arbitrary decrypted packets through a real session into the filter.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use libfuzzer_sys::fuzz_target;
use sesame::gateway::engine::{Engine, Output};
use sesame::gateway::PeerSpec;
use sesame::key::{PrivateKey, PublicKey};
use sesame::policy::{Rule, RuleSet};

const LAPTOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

struct Discard;
impl Output for Discard {
    fn to_network(&mut self, _: SocketAddr, d: &[u8]) {
        std::hint::black_box(d);
    }
    fn to_tun(&mut self, p: &[u8]) {
        std::hint::black_box(p);
    }
}

struct World {
    engine: Engine,
    laptop: Mutex<Tunn>,
    key: PublicKey,
    from: SocketAddr,
    start: Instant,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let gw = PrivateKey::generate();
        let gw_public = gw.public_key().to_dalek();
        let engine = Engine::new(gw, Duration::from_secs(120));
        let laptop_secret = PrivateKey::generate();
        let key = laptop_secret.public_key();
        let rule = |s: &str| s.parse::<Rule>().expect("rule");
        engine.peers.set(vec![PeerSpec {
            public_key: key,
            address: LAPTOP,
            rules: RuleSet::new([rule("198.18.10.0/24 tcp:443"), rule("198.18.10.10/32 icmp")]),
            label: "fuzz".into(),
            persistent_keepalive: None,
            protected: RuleSet::deny_all(),
            mfa_until_ms: None,
        }]);
        let mut laptop = Tunn::new(laptop_secret.to_dalek(), gw_public, None, None, 1, None);
        let from: SocketAddr = "198.18.0.2:51000".parse().expect("addr");
        let now = Instant::now();
        let mut buf = vec![0u8; 2048];
        let mut scratch = vec![0u8; 70_000];
        // Handshake so that data messages reach the decrypt and filter path.
        if let TunnResult::WriteToNetwork(init) = laptop.format_handshake_initiation(&mut buf, false) {
            let init = init.to_vec();
            let mut out = Capture(Vec::new());
            engine.handle_datagram(now, from, &init, &mut scratch, &mut out);
            for d in out.0 {
                let mut b = vec![0u8; 2048];
                if let TunnResult::WriteToNetwork(k) = laptop.decapsulate(None, &d, &mut b) {
                    let k = k.to_vec();
                    engine.handle_datagram(now, from, &k, &mut scratch, &mut Discard);
                }
            }
        }
        World { engine, laptop: Mutex::new(laptop), key, from, start: now }
    })
}

struct Capture(Vec<Vec<u8>>);
impl Output for Capture {
    fn to_network(&mut self, _: SocketAddr, d: &[u8]) {
        self.0.push(d.to_vec());
    }
    fn to_tun(&mut self, _: &[u8]) {}
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some((&mode, rest)) = data.split_first() else { return };
    let now = w.start + Duration::from_millis(u64::from(mode) * 997);
    let mut scratch = vec![0u8; 70_000];
    match mode % 4 {
        // Raw datagram from the network.
        0 => w.engine.handle_datagram(now, w.from, rest, &mut scratch, &mut Discard),
        // Raw packet from the TUN device.
        1 => w.engine.handle_tun_packet(now, rest, &mut scratch, &mut Discard),
        // Arbitrary decrypted packet straight into the filter.
        2 => {
            let table = w.engine.peers.load();
            if let Some(peer) = table.by_key(&w.key) {
                let mut st = peer.state.lock();
                let _ = w.engine.check_from_peer(now, peer, &mut st, rest);
            }
        }
        // Arbitrary inner packet, really encrypted by the laptop: datagram → decrypt → filter.
        _ => {
            let mut laptop = w.laptop.lock().expect("laptop");
            let mut buf = vec![0u8; rest.len() + 64];
            if let TunnResult::WriteToNetwork(d) = laptop.encapsulate(rest, &mut buf) {
                let d = d.to_vec();
                w.engine.handle_datagram(now, w.from, &d, &mut scratch, &mut Discard);
            }
        }
    }
});
