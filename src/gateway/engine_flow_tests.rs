//! Session and flow records of the engine: what a real boringtun laptop's traffic produces.

use super::*;
use crate::gateway::flowlog::{DenyReason, FlowReceiver, FlowRecord, RecordKind};
use crate::ip_proto;

fn audited(capacity: usize) -> (Setup, FlowReceiver, Arc<FlowLog>) {
    let (log, rx) = FlowLog::new(Duration::from_secs(60), capacity);
    (setup_with(Some(Arc::clone(&log))), rx, log)
}

impl Setup {
    fn flush_flows(&mut self) {
        self.flows.as_mut().unwrap().flush();
    }
}

/// Everything queued, turned into events by the consumer and appended to a new SQLite store.
async fn drain_into_store(
    log: &Arc<FlowLog>,
    rx: FlowReceiver,
) -> (tempfile::TempDir, crate::store::Store) {
    use crate::control::flow_audit::{fixed_policy, FlowAudit};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let store = crate::store::Store::connect(&url).await.unwrap();
    let mut consumer = FlowAudit::new(
        Arc::clone(log),
        rx,
        fixed_policy(crate::policy::Policy::default()),
    );
    let (events, drained) = consumer.poll(crate::time::now_ms(), true);
    assert!(drained);
    store.append_audit_batch(&events).await.unwrap();
    (dir, store)
}

#[test]
fn a_session_and_its_allowed_and_denied_flows_are_recorded() {
    let (mut s, rx, _log) = audited(1024);
    s.handshake();
    let recs: Vec<FlowRecord> = rx.try_iter().collect();
    let [FlowRecord::SessionStarted(start)] = &recs[..] else {
        panic!("{recs:?}")
    };
    assert_eq!(start.endpoint, s.endpoint);
    assert_eq!(start.peer.public_key, s.laptop_key);
    assert_eq!(start.peer.label.as_str(), "laptop1");
    // A second handshake (rekey) of the same session starts nothing new.
    s.handshake();
    assert_eq!(rx.try_iter().count(), 0);

    let syn = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    let ping = build::echo(LAPTOP, PAIE, 5, false);
    assert_eq!(s.send_ip(&syn).tun.len(), 1);
    assert_eq!(s.send_ip(&ping).tun.len(), 1);
    let synack = build::tcp(PAIE, LAPTOP, 443, 40000, 0x12);
    assert_eq!(s.tun_in(&synack).net.len(), 1);
    // Denied: another port, another host, a spoofed source; a host opening to the laptop.
    assert!(s
        .send_ip(&build::tcp(LAPTOP, PAIE, 40000, 22, 0x02))
        .tun
        .is_empty());
    assert!(s
        .send_ip(&build::tcp(LAPTOP, PAIE, 40001, 22, 0x02))
        .tun
        .is_empty());
    assert!(s
        .send_ip(&build::tcp(LAPTOP, RH, 40000, 443, 0x02))
        .tun
        .is_empty());
    let spoofed = build::tcp(Ipv4Addr::new(100, 64, 0, 9), PAIE, 40000, 443, 0x02);
    assert!(s.send_ip(&spoofed).tun.is_empty());
    assert!(s
        .tun_in(&build::tcp(PAIE, LAPTOP, 5555, 3389, 0x02))
        .net
        .is_empty());
    assert_eq!(rx.try_iter().count(), 0, "flows wait for the window's end");

    s.flush_flows();
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    for r in rx.try_iter() {
        match r {
            FlowRecord::Allowed(a) => allowed.push(a),
            FlowRecord::Denied(d) => denied.push(d),
            other => panic!("{other:?}"),
        }
    }
    let [a] = &allowed[..] else {
        panic!("{allowed:?}")
    };
    assert_eq!(a.resource, PAIE_ID);
    assert_eq!((a.packets_out, a.packets_in), (2, 1));
    assert_eq!(a.bytes_out, (syn.len() + ping.len()) as u64);
    assert_eq!(a.bytes_in, synack.len() as u64);
    assert_eq!(a.ports, vec![443]);
    assert_eq!(
        a.protocols.iter().collect::<Vec<_>>(),
        vec![ip_proto::ICMP, ip_proto::TCP]
    );
    denied.sort_by_key(|d| (d.reason.as_str(), d.dst, d.port));
    let got: Vec<_> = denied
        .iter()
        .map(|d| (d.reason, d.dst.unwrap(), d.port, d.count))
        .collect();
    assert_eq!(
        got,
        vec![
            (DenyReason::NoGrant, PAIE.into(), Some(22), 2),
            (DenyReason::NoGrant, RH.into(), Some(443), 1),
            (DenyReason::SpoofedSource, PAIE.into(), Some(443), 1),
            (DenyReason::UnsolicitedInbound, PAIE.into(), Some(3389), 1),
        ]
    );

    // The peer leaves: its session ends with its counts (rx = every decrypted packet).
    let ended = s
        .engine
        .peers
        .remove_ending(&s.laptop_key)
        .unwrap()
        .unwrap();
    assert_eq!(ended.reason, EndReason::Removed);
    assert_eq!(ended.endpoint, s.endpoint);
    assert_eq!((ended.rx_packets, ended.tx_packets), (6, 1));
    assert_eq!(ended.tx_bytes, synack.len() as u64);
    assert!(ended.ended_ms >= ended.started_ms);
}

#[test]
fn stopping_ends_open_sessions_once() {
    let (mut s, rx, _log) = audited(16);
    s.handshake();
    assert_eq!(rx.try_iter().count(), 1);
    s.engine.end_sessions(EndReason::GatewayStopped);
    let recs: Vec<FlowRecord> = rx.try_iter().collect();
    let [FlowRecord::SessionEnded(e)] = &recs[..] else {
        panic!("{recs:?}")
    };
    assert_eq!(e.reason, EndReason::GatewayStopped);
    s.engine.end_sessions(EndReason::GatewayStopped);
    assert_eq!(rx.try_iter().count(), 0);
}

#[test]
fn without_flow_auditing_nothing_is_recorded_and_traffic_flows() {
    let mut s = setup();
    s.handshake();
    assert!(s.engine.flow_log().is_none());
    let syn = build::tcp(LAPTOP, PAIE, 40000, 443, 0x02);
    assert_eq!(s.send_ip(&syn).tun.len(), 1);
    assert!(s.flows.is_none());
}

/// A flood of denied destinations against a tiny queue: records are lost and counted, allowed
/// traffic still goes through, and once drained the writer stores one `audit.overflow`.
#[tokio::test]
async fn a_flood_of_denied_flows_loses_records_not_packets() {
    use crate::store::AuditFilter;

    let (mut s, rx, log) = audited(8);
    s.handshake();
    let mut forwarded = 0;
    for window in 0..3u32 {
        for i in 0..400u32 {
            let dst = Ipv4Addr::from(0xC612_1000 + window * 1000 + i);
            assert!(s
                .send_ip(&build::udp(LAPTOP, dst, 999, 53, b"q"))
                .tun
                .is_empty());
            if i % 40 == 0 {
                let syn = build::tcp(LAPTOP, PAIE, 40000 + i as u16, 443, 0x02);
                forwarded += s.send_ip(&syn).tun.len();
            }
        }
        s.flush_flows();
    }
    assert_eq!(forwarded, 30, "every allowed packet forwarded");
    let lost = log.lost();
    // Per window: 1 allowed (sent first) + 256 kept + 1 summary = 258 records; the queue took
    // 8 in all: the session start, the first window's allowed record and 6 denied.
    assert_eq!(lost.total(), 3 * 258 - 7);
    assert_eq!(lost.get(RecordKind::FlowDenied), 3 * 257 - 6);
    assert_eq!(lost.get(RecordKind::FlowAllowed), 2);

    let (_dir, store) = drain_into_store(&log, rx).await;
    let stored = store
        .list_audit(&AuditFilter {
            action: Some("audit.overflow".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].details["lost"]["flow.denied"],
        serde_json::json!(3 * 257 - 6)
    );
    assert_eq!(stored[0].details["lost"]["flow.allowed"], 2);
    assert!(store.verify_audit().await.is_ok());
}
