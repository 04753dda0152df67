//! Memory in Postgres: `websearch_to_tsquery('english', …)` over the
//! generated `search_vector` (GIN-indexed), ranked by `ts_rank`.

use async_trait::async_trait;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

#[async_trait]
impl MemoriesStore for PgStore {
    async fn remember(&self, m: &Memory) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO memory (id, mesh_id, content, tags, remembered_by, remembered_by_member,
                                 remembered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &m.id,
                &m.mesh_id,
                &m.content,
                &Json(&m.tags),
                &m.remembered_by,
                &m.remembered_by_member,
                &m.remembered_at,
            ],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn recall(&self, mesh_id: &str, query: &str, limit: usize) -> StoreResult<Vec<Memory>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT m.id, m.mesh_id, m.content, m.tags, m.remembered_by,
                        m.remembered_by_member, m.remembered_at
                 FROM memory m, websearch_to_tsquery('english', $2) q
                 WHERE m.mesh_id = $1 AND m.forgotten_at IS NULL AND m.search_vector @@ q
                 ORDER BY ts_rank(m.search_vector, q) DESC, m.remembered_at DESC, m.seq DESC
                 LIMIT $3",
                &[&mesh_id, &query, &(limit as i64)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| Memory {
                id: r.get(0),
                mesh_id: r.get(1),
                content: r.get(2),
                tags: r.get::<_, Json<Vec<String>>>(3).0,
                remembered_by: r.get(4),
                remembered_by_member: r.get(5),
                remembered_at: r.get(6),
            })
            .collect())
    }

    async fn count_memories(&self, mesh_id: &str) -> StoreResult<u64> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT count(*) FROM memory WHERE mesh_id = $1 AND forgotten_at IS NULL",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn forget(
        &self,
        mesh_id: &str,
        id: Uuid,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<Forgot> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "WITH t AS (SELECT 1 FROM memory
                            WHERE mesh_id = $1 AND id = $2 AND forgotten_at IS NULL),
                      u AS (UPDATE memory SET forgotten_at = now()
                            WHERE mesh_id = $1 AND id = $2 AND forgotten_at IS NULL
                              AND ($4 OR remembered_by_member = $3)
                            RETURNING 1)
                 SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u)",
                &[&mesh_id, &id, &member_id, &privileged],
            )
            .await
            .map_err(map_err)?;
        let (found, done): (i64, i64) = (row.get(0), row.get(1));
        Ok(match (found, done) {
            (0, _) => Forgot::NotFound,
            (_, 0) => Forgot::Forbidden,
            _ => Forgot::Done,
        })
    }
}
