//! Shared token buckets in Postgres: refill-then-take in one statement.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::messages::TAKE_TOKEN;
use super::{map_err, PgStore};
use crate::store::*;

#[async_trait]
impl RateStore for PgStore {
    async fn take_token(&self, scope: &str, b: &Bucket, now: DateTime<Utc>) -> StoreResult<bool> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(TAKE_TOKEN).await.map_err(map_err)?;
        let burst = f64::from(b.burst);
        let per_sec = f64::from(b.rate_per_min) / 60.0;
        let row = c
            .query_opt(&stmt, &[&scope, &b.key, &burst, &now, &per_sec])
            .await
            .map_err(map_err)?;
        Ok(row.is_some())
    }

    async fn sweep_rate_buckets(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM rate_bucket WHERE updated_at < $1", &[&before])
            .await
            .map_err(map_err)
    }
}
