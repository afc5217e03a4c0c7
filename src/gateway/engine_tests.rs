//! The engine driven by an in-memory laptop: a real boringtun `Tunn` encrypting to the gateway.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use super::*;
use crate::gateway::flowlog::WorkerFlows;
use crate::gateway::packet::build;
use crate::gateway::peers::PeerSpec;
use crate::policy::{Rule, RuleSet};

const LAPTOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const PAIE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
const RH: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 10);
const IDLE: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Collect {
    pub net: Vec<(SocketAddr, Vec<u8>)>,
    pub tun: Vec<Vec<u8>>,
    pub flows: Option<WorkerFlows>,
}

impl Output for Collect {
    fn to_network(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.net.push((dst, datagram.to_vec()));
    }
    fn to_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
    fn flows(&mut self) -> Option<&mut WorkerFlows> {
        self.flows.as_mut()
    }
}

struct Setup {
    engine: Engine,
    laptop: Tunn,
    laptop_key: crate::key::PublicKey,
    endpoint: SocketAddr,
    scratch: Vec<u8>,
    /// The engine's clock: fixed, so rate limits and flows do not depend on test speed.
    now: Instant,
    /// The worker's flow-audit tables, when the engine audits flows.
    flows: Option<WorkerFlows>,
}

/// The resource id the setup's rules come from.
const PAIE_ID: u32 = 3;

fn rules() -> RuleSet {
    RuleSet::with_origins([
        ("198.18.10.10/32 tcp:443".parse::<Rule>().unwrap(), PAIE_ID),
        ("198.18.10.0/28 icmp".parse::<Rule>().unwrap(), PAIE_ID),
    ])
}

fn setup() -> Setup {
    setup_with(None)
}

/// The Sesame key of a boringtun secret (the laptops here are plain boringtun).
fn key_of(secret: &StaticSecret) -> crate::key::PublicKey {
    crate::key::PublicKey::from_bytes(PublicKey::from(secret).to_bytes()).unwrap()
}

fn setup_with(flow_log: Option<Arc<FlowLog>>) -> Setup {
    let gw = crate::key::PrivateKey::generate();
    let gw_public = gw.public_key().to_dalek();
    let engine = match &flow_log {
        Some(log) => Engine::new(gw, IDLE).with_flow_log(Arc::clone(log)),
        None => Engine::new(gw, IDLE),
    };
    let now = Instant::now();
    let flows = flow_log.map(|log| WorkerFlows::new(log, now, crate::time::now_ms()));
    let laptop_secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let laptop_key = key_of(&laptop_secret);
    engine.peers.set(vec![PeerSpec {
        public_key: laptop_key,
        address: LAPTOP,
        rules: rules(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: "laptop1".into(),
        persistent_keepalive: None,
    }]);
    let laptop = Tunn::new(laptop_secret, gw_public, None, None, 7, None);
    Setup {
        engine,
        laptop,
        laptop_key,
        endpoint: "198.18.0.2:40000".parse().unwrap(),
        scratch: vec![0; 4096],
        now,
        flows,
    }
}

impl Setup {
    /// Laptop -> gateway: one datagram through the engine.
    fn send(&mut self, datagram: &[u8]) -> Collect {
        let mut out = Collect {
            flows: self.flows.take(),
            ..Collect::default()
        };
        self.engine.handle_datagram(
            self.now,
            self.endpoint,
            datagram,
            &mut self.scratch,
            &mut out,
        );
        self.flows = out.flows.take();
        out
    }

    fn handshake(&mut self) {
        let mut buf = vec![0u8; 2048];
        let init = match self.laptop.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("no initiation: {other:?}"),
        };
        let out = self.send(&init);
        assert_eq!(out.net.len(), 1, "one handshake response");
        assert_eq!(out.net[0].0, self.endpoint);
        let mut buf = vec![0u8; 2048];
        let reply = match self.laptop.decapsulate(None, &out.net[0].1, &mut buf) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("laptop rejected the response: {other:?}"),
        };
        // The laptop's first keepalive confirms the session on the gateway side.
        let out = self.send(&reply);
        assert!(out.tun.is_empty());
    }

    /// Laptop encrypts an IP packet and sends it; returns what the gateway did.
    fn send_ip(&mut self, packet: &[u8]) -> Collect {
        let mut buf = vec![0u8; 2048];
        let d = match self.laptop.encapsulate(packet, &mut buf) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("laptop could not encrypt: {other:?}"),
        };
        self.send(&d)
    }

    /// A packet arriving on the TUN device (from a resource host).
    fn tun_in(&mut self, packet: &[u8]) -> Collect {
        let mut out = Collect {
            flows: self.flows.take(),
            ..Collect::default()
        };
        self.engine
            .handle_tun_packet(self.now, packet, &mut self.scratch, &mut out);
        self.flows = out.flows.take();
        out
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.engine.drops.snapshot().get(r)
    }
}

#[test]
fn granted_flow_goes_through_and_its_reply_comes_back() {
    let mut s = setup();
    assert_eq!(s.engine.handshakes_received.load(Ordering::Relaxed), 0);
    s.handshake();
    assert_eq!(s.engine.handshakes_received.load(Ordering::Relaxed), 1);
    let syn = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    let out = s.send_ip(&syn);
    assert_eq!(out.tun, vec![syn.clone()]);

    let synack = build::tcp(PAIE, LAPTOP, 443, 40000, 0x12);
    let out = s.tun_in(&synack);
    assert_eq!(out.net.len(), 1);
    assert_eq!(out.net[0].0, s.endpoint);
    let mut buf = vec![0u8; 2048];
    match s.laptop.decapsulate(None, &out.net[0].1, &mut buf) {
        TunnResult::WriteToTunnelV4(p, src) => {
            assert_eq!(src, PAIE);
            assert_eq!(p, &synack[..]);
        }
        other => panic!("laptop did not get the reply: {other:?}"),
    }

    let ping = build::echo(LAPTOP, PAIE, 5, false);
    assert_eq!(s.send_ip(&ping).tun.len(), 1);
    assert_eq!(s.tun_in(&build::echo(PAIE, LAPTOP, 5, true)).net.len(), 1);

    let stats = s.engine.peer_stats();
    assert_eq!(stats.len(), 1);
    let st = &stats[0];
    assert_eq!(st.public_key, s.laptop_key);
    assert_eq!(st.label, "laptop1");
    assert!(st.session_active);
    assert!(st.last_handshake.is_some());
    assert_eq!((st.rx_packets, st.tx_packets), (2, 2));
    assert_eq!(st.rx_bytes, (syn.len() + ping.len()) as u64);
    assert_eq!(st.flows, 2);
}

#[test]
fn spoofed_source_and_denied_destinations_are_dropped() {
    let mut s = setup();
    s.handshake();
    let spoofed = build::tcp(Ipv4Addr::new(100, 64, 0, 9), PAIE, 40000, 443, 0x02);
    assert!(s.send_ip(&spoofed).tun.is_empty());
    assert_eq!(s.drops(DropReason::SpoofedSource), 1);

    // Granted host, other port; other host; other protocol.
    for p in [
        build::tcp(LAPTOP, PAIE, 40000, 22, 0x02),
        build::tcp(LAPTOP, RH, 40000, 443, 0x02),
        build::udp(LAPTOP, PAIE, 40000, 443, b"x"),
    ] {
        assert!(s.send_ip(&p).tun.is_empty());
    }
    assert_eq!(s.drops(DropReason::PolicyDenied), 3);

    // Garbage inside a valid tunnel.
    let mut buf = vec![0u8; 2048];
    if let TunnResult::WriteToNetwork(d) = s.laptop.encapsulate(&[0x45, 0, 0], &mut buf) {
        let d = d.to_vec();
        assert!(s.send(&d).tun.is_empty());
    }
    assert_eq!(
        s.drops(DropReason::BadInnerPacket) + s.drops(DropReason::Malformed),
        1
    );
}

#[test]
fn resource_host_cannot_open_a_connection_to_the_laptop() {
    let mut s = setup();
    s.handshake();
    assert!(s
        .tun_in(&build::tcp(PAIE, LAPTOP, 443, 40000, 0x02))
        .net
        .is_empty());
    assert!(s
        .tun_in(&build::echo(PAIE, LAPTOP, 1, false))
        .net
        .is_empty());
    assert_eq!(s.drops(DropReason::NoFlowForReply), 2);
    // No peer owns that address.
    assert!(s
        .tun_in(&build::tcp(
            PAIE,
            Ipv4Addr::new(100, 64, 3, 3),
            443,
            1,
            0x12
        ))
        .net
        .is_empty());
    assert_eq!(s.drops(DropReason::NoPeerForDestination), 1);
    assert!(s.tun_in(&[1, 2, 3]).net.is_empty());
    assert_eq!(s.drops(DropReason::TunMalformed), 1);
}

#[test]
fn unknown_keys_garbage_and_removed_peers_are_dropped() {
    let mut s = setup();
    assert!(s.send(&[0xff; 10]).net.is_empty());
    assert_eq!(s.drops(DropReason::Malformed), 1);

    // A stranger with a valid handshake for this gateway's key, but not enrolled.
    let gw_public = s.engine.public_key().to_dalek();
    let mut stranger = Tunn::new(
        StaticSecret::random_from_rng(rand_core::OsRng),
        gw_public,
        None,
        None,
        1,
        None,
    );
    let mut buf = vec![0u8; 2048];
    if let TunnResult::WriteToNetwork(d) = stranger.format_handshake_initiation(&mut buf, false) {
        let d = d.to_vec();
        assert!(s.send(&d).net.is_empty());
    }
    assert_eq!(s.drops(DropReason::UnknownPeer), 1);

    // A handshake for some other server: MAC1 does not match.
    let mut other = Tunn::new(
        StaticSecret::random_from_rng(rand_core::OsRng),
        PublicKey::from(&StaticSecret::random_from_rng(rand_core::OsRng)),
        None,
        None,
        1,
        None,
    );
    if let TunnResult::WriteToNetwork(d) = other.format_handshake_initiation(&mut buf, false) {
        let d = d.to_vec();
        assert!(s.send(&d).net.is_empty());
    }
    assert_eq!(s.drops(DropReason::InvalidMac), 1);

    s.handshake();
    assert!(s.engine.peer_stats()[0].session_active);
    s.engine.peers.set(vec![]);
    let out = s.send_ip(&build::tcp(LAPTOP, PAIE, 40000, 443, 0x02));
    assert!(out.tun.is_empty());
    assert_eq!(s.drops(DropReason::UnknownPeer), 2);
}

#[test]
fn rule_change_keeps_the_session_and_applies_at_once() {
    let mut s = setup();
    s.handshake();
    let syn = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    assert_eq!(s.send_ip(&syn).tun.len(), 1);
    s.engine.peers.set(vec![PeerSpec {
        public_key: s.laptop_key,
        address: LAPTOP,
        rules: RuleSet::deny_all(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: "laptop1".into(),
        persistent_keepalive: None,
    }]);
    // Same session (no new handshake), new policy.
    assert!(s.send_ip(&syn).tun.is_empty());
    assert_eq!(s.drops(DropReason::PolicyDenied), 1);
    assert_eq!(s.drops(DropReason::NoSession), 0);
}

#[test]
fn timers_tick_without_panicking_and_keep_a_fresh_session() {
    let mut s = setup();
    s.handshake();
    let mut out = Collect::default();
    let mut scratch = vec![0u8; 4096];
    s.engine.tick(Instant::now(), &mut scratch, &mut out);
    assert!(s.engine.peer_stats()[0].session_active);
}

#[path = "engine_flow_tests.rs"]
mod flow;
#[path = "engine_handshake_tests.rs"]
mod handshake;
#[path = "engine_peerset_tests.rs"]
mod peerset;
#[path = "engine_window_tests.rs"]
mod window;

#[test]
fn a_batch_of_datagrams_is_judged_packet_by_packet_with_one_lock_per_run() {
    let mut s = setup();
    s.handshake();
    let mut buf = vec![0u8; 2048];
    let mut enc = |s: &mut Setup, p: &[u8]| match s.laptop.encapsulate(p, &mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("laptop could not encrypt: {other:?}"),
    };
    let ok = |port: u16| build::tcp(LAPTOP, PAIE, port, 443, 0x02);
    let a = enc(&mut s, &ok(40001));
    let b = enc(&mut s, &ok(40002));
    let denied = enc(&mut s, &build::tcp(LAPTOP, RH, 40003, 443, 0x02));
    let mut unknown = enc(&mut s, &ok(40004));
    unknown[4..8].copy_from_slice(&0x00ab_cd00u32.to_le_bytes()); // no such session index
    let c = enc(&mut s, &ok(40005));
    let garbage = vec![9u8; 40];
    let ep = Some(s.endpoint);
    let batch: Vec<(Option<SocketAddr>, &[u8])> = vec![
        (ep, &a),
        (ep, &b),
        (None, &a),
        (ep, &denied),
        (ep, &unknown),
        (ep, &garbage),
        (ep, &c),
        (ep, &b), // a replay: decrypts no more
    ];
    let mut out = Collect::default();
    s.engine
        .handle_datagrams(s.now, batch, &mut s.scratch, &mut out);
    let ports: Vec<u16> = out
        .tun
        .iter()
        .map(|p| u16::from_be_bytes([p[20], p[21]]))
        .collect();
    assert_eq!(ports, vec![40001, 40002, 40005], "allowed ones, in order");
    assert_eq!(s.drops(DropReason::PolicyDenied), 1);
    assert_eq!(s.drops(DropReason::UnknownPeer), 1);
    assert_eq!(s.drops(DropReason::Malformed), 2, "no source; garbage");
    assert_eq!(s.drops(DropReason::DecryptFailed), 1, "the replay");
    // The lock was released: the per-datagram path and the TUN side still work.
    let d = enc(&mut s, &ok(40006));
    assert_eq!(s.send(&d).tun.len(), 1);
}
