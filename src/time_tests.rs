//! Unit tests of the clock, the format and the parsers.

use std::time::Duration;

use super::*;

/// 2026-01-05T09:00:00Z.
const T0: i64 = 1_767_603_600_000;

#[test]
fn format_is_utc_with_milliseconds_always() {
    assert_eq!(format(T0), "2026-01-05T09:00:00.000Z");
    assert_eq!(format(T0 + 250), "2026-01-05T09:00:00.250Z");
    assert_eq!(format(T0 + 1), "2026-01-05T09:00:00.001Z");
    assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format(-1), "1969-12-31T23:59:59.999Z");
    // Beyond what RFC 3339 can write: the raw number, never a panic.
    assert_eq!(format(i64::MAX), i64::MAX.to_string());
    assert_eq!(format(i64::MIN), i64::MIN.to_string());
}

#[test]
fn parse_takes_rfc3339_dates_and_ages() {
    let p = |s: &str| parse("since", s, T0);
    assert_eq!(p("2026-01-05T09:00:00Z"), Ok(T0));
    assert_eq!(p("2026-01-05T09:00:00.250Z"), Ok(T0 + 250));
    assert_eq!(p("2026-01-05T10:00:00+01:00"), Ok(T0), "offsets");
    assert_eq!(p(" 2026-01-05T09:00:00Z "), Ok(T0), "trimmed");
    assert_eq!(p("2026-01-05"), Ok(T0 - 9 * 3_600_000), "midnight UTC");
    assert_eq!(p("7d"), Ok(T0 - 7 * 86_400_000));
    assert_eq!(p("12h"), Ok(T0 - 12 * 3_600_000));
    assert_eq!(p("30m"), Ok(T0 - 30 * 60_000));
    assert_eq!(p("1h 30m"), Ok(T0 - 90 * 60_000));
    // What it prints, it reads back.
    for ms in [T0, T0 + 999, 0, 253_402_300_799_999] {
        assert_eq!(p(&format(ms)), Ok(ms), "{ms}");
    }
}

#[test]
fn parse_refuses_everything_else_naming_the_field() {
    for bad in [
        "yesterday",
        "hier",
        "",
        "2026",
        "60",
        "2026-13-01",
        "5%",
        "-7d",
    ] {
        let e = parse("--until", bad, T0).expect_err(bad);
        assert_eq!(e.field, "--until");
        assert_eq!(e.input, bad);
        let text = e.to_string();
        assert!(text.starts_with(&format!("--until {bad:?}")), "{text}");
        assert!(
            text.contains("écrivez") && text.contains("write 2026-01-31"),
            "{text}"
        );
    }
}

#[test]
fn durations_keep_the_forms_configs_use() {
    let d = |s: &str| parse_duration(s);
    assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(d("60s"), Ok(Duration::from_secs(60)));
    assert_eq!(d("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(d("72h"), Ok(Duration::from_secs(72 * 3600)));
    assert_eq!(d("400d"), Ok(Duration::from_secs(400 * 86_400)));
    assert_eq!(d(" 30d "), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(d("60"), Ok(Duration::from_secs(60)), "bare seconds");
    assert_eq!(d("0"), Ok(Duration::ZERO));
    assert_eq!(d("1h 30m"), Ok(Duration::from_secs(5400)));
    for bad in ["h", "5%", "", "72x", "-1s", "3 fortnights"] {
        let e = d(bad).expect_err(bad);
        assert_eq!(e.input, bad);
        assert!(
            e.to_string().starts_with(&format!(
                "invalid duration {bad:?}: write a number and a unit"
            )),
            "{e}"
        );
        assert!(
            std::error::Error::source(&e).is_some(),
            "keeps humantime's error"
        );
    }
}

#[test]
fn manual_clock_moves_only_by_hand() {
    let c = ManualClock::new(T0);
    assert_eq!(c.now_ms(), T0);
    c.advance(Duration::from_millis(1500));
    assert_eq!(c.now_ms(), T0 + 1500);
    c.set(5);
    assert_eq!(c.now_ms(), 5);
    let wall = now_ms();
    assert!(wall > T0, "the wall clock is past 2026-01-05: {wall}");
    assert_eq!(duration_ms(Duration::MAX), i64::MAX);
}
