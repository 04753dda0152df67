//! Streams in Postgres. Subscriptions reference their presence row, so
//! they end with it by cascade; a publish is one statement on the fast
//! pool (a lost token write only gives a budget back).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
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

/// The member (live), its token (refill-then-take, as `TAKE_TOKEN`), then
/// the online subscribers with their nodes, only if a token was taken.
const PUBLISH: &str = "
WITH m AS (
  SELECT display_name FROM member WHERE mesh_id = $1 AND id = $3 AND revoked_at IS NULL
),
t AS (
  INSERT INTO rate_bucket AS b (mesh_id, key, tokens, updated_at)
  SELECT $1, $4, $5::float8 - 1, $6 FROM m
  ON CONFLICT (mesh_id, key) DO UPDATE SET
    tokens = LEAST($5::float8, b.tokens
        + GREATEST(0, EXTRACT(EPOCH FROM ($6 - b.updated_at))::float8) * $7::float8) - 1,
    updated_at = $6
  WHERE LEAST($5::float8, b.tokens
        + GREATEST(0, EXTRACT(EPOCH FROM ($6 - b.updated_at))::float8) * $7::float8) >= 1
  RETURNING 1
)
SELECT (SELECT display_name FROM m), EXISTS (SELECT 1 FROM t), p.id, p.node_id
FROM (SELECT 1) one
LEFT JOIN (stream_subscription s JOIN presence p ON p.id = s.presence_id AND p.state = 'online')
  ON s.mesh_id = $1 AND s.stream = $2 AND EXISTS (SELECT 1 FROM t)";

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

    async fn publish_route(
        &self,
        mesh_id: &str,
        stream: &str,
        member_id: &str,
        per_min: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Publish> {
        let c = self.fast_client().await?;
        let stmt = c.prepare_cached(PUBLISH).await.map_err(map_err)?;
        let key = format!("stream:{member_id}");
        let burst = f64::from(per_min);
        let per_sec = f64::from(per_min) / 60.0;
        let rows = c
            .query(
                &stmt,
                &[&mesh_id, &stream, &member_id, &key, &burst, &now, &per_sec],
            )
            .await
            .map_err(map_err)?;
        let Some(first) = rows.first() else {
            return Ok(Publish::Gone);
        };
        let Some(published_by) = first.get::<_, Option<String>>(0) else {
            return Ok(Publish::Gone);
        };
        if !first.get::<_, bool>(1) {
            return Ok(Publish::Limited);
        }
        let to = rows
            .iter()
            .filter_map(|r| Some((r.get::<_, Option<Uuid>>(2)?, r.get::<_, Option<Uuid>>(3)?)))
            .collect();
        Ok(Publish::Route { published_by, to })
    }
}
