//! Tests of the portal's failure limiter: windows, keys, escalation, device tokens, memory.

use super::*;
use std::net::Ipv4Addr;

const IP_A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const IP_B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

/// A distinct IPv4 source in 198.18.0.0/15 (never sent anything: counters only).
fn source(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC612_0000u32 + (i % 131_072)))
}

#[test]
fn sixth_attempt_within_a_minute_is_refused_then_allowed_after_the_window() {
    let l = FailureLimiter::new();
    let t0 = Instant::now();
    for i in 0..5 {
        assert!(l.check("marie", IP_A, t0).is_ok(), "attempt {i}");
        l.record_failure("marie", IP_A, t0 + Duration::from_secs(i));
    }
    let wait = l
        .check("marie", IP_A, t0 + Duration::from_secs(10))
        .expect_err("6th refused");
    assert_eq!(wait.retry_after, Duration::from_secs(50));
    assert!(!wait.account_locked);
    // Every counter over the limit is named (audited in auth.rate_limited).
    assert_eq!(
        wait.keys,
        [
            format!("ip:{IP_A}"),
            format!("pair:marie@{IP_A}"),
            "user:marie".to_string()
        ]
    );
    assert!(l.check("marie", IP_A, t0 + Duration::from_secs(61)).is_ok());
}

#[test]
fn limits_apply_per_account_per_source_and_spellings_share_the_account() {
    let l = FailureLimiter::new();
    let t0 = Instant::now();
    for name in [
        "Marie",
        " marie ",
        "ACADEMIE\\marie",
        "marie@academie.test",
        "MARIE",
    ] {
        l.record_failure(name, IP_A, t0);
    }
    // Same account from another address: refused (five spellings, one account).
    assert!(l.check("marie", IP_B, t0).is_err());
    // Another account from the same address: refused.
    assert!(l.check("paul", IP_A, t0).is_err());
    // Another account from another address: fine.
    assert!(l.check("paul", IP_B, t0).is_ok());
}

#[test]
fn ipv6_sources_count_per_64() {
    let l = FailureLimiter::new();
    let t0 = Instant::now();
    for i in 1..=5u16 {
        let ip: IpAddr = format!("2001:db8:0:7::{i:x}").parse().unwrap();
        l.record_failure(&format!("user{i}"), ip, t0);
    }
    let same_64: IpAddr = "2001:db8:0:7:ffff::1".parse().unwrap();
    let other_64: IpAddr = "2001:db8:0:8::1".parse().unwrap();
    assert!(l.check("someone", same_64, t0).is_err());
    assert!(l.check("someone", other_64, t0).is_ok());
}

#[test]
fn success_clears_the_account_minute_but_not_the_source() {
    let l = FailureLimiter::new();
    let t0 = Instant::now();
    for _ in 0..5 {
        l.record_failure("marie", IP_A, t0);
    }
    l.record_success("marie");
    assert!(l.check("marie", IP_B, t0).is_ok());
    assert!(l.check("marie", IP_A, t0).is_err());
}

#[test]
fn account_keys_are_canonical_and_bounded() {
    assert_eq!(account_key("  MDupont "), "mdupont");
    assert_eq!(account_key("ACAD\\MDupont"), "mdupont");
    assert_eq!(account_key("mdupont@Academie.TEST"), "mdupont");
    let huge = "é".repeat(8192);
    let k = account_key(&huge);
    assert!(k.len() <= MAX_ACCOUNT_KEY, "{}", k.len());
    assert!(k.starts_with('é'));
}

#[test]
fn a_hundred_failures_in_an_hour_lock_the_account_except_for_its_known_device() {
    let l = FailureLimiter::new();
    let t0 = Instant::now();
    // Marie logged in once from her laptop: it holds a device token.
    let token = l.issue_device_token("mdupont");
    // An attacker spreads 100 guesses over 50 minutes and 100 sources: no minute limit hit.
    for i in 0..100u32 {
        let at = t0 + Duration::from_secs(30 * u64::from(i));
        assert!(
            l.check("mdupont", source(1000 + i), at).is_ok(),
            "guess {i}"
        );
        l.record_failure("MDupont", source(1000 + i), at);
    }
    let now = t0 + Duration::from_secs(30 * 100);
    // Locked for 15 minutes from any source without the device token...
    let r = l
        .check_device("mdupont", source(5), None, now)
        .expect_err("locked");
    assert!(r.account_locked);
    assert_eq!(r.retry_after, LOCKOUT - Duration::from_secs(30));
    // ...a forged token or another account's token does not help...
    let other = l.issue_device_token("sbernard");
    assert!(l
        .check_device("mdupont", source(5), Some(&other), now)
        .is_err());
    assert!(l
        .check_device("mdupont", source(5), Some("AAAA"), now)
        .is_err());
    let mut forged = token.clone();
    forged.replace_range(..1, if token.starts_with('A') { "B" } else { "A" });
    assert!(l
        .check_device("mdupont", source(5), Some(&forged), now)
        .is_err());
    // ...but Marie's laptop still gets in.
    assert!(l
        .check_device("mdupont", source(6), Some(&token), now)
        .is_ok());
    // After the lockout the account is open again.
    assert!(l.check("mdupont", source(5), now + LOCKOUT).is_ok());
}

#[test]
fn a_flood_of_huge_usernames_from_many_sources_stays_bounded() {
    let l = FailureLimiter::new();
    let t0 = Instant::now();
    let mut name = "x".repeat(16 * 1024);
    for i in 0..100_000u32 {
        // 16 KiB each, all different.
        name.replace_range(..10, &format!("{i:010}"));
        l.record_failure(&name, source(i), t0 + Duration::from_millis(u64::from(i)));
    }
    // Three capped tables of short keys: a few MiB at most.
    assert!(l.entries() <= 3 * MAX_ENTRIES, "{}", l.entries());
    let bytes_per_entry = MAX_ACCOUNT_KEY + 128;
    assert!(l.entries() * bytes_per_entry < 32 * 1024 * 1024);
    // A legitimate user from an untouched source is not held back.
    let after = t0 + Duration::from_secs(100);
    assert!(l
        .check("mdupont", "198.19.255.254".parse().unwrap(), after)
        .is_ok());
}
