//! Token buckets of the memory store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, State};
use crate::store::*;

impl State {
    pub(super) fn take_token(&mut self, scope: &str, b: &Bucket, now: DateTime<Utc>) -> bool {
        let key = (scope.to_string(), b.key.clone());
        let (tokens, updated) = self
            .queue
            .buckets
            .get(&key)
            .copied()
            .unwrap_or((f64::from(b.burst), now));
        match crate::store::rate::refill_and_take(tokens, updated, now, b.rate_per_min, b.burst) {
            Some(left) => {
                self.queue.buckets.insert(key, (left, now));
                true
            }
            None => false,
        }
    }

    pub(super) fn sweep_buckets(&mut self, before: DateTime<Utc>) -> u64 {
        let b = &mut self.queue.buckets;
        let n = b.len();
        b.retain(|_, (_, at)| *at >= before);
        (n - b.len()) as u64
    }
}

#[async_trait]
impl RateStore for MemoryStore {
    async fn take_token(
        &self,
        scope: &str,
        bucket: &Bucket,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Ok(self.lock().take_token(scope, bucket, now))
    }

    async fn sweep_rate_buckets(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(self.lock().sweep_buckets(before))
    }
}
