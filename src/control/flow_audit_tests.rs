//! The consumer: records of several workers merged per window, events in the agreed shapes.

use std::net::SocketAddr;

use super::*;
use crate::gateway::flowlog::{EndReason, ProtoSet, RecordKind};
use crate::policy::Resource;

const T0: i64 = 1_767_603_600_000;
const WINDOW: Duration = Duration::from_secs(1);

fn policy() -> Policy {
    let res = |name: &str| Resource {
        name: name.into(),
        site: "rectorat".into(),
        description: String::new(),
        rules: vec!["198.18.10.10/32 tcp:443".parse().unwrap()],
    };
    Policy::new([res("paie"), res("rh")])
}

fn device() -> PeerRef {
    PeerRef {
        public_key: PublicKey::from_bytes([5; 32]).expect("key"),
        label: Arc::new("device:12:alice".into()),
    }
}

fn allowed(first: i64, ports: Vec<u16>, packets: u64) -> AllowedFlow {
    let mut protocols = ProtoSet::default();
    protocols.insert(ip_proto::TCP);
    AllowedFlow {
        peer: device(),
        resource: policy().resource_id("paie").unwrap(),
        window_start_ms: T0,
        first_ms: first,
        last_ms: first + 10,
        packets_out: packets,
        bytes_out: packets * 100,
        packets_in: packets,
        bytes_in: packets * 1000,
        protocols,
        ports,
        ports_truncated: false,
    }
}

fn denied(dst: &str, count: u64) -> DeniedFlow {
    DeniedFlow {
        peer: device(),
        dst: Some(dst.parse().unwrap()),
        proto: ip_proto::TCP,
        port: Some(22),
        reason: DenyReason::NoGrant,
        count,
        window_start_ms: T0,
        first_ms: T0 + 5,
        last_ms: T0 + 7,
        destinations: 1,
    }
}

#[test]
fn two_workers_records_of_one_window_become_one_event_when_the_window_is_over() {
    let (log, rx) = FlowLog::new(WINDOW, 64);
    let mut c = FlowAudit::new(log.clone(), rx, fixed_policy(policy()));
    log.send(FlowRecord::Allowed(allowed(T0 + 100, vec![443], 2)));
    log.send(FlowRecord::Allowed(allowed(T0 + 50, vec![8443, 443], 3)));
    log.send(FlowRecord::Denied(denied("198.18.10.10", 1)));
    log.send(FlowRecord::Denied(denied("198.18.10.10", 4)));
    // Window [T0, T0+1s) is still within its grace period.
    let (events, drained) = c.poll(T0 + 1_500, false);
    assert!(drained);
    assert!(events.is_empty(), "{events:?}");
    let (events, _) = c.poll(T0 + 2_000, false);
    assert_eq!(events.len(), 2, "{events:?}");
    // No session record seen for this device: no source address.
    assert_eq!(events[0].source_ip, None);
    let a = &events[0];
    assert_eq!(a.action, Action::FlowAllowed);
    assert_eq!(
        (a.actor.as_str(), a.target.as_str()),
        ("alice", "device:12")
    );
    assert_eq!(a.outcome, Outcome::Success);
    assert_eq!(
        a.details,
        json!({
            "device_id": 12, "username": "alice", "peer": "device:12:alice",
            "resource": "paie",
            "window_start": "2026-01-05T09:00:00.000Z",
            "first_seen": "2026-01-05T09:00:00.050Z",
            "last_seen": "2026-01-05T09:00:00.110Z",
            "packets": 10, "bytes": 5500,
            "packets_in": 5, "bytes_in": 5000, "packets_out": 5, "bytes_out": 500,
            "protocols": ["tcp"], "ports": [443, 8443], "ports_truncated": false,
        })
    );
    let d = &events[1];
    assert_eq!(d.action, Action::FlowDenied);
    assert_eq!(d.outcome, Outcome::Denied);
    assert_eq!(
        d.details,
        json!({
            "device_id": 12, "username": "alice", "peer": "device:12:alice",
            "dst": "198.18.10.10", "protocol": "tcp", "port": 22, "count": 5,
            "reason": "no_grant",
            "window_start": "2026-01-05T09:00:00.000Z",
            "first_seen": "2026-01-05T09:00:00.005Z",
            "last_seen": "2026-01-05T09:00:00.007Z",
        })
    );
}

#[test]
fn flows_carry_the_laptop_address_of_the_devices_session() {
    let (log, rx) = FlowLog::new(WINDOW, 8);
    let mut c = FlowAudit::new(log.clone(), rx, fixed_policy(policy()));
    log.send(FlowRecord::SessionStarted(SessionStart {
        peer: device(),
        endpoint: "198.18.0.7:40000".parse().unwrap(),
        started_ms: T0,
    }));
    log.send(FlowRecord::Allowed(allowed(T0 + 100, vec![443], 1)));
    log.send(FlowRecord::Denied(denied("198.18.10.10", 1)));
    let (events, _) = c.poll(T0 + 5_000, false);
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!(e.source_ip.as_deref(), Some("198.18.0.7"), "{e:?}");
    }
}

#[test]
fn the_cap_holds_across_workers_and_the_summary_counts_destinations() {
    let (log, rx) = FlowLog::new(WINDOW, 2 * MAX_DENIED_PER_PEER + 8);
    let mut c = FlowAudit::new(log.clone(), rx, fixed_policy(policy()));
    // Two workers each saw MAX distinct destinations (overlapping by half) and one summary.
    for w in 0..2u32 {
        for i in 0..MAX_DENIED_PER_PEER as u32 {
            let ip = std::net::Ipv4Addr::from(0xC612_0000 + w * 128 + i);
            log.send(FlowRecord::Denied(denied(&ip.to_string(), 1)));
        }
        let mut summary = denied("198.18.0.1", 10);
        summary.dst = None;
        summary.port = None;
        summary.destinations = 10;
        log.send(FlowRecord::Denied(summary));
    }
    let (events, _) = c.poll(T0 + 60_000, false);
    assert_eq!(events.len(), MAX_DENIED_PER_PEER + 1);
    let star: Vec<_> = events.iter().filter(|e| e.details["dst"] == "*").collect();
    assert_eq!(star.len(), 1);
    // 128 destinations beyond the cap from the second worker, plus both summaries.
    assert_eq!(star[0].details["count"], 128 + 20);
    assert_eq!(star[0].details["destinations"], 128 + 20);
    assert_eq!(star[0].details["port"], Value::Null);
    let overlap: Vec<_> = events.iter().filter(|e| e.details["count"] == 2).collect();
    assert_eq!(overlap.len(), 128);
}

#[test]
fn sessions_are_written_at_once_with_endpoint_and_reason() {
    let (log, rx) = FlowLog::new(WINDOW, 8);
    let mut c = FlowAudit::new(log.clone(), rx, fixed_policy(policy()));
    let endpoint: SocketAddr = "198.18.0.2:40000".parse().unwrap();
    log.send(FlowRecord::SessionStarted(SessionStart {
        peer: device(),
        endpoint,
        started_ms: T0,
    }));
    let static_peer = PeerRef {
        public_key: PublicKey::from_bytes([6; 32]).expect("key"),
        label: Arc::new("static:supervision".into()),
    };
    log.send(FlowRecord::SessionEnded(SessionEnd {
        peer: static_peer,
        endpoint,
        started_ms: T0,
        ended_ms: T0 + 61_500,
        rx_bytes: 10,
        rx_packets: 1,
        tx_bytes: 20,
        tx_packets: 2,
        reason: EndReason::Revoked,
    }));
    let (events, _) = c.poll(T0, false);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].action, Action::TunnelSessionStarted);
    assert_eq!(events[0].source_ip.as_deref(), Some("198.18.0.2"));
    assert_eq!(
        events[0].details,
        json!({
            "device_id": 12, "username": "alice", "peer": "device:12:alice",
            "public_key": crate::key::encode_base64(&[5; 32]),
            "endpoint": "198.18.0.2:40000", "started_at": "2026-01-05T09:00:00.000Z",
        })
    );
    let e = &events[1];
    assert_eq!(
        (e.actor.as_str(), e.target.as_str()),
        ("system", "peer:supervision")
    );
    assert_eq!(e.details["device_id"], Value::Null);
    assert_eq!(e.details["duration_ms"], 61_500);
    assert_eq!(e.details["ended_at"], "2026-01-05T09:01:01.500Z");
    assert_eq!(e.details["reason"], "revoked");
    assert_eq!(
        (&e.details["rx_bytes"], &e.details["tx_packets"]),
        (&json!(10), &json!(2))
    );
}

#[test]
fn losses_are_reported_once_the_queue_drains() {
    let (log, rx) = FlowLog::new(WINDOW, 2);
    let mut c = FlowAudit::new(log.clone(), rx, fixed_policy(policy()));
    for i in 0..5 {
        log.send(FlowRecord::Denied(denied(&format!("198.18.1.{i}"), 1)));
    }
    log.send(FlowRecord::Allowed(allowed(T0, vec![443], 1)));
    assert_eq!(log.lost().get(RecordKind::FlowDenied), 3);
    assert_eq!(log.lost().get(RecordKind::FlowAllowed), 1);
    let (events, drained) = c.poll(T0 + 10_000, false);
    assert!(drained);
    let o = events
        .iter()
        .find(|e| e.action == Action::AuditOverflow)
        .expect("overflow event");
    assert_eq!(
        (o.actor.as_str(), o.target.as_str()),
        ("system", "audit_queue")
    );
    assert_eq!(o.outcome, Outcome::Failure);
    assert_eq!(
        o.details["lost"],
        json!({"flow.allowed": 1, "flow.denied": 3, "tunnel.session_started": 0, "tunnel.session_ended": 0, "mfa.window_closed": 0})
    );
    assert_eq!(o.details["until"], "2026-01-05T09:00:10.000Z");
    // Reported once; new losses make a new event with only the new counts.
    let (events, _) = c.poll(T0 + 11_000, false);
    assert!(events.iter().all(|e| e.action != Action::AuditOverflow));
    for i in 0..3 {
        log.send(FlowRecord::Denied(denied(&format!("198.18.2.{i}"), 1)));
    }
    let (events, _) = c.poll(T0 + 12_000, false);
    let o = events
        .iter()
        .find(|e| e.action == Action::AuditOverflow)
        .expect("second overflow event");
    assert_eq!(o.details["lost"]["flow.denied"], 1);
}

/// The database refuses writes for a while (another connection holds SQLite's write lock past
/// the store's busy timeout): the events wait and are written once it accepts again.
#[tokio::test]
async fn events_the_database_refuses_are_kept_and_written_later() {
    use sqlx::Connection as _;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (log, rx) = FlowLog::new(WINDOW, 8);
    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let (finish_tx, finish_rx) = watch::channel(false);
    let task = tokio::spawn(
        FlowAudit::new(log.clone(), rx, fixed_policy(policy()))
            .run(Destination::Store(store.clone()), finish_rx),
    );
    log.send(FlowRecord::SessionStarted(SessionStart {
        peer: device(),
        endpoint: "198.18.0.2:40000".parse().unwrap(),
        started_ms: T0,
    }));
    // Past the store's 5 s busy timeout: the first write attempt has failed.
    tokio::time::sleep(Duration::from_secs(7)).await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);
    let count = || async {
        store
            .list_audit(&crate::store::AuditFilter {
                action: Some("tunnel.session_started".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    let mut written = 0;
    for _ in 0..50 {
        written = count().await;
        if written > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(written, 1);
    finish_tx.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(count().await, 1, "written once");
}

#[test]
fn a_window_the_gateway_closed_is_written_at_once_and_mfa_denials_say_so() {
    use crate::gateway::flowlog::{WindowClosed, WindowEnd};
    let (log, rx) = FlowLog::new(WINDOW, 8);
    let mut c = FlowAudit::new(log.clone(), rx, fixed_policy(policy()));
    log.send(FlowRecord::WindowClosed(WindowClosed {
        peer: device(),
        until_ms: T0 + 36_000_000,
        closed_ms: T0 + 1_800_000,
        reason: WindowEnd::Idle,
        flows_cut: 2,
    }));
    let mut d = denied("198.18.10.10", 4);
    d.reason = DenyReason::MfaRequired;
    d.port = Some(443);
    log.send(FlowRecord::Denied(d));
    let (events, _) = c.poll(T0 + 60_000, false);
    assert_eq!(events.len(), 2, "{events:?}");
    let w = &events[0];
    assert_eq!(w.action, Action::MfaWindowClosed);
    assert_eq!(
        (w.actor.as_str(), w.target.as_str()),
        ("system", "device:12")
    );
    assert_eq!(w.outcome, Outcome::Success);
    assert_eq!(
        w.details,
        json!({
            "device_id": 12, "username": "alice", "peer": "device:12:alice",
            "public_key": crate::key::encode_base64(&[5; 32]),
            "until": "2026-01-05T19:00:00.000Z", "closed_at": "2026-01-05T09:30:00.000Z",
            "reason": "idle", "flows_cut": 2,
        })
    );
    assert_eq!(events[1].action, Action::FlowDenied);
    assert_eq!(events[1].details["reason"], "mfa_required");
    assert_eq!(events[1].details["port"], 443);
}
