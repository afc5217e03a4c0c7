//! WireGuard's timers (whitepaper §6.1–6.4) through Sesame's gateway engine, on boringtun's mock
//! clock: rekey after 120 s, reject after 180 s, retry every 5 s, give up after 90 s, zero keys
//! after 540 s, and the session record of a laptop that stopped answering. Each assertion is
//! checked on both sides of its deadline.
//!
//! The engine's own clock (`now`, which paces `Engine::tick`) and boringtun's mock clock
//! (thread-local: each test has its own) advance together in steps of `TIMER_PERIOD`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::StaticSecret;
use mock_instant::MockClock;
use sesame::gateway::engine::{Output, TIMER_PERIOD};
use sesame::gateway::packet::build;
use sesame::gateway::{DropReason, EndReason, Engine, FlowLog, FlowRecord, PeerSpec};
use sesame::key::{PrivateKey, PublicKey};
use sesame::policy::{Rule, RuleSet};

const LAPTOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const PAIE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
/// WireGuard message types (first byte).
const INITIATION: u8 = 1;
const RESPONSE: u8 = 2;
const FLOW_IDLE: Duration = Duration::from_secs(120);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[derive(Default)]
struct Collect {
    net: Vec<(SocketAddr, Vec<u8>)>,
    tun: Vec<Vec<u8>>,
}

impl Output for Collect {
    fn to_network(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.net.push((dst, datagram.to_vec()));
    }
    fn to_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

/// What the gateway sent, and when (time since the test's start).
struct Sent {
    at: Duration,
    datagram: Vec<u8>,
}

/// A gateway engine with one enrolled laptop, the laptop being a plain boringtun `Tunn` that
/// the test drives by hand (its own timers never run: it is a passive peer).
struct World {
    engine: Engine,
    laptop: Tunn,
    laptop_key: PublicKey,
    endpoint: SocketAddr,
    scratch: Vec<u8>,
    start: Instant,
    elapsed: Duration,
    /// Everything the gateway sent to the laptop's endpoint, in order.
    sent: Vec<Sent>,
}

impl World {
    fn new() -> World {
        World::with_flow_log(None)
    }

    /// The same, the engine sending its session records to `flow_log`.
    fn with_flow_log(flow_log: Option<std::sync::Arc<FlowLog>>) -> World {
        let gw = PrivateKey::generate();
        let gw_public = gw.public_key().to_dalek();
        let engine = match flow_log {
            Some(log) => Engine::new(gw, FLOW_IDLE).with_flow_log(log),
            None => Engine::new(gw, FLOW_IDLE),
        };
        let laptop_secret = StaticSecret::random_from_rng(rand_core::OsRng);
        let laptop_key =
            PublicKey::from_bytes(boringtun::x25519::PublicKey::from(&laptop_secret).to_bytes())
                .expect("a random key");
        let rules = RuleSet::with_origins([(
            "198.18.10.0/28 icmp".parse::<Rule>().expect("a valid rule"),
            1,
        )]);
        engine.peers.set(vec![PeerSpec {
            public_key: laptop_key,
            address: LAPTOP,
            rules,
            protected: Default::default(),
            mfa_until_ms: None,
            label: "laptop1".into(),
            persistent_keepalive: None,
        }]);
        World {
            engine,
            laptop: Tunn::new(laptop_secret, gw_public, None, None, 7, None),
            laptop_key,
            endpoint: "198.18.0.2:40000".parse().expect("an address"),
            scratch: vec![0; 4096],
            start: Instant::now(),
            elapsed: Duration::ZERO,
            sent: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    fn keep(&mut self, out: Collect) -> Collect {
        for (dst, d) in &out.net {
            assert_eq!(*dst, self.endpoint, "the gateway writes only to the laptop");
            self.sent.push(Sent {
                at: self.elapsed,
                datagram: d.clone(),
            });
        }
        out
    }

    /// One run of the engine's timers at the current time.
    fn tick(&mut self) -> Collect {
        let mut out = Collect::default();
        self.engine.tick(self.now(), &mut self.scratch, &mut out);
        self.keep(out)
    }

    /// Advances both clocks to `t` (since the start), running the timers every period.
    fn advance_to(&mut self, t: Duration) {
        assert!(t >= self.elapsed, "time goes forward");
        while self.elapsed < t {
            let step = TIMER_PERIOD.min(t - self.elapsed);
            MockClock::advance(step);
            self.elapsed += step;
            self.tick();
        }
    }

    /// Laptop → gateway: one datagram through the engine.
    fn deliver(&mut self, datagram: &[u8]) -> Collect {
        let mut out = Collect::default();
        let now = self.now();
        self.engine
            .handle_datagram(now, self.endpoint, datagram, &mut self.scratch, &mut out);
        self.keep(out)
    }

    /// Gateway → laptop: the laptop decrypts one datagram; what it answers, if anything.
    fn laptop_receives(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut buf = vec![0u8; 4096];
        match self.laptop.decapsulate(None, datagram, &mut buf) {
            TunnResult::WriteToNetwork(d) => Ok(Some(d.to_vec())),
            TunnResult::Done | TunnResult::WriteToTunnelV4(..) => Ok(None),
            other => Err(format!("{other:?}")),
        }
    }

    /// A ping from the laptop, sealed now (delivered whenever the test chooses).
    fn seal_ping(&mut self, id: u16) -> Vec<u8> {
        let ping = build::echo(LAPTOP, PAIE, id, false);
        let mut buf = vec![0u8; 4096];
        match self.laptop.encapsulate(&ping, &mut buf) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("the laptop could not encrypt: {other:?}"),
        }
    }

    /// The laptop starts a handshake; the session is confirmed by the laptop's keepalive.
    fn laptop_handshake(&mut self) {
        let mut buf = vec![0u8; 2048];
        let init = match self.laptop.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("no initiation: {other:?}"),
        };
        let out = self.deliver(&init);
        assert_eq!(out.net.len(), 1, "one handshake response");
        let keepalive = self
            .laptop_receives(&out.net[0].1)
            .expect("the laptop accepts the response")
            .expect("the laptop confirms with a keepalive");
        self.deliver(&keepalive);
    }

    /// The gateway starts the handshake (as after a restart, from the peer cache's endpoint);
    /// the laptop answers and the gateway confirms with its keepalive.
    fn gateway_handshake(&mut self) {
        self.engine
            .initiate_handshakes(vec![(self.laptop_key, self.endpoint)]);
        let before = self.sent.len();
        self.advance_to(self.elapsed + TIMER_PERIOD);
        let init = self.sent[before..]
            .iter()
            .find(|s| s.datagram[0] == INITIATION)
            .expect("the gateway initiates at its next tick")
            .datagram
            .clone();
        let response = self
            .laptop_receives(&init)
            .expect("the laptop accepts the initiation")
            .expect("the laptop answers");
        assert_eq!(response[0], RESPONSE);
        let out = self.deliver(&response);
        let keepalive = &out.net.first().expect("the gateway confirms").1;
        self.laptop_receives(keepalive)
            .expect("the laptop accepts the gateway's keepalive");
    }

    /// A ping from the laptop through the gateway, and its reply back: both directions carry
    /// data, so neither side's keepalive or "no reply" timer fires.
    fn exchange(&mut self, id: u16) {
        let ping = self.seal_ping(id);
        let out = self.deliver(&ping);
        assert_eq!(out.tun.len(), 1, "the ping reaches the TUN device");
        let reply = build::echo(PAIE, LAPTOP, id, true);
        let mut out = Collect::default();
        let now = self.now();
        self.engine
            .handle_tun_packet(now, &reply, &mut self.scratch, &mut out);
        let out = self.keep(out);
        assert_eq!(out.net.len(), 1, "the reply goes back encrypted");
        self.laptop_receives(&out.net[0].1)
            .expect("the laptop decrypts the reply");
    }

    /// When the gateway sent handshake initiations, since the start.
    fn initiations(&self) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|s| s.datagram[0] == INITIATION)
            .map(|s| s.at)
            .collect()
    }

    /// Whether the gateway holds session state (keys) for the laptop.
    fn holds_keys(&self) -> bool {
        let table = self.engine.peers.load();
        let peer = table
            .by_key(&self.laptop_key)
            .expect("the laptop is enrolled");
        let has = peer.state.lock().tunn.is_some();
        has
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.engine.drops.snapshot().get(reason)
    }
}

/// §6.2: the initiator of the current session starts a new handshake once the session is
/// REKEY_AFTER_TIME (120 s) old and it sends data; the laptop accepts the new initiation.
#[test]
fn gateway_initiated_session_rekeys_after_120_s() {
    let mut w = World::new();
    w.tick();
    w.gateway_handshake();
    let established = w.elapsed;
    assert_eq!(w.initiations(), vec![established], "the first handshake");
    for i in 1..=23u16 {
        w.advance_to(established + secs(5.0 * f64::from(i)));
        w.exchange(i);
    }
    w.advance_to(established + secs(119.0));
    w.exchange(100);
    w.advance_to(established + secs(119.75));
    assert_eq!(w.initiations().len(), 1, "no rekey before 120 s");
    w.advance_to(established + secs(121.0));
    let inits = w.initiations();
    assert_eq!(inits.len(), 2, "one rekey by 121 s: {inits:?}");
    assert!(
        inits[1] >= established + secs(120.0) && inits[1] <= established + secs(120.25),
        "rekey at {:?}, session established at {established:?}",
        inits[1]
    );
    let rekey = w.sent.iter().rfind(|s| s.datagram[0] == INITIATION);
    let rekey = rekey.expect("kept").datagram.clone();
    let answer = w
        .laptop_receives(&rekey)
        .expect("the laptop accepts the rekey");
    assert_eq!(answer.expect("and answers it")[0], RESPONSE);
}

/// §6.2: the responder never rekeys on time (only the initiator does), and §6.1: a session's
/// keys are refused REJECT_AFTER_TIME (180 s) after it was established.
#[test]
fn laptop_initiated_session_is_rejected_after_180_s() {
    let mut w = World::new();
    w.tick();
    w.laptop_handshake();
    let established = w.elapsed;
    // Sealed now with the current session; delivered just before and just after 180 s.
    let early = w.seal_ping(1);
    let late = w.seal_ping(2);
    w.advance_to(established + secs(179.0));
    assert_eq!(
        w.deliver(&early).tun.len(),
        1,
        "the session still works at 179 s"
    );
    let refused = w.drops(DropReason::NoSession) + w.drops(DropReason::DecryptFailed);
    w.advance_to(established + secs(181.0));
    assert!(
        w.deliver(&late).tun.is_empty(),
        "the session is refused at 181 s"
    );
    assert_eq!(
        w.drops(DropReason::NoSession) + w.drops(DropReason::DecryptFailed),
        refused + 1,
        "counted as a drop"
    );
    assert!(w.initiations().is_empty(), "the responder does not rekey");
    assert!(
        w.holds_keys(),
        "expired session, but the peer's state stays until 540 s"
    );
}

/// §6.3: with no new handshake, every key is erased REJECT_AFTER_TIME × 3 (540 s) after the
/// last session was established: the engine then frees the peer's session state.
#[test]
fn keys_are_zeroed_after_540_s() {
    let mut w = World::new();
    w.tick();
    w.laptop_handshake();
    let established = w.elapsed;
    w.advance_to(established + secs(539.0));
    assert!(w.holds_keys(), "keys kept at 539 s");
    w.advance_to(established + secs(541.0));
    assert!(!w.holds_keys(), "keys erased by 541 s");
    let table = w.engine.peers.load();
    let peer = table.by_key(&w.laptop_key).expect("still enrolled");
    assert!(!peer.live.load(std::sync::atomic::Ordering::Acquire));
    drop(table);
    // A packet of the old session now finds nothing to decrypt with.
    let ping = w.seal_ping(1);
    let before = w.drops(DropReason::NoSession);
    assert!(w.deliver(&ping).tun.is_empty());
    assert_eq!(w.drops(DropReason::NoSession), before + 1);
    // And a new handshake from the laptop works again.
    w.laptop_handshake();
    assert!(w.holds_keys());
}

/// §6.4: an unanswered initiation is retried every REKEY_TIMEOUT (5 s); after
/// REKEY_ATTEMPT_TIME (90 s) of trying, the gateway gives up and frees the session.
#[test]
fn unanswered_handshake_is_retried_every_5_s_and_given_up_after_90_s() {
    let mut w = World::new();
    w.engine
        .initiate_handshakes(vec![(w.laptop_key, w.endpoint)]);
    w.tick();
    w.advance_to(secs(89.75));
    assert!(w.holds_keys(), "still trying at 89.75 s");
    w.advance_to(secs(100.0));
    assert!(!w.holds_keys(), "given up by 90.25 s");
    let expected: Vec<Duration> = (0..18).map(|k| secs(5.0 * f64::from(k))).collect();
    assert_eq!(
        w.initiations(),
        expected,
        "first try at 0 s, then every 5 s until 90 s"
    );
    assert_eq!(w.sent.len(), expected.len(), "nothing but initiations");
}

/// §6.2–6.4 as the audit sees them: a laptop goes silent after the gateway sent it a reply; 15 s
/// later the gateway starts handshakes, gives up after 90 s and frees the session, which ends
/// with reason `expired`, the laptop's last endpoint and the session's counts. (This replaces a
/// test that waited ~105 s of real time in src/gateway/engine_flow_tests.rs; the record's
/// conversion into a `tunnel.session_ended` event is tested there with the other reasons.)
#[test]
fn a_session_the_laptop_stops_answering_ends_expired() {
    let (log, records) = FlowLog::new(Duration::from_secs(60), 64);
    let mut w = World::with_flow_log(Some(log));
    w.tick();
    w.laptop_handshake();
    let established = w.elapsed;
    let ping = w.seal_ping(1);
    assert_eq!(
        w.deliver(&ping).tun.len(),
        1,
        "the ping reaches the TUN device"
    );
    // boringtun stamps packets with the time of its last timer pass: one pass a second later,
    // so the reply leaves after the laptop's last packet.
    w.advance_to(established + secs(1.0));
    let reply = build::echo(PAIE, LAPTOP, 1, true);
    let mut out = Collect::default();
    let now = w.now();
    w.engine
        .handle_tun_packet(now, &reply, &mut w.scratch, &mut out);
    assert_eq!(w.keep(out).net.len(), 1, "the reply leaves, never answered");

    w.advance_to(established + secs(100.0));
    assert!(w.holds_keys(), "still trying at 100 s");
    w.advance_to(established + secs(130.0));
    assert!(
        !w.holds_keys(),
        "the session is freed by 130 s (15 s + 90 s after the reply)"
    );
    let inits = w.initiations();
    assert!(
        inits
            .first()
            .is_some_and(|t| *t >= established + secs(15.0)),
        "the gateway tried to reach the laptop first, 15 s after its reply: {inits:?}"
    );
    let ended: Vec<_> = records
        .try_iter()
        .filter_map(|r| match r {
            FlowRecord::SessionEnded(e) => Some(e),
            _ => None,
        })
        .collect();
    let [e] = &ended[..] else {
        panic!("one session end expected: {ended:?}")
    };
    assert_eq!(e.reason, EndReason::Expired);
    assert_eq!(e.reason.as_str(), "expired");
    assert_eq!(e.endpoint, w.endpoint);
    assert_eq!(e.peer.label.as_str(), "laptop1");
    // The ping in (the handshake's keepalive carries no packet); the reply out.
    assert_eq!((e.rx_packets, e.tx_packets), (1, 1));
    assert_eq!(e.tx_bytes, reply.len() as u64);
}
