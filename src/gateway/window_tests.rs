use super::*;
use crate::policy::Rule;
use crate::time::{Clock as _, ManualClock};
use proptest::prelude::*;
use std::time::Duration;

const T0: i64 = 1_800_000_000_000;
const IDLE: i64 = 30 * 60 * 1000;

fn rules() -> Arc<RuleSet> {
    Arc::new(RuleSet::new(["198.18.10.10/32 tcp:443"
        .parse::<Rule>()
        .unwrap()]))
}

#[test]
fn no_window_refuses() {
    let mut w = Window::new(rules(), None);
    assert!(!w.is_open());
    assert_eq!(w.admit(T0, IDLE), Admit::Refused);
    assert_eq!(w.check(T0, IDLE), None);
}

#[test]
fn open_window_passes_until_its_end_then_closes_once() {
    let clock = ManualClock::new(T0);
    let until = T0 + 10 * 60 * 1000;
    let mut w = Window::new(rules(), Some(until));
    assert_eq!(w.admit(clock.now_ms(), IDLE), Admit::Pass);
    clock.set(until - 1);
    assert_eq!(w.admit(clock.now_ms(), IDLE), Admit::Pass);
    clock.set(until);
    assert_eq!(
        w.admit(clock.now_ms(), IDLE),
        Admit::Closing(WindowEnd::Expired)
    );
    // Closed once: later packets are refused, the timer finds nothing more to close.
    assert_eq!(w.admit(clock.now_ms(), IDLE), Admit::Refused);
    assert_eq!(w.check(clock.now_ms(), IDLE), None);
    assert!(!w.is_open());
}

#[test]
fn the_timer_closes_an_expired_window_without_any_packet() {
    let until = T0 + 1000;
    let mut w = Window::new(rules(), Some(until));
    assert_eq!(w.check(T0, IDLE), None);
    assert_eq!(w.check(until + 5, IDLE), Some(WindowEnd::Expired));
    assert_eq!(w.check(until + 6, IDLE), None);
}

#[test]
fn idleness_counts_from_the_last_protected_packet() {
    let clock = ManualClock::new(T0);
    let mut w = Window::new(rules(), Some(T0 + 10 * IDLE));
    // The idle clock starts when the gateway first looks at the window.
    assert_eq!(w.check(clock.now_ms(), IDLE), None);
    clock.advance(Duration::from_millis((IDLE - 1) as u64));
    assert_eq!(w.admit(clock.now_ms(), IDLE), Admit::Pass);
    clock.advance(Duration::from_millis((IDLE - 1) as u64));
    assert_eq!(w.check(clock.now_ms(), IDLE), None);
    clock.advance(Duration::from_millis(1));
    assert_eq!(w.check(clock.now_ms(), IDLE), Some(WindowEnd::Idle));
    assert_eq!(w.admit(clock.now_ms(), IDLE), Admit::Refused);
}

#[test]
fn the_same_end_sent_again_stays_closed_a_new_one_opens() {
    let until = T0 + 1000;
    let mut w = Window::new(rules(), Some(until));
    assert_eq!(w.check(until, IDLE), Some(WindowEnd::Expired));
    // The portal has not heard yet: the same window comes back with the next peer set.
    assert!(!w.update(rules(), Some(until)));
    assert!(!w.is_open());
    assert_eq!(w.admit(until - 1, IDLE), Admit::Refused);
    // A new unlock: a new end, a new idle clock.
    let later = until + 60_000;
    assert!(!w.update(rules(), Some(later)));
    assert!(w.is_open());
    assert_eq!(w.admit(until + 10, IDLE), Admit::Pass);
}

#[test]
fn withdrawal_by_the_portal_is_reported_for_cutting() {
    let mut w = Window::new(rules(), Some(T0 + 1000));
    assert!(w.update(rules(), None));
    assert_eq!(w.admit(T0, IDLE), Admit::Refused);
    // Withdrawing what is not open cuts nothing.
    assert!(!w.update(rules(), None));
    assert!(!w.differs(&rules(), None));
    assert!(w.differs(&RuleSet::deny_all(), None));
}

proptest! {
    /// Model check: a protected packet passes iff a window is open, `now < until`, and the
    /// last protected packet (or the first look at the window) is less than `idle` ago; once
    /// the gateway closes a window, that same end does not pass again (until another one).
    #[test]
    fn matches_reference_model(
        ops in proptest::collection::vec((0u8..4, 0i64..5_000, 0i64..20_000), 1..80)
    ) {
        const IDLE: i64 = 3_000;
        let mut w = Window::new(rules(), None);
        let mut now = T0;
        // Model: (until, last seen, closed ends).
        let mut until: Option<i64> = None;
        let mut last: Option<i64> = None;
        let mut closed: Option<i64> = None;
        for (op, dt, len) in ops {
            now += dt;
            match op {
                0 => {
                    let new = if len % 5 == 0 { None } else { Some(now + len) };
                    w.update(rules(), new);
                    if new != until { until = new; last = None; }
                }
                1 | 2 => {
                    let open = until.is_some_and(|u| closed != Some(u));
                    let got = if op == 1 { w.admit(now, IDLE) } else {
                        match w.check(now, IDLE) { Some(e) => Admit::Closing(e), None => Admit::Pass }
                    };
                    let want = match until {
                        Some(u) if open => {
                            let l = *last.get_or_insert(now);
                            if now >= u { closed = Some(u); Admit::Closing(WindowEnd::Expired) }
                            else if now - l >= IDLE { closed = Some(u); Admit::Closing(WindowEnd::Idle) }
                            else { if op == 1 { last = Some(now); } Admit::Pass }
                        }
                        _ => if op == 1 { Admit::Refused } else { Admit::Pass },
                    };
                    prop_assert_eq!(got, want);
                }
                _ => prop_assert_eq!(w.is_open(), until.is_some_and(|u| closed != Some(u))),
            }
        }
    }
}
