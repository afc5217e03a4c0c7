//! TOTP codes for bench users: which step a user may still spend, and that step's code.
//!
//! The portal accepts a TOTP step once per user and only a step later than the last one it
//! accepted, within ±1 step of its clock (`sesame::mfa::totp`). A load client that wants every
//! code accepted must therefore give each user strictly increasing steps from
//! {now − 1, now, now + 1}, and never send one user's codes concurrently (a later step that
//! arrives first would make the earlier one a replay). The codes come from the product's own
//! generator (totp-rs, SHA-1, 6 digits, 30 s).

use std::time::{SystemTime, UNIX_EPOCH};

pub use sesame::mfa::totp::STEP_SECS;

/// Seconds into a step after which the previous step is no longer offered: its code might
/// reach the portal after the step boundary, when it is two steps old and refused (3 s: more
/// than any request's p99 seen in bench/portal.sh; a late one shows as 401 `invalid_otp`).
const LAST_SAFE_PREVIOUS_S: f64 = 27.0;

/// Seconds since the Unix epoch, with fractions.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The step `now` (Unix seconds) falls in.
pub fn step_of(now: f64) -> i64 {
    (now / STEP_SECS as f64).floor() as i64
}

/// The lowest step a user whose last accepted step is `last` (None: never) may spend at `now`
/// with its code surely accepted, or None when the user has spent `now`'s step + 1 already.
pub fn next_step(last: Option<i64>, now: f64) -> Option<i64> {
    let step = step_of(now);
    let into = now - (step as f64) * STEP_SECS as f64;
    let lowest = if into < LAST_SAFE_PREVIOUS_S {
        step - 1
    } else {
        step
    };
    let candidate = last.map_or(lowest, |l| (l + 1).max(lowest));
    (candidate <= step + 1).then_some(candidate)
}

/// Unix seconds at which the step after the one of `now` begins.
pub fn next_boundary(now: f64) -> f64 {
    (step_of(now) + 1) as f64 * STEP_SECS as f64
}

/// The 6-digit code of `secret` for `step`.
pub fn code(secret: &[u8], step: i64) -> String {
    let at = u64::try_from(step).unwrap_or_default() * STEP_SECS;
    sesame::mfa::totp::code_at(secret, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_increase_and_stay_within_one_of_now() {
        let now = 1_000.0 * STEP_SECS as f64 + 5.0; // early in step 1000
        assert_eq!(next_step(None, now), Some(999));
        assert_eq!(next_step(Some(999), now), Some(1000));
        assert_eq!(next_step(Some(1000), now), Some(1001));
        assert_eq!(next_step(Some(1001), now), None);
        assert_eq!(next_step(Some(500), now), Some(999));
        // Late in the step, the previous one is no longer offered.
        let late = 1_000.0 * STEP_SECS as f64 + 28.0;
        assert_eq!(next_step(None, late), Some(1000));
        assert_eq!(next_boundary(late), 1_001.0 * STEP_SECS as f64);
    }

    #[test]
    fn codes_are_the_products_and_are_checked_by_it() {
        let secret = b"12345678901234567890";
        // RFC 6238's SHA-1 vector at T = 59 s: 94287082 (8 digits), i.e. 287082 with 6.
        assert_eq!(code(secret, 1), "287082");
        let now_ms = 1_000 * STEP_SECS as i64 * 1000 + 1_000;
        assert_eq!(
            sesame::mfa::totp::check(secret, &code(secret, 999), now_ms),
            Some(999)
        );
        assert_eq!(
            sesame::mfa::totp::check(secret, &code(secret, 1001), now_ms),
            Some(1001)
        );
        assert_eq!(
            sesame::mfa::totp::check(secret, &code(secret, 998), now_ms),
            None
        );
    }
}
