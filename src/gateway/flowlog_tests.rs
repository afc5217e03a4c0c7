//! Aggregation, caps and loss counting of the per-worker flow tables (no root, no network).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::gateway::packet::{self, build};
use crate::gateway::peers::{PeerSpec, Peers};
use crate::ip_proto;
use crate::key::PublicKey;
use crate::policy::RuleSet;

const LAPTOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const PAIE: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
const WINDOW: Duration = Duration::from_secs(60);
/// A window boundary in wall time: 2026-01-05T09:00:00Z.
const T0: i64 = 1_767_603_600_000;

fn peers() -> Peers {
    let peers = Peers::default();
    peers.set(vec![PeerSpec {
        public_key: PublicKey::from_bytes([3; 32]).unwrap(),
        address: LAPTOP,
        rules: RuleSet::deny_all(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: "device:7:alice".into(),
        persistent_keepalive: None,
    }]);
    peers
}

/// The `i`-th of a run of distinct denied destinations (198.18.4.0 onwards).
fn nth_dst(i: u32) -> IpAddr {
    IpAddr::from(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 4, 0)) + i))
}

fn drain(rx: &FlowReceiver) -> Vec<FlowRecord> {
    rx.try_iter().collect()
}

#[test]
fn allowed_packets_aggregate_per_resource_and_window_both_ways() {
    let (log, rx) = FlowLog::new(WINDOW, 1024);
    let peers = peers();
    let t = peers.load();
    let peer = t.by_address(LAPTOP).unwrap();
    let now = Instant::now();
    // 10 s into a window.
    let mut w = WorkerFlows::new(log, now, T0 + 10_000);
    let out443 = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    let out8443 = build::tcp(LAPTOP, PAIE, 40001, 8443, 0x02);
    let reply = build::tcp(PAIE, LAPTOP, 443, 40000, 0x12);
    let ping = build::echo(LAPTOP, PAIE, 1, false);
    let info = |p: &[u8]| packet::parse(p).unwrap();
    w.allowed(now, peer, 4, &info(&out443), out443.len(), true);
    w.allowed(
        now + Duration::from_secs(1),
        peer,
        4,
        &info(&out443),
        out443.len(),
        true,
    );
    w.allowed(
        now + Duration::from_secs(2),
        peer,
        4,
        &info(&out8443),
        100,
        true,
    );
    w.allowed(
        now + Duration::from_secs(3),
        peer,
        4,
        &info(&reply),
        1000,
        false,
    );
    w.allowed(
        now + Duration::from_secs(4),
        peer,
        4,
        &info(&ping),
        84,
        true,
    );
    w.allowed(
        now + Duration::from_secs(5),
        peer,
        9,
        &info(&out443),
        60,
        true,
    );
    assert!(!w.due(now + Duration::from_secs(49)));
    assert!(w.due(now + Duration::from_secs(50)));
    assert!(
        drain(&rx).is_empty(),
        "nothing leaves before the window ends"
    );
    w.roll(now + Duration::from_secs(50), T0 + 60_000);
    let mut recs = drain(&rx);
    assert_eq!(recs.len(), 2);
    recs.sort_by_key(|r| match r {
        FlowRecord::Allowed(a) => a.resource,
        _ => u32::MAX,
    });
    let FlowRecord::Allowed(a) = &recs[0] else {
        panic!("{recs:?}")
    };
    assert_eq!(a.resource, 4);
    assert_eq!(a.peer.public_key.to_bytes(), [3; 32]);
    assert_eq!(a.peer.label.as_str(), "device:7:alice");
    assert_eq!(a.window_start_ms, T0);
    assert_eq!(a.first_ms, T0 + 10_000);
    assert_eq!(a.last_ms, T0 + 14_000);
    assert_eq!((a.packets_out, a.packets_in), (4, 1));
    assert_eq!(a.bytes_out, 2 * out443.len() as u64 + 100 + 84);
    assert_eq!(a.bytes_in, 1000);
    assert_eq!(a.ports, vec![443, 8443]);
    assert!(!a.ports_truncated);
    assert_eq!(
        a.protocols.iter().collect::<Vec<_>>(),
        vec![ip_proto::ICMP, ip_proto::TCP]
    );
    // The next window starts empty, at the boundary.
    w.allowed(
        now + Duration::from_secs(51),
        peer,
        4,
        &info(&out443),
        60,
        true,
    );
    w.flush();
    let FlowRecord::Allowed(a) = &drain(&rx)[0] else {
        panic!()
    };
    assert_eq!((a.window_start_ms, a.packets_out), (T0 + 60_000, 1));
}

#[test]
fn ports_list_is_bounded_and_says_it_was_truncated() {
    let (log, rx) = FlowLog::new(WINDOW, 16);
    let peers = peers();
    let t = peers.load();
    let peer = t.by_address(LAPTOP).unwrap();
    let now = Instant::now();
    let mut w = WorkerFlows::new(log, now, T0);
    for port in (1..=40u16).rev() {
        let p = build::udp(LAPTOP, PAIE, 5000, port, b"x");
        w.allowed(now, peer, 0, &packet::parse(&p).unwrap(), p.len(), true);
    }
    w.flush();
    let FlowRecord::Allowed(a) = &drain(&rx)[0] else {
        panic!()
    };
    assert_eq!(a.ports.len(), MAX_PORTS);
    assert!(a.ports.windows(2).all(|p| p[0] < p[1]), "sorted");
    assert!(a.ports_truncated);
}

#[test]
fn denied_destinations_per_device_are_capped_and_the_rest_summarised() {
    let (log, rx) = FlowLog::new(WINDOW, 100_000);
    let peers = peers();
    let t = peers.load();
    let peer = t.by_address(LAPTOP).unwrap();
    let now = Instant::now();
    let mut w = WorkerFlows::new(log, now, T0);
    let flood: u32 = 100_000;
    for i in 0..flood {
        // 100,000 distinct destinations in 198.18.0.0/15, twice each.
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
        for _ in 0..2 {
            w.denied(
                now,
                peer,
                dst.into(),
                ip_proto::TCP,
                22,
                DenyReason::NoGrant,
            );
        }
        assert!(w.entries() <= MAX_DENIED_PER_PEER + 1, "bounded at {i}");
    }
    w.flush();
    let recs = drain(&rx);
    assert_eq!(recs.len(), MAX_DENIED_PER_PEER + 1);
    let mut kept = 0;
    for r in &recs {
        let FlowRecord::Denied(d) = r else { panic!() };
        assert_eq!(d.reason, DenyReason::NoGrant);
        match d.dst {
            Some(_) => {
                kept += 1;
                assert_eq!((d.count, d.port, d.destinations), (2, Some(22), 1));
            }
            None => {
                let folded = u64::from(flood) - MAX_DENIED_PER_PEER as u64;
                assert_eq!(d.count, 2 * folded);
                assert_eq!(d.port, None);
                // Estimated: within 3 %.
                let err = d.destinations.abs_diff(folded) as f64 / folded as f64;
                assert!(err < 0.03, "{} vs {folded}", d.destinations);
            }
        }
    }
    assert_eq!(kept, MAX_DENIED_PER_PEER);
    assert_eq!(w.entries(), 0, "tables empty after the flush");
}

#[test]
fn a_full_queue_never_blocks_and_counts_losses_per_kind() {
    let (log, rx) = FlowLog::new(WINDOW, 3);
    let peers = peers();
    let t = peers.load();
    let peer = t.by_address(LAPTOP).unwrap();
    let now = Instant::now();
    let mut w = WorkerFlows::new(log.clone(), now, T0);
    for i in 0..10u8 {
        let dst = Ipv4Addr::new(198, 18, 1, i);
        w.denied(
            now,
            peer,
            dst.into(),
            ip_proto::ICMP,
            0,
            DenyReason::SpoofedSource,
        );
    }
    assert_eq!(log.take_first_loss(), None);
    w.flush();
    let lost = log.lost();
    assert_eq!(lost.get(RecordKind::FlowDenied), 7);
    assert_eq!(lost.get(RecordKind::FlowAllowed), 0);
    assert_eq!(lost.total(), 7);
    assert!(log.take_first_loss().is_some());
    assert_eq!(log.take_first_loss(), None, "taken once");
    assert_eq!(log.depth(), 3, "the queue holds what was not lost");
    let recs = drain(&rx);
    assert_eq!(log.depth(), 0, "taking records frees their room");
    assert_eq!(recs.len(), 3);
    let FlowRecord::Denied(d) = &recs[0] else {
        panic!()
    };
    assert_eq!((d.port, d.proto), (None, ip_proto::ICMP));
    // Drained: room again.
    log.send(recs[0].clone());
    assert_eq!(log.lost().total(), 7);
}

#[test]
fn a_device_index_taken_over_within_the_window_is_recorded_under_the_new_device() {
    let (log, rx) = FlowLog::new(WINDOW, 1024);
    let (pa, pb) = (peers(), Peers::default());
    pb.set(vec![PeerSpec {
        public_key: PublicKey::from_bytes([4; 32]).unwrap(),
        address: LAPTOP,
        rules: RuleSet::deny_all(),
        protected: Default::default(),
        mfa_until_ms: None,
        label: "device:8:bob".into(),
        persistent_keepalive: None,
    }]);
    let (ta, tb) = (pa.load(), pb.load());
    let (a, b) = (
        ta.by_address(LAPTOP).unwrap(),
        tb.by_address(LAPTOP).unwrap(),
    );
    assert_eq!(a.index, b.index, "the case needs one index for two devices");
    let now = Instant::now();
    let mut w = WorkerFlows::new(log, now, T0);
    let (d1, d2) = (Ipv4Addr::new(198, 18, 9, 1), Ipv4Addr::new(198, 18, 9, 2));
    w.denied(now, a, d1.into(), ip_proto::TCP, 22, DenyReason::NoGrant);
    w.denied(now, b, d2.into(), ip_proto::TCP, 22, DenyReason::NoGrant);
    w.flush();
    let mut named: Vec<(Option<IpAddr>, [u8; 32], String)> = drain(&rx)
        .into_iter()
        .map(|r| match r {
            FlowRecord::Denied(d) => (d.dst, d.peer.public_key.to_bytes(), (*d.peer.label).clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![
            (Some(d1.into()), [3; 32], "device:7:alice".to_string()),
            (Some(d2.into()), [4; 32], "device:8:bob".to_string()),
        ]
    );
}

#[test]
fn a_window_reaches_the_consumer_in_one_queue_operation_complete_and_in_order() {
    let (log, rx) = FlowLog::new(WINDOW, 1024);
    let peers = peers();
    let t = peers.load();
    let peer = t.by_address(LAPTOP).unwrap();
    let now = Instant::now();
    let mut w = WorkerFlows::new(Arc::clone(&log), now, T0);
    let syn = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    w.allowed(now, peer, 4, &packet::parse(&syn).unwrap(), syn.len(), true);
    // 200 destinations, the i-th seen i % 3 + 1 times and last at now + i ms; then the same
    // address as IPv4 and as IPv4-mapped IPv6 (one key each), without a port (ICMP).
    for i in 0..200u32 {
        for _ in 0..=i % 3 {
            let at = now + Duration::from_millis(u64::from(i));
            w.denied(at, peer, nth_dst(i), ip_proto::UDP, 53, DenyReason::NoGrant);
        }
    }
    let v4 = Ipv4Addr::new(198, 18, 5, 1);
    for d in [IpAddr::from(v4), IpAddr::from(v4.to_ipv6_mapped())] {
        w.denied(now, peer, d, ip_proto::ICMP, 7, DenyReason::SpoofedSource);
    }
    let sends = log.sends();
    w.flush();
    assert_eq!(log.sends(), sends + 1, "one queue operation for the window");
    assert_eq!(log.depth(), 203);
    let recs = drain(&rx);
    assert_eq!(recs.len(), 203);
    assert_eq!(log.depth(), 0);
    let FlowRecord::Allowed(a) = &recs[0] else {
        panic!("{:?}", recs[0])
    };
    assert_eq!((a.packets_out, a.window_start_ms), (1, T0));
    for (i, r) in recs[1..201].iter().enumerate() {
        let FlowRecord::Denied(d) = r else {
            panic!("{r:?}")
        };
        let i = i as u32;
        assert_eq!(d.dst, Some(nth_dst(i)), "first-seen order");
        assert_eq!(d.count, u64::from(i % 3 + 1));
        assert_eq!(
            (d.proto, d.port, d.reason),
            (ip_proto::UDP, Some(53), DenyReason::NoGrant)
        );
        assert_eq!(
            (d.first_ms, d.last_ms),
            (T0 + i64::from(i), T0 + i64::from(i))
        );
        assert_eq!((d.window_start_ms, d.destinations), (T0, 1));
        assert_eq!(d.peer.label.as_str(), "device:7:alice");
    }
    let named: Vec<(Option<IpAddr>, Option<u16>, DenyReason)> = recs[201..]
        .iter()
        .map(|r| match r {
            FlowRecord::Denied(d) => (d.dst, d.port, d.reason),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        named,
        vec![
            (Some(v4.into()), None, DenyReason::SpoofedSource),
            (
                Some(v4.to_ipv6_mapped().into()),
                None,
                DenyReason::SpoofedSource
            ),
        ]
    );
}

#[test]
fn a_window_that_does_not_fit_keeps_its_first_records_and_counts_the_rest_per_kind() {
    let (log, rx) = FlowLog::new(WINDOW, 5);
    let peers = peers();
    let t = peers.load();
    let peer = t.by_address(LAPTOP).unwrap();
    let now = Instant::now();
    let mut w = WorkerFlows::new(Arc::clone(&log), now, T0);
    let syn = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    let info = packet::parse(&syn).unwrap();
    let window = |w: &mut WorkerFlows, n: u32| {
        w.allowed(now, peer, 4, &info, syn.len(), true);
        for i in 0..n {
            w.denied(
                now,
                peer,
                nth_dst(i),
                ip_proto::TCP,
                22,
                DenyReason::NoGrant,
            );
        }
        w.flush();
    };
    // A session record takes one place; the window (1 allowed, 256 kept, 1 summary) gets 4.
    log.send(session_start(peer));
    window(&mut w, 300);
    let lost = log.lost();
    assert_eq!(lost.get(RecordKind::FlowAllowed), 0);
    assert_eq!(lost.get(RecordKind::FlowDenied), 257 - 3);
    assert_eq!(log.depth(), 5);
    // The queue is full: a second window is lost whole, counted per kind.
    window(&mut w, 2);
    let lost = log.lost();
    assert_eq!(lost.get(RecordKind::FlowAllowed), 1);
    assert_eq!(lost.get(RecordKind::FlowDenied), 257 - 3 + 2);
    assert_eq!(lost.get(RecordKind::SessionStarted), 0);
    let recs = drain(&rx);
    assert!(matches!(recs[0], FlowRecord::SessionStarted(_)));
    assert!(matches!(recs[1], FlowRecord::Allowed(_)));
    let kept: Vec<Option<IpAddr>> = recs[2..]
        .iter()
        .map(|r| match r {
            FlowRecord::Denied(d) => d.dst,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kept,
        vec![Some(nth_dst(0)), Some(nth_dst(1)), Some(nth_dst(2))],
        "the first ones"
    );
    // Drained: the next window fits whole.
    window(&mut w, 2);
    assert_eq!(drain(&rx).len(), 3);
    assert_eq!(log.lost().total(), 1 + 257 - 3 + 2);
    assert_eq!(log.depth(), 0);
}

fn session_start(peer: &Peer) -> FlowRecord {
    FlowRecord::SessionStarted(SessionStart {
        peer: PeerRef::of(peer),
        endpoint: "198.18.0.9:51820".parse().unwrap(),
        started_ms: T0,
    })
}
