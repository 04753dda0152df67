//! Token buckets shared by every node (send budgets, hook budgets):
//! `burst` tokens, refilled continuously at `rate_per_min`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// A token bucket shared by every node: `burst` tokens, refilled at
/// `rate_per_min`.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: String,
    pub rate_per_min: u32,
    pub burst: u32,
}

/// Shared token buckets.
#[async_trait]
pub trait RateStore: Send + Sync + 'static {
    /// Takes one token from a shared bucket (hooks); `false` when empty.
    async fn take_token(
        &self,
        scope: &str,
        bucket: &Bucket,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Drops buckets untouched since `before` (they would be full again,
    /// which is what a missing bucket means). Returns how many went.
    async fn sweep_rate_buckets(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Refills then takes one token; `None` when the bucket is empty.
pub fn refill_and_take(
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
    use super::refill_and_take as take_token;
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
