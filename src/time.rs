//! Time: the one clock (unix milliseconds, UTC), the one output format and the one parser of instants and durations.
//!
//! Every time Sesame stores is an `i64` of unix milliseconds read from a [`Clock`] (tests move a
//! [`ManualClock`]). Every time it shows — JSON API, CSV and JSONL exports, pages, CLI, audit
//! details — is [`format`]: RFC 3339, UTC, milliseconds always (`2026-01-31T08:00:00.123Z`).
//! Every instant people type (`since`, `until`, `--since`…) goes through [`parse`], every
//! duration (config values, `--ttl`) through [`parse_duration`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::time::format_description::well_known::Rfc3339;
use ::time::OffsetDateTime;

/// Source of "now", in unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(duration_ms(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Now, in unix milliseconds, from the wall clock.
pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// Milliseconds in a duration, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds → RFC 3339, UTC, milliseconds always: `2026-01-31T08:00:00.123Z`.
/// A value beyond the years 0000–9999 prints as the raw number.
pub fn format(ms: i64) -> String {
    let format = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// An instant people typed that is none of the forms [`parse`] takes; names the field (query
/// parameter or flag) it was given for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {input:?} : écrivez 2026-01-31, 2026-01-31T08:00:00Z ou 7d (il y a 7 jours ; aussi 12h, 30m) / write 2026-01-31, 2026-01-31T08:00:00Z or 7d (7 days ago; also 12h, 30m)")]
pub struct TimeError {
    /// The parameter or flag: `since`, `--until`…
    pub field: String,
    pub input: String,
}

/// An instant as people write it, to unix milliseconds:
/// - RFC 3339 (`2026-01-31T08:00:00Z`, `2026-01-31T09:00:00.5+01:00`);
/// - a date (`2026-01-31`: midnight UTC);
/// - an age (`7d`, `12h`, `30m`, any [`parse_duration`] form): that long before `now_ms`.
///
/// `field` names the parameter or flag in the error.
pub fn parse(field: &str, input: &str, now_ms: i64) -> Result<i64, TimeError> {
    let s = input.trim();
    let instant = OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339))
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok());
    instant
        .or_else(|| {
            // A bare number is a duration in seconds for config values, never an age here.
            let age = parse_duration(s).ok().filter(|_| !is_number(s))?;
            Some(now_ms.saturating_sub(duration_ms(age)))
        })
        .ok_or_else(|| TimeError {
            field: field.to_string(),
            input: input.to_string(),
        })
}

/// A duration that is not one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration {input:?}: write a number and a unit, e.g. 60s, 30m, 72h, 7d")]
pub struct DurationError {
    pub input: String,
    #[source]
    pub source: humantime::DurationError,
}

/// A duration such as `500ms`, `60s`, `30m`, `72h`, `400d` or `1h 30m` (humantime's forms:
/// ms, s, m, h, d, w and their long names); a bare number is seconds, `0` is zero.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if is_number(s) {
        if let Ok(secs) = s.parse() {
            return Ok(Duration::from_secs(secs));
        }
    }
    humantime::parse_duration(s).map_err(|source| DurationError {
        input: input.to_string(),
        source,
    })
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
#[path = "time_tests.rs"]
mod tests;
