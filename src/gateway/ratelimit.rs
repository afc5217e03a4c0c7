//! Per-source-IP handshake limit (token bucket: 20/s, burst 5, as Linux and wireguard-go).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const PACKETS_PER_SECOND: u64 = 20;
pub const PACKETS_BURSTABLE: u64 = 5;
const PACKET_COST: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const MAX_TOKENS: u64 = PACKET_COST * PACKETS_BURSTABLE;
/// Bound on tracked sources: a spoofed-source flood cannot grow memory without limit.
pub const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

/// Token buckets by source address. Sans-IO: the caller passes `now`.
#[derive(Debug, Default)]
pub struct HandshakeLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

impl HandshakeLimiter {
    /// Whether a handshake from `src` may be processed now; takes a token if so.
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
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
            self.collect(now);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
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

    #[test]
    fn burst_then_twenty_per_second() {
        let t0 = Instant::now();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        let mut l = HandshakeLimiter::default();
        let burst = (0..10).filter(|_| l.allow(a, t0)).count();
        assert_eq!(burst, PACKETS_BURSTABLE as usize);
        // Another source is not affected.
        assert!(l.allow(b, t0));
        // Over one second at 100/s offered, about 20 pass.
        let passed = (1..=100)
            .filter(|i| l.allow(a, t0 + Duration::from_millis(10 * i)))
            .count();
        assert_eq!(passed, PACKETS_PER_SECOND as usize);
        l.collect(t0 + Duration::from_secs(10));
        assert!(l.is_empty());
    }
}
