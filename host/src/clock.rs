//! Timestamps in the one format the host writes: RFC 3339, UTC, microseconds, so that stored
//! timestamps sort as text in time order.

use time::OffsetDateTime;
use time::macros::format_description;

/// Formats a time as `2026-01-01T12:00:00.123456Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// The current time, formatted by [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// Milliseconds since the Unix epoch, for queue due times.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn format_has_microseconds_and_parses_back() {
        let s = super::now_rfc3339();
        assert_eq!(s.len(), "2026-01-01T12:00:00.123456Z".len(), "{s}");
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).unwrap();
    }
}
