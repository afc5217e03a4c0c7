//! Time helpers: the store keeps unix milliseconds, the API speaks RFC 3339 UTC.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::ApiError;

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds → RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// RFC 3339 (or a bare date `YYYY-MM-DD`, midnight UTC) → unix milliseconds.
pub fn parse_rfc3339(field: &str, s: &str) -> Result<i64, ApiError> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339));
    t.map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{field}: date invalide {s:?}, format attendu 2026-01-31T08:00:00Z / invalid date, expected 2026-01-31T08:00:00Z"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_parses_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339("since", "1970-01-01T00:00:01Z").expect("ok"),
            1000
        );
        assert_eq!(
            parse_rfc3339("since", "1970-01-02").expect("ok"),
            86_400_000
        );
        assert!(parse_rfc3339("since", "yesterday").is_err());
    }
}
