//! Time comes from the platform (JavaScript's clock in the worker) and is passed in as
//! milliseconds since the epoch; this module only formats it.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn rfc3339(now_ms: u64) -> String {
    let ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the epoch of an RFC 3339 timestamp, if it is one.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let parsed = DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(parsed.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_millisecond_timestamps() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
