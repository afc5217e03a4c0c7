//! Per-source-IP handshake limit under load (token bucket: 20/s, burst 5, as Linux and wireguard-go).
//!
//! Like the Linux kernel and wireguard-go, the per-source limit only applies while the gateway
//! is under load: otherwise a whole school of laptops behind one NAT address would share 20
//! handshakes a second. "Under load" follows the shared boringtun cookie limiter: more than
//! `load_per_second` handshakes in the current second, or a cookie reply sent in the last
//! [`UNDER_LOAD_AFTER`] (the limiter only sends cookies when it is under load).
//!
//! Sources are keyed per IPv4 address and per IPv6 /64 (one host holds a whole /64). The table
//! is bounded by [`MAX_SOURCES`]; when it is full a new source is not refused: under load every
//! handshake that reaches this limiter has already passed boringtun's cookie check (a valid
//! MAC2 proves the source address), so the gateway falls back on cookies alone until the
//! once-a-second sweep frees entries. No scan happens on the packet path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const PACKETS_PER_SECOND: u64 = 20;
pub const PACKETS_BURSTABLE: u64 = 5;
const PACKET_COST: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const MAX_TOKENS: u64 = PACKET_COST * PACKETS_BURSTABLE;
/// Bound on tracked sources: a spoofed-source flood cannot grow memory without limit.
pub const MAX_SOURCES: usize = 65_536;
/// How long the gateway stays under load after the last sign of it (Linux and wireguard-go: 1 s).
pub const UNDER_LOAD_AFTER: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(1);

/// The bucket a source address counts against: the IPv4 address, or the IPv6 /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

/// Load detection plus token buckets by source address. Sans-IO: the caller passes `now`.
#[derive(Debug)]
pub struct HandshakeLimiter {
    buckets: HashMap<IpAddr, Bucket>,
    load_per_second: u64,
    window_start: Option<Instant>,
    window_count: u64,
    last_under_load: Option<Instant>,
}

impl HandshakeLimiter {
    /// `load_per_second`: handshakes per second (all sources) above which the gateway is under load.
    pub fn new(load_per_second: u64) -> HandshakeLimiter {
        HandshakeLimiter {
            buckets: HashMap::new(),
            load_per_second,
            window_start: None,
            window_count: 0,
            last_under_load: None,
        }
    }

    /// Whether a handshake from `src` (MAC1 valid, cookie check passed) may be processed now.
    /// Counts it towards the load; under load, takes a token from the source's bucket.
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.window_count = 0;
            }
        }
        self.window_count += 1;
        if self.window_count > self.load_per_second {
            self.last_under_load = Some(now);
        }
        if !self.under_load(now) {
            return true;
        }
        self.take(src, now)
    }

    /// The shared cookie limiter answered with a cookie: it is under load.
    pub fn cookie_sent(&mut self, now: Instant) {
        self.last_under_load = Some(now);
    }

    /// Whether the per-source limit applies now.
    pub fn under_load(&self, now: Instant) -> bool {
        self.last_under_load
            .is_some_and(|t| now.saturating_duration_since(t) < UNDER_LOAD_AFTER)
    }

    fn take(&mut self, src: IpAddr, now: Instant) -> bool {
        let src = source_key(src);
        if let Some(b) = self.buckets.get_mut(&src) {
            let elapsed = now.saturating_duration_since(b.last).as_nanos();
            let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
            b.tokens = b.tokens.saturating_add(elapsed).min(MAX_TOKENS);
            b.last = now;
            if b.tokens >= PACKET_COST {
                b.tokens -= PACKET_COST;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_SOURCES {
            // Full: cookies only (see the module doc), never a refusal nor a scan here.
            return true;
        }
        self.buckets.insert(
            src,
            Bucket {
                tokens: MAX_TOKENS - PACKET_COST,
                last: now,
            },
        );
        true
    }

    /// Forgets sources whose bucket is full again (called about once a second).
    pub fn collect(&mut self, now: Instant) {
        let refill = Duration::from_nanos(MAX_TOKENS);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < refill);
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LOAD: u64 = 100;

    #[test]
    fn below_load_one_source_is_not_limited() {
        let t0 = Instant::now();
        let nat: IpAddr = "198.18.0.2".parse().unwrap();
        let mut l = HandshakeLimiter::new(LOAD);
        // 90 handshakes a second from one NAT address for 3 s: all pass, nothing tracked.
        let passed = (0..270)
            .filter(|i| l.allow(nat, t0 + Duration::from_millis(11 * i)))
            .count();
        assert_eq!(passed, 270);
        assert!(!l.under_load(t0 + Duration::from_secs(3)));
        assert!(l.is_empty());
    }

    #[test]
    fn under_load_burst_then_twenty_per_second() {
        let t0 = Instant::now();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        let mut l = HandshakeLimiter::new(LOAD);
        // Many sources push the gateway over the load threshold.
        for i in 0..LOAD {
            let src: IpAddr = format!("198.18.1.{}", i % 250 + 1).parse().unwrap();
            l.allow(src, t0);
        }
        assert!(!l.under_load(t0));
        l.allow("198.18.2.1".parse().unwrap(), t0);
        assert!(l.under_load(t0));
        let burst = (0..10).filter(|_| l.allow(a, t0)).count();
        assert_eq!(burst, PACKETS_BURSTABLE as usize);
        // Another source is not affected.
        assert!(l.allow(b, t0));
        // Over one second at 100/s offered (itself load), about 20 pass.
        let passed = (1..=100)
            .filter(|i| l.allow(a, t0 + Duration::from_millis(10 * i)))
            .count();
        assert_eq!(passed, PACKETS_PER_SECOND as usize);
        // Load gone for more than a second: the limit no longer applies.
        let later = t0 + Duration::from_secs(5);
        assert!(!l.under_load(later));
        assert_eq!((0..30).filter(|_| l.allow(a, later)).count(), 30);
        l.collect(t0 + Duration::from_secs(10));
        assert!(l.is_empty());
    }

    fn loaded(t0: Instant) -> HandshakeLimiter {
        let mut l = HandshakeLimiter::new(LOAD);
        l.cookie_sent(t0);
        l
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let t0 = Instant::now();
        let mut l = loaded(t0);
        // Ten addresses of one /64 (one host can pick any of them): one burst between them.
        let same: Vec<IpAddr> = (1..=10)
            .map(|i| format!("2001:db8:0:1::{i:x}").parse().unwrap())
            .collect();
        let passed = same.iter().filter(|a| l.allow(**a, t0)).count();
        assert_eq!(passed, PACKETS_BURSTABLE as usize);
        // The next /64 has its own bucket.
        assert!(l.allow("2001:db8:0:2::1".parse().unwrap(), t0));
        assert_eq!(l.len(), 2);
        // IPv4 stays per address.
        assert!(l.allow("198.18.0.2".parse().unwrap(), t0));
        assert!(l.allow("198.18.0.3".parse().unwrap(), t0));
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn a_full_table_falls_back_to_cookies_and_never_refuses_or_grows() {
        let t0 = Instant::now();
        let mut l = loaded(t0);
        for i in 0..MAX_SOURCES as u32 {
            let ip = std::net::Ipv4Addr::from(0xC612_0000u32 + i); // 198.18.0.0/15
            assert!(l.allow(IpAddr::V4(ip), t0));
        }
        assert_eq!(l.len(), MAX_SOURCES);
        // New sources (already cookie-checked upstream) are answered, untracked.
        let fresh: IpAddr = "198.19.255.254".parse().unwrap();
        assert_eq!((0..50).filter(|_| l.allow(fresh, t0)).count(), 50);
        assert_eq!(l.len(), MAX_SOURCES);
        // A tracked source is still limited.
        let tracked: IpAddr = "198.18.0.0".parse().unwrap();
        assert_eq!((0..10).filter(|_| l.allow(tracked, t0)).count(), 4);
        // The sweep frees the table.
        l.collect(t0 + Duration::from_secs(2));
        assert!(l.is_empty());
    }

    #[test]
    fn a_cookie_reply_means_under_load_for_a_second() {
        let t0 = Instant::now();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let mut l = HandshakeLimiter::new(LOAD);
        l.cookie_sent(t0);
        let at = t0 + Duration::from_millis(500);
        assert_eq!(
            (0..10).filter(|_| l.allow(a, at)).count(),
            PACKETS_BURSTABLE as usize
        );
        let after = t0 + Duration::from_millis(1500);
        assert_eq!((0..10).filter(|_| l.allow(a, after)).count(), 10);
    }
}
