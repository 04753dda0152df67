//! Streams in Postgres. Subscriptions reference their presence row, so
//! they end with it by cascade.

use async_trait::async_trait;
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

const LIST: &str = "
SELECT s.id, s.mesh_id, s.name, s.created_by, s.created_by_member, s.created_at,
       (SELECT count(*) FROM stream_subscription x WHERE x.mesh_id = s.mesh_id AND x.stream = s.name)
FROM stream s WHERE s.mesh_id = $1 ORDER BY s.created_at, s.id";

const SUBSCRIBE: &str = "
WITH p AS (SELECT id FROM presence WHERE id = $3 AND mesh_id = $1),
i AS (INSERT INTO stream_subscription (mesh_id, stream, presence_id)
      SELECT $1, $2, id FROM p ON CONFLICT DO NOTHING)
SELECT EXISTS (SELECT 1 FROM p)";

fn row(r: &tokio_postgres::Row) -> StreamRow {
    StreamRow {
        id: r.get(0),
        mesh_id: r.get(1),
        name: r.get(2),
        created_by: r.get(3),
        created_by_member: r.get(4),
        created_at: r.get(5),
    }
}

#[async_trait]
impl StreamStore for PgStore {
    async fn create_stream(&self, s: &StreamRow, max: usize) -> StoreResult<StreamCreated> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('stream:' || $1, 0))",
            &[&s.mesh_id],
        )
        .await
        .map_err(map_err)?;
        let found = tx
            .query_opt(
                "SELECT id FROM stream WHERE mesh_id = $1 AND name = $2",
                &[&s.mesh_id, &s.name],
            )
            .await
            .map_err(map_err)?;
        if let Some(r) = found {
            return Ok(StreamCreated::Existing(r.get(0)));
        }
        let n: i64 = tx
            .query_one(
                "SELECT count(*) FROM stream WHERE mesh_id = $1",
                &[&s.mesh_id],
            )
            .await
            .map_err(map_err)?
            .get(0);
        if n >= max as i64 {
            return Ok(StreamCreated::Full);
        }
        tx.execute(
            "INSERT INTO stream (id, mesh_id, name, created_by, created_by_member, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &s.id,
                &s.mesh_id,
                &s.name,
                &s.created_by,
                &s.created_by_member,
                &s.created_at,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(StreamCreated::Created)
    }

    async fn list_streams(&self, mesh_id: &str) -> StoreResult<Vec<ListedStream>> {
        let c = self.client().await?;
        let rows = c.query(LIST, &[&mesh_id]).await.map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| ListedStream {
                stream: row(r),
                subscribers: r.get::<_, i64>(6) as u64,
            })
            .collect())
    }

    async fn subscribe(&self, mesh_id: &str, stream: &str, presence: Uuid) -> StoreResult<bool> {
        let c = self.client().await?;
        let r = c
            .query_one(SUBSCRIBE, &[&mesh_id, &stream, &presence])
            .await
            .map_err(map_err)?;
        Ok(r.get(0))
    }

    async fn unsubscribe(&self, mesh_id: &str, stream: &str, presence: Uuid) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM stream_subscription WHERE mesh_id = $1 AND stream = $2 AND presence_id = $3",
            &[&mesh_id, &stream, &presence],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn presence_streams(&self, presence: Uuid) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT stream FROM stream_subscription WHERE presence_id = $1 ORDER BY stream",
                &[&presence],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
