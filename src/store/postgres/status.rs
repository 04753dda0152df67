//! Hook support in Postgres: token lookup, v1 (pid, cwd) targets, pending
//! hooks, the stuck-`working` sweep and hook rate buckets.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::messages::TAKE_TOKEN;
use super::rows::{presence_from, PRESENCE_COLS};
use super::{map_err, PgStore};
use crate::protocol::Status;
use crate::store::{Bucket, Presence, PresenceRef, StoreResult};

impl PgStore {
    pub(super) async fn take(
        &self,
        scope: &str,
        b: &Bucket,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
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

    pub(super) async fn by_hook_token(&self, hash: &[u8]) -> StoreResult<Option<Presence>> {
        let c = self.client().await?;
        let sql = format!("SELECT {PRESENCE_COLS} FROM presence WHERE hook_token_hash = $1");
        let row = c.query_opt(&sql, &[&hash]).await.map_err(map_err)?;
        Ok(row.as_ref().map(presence_from))
    }

    pub(super) async fn targets(&self, pid: Option<i64>, cwd: &str) -> StoreResult<Vec<Uuid>> {
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

    pub(super) async fn insert_pending(
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

    pub(super) async fn take_pending(
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

    pub(super) async fn sweep_pending(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM pending_status WHERE created_at < $1",
            &[&before],
        )
        .await
        .map_err(map_err)
    }

    pub(super) async fn flip_working(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PresenceRef>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "UPDATE presence SET status = 'idle', status_source = 'jsonl', status_updated_at = $2
                 WHERE status = 'working' AND status_updated_at < $1
                 RETURNING id, node_id, conn_id",
                &[&before, &now],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| PresenceRef {
                id: r.get(0),
                node_id: r.get(1),
                conn_id: r.get(2),
            })
            .collect())
    }
}
