//! Brute-force protection: failed logins and enrolments counted per username and per source IP.
//!
//! In memory, sliding window: after [`MAX_FAILURES`] failures within [`WINDOW`], further attempts
//! for that username or address are refused (429) until the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures allowed within the window; the next attempt is refused.
pub const MAX_FAILURES: usize = 5;
/// Length of the sliding window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked keys, expired entries are pruned before inserting.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::User(u) => write!(f, "user:{u}"),
            Key::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// An attempt refused: how long to wait, and which counters are over the limit
/// (`user:<name>`, `ip:<address>`), as audited in `auth.rate_limited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    pub keys: Vec<String>,
}

/// Failure counters keyed by username (case-insensitive) and by source address.
#[derive(Debug)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
    max_failures: usize,
    window: Duration,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::with_limits(MAX_FAILURES, WINDOW)
    }
}

impl FailureLimiter {
    /// The production limits: [`MAX_FAILURES`] per [`WINDOW`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Other limits (tests that send many bad inputs from one address).
    pub fn with_limits(max_failures: usize, window: Duration) -> Self {
        FailureLimiter {
            failures: Mutex::new(HashMap::new()),
            max_failures: max_failures.max(1),
            window,
        }
    }

    fn keys(username: &str, ip: IpAddr) -> [Key; 2] {
        [Key::User(username.trim().to_lowercase()), Key::Ip(ip)]
    }

    /// `Err(Limited)` when this username or address already failed too often.
    pub fn check(&self, username: &str, ip: IpAddr, now: Instant) -> Result<(), Limited> {
        let mut map = self.failures.lock();
        let mut wait = Duration::ZERO;
        let mut keys = Vec::new();
        for k in Self::keys(username, ip) {
            if let Some(q) = map.get_mut(&k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max_failures {
                    if let Some(oldest) = q.front() {
                        wait = wait.max(self.window.saturating_sub(now.duration_since(*oldest)));
                        keys.push(k.to_string());
                    }
                }
            }
        }
        if keys.is_empty() {
            Ok(())
        } else {
            Err(Limited {
                retry_after: wait.max(Duration::from_secs(1)),
                keys,
            })
        }
    }

    /// Records one failed attempt.
    pub fn record_failure(&self, username: &str, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock();
        if map.len() > PRUNE_ABOVE {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for k in Self::keys(username, ip) {
            let q = map.entry(k).or_default();
            q.push_back(now);
            while q.len() > self.max_failures {
                q.pop_front();
            }
        }
    }

    /// A success forgets the username's failures (not the address's).
    pub fn record_success(&self, username: &str) {
        self.failures
            .lock()
            .remove(&Key::User(username.trim().to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP_A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const IP_B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    #[test]
    fn sixth_attempt_within_a_minute_is_refused_then_allowed_after_the_window() {
        let l = FailureLimiter::new();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.check("marie", IP_A, t0).is_ok(), "attempt {i}");
            l.record_failure("marie", IP_A, t0 + Duration::from_secs(i));
        }
        let limited = l
            .check("marie", IP_A, t0 + Duration::from_secs(10))
            .expect_err("6th refused");
        assert_eq!(limited.retry_after, Duration::from_secs(50));
        assert_eq!(limited.keys, ["user:marie", "ip:198.18.0.1"]);
        assert!(l.check("marie", IP_A, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn limits_apply_per_username_and_per_address() {
        let l = FailureLimiter::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            l.record_failure("Marie", IP_A, t0);
        }
        // Same user from another address: refused (case-insensitive), the user's key named.
        let limited = l.check("marie", IP_B, t0).expect_err("user limited");
        assert_eq!(limited.keys, ["user:marie"]);
        // Another user from the same address: refused.
        assert!(l.check("paul", IP_A, t0).is_err());
        // Another user from another address: fine.
        assert!(l.check("paul", IP_B, t0).is_ok());
    }

    #[test]
    fn success_clears_the_username_but_not_the_address() {
        let l = FailureLimiter::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            l.record_failure("marie", IP_A, t0);
        }
        l.record_success("marie");
        assert!(l.check("marie", IP_B, t0).is_ok());
        assert!(l.check("marie", IP_A, t0).is_err());
    }
}
