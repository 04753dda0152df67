//! Single-use hello signatures in Postgres: the primary key makes the
//! first insert win, whatever node each hello reached.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{map_err, PgStore};
use crate::store::*;

#[async_trait]
impl SignatureStore for PgStore {
    async fn use_signature(&self, hash: &[u8], until: DateTime<Utc>) -> StoreResult<bool> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO hello_signature (hash, until) VALUES ($1, $2)
                 ON CONFLICT (hash) DO NOTHING",
            )
            .await
            .map_err(map_err)?;
        Ok(c.execute(&stmt, &[&hash, &until]).await.map_err(map_err)? == 1)
    }

    async fn release_signature(&self, hash: &[u8]) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM hello_signature WHERE hash = $1", &[&hash])
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn sweep_signatures(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM hello_signature WHERE until < $1", &[&now])
            .await
            .map_err(map_err)
    }
}
