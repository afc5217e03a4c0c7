//! The singleton jobs' lease between portals (issue 21), on SQLite and PostgreSQL: one holder
//! at a time, renewed by it, taken over once expired or released, the handover audited.

use crate::both_backends;
use crate::common;

use std::time::Duration;

use common::store_db::*;
use sesame::control::leader::{Leadership, JOBS_LEASE};

both_backends!(
    one_holder_at_a_time_until_it_expires_or_is_released,
    a_portal_takes_over_from_a_dead_leader_and_the_handover_is_audited,
);

async fn one_holder_at_a_time_until_it_expires_or_is_released(db: Db) {
    let s = &db.store;
    let ttl = 30_000;
    assert!(s.hold_lease("jobs", "a", ttl).await.expect("a takes"));
    assert!(!s.hold_lease("jobs", "b", ttl).await.expect("b waits"));
    db.clock.advance(Duration::from_secs(20));
    assert!(s.hold_lease("jobs", "a", ttl).await.expect("a renews"));
    db.clock.advance(Duration::from_secs(20));
    assert!(!s
        .hold_lease("jobs", "b", ttl)
        .await
        .expect("renewed: b waits"));
    // a dies: its lease expires, b takes it, a is refused from then on.
    db.clock.advance(Duration::from_secs(31));
    assert!(s.hold_lease("jobs", "b", ttl).await.expect("b takes over"));
    assert!(!s
        .hold_lease("jobs", "a", ttl)
        .await
        .expect("a is back: refused"));
    assert_eq!(
        s.lease_holder("jobs")
            .await
            .expect("q")
            .map(|(h, _)| h)
            .as_deref(),
        Some("b")
    );
    // A clean exit: the next one need not wait.
    s.release_lease("jobs", "a")
        .await
        .expect("not a's: nothing");
    assert!(!s.hold_lease("jobs", "a", ttl).await.expect("still b's"));
    s.release_lease("jobs", "b").await.expect("release");
    assert!(s.hold_lease("jobs", "a", ttl).await.expect("a at once"));
    // Another lease is another name.
    assert!(s.hold_lease("other", "b", ttl).await.expect("other lease"));
}

async fn a_portal_takes_over_from_a_dead_leader_and_the_handover_is_audited(db: Db) {
    let s = &db.store;
    let ttl = Duration::from_secs(10);
    let one = Leadership::new("/etc/sesame/portal-1.toml");
    let two = Leadership::new("/etc/sesame/portal-2.toml");
    assert!(one.try_lead(s, ttl, None).await);
    assert!(!two.try_lead(s, ttl, None).await);
    assert!(one.is_leader() && !two.is_leader());
    // The first start is not a handover.
    let handovers = || async { audit_of(s, "jobs.leader_changed").await };
    assert!(handovers().await.is_empty());
    // Portal 1 stops renewing (killed): within the lease's length, portal 2 leads.
    db.clock.advance(ttl + Duration::from_millis(1));
    assert!(two.try_lead(s, ttl, None).await);
    let events = handovers().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].details["holder"], two.holder());
    assert_eq!(events[0].details["previous"], one.holder());
    assert_eq!(events[0].details["leading"], true);
    // Portal 1 comes back: refused, and it knows it has lost (audited once).
    assert!(!one.try_lead(s, ttl, None).await);
    assert!(!one.is_leader());
    assert_eq!(handovers().await.len(), 2);
    assert!(!one.try_lead(s, ttl, None).await);
    assert_eq!(handovers().await.len(), 2, "a loss is audited once");
    // Portal 2 exits cleanly: portal 1 takes over at its next try, without waiting.
    two.release(s).await;
    assert!(one.try_lead(s, ttl, None).await);
    assert_eq!(
        s.lease_holder(JOBS_LEASE).await.expect("q").map(|(h, _)| h),
        Some(one.holder().to_string())
    );
}
