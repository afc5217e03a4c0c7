//! Handshakes through the engine: a NAT school under and over the load limit, cookies,
//! gateway-initiated handshakes after a restart, replayed initiations and their timestamps.

use super::*;

/// `n` more enrolled laptops (tunnel addresses 100.64.1.x), as the gateway's peers besides the
/// setup's laptop; each laptop's `Tunn` ready to initiate.
fn nat_school(s: &Setup, n: u8) -> Vec<Tunn> {
    let gw_public = s.engine.public_key().to_dalek();
    let mut specs = vec![PeerSpec {
        public_key: s.laptop_key,
        address: LAPTOP,
        rules: rules(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: "laptop1".into(),
        persistent_keepalive: None,
    }];
    let mut tunns = Vec::new();
    for i in 0..n {
        let secret = StaticSecret::random_from_rng(rand_core::OsRng);
        specs.push(PeerSpec {
            public_key: key_of(&secret),
            address: Ipv4Addr::new(100, 64, 1, i + 1),
            rules: rules(),
            protected: Default::default(),
            mfa_until_ms: None,
            label: format!("school{i}"),
            persistent_keepalive: None,
        });
        tunns.push(Tunn::new(
            secret,
            gw_public,
            None,
            None,
            u32::from(i) + 100,
            None,
        ));
    }
    assert_eq!(s.engine.peers.set(specs).added, usize::from(n));
    tunns
}

/// One handshake initiation from a laptop behind the school's NAT address (its own port).
fn initiate(s: &mut Setup, t: &mut Tunn, port: u16) -> Collect {
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, false) else {
        panic!("no initiation")
    };
    let d = d.to_vec();
    let from: SocketAddr = SocketAddr::new("198.18.0.9".parse().unwrap(), port);
    let mut out = Collect::default();
    s.engine
        .handle_datagram(s.now, from, &d, &mut s.scratch, &mut out);
    out
}

#[test]
fn below_load_a_whole_nat_school_gets_its_handshakes_answered() {
    let mut s = setup();
    let mut school = nat_school(&s, 40);
    // 40 handshakes in the same instant from one address: well over 20/s and the burst of 5.
    for (i, t) in school.iter_mut().enumerate() {
        let out = initiate(&mut s, t, 40_000 + i as u16);
        assert_eq!(out.net.len(), 1, "laptop {i} not answered");
        assert_eq!(
            out.net[0].1[0], 2,
            "laptop {i}: expected a handshake response"
        );
    }
    assert_eq!(s.drops(DropReason::RateLimited), 0);
    assert_eq!(s.drops(DropReason::CookieSent), 0);
}

#[test]
fn under_load_handshakes_per_source_are_limited() {
    let mut s = setup();
    let mut school = nat_school(&s, 10);
    let gw_public = s.engine.public_key().to_dalek();
    // A flood of valid-MAC handshakes (unknown keys) from many sources: the gateway is under load.
    for i in 0..HANDSHAKE_LOAD_LIMIT as usize + 10 {
        let mut t = Tunn::new(
            StaticSecret::random_from_rng(rand_core::OsRng),
            gw_public,
            None,
            None,
            1,
            None,
        );
        let mut buf = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, false) else {
            panic!("no initiation")
        };
        let d = d.to_vec();
        let from: SocketAddr = format!("198.18.{}.{}:5000", 100 + i / 250, 1 + i % 250)
            .parse()
            .unwrap();
        s.engine
            .handle_datagram(s.now, from, &d, &mut s.scratch, &mut Collect::default());
    }
    assert_eq!(s.drops(DropReason::RateLimited), 0, "distinct sources");
    // Each school laptop gets a cookie, proves the NAT address with MAC2; then the
    // per-source limit lets the burst (5) through and drops the rest.
    let mut answered = 0;
    for (i, t) in school.iter_mut().enumerate() {
        let port = 40_000 + i as u16;
        let out = initiate(&mut s, t, port);
        assert_eq!(out.net.len(), 1);
        assert_eq!(out.net[0].1[0], 3, "expected a cookie reply");
        let mut buf = vec![0u8; 2048];
        assert!(matches!(
            t.decapsulate(None, &out.net[0].1, &mut buf),
            TunnResult::Done
        ));
        let mut buf = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, true) else {
            panic!("no initiation")
        };
        let d = d.to_vec();
        let from = SocketAddr::new("198.18.0.9".parse().unwrap(), port);
        let mut out = Collect::default();
        s.engine
            .handle_datagram(s.now, from, &d, &mut s.scratch, &mut out);
        if out.net.first().is_some_and(|(_, d)| d[0] == 2) {
            answered += 1;
        }
    }
    assert_eq!(answered, 5);
    assert_eq!(s.drops(DropReason::RateLimited), 5);
}

#[test]
fn under_load_handshakes_get_cookies_and_a_real_laptop_still_gets_in() {
    let mut s = setup();
    let gw_public = s.engine.public_key().to_dalek();
    let limit = HANDSHAKE_LOAD_LIMIT as usize;
    // A flood of valid-MAC handshakes from many sources (unknown keys).
    for i in 0..limit + 10 {
        let mut t = Tunn::new(
            StaticSecret::random_from_rng(rand_core::OsRng),
            gw_public,
            None,
            None,
            1,
            None,
        );
        let mut buf = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(d) = t.format_handshake_initiation(&mut buf, false) else {
            panic!("no initiation")
        };
        let d = d.to_vec();
        let from: SocketAddr = format!("198.18.{}.{}:5000", 100 + i / 250, 1 + i % 250)
            .parse()
            .unwrap();
        let mut out = Collect::default();
        s.engine
            .handle_datagram(s.now, from, &d, &mut s.scratch, &mut out);
        if i >= limit {
            // The cookie reply goes to the real source address, type 3.
            assert_eq!(out.net.len(), 1);
            assert_eq!(out.net[0].0, from);
            assert_eq!(out.net[0].1[0], 3);
        }
    }
    assert_eq!(s.drops(DropReason::CookieSent), 10);

    // The laptop gets a cookie, proves its address with MAC2, and is answered.
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = s.laptop.format_handshake_initiation(&mut buf, false)
    else {
        panic!("no initiation")
    };
    let init = init.to_vec();
    let out = s.send(&init);
    assert_eq!(out.net.len(), 1);
    assert_eq!(out.net[0].1[0], 3, "expected a cookie reply");
    let cookie = out.net[0].1.clone();
    assert!(matches!(
        s.laptop.decapsulate(None, &cookie, &mut buf),
        TunnResult::Done
    ));
    let TunnResult::WriteToNetwork(init) = s.laptop.format_handshake_initiation(&mut buf, true)
    else {
        panic!("no initiation")
    };
    let init = init.to_vec();
    let out = s.send(&init);
    assert_eq!(out.net.len(), 1);
    assert_eq!(out.net[0].1[0], 2, "expected a handshake response");
}

#[test]
fn gateway_initiated_handshake_reopens_the_session_towards_the_last_endpoint() {
    let mut s = setup();
    // After a restart: the laptop's last endpoint, and a key the table does not hold.
    s.engine.initiate_handshakes(vec![
        (s.laptop_key, s.endpoint),
        (
            crate::key::PublicKey::from_bytes([9; 32]).unwrap(),
            s.endpoint,
        ),
    ]);
    let mut out = Collect::default();
    s.engine.tick(s.now, &mut s.scratch, &mut out);
    assert_eq!(out.net.len(), 1, "one initiation, for the known peer only");
    assert_eq!(out.net[0].0, s.endpoint);
    assert_eq!(out.net[0].1.len(), 148);
    assert_eq!(out.net[0].1[0], 1, "message type 1: handshake initiation");
    // Sent once: the next tick does not repeat it.
    let mut again = Collect::default();
    s.engine
        .tick(s.now + TIMER_PERIOD, &mut s.scratch, &mut again);
    assert!(again.net.is_empty());

    // The laptop (a stock responder) answers; the gateway confirms with a keepalive.
    let mut buf = vec![0u8; 2048];
    let response = match s.laptop.decapsulate(None, &out.net[0].1, &mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("laptop refused the gateway's initiation: {other:?}"),
    };
    let confirm = s.send(&response);
    assert_eq!(confirm.net.len(), 1, "keepalive confirming the session");
    let mut buf = vec![0u8; 2048];
    assert!(matches!(
        s.laptop.decapsulate(None, &confirm.net[0].1, &mut buf),
        TunnResult::Done
    ));
    // The laptop's traffic now flows over the session the gateway opened.
    let out = s.send_ip(&build::tcp(LAPTOP, PAIE, 40000, 443, 0x02));
    assert_eq!(out.tun.len(), 1);
}

#[test]
fn a_replayed_initiation_after_the_session_was_freed_gets_no_response() {
    let mut s = setup();
    let mut buf = vec![0u8; 2048];
    let captured = match s.laptop.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("no initiation: {other:?}"),
    };
    assert_eq!(
        s.send(&captured).net.len(),
        1,
        "the genuine initiation is answered"
    );
    // The session is freed, as the timer pass does after 540 s idle (ConnectionExpired).
    let table = s.engine.peers.load();
    let peer = table.by_key(&s.laptop_key).unwrap();
    {
        let mut st = peer.state.lock();
        st.tunn = None;
        peer.live.store(false, Ordering::Release);
    }
    // The captured initiation, replayed from elsewhere: dropped, no response, endpoint kept.
    let attacker: SocketAddr = "198.18.0.66:5000".parse().unwrap();
    let mut out = Collect::default();
    s.engine
        .handle_datagram(s.now, attacker, &captured, &mut s.scratch, &mut out);
    assert!(out.net.is_empty(), "a replay must get no response");
    assert_eq!(s.drops(DropReason::ReplayedHandshake), 1);
    assert!(peer.state.lock().tunn.is_none());
    assert_ne!(peer.state.lock().endpoint, Some(attacker));

    // The real laptop's next initiation (newer timestamp) is answered.
    std::thread::sleep(Duration::from_millis(2));
    let mut buf = vec![0u8; 2048];
    let fresh = match s.laptop.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("no initiation: {other:?}"),
    };
    assert_eq!(
        s.send(&fresh).net.len(),
        1,
        "a fresh initiation is answered"
    );
}

#[test]
fn initiation_timestamps_increase_and_read_back_for_the_right_key_only() {
    let gw = StaticSecret::random_from_rng(rand_core::OsRng);
    let gw_public = PublicKey::from(&gw);
    let laptop_secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let laptop_public = PublicKey::from(&laptop_secret).to_bytes();
    let mut laptop = Tunn::new(laptop_secret, gw_public, None, None, 3, None);
    let mut stamps = Vec::new();
    for _ in 0..3 {
        let mut buf = vec![0u8; 2048];
        let init = match laptop.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("no initiation: {other:?}"),
        };
        let ts =
            crate::gateway::replay::initiation_timestamp(&gw, &gw_public, &laptop_public, &init)
                .expect("decrypts for the right key");
        // Another claimed key, or another gateway: no timestamp.
        assert!(
            crate::gateway::replay::initiation_timestamp(&gw, &gw_public, &[1; 32], &init)
                .is_none()
        );
        let other = StaticSecret::random_from_rng(rand_core::OsRng);
        assert!(crate::gateway::replay::initiation_timestamp(
            &other,
            &PublicKey::from(&other),
            &laptop_public,
            &init
        )
        .is_none());
        stamps.push(ts);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(stamps[0] < stamps[1] && stamps[1] < stamps[2], "{stamps:?}");
}

/// The replay window, through the engine (boringtun's counter validator behind Sesame's
/// decrypt path): the shape of wireguard-go's `replay_test.go` and Linux's selftest
/// `counter.c` (in order, duplicates, reordering inside the window, too old, far jumps),
/// adapted to boringtun's 1,024-message window.
#[test]
fn replay_window_cases_through_the_engine() {
    const WINDOW: u64 = 1024;
    let mut s = setup();
    s.handshake(); // the laptop's confirming keepalive used counter 0
    let last = 2 * WINDOW + 60;
    let mut sealed = vec![Vec::new()]; // index = counter
    for counter in 1..=last {
        let ping = build::echo(LAPTOP, PAIE, (counter % 60_000) as u16, false);
        let mut buf = vec![0u8; 2048];
        match s.laptop.encapsulate(&ping, &mut buf) {
            TunnResult::WriteToNetwork(d) => sealed.push(d.to_vec()),
            other => panic!("laptop could not encrypt: {other:?}"),
        }
    }
    let cases: &[(u64, bool)] = &[
        (1, true),
        (1, false), // duplicate
        (2, true),
        (9, true), // a gap
        (8, true), // late, inside the window
        (7, true),
        (7, false),
        (9 + WINDOW, true), // next = 1034
        (9, false),         // 9 + 1024 < 1034: too old
        (10, true),         // 10 + 1024 = 1034: the oldest still accepted
        (10, false),
        (9 + WINDOW, false),
        (8 + WINDOW, true),
        (3, false),
        (2 * WINDOW + 50, true), // far ahead
        (8 + WINDOW, false),     // now too old
        (2 * WINDOW + 49, true),
        (2 * WINDOW + 60, true),
        (2 * WINDOW + 50, false),
        (2 * WINDOW + 51, true),
    ];
    for (i, &(counter, accept)) in cases.iter().enumerate() {
        let out = s.send(&sealed[counter as usize]);
        assert_eq!(
            out.tun.len() == 1,
            accept,
            "case {i}: counter {counter} should be {}",
            if accept { "accepted" } else { "dropped" }
        );
    }
    let refused = cases.iter().filter(|c| !c.1).count() as u64;
    assert_eq!(s.drops(DropReason::DecryptFailed), refused);
}
