//! Token buckets, shared by every node through the store: `burst` tokens,
//! refilled continuously at `rate_per_min`.

use chrono::{DateTime, Utc};

/// Refills then takes one token; `None` when the bucket is empty.
pub fn take_token(
    tokens: f64,
    updated: DateTime<Utc>,
    now: DateTime<Utc>,
    rate_per_min: u32,
    burst: u32,
) -> Option<f64> {
    let elapsed = (now - updated)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .max(0) as f64
        / 1e6;
    let refilled = (tokens + elapsed * f64::from(rate_per_min) / 60.0).min(f64::from(burst));
    (refilled >= 1.0).then_some(refilled - 1.0)
}

#[cfg(test)]
mod tests {
    use super::take_token;
    use chrono::{Duration, Utc};

    #[test]
    fn bucket_refills_at_the_rate_and_caps_at_burst() {
        let t0 = Utc::now();
        assert_eq!(take_token(10.0, t0, t0, 60, 10), Some(9.0));
        assert_eq!(take_token(0.5, t0, t0, 60, 10), None);
        // 60/min is one token a second.
        let left = take_token(0.0, t0, t0 + Duration::seconds(1), 60, 10).unwrap();
        assert!(left.abs() < 1e-9);
        assert_eq!(
            take_token(3.0, t0, t0 + Duration::hours(1), 60, 10),
            Some(9.0)
        );
    }
}
