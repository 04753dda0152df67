//! The one timestamp format on the wire: RFC 3339 / ISO-8601 in UTC with
//! millisecond precision and a `Z`, as JavaScript's `toISOString()` writes.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_javascript_iso_strings() {
        let t = chrono::DateTime::from_timestamp_millis(1_717_459_200_123).unwrap();
        assert_eq!(super::iso(t), "2024-06-04T00:00:00.123Z");
    }
}
