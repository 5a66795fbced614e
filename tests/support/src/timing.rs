//! Timestamps in results (RFC 3339) and durations in reports.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An RFC 3339 timestamp from a result or run (`started_at`, `finished_at`); panics when it is
/// not one.
pub fn parse_time(v: &Value) -> OffsetDateTime {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp is a string: {v}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"))
}

/// The time from timestamp `a` to the later timestamp `b`.
pub fn duration_between(a: &Value, b: &Value) -> Duration {
    let (a, b) = (parse_time(a), parse_time(b));
    (b - a)
        .try_into()
        .unwrap_or_else(|_| panic!("{b} is before {a}"))
}

/// A duration in the unit that suits it (`12 ns`, `3.4 µs`, `5.67 ms`, `1.23 s`).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.2} s", ns / 1_000_000_000.0)
    }
}
