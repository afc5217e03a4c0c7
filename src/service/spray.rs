//! The spray ceiling: failed logins and enrolments per minute across every account. Past
//! `[portal] spray_ceiling`, only clients showing the device token of an earlier success may
//! try (everyone else gets 429); each episode is audited once (`auth.spray_detected`).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The window the ceiling counts over.
pub const SPRAY_WINDOW: Duration = Duration::from_secs(60);

/// Failure counts of this minute and the previous one (a sliding-window estimate: the
/// previous minute weighs what is left of it in the last 60 s), and whether an episode is on.
#[derive(Debug)]
struct State {
    started: Instant,
    previous: u64,
    current: u64,
    episode: bool,
}

impl State {
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= SPRAY_WINDOW * 2 {
            self.previous = 0;
            self.current = 0;
            self.started = now;
        } else if elapsed >= SPRAY_WINDOW {
            self.previous = self.current;
            self.current = 0;
            self.started += SPRAY_WINDOW;
        }
    }

    /// Failures within the last [`SPRAY_WINDOW`], estimated.
    fn rate(&self, now: Instant) -> u64 {
        let into = now.saturating_duration_since(self.started).as_secs_f64();
        let left = (1.0 - into / SPRAY_WINDOW.as_secs_f64()).clamp(0.0, 1.0);
        self.current + (self.previous as f64 * left) as u64
    }
}

/// The ceiling's counters, shared by every attempt of the process.
#[derive(Debug)]
pub struct SprayCeiling {
    state: Mutex<State>,
}

impl Default for SprayCeiling {
    fn default() -> Self {
        SprayCeiling {
            state: Mutex::new(State {
                started: Instant::now(),
                previous: 0,
                current: 0,
                episode: false,
            }),
        }
    }
}

impl SprayCeiling {
    /// Whether a spray is going on: only known devices may try. An episode ends when the rate
    /// falls under half the ceiling (so one spray hovering at the ceiling is one episode).
    pub fn active(&self, now: Instant, ceiling: u32) -> bool {
        if ceiling == 0 {
            return false;
        }
        let mut s = self.state.lock();
        s.roll(now);
        if s.episode && s.rate(now) * 2 < u64::from(ceiling) {
            s.episode = false;
        }
        s.episode
    }

    /// Counts one failure; true when it starts an episode (audit and count it once).
    pub fn record_failure(&self, now: Instant, ceiling: u32) -> bool {
        let mut s = self.state.lock();
        s.roll(now);
        s.current += 1;
        if ceiling == 0 || s.episode || s.rate(now) <= u64::from(ceiling) {
            return false;
        }
        s.episode = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_episode_past_the_ceiling_then_quiet() {
        let c = SprayCeiling::default();
        let t0 = Instant::now();
        let mut started = 0;
        for i in 0..30u64 {
            let now = t0 + Duration::from_millis(i * 100);
            assert_eq!(c.active(now, 10), i > 10, "failure {i}");
            started += usize::from(c.record_failure(now, 10));
        }
        assert_eq!(started, 1);
        // Two quiet minutes later, the episode is over.
        assert!(!c.active(t0 + Duration::from_secs(125), 10));
        assert!(!c.active(t0, 0) && !c.record_failure(t0, 0));
    }
}
