//! The failure counts several portals share (`login_failures`, issue 21), on SQLite and
//! PostgreSQL, judged by the limiter's own rules (`service::ratelimit`) with a hand-moved clock:
//! the short window, a success's reset, the hourly lock and its known-device bypass, pruning.

use crate::both_backends;
use crate::common;

use std::net::IpAddr;
use std::time::Duration;

use common::store_db::*;
use sesame::service::ratelimit::{
    shared_account_key, shared_keys, FailureLimiter, ACCOUNT_HOURLY_FAILURES,
};
use sesame::store::{FailureCount, Store};

both_backends!(
    failures_count_in_their_window_and_expired_rows_are_pruned,
    a_hundred_failures_within_an_hour_lock_the_account_but_for_known_devices,
);

/// Counts one failure of `user` from `ip` as a portal does; the account's row after it.
async fn fail(store: &Store, limiter: &FailureLimiter, user: &str, ip: IpAddr) -> FailureCount {
    let keys = shared_keys(user, ip);
    let kept = limiter.kept_until(store.now_ms());
    let rows: Vec<(&str, i64)> = keys.iter().map(String::as_str).zip(kept).collect();
    let counts = store
        .count_failure(&rows, limiter.windows())
        .await
        .expect("count");
    assert_eq!(counts.len(), 3, "{counts:?}");
    let account = counts
        .into_iter()
        .find(|c| c.key == keys[2])
        .expect("account row");
    if let Some(until) = limiter.lock_due(&account, store.now_ms()) {
        store.lock_failures(&keys[2], until).await.expect("lock");
    }
    account
}

async fn judge(
    store: &Store,
    limiter: &FailureLimiter,
    user: &str,
    ip: IpAddr,
    known_device: bool,
) -> Result<sesame::service::ratelimit::Admitted, sesame::service::ratelimit::Refusal> {
    let keys = shared_keys(user, ip);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let counts = store.failure_counts(&refs).await.expect("read");
    limiter.judge_shared(&keys, &counts, known_device, store.now_ms())
}

async fn failures_count_in_their_window_and_expired_rows_are_pruned(db: Db) {
    let (s, limiter) = (&db.store, FailureLimiter::new());
    let ip: IpAddr = "198.18.8.1".parse().expect("ip");
    for n in 1..=4 {
        assert_eq!(fail(s, &limiter, "mdupont", ip).await.short_count, n);
        db.clock.advance(Duration::from_secs(5));
    }
    let seen = judge(s, &limiter, "MDupont", ip, false)
        .await
        .expect("4: let in");
    assert!(seen.account_failures);
    // A success forgets the account's short count, not the source's or the pair's.
    s.forget_short_failures(&shared_account_key("mdupont"))
        .await
        .expect("forget");
    let seen = judge(s, &limiter, "mdupont", ip, false)
        .await
        .expect("let in");
    assert!(!seen.account_failures);
    assert_eq!(fail(s, &limiter, "mdupont", ip).await.short_count, 1);
    // The fifth on the source and the pair: refused for the rest of the minute, by both keys.
    let refused = judge(s, &limiter, "ACADEMIE\\mdupont", ip, false)
        .await
        .expect_err("5 failures");
    assert_eq!(
        refused.keys,
        ["ip:198.18.8.1", "pair:mdupont@198.18.8.1"],
        "{refused:?}"
    );
    assert_eq!(refused.retry_after, Duration::from_secs(40));
    assert!(!refused.account_locked);
    // Another account from another address is not concerned.
    let other: IpAddr = "2001:db8::1".parse().expect("ip");
    judge(s, &limiter, "tleroux", other, false)
        .await
        .expect("other keys");
    // The window ends 60 s after its first failure; the next failure starts a new one.
    db.clock.advance(Duration::from_secs(40));
    judge(s, &limiter, "mdupont", ip, false)
        .await
        .expect("a new minute");
    let account = fail(s, &limiter, "mdupont", ip).await;
    assert_eq!((account.short_count, account.long_count), (1, 6));
    // Past the hour nothing is left to enforce: pruned (three keys, one failure's worth).
    db.clock.advance(Duration::from_secs(3601));
    assert_eq!(s.prune_failures().await.expect("prune"), 3);
    let keys = shared_keys("mdupont", ip);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(s.failure_counts(&refs).await.expect("read").is_empty());
}

async fn a_hundred_failures_within_an_hour_lock_the_account_but_for_known_devices(db: Db) {
    let (s, limiter) = (&db.store, FailureLimiter::new());
    // Four a minute, each from a new address: never over the minute's limit.
    for n in 0..ACCOUNT_HOURLY_FAILURES {
        let ip: IpAddr = format!("198.18.{}.{}", 20 + n / 200, 1 + n % 200)
            .parse()
            .expect("ip");
        judge(s, &limiter, "mdupont", ip, false)
            .await
            .unwrap_or_else(|r| panic!("failure {n} refused: {r:?}"));
        fail(s, &limiter, "mdupont", ip).await;
        db.clock.advance(Duration::from_secs(15));
    }
    let from: IpAddr = "198.18.30.1".parse().expect("ip");
    let refused = judge(s, &limiter, "mdupont", from, false)
        .await
        .expect_err("locked");
    assert!(refused.account_locked, "{refused:?}");
    assert_eq!(refused.keys, ["user:mdupont"]);
    assert_eq!(refused.retry_after, Duration::from_secs(15 * 60 - 15));
    // The owner's known browser passes the account's lock.
    judge(s, &limiter, "mdupont", from, true)
        .await
        .expect("known device");
    // Failures during the lock do not extend it; it ends 15 minutes after the hundredth.
    fail(s, &limiter, "mdupont", from).await;
    db.clock.advance(Duration::from_secs(15 * 60));
    judge(
        s,
        &limiter,
        "mdupont",
        "198.18.30.2".parse().expect("ip"),
        false,
    )
    .await
    .expect("lock over");
}
