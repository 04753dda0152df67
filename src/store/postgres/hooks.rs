//! Hook support in Postgres: token lookup, v1 (pid, cwd) targets and
//! pending hooks.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::{presence_from, PRESENCE_COLS};
use super::{map_err, PgStore};
use crate::protocol::Status;
use crate::store::*;

#[async_trait]
impl HookStore for PgStore {
    async fn presence_by_hook_token(&self, hash: &[u8]) -> StoreResult<Option<Presence>> {
        let c = self.client().await?;
        let sql = format!("SELECT {PRESENCE_COLS} FROM presence WHERE hook_token_hash = $1");
        let row = c.query_opt(&sql, &[&hash]).await.map_err(map_err)?;
        Ok(row.as_ref().map(presence_from))
    }

    async fn hook_targets(&self, pid: Option<i64>, cwd: &str) -> StoreResult<Vec<Uuid>> {
        let c = self.client().await?;
        let exact = c
            .query(
                "SELECT id FROM presence WHERE state = 'online' AND cwd = $1 AND pid = $2",
                &[&cwd, &pid],
            )
            .await
            .map_err(map_err)?;
        if !exact.is_empty() {
            return Ok(exact.iter().map(|r| r.get(0)).collect());
        }
        let newest = c
            .query_opt(
                "SELECT id FROM presence WHERE state = 'online' AND cwd = $1
                 ORDER BY connected_at DESC, id DESC LIMIT 1",
                &[&cwd],
            )
            .await
            .map_err(map_err)?;
        Ok(newest.map(|r| vec![r.get(0)]).unwrap_or_default())
    }

    async fn insert_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO pending_status (pid, cwd, status, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pid, cwd) DO UPDATE SET status = excluded.status, created_at = excluded.created_at",
            &[&pid, &cwd, &status.as_str(), &now],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn take_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Status>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM pending_status WHERE pid = $1 AND cwd = $2 RETURNING status, created_at",
                &[&pid, &cwd],
            )
            .await
            .map_err(map_err)?;
        Ok(row
            .filter(|r| r.get::<_, DateTime<Utc>>(1) >= since)
            .and_then(|r| Status::parse(r.get(0))))
    }

    async fn sweep_pending_status(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM pending_status WHERE created_at < $1",
            &[&before],
        )
        .await
        .map_err(map_err)
    }
}
