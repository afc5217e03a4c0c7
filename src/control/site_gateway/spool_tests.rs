use super::*;
use crate::audit::{Action, AuditContext};

fn ev(n: i64) -> NewAuditEvent {
    NewAuditEvent::new(
        Action::TunnelSessionStarted,
        &AuditContext::new("user1", Some("198.18.0.9".into())),
        format!("device:{n}"),
    )
    .details(json!({"device_id": n, "public_key": "k", "peer": "device:1:user1"}))
}

#[test]
fn records_survive_a_restart_and_leave_once_delivered_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 100).unwrap();
    spool.append([ev(1), ev(2)]);
    spool.append([ev(3)]);
    drop(spool);
    let spool = Spool::open(dir.path(), 100).unwrap();
    let all = spool.peek(10);
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[0].device_id, Some(1));
    assert_eq!(all[0].public_key.as_deref(), Some("k"));
    assert_eq!(all[0].action, "tunnel.session_started");
    assert_eq!(all[0].details["source_ip"], "198.18.0.9");
    spool.delivered(2).unwrap();
    assert_eq!(
        spool.peek(10).iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![3]
    );
    spool.delivered(3).unwrap();
    drop(spool);
    // Sequence numbers keep increasing after everything was delivered and the gateway restarted:
    // the portal skips the seqs it already stored.
    let spool = Spool::open(dir.path(), 100).unwrap();
    assert!(spool.is_empty());
    spool.append([ev(4)]);
    assert_eq!(spool.peek(1)[0].seq, 4);
}

#[test]
fn over_the_bound_the_newest_are_dropped_then_one_overflow_record_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 3).unwrap();
    spool.append((1..=5).map(ev));
    assert_eq!(spool.len(), 3);
    assert_eq!(spool.dropped.load(Ordering::Relaxed), 2);
    let kept: Vec<_> = spool.peek(10).iter().map(|r| r.device_id).collect();
    assert_eq!(kept, vec![Some(1), Some(2), Some(3)]);
    spool.delivered(1).unwrap();
    spool.append([ev(6)]);
    let recs = spool.peek(10);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[2].action, "audit.overflow");
    assert_eq!(recs[2].details["dropped"], 2);
    // No room left for 6: dropped and counted for the next overflow record.
    assert_eq!(spool.dropped.load(Ordering::Relaxed), 3);
}
