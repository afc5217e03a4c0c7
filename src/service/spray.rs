//! The spray ceiling: failed logins and enrolments per minute across every account. Past
//! `[portal] spray_ceiling`, only clients showing the device token of an earlier success may
//! try (everyone else gets 429); each episode is audited once (`auth.spray_detected`).
//!
//! Counted in this process's memory ([`SprayCeiling`], `sesame serve` alone on SQLite), or in
//! PostgreSQL's `login_failures` under [`SHARED_KEY`], shared by every portal on the database
//! (`service::limits` picks): there the count is per fixed minute and an episode is the key's
//! lock, taken by the one portal whose failure crossed the ceiling (so audited once in all) and
//! lasting [`SPRAY_WINDOW`]; a spray still going on then starts another.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::{FailureCount, FailureWindows};

/// The window the ceiling counts over.
pub const SPRAY_WINDOW: Duration = Duration::from_secs(60);

/// The shared counter of failures across every account (a `login_failures` key; the others are
/// `ip:`, `pair:` and `user:`).
pub const SHARED_KEY: &str = "spray:all";

/// The ceiling's one rule: a rate of failures a minute past `ceiling` (0: no ceiling) is a
/// spray.
fn past(rate: u64, ceiling: u32) -> bool {
    ceiling > 0 && rate > u64::from(ceiling)
}

/// [`SPRAY_WINDOW`] in unix ms.
fn window_ms() -> i64 {
    i64::try_from(SPRAY_WINDOW.as_millis()).unwrap_or(i64::MAX)
}

/// The windows [`SHARED_KEY`] is counted in (one minute; no long window of its own).
pub fn shared_windows() -> FailureWindows {
    FailureWindows {
        short_ms: window_ms(),
        long_ms: window_ms(),
    }
}

/// Until when [`SHARED_KEY`]'s row is kept after a failure at `now_ms` (past its lock too).
pub fn shared_kept_until(now_ms: i64) -> i64 {
    now_ms.saturating_add(2 * window_ms())
}

/// Whether the shared counts (`row`: [`SHARED_KEY`]'s, if any) say a spray is on at `now_ms`.
pub fn shared_active(row: Option<&FailureCount>, now_ms: i64) -> bool {
    row.and_then(|r| r.locked_until).is_some_and(|t| t > now_ms)
}

/// After a failure counted in `row` at `now_ms`: until when to lock [`SHARED_KEY`] (an episode)
/// when this minute's failures are past `ceiling` and no episode is on.
pub fn shared_episode_due(row: &FailureCount, now_ms: i64, ceiling: u32) -> Option<i64> {
    let in_window = now_ms.saturating_sub(row.short_start) < window_ms();
    let rate = if in_window {
        u64::try_from(row.short_count).unwrap_or(0)
    } else {
        0
    };
    (past(rate, ceiling) && !shared_active(Some(row), now_ms))
        .then(|| now_ms.saturating_add(window_ms()))
}

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
        if s.episode || !past(s.rate(now), ceiling) {
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

    fn row(short_start: i64, short_count: i64, locked_until: Option<i64>) -> FailureCount {
        FailureCount {
            key: SHARED_KEY.into(),
            short_start,
            short_count,
            long_start: short_start,
            long_count: short_count,
            locked_until,
        }
    }

    #[test]
    fn shared_counts_start_one_episode_past_the_ceiling_for_a_minute() {
        let t = 1_000_000;
        // At the ceiling: no episode; one past it: an episode until a minute later.
        assert_eq!(shared_episode_due(&row(t, 10, None), t + 5_000, 10), None);
        assert_eq!(
            shared_episode_due(&row(t, 11, None), t + 5_000, 10),
            Some(t + 65_000)
        );
        // A count of a minute that ended is no rate; no ceiling, no episode.
        assert_eq!(shared_episode_due(&row(t, 11, None), t + 60_000, 10), None);
        assert_eq!(shared_episode_due(&row(t, 11, None), t + 5_000, 0), None);
        // An episode on is not started again (audited once), and ends at its lock's end.
        let on = row(t, 50, Some(t + 65_000));
        assert_eq!(shared_episode_due(&on, t + 6_000, 10), None);
        assert!(shared_active(Some(&on), t + 64_999));
        assert!(!shared_active(Some(&on), t + 65_000));
        assert!(!shared_active(None, t));
    }
}
