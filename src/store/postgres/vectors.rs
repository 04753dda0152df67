//! Vectors in Postgres: an ILIKE search with the pattern characters of
//! the query escaped, so it is a literal substring match.

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

/// `query` as a LIKE pattern matching it literally anywhere.
fn contains_pattern(query: &str) -> String {
    let mut p = String::with_capacity(query.len() + 2);
    p.push('%');
    for c in query.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[async_trait]
impl VectorStore for PgStore {
    async fn store_point(
        &self,
        p: &Point,
        max_collections: usize,
        max_points: usize,
    ) -> StoreResult<PointStored> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('vector:' || $1, 0))",
            &[&p.mesh_id],
        )
        .await
        .map_err(map_err)?;
        let n = tx
            .execute(
                "INSERT INTO vector_point (id, mesh_id, collection, text, metadata,
                                           stored_by_member, stored_by_pubkey, stored_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8
                 WHERE (SELECT count(*) FROM vector_point WHERE mesh_id = $2) < $9
                   AND (EXISTS (SELECT 1 FROM vector_point WHERE mesh_id = $2 AND collection = $3)
                        OR (SELECT count(DISTINCT collection) FROM vector_point
                            WHERE mesh_id = $2) < $10)",
                &[
                    &p.id,
                    &p.mesh_id,
                    &p.collection,
                    &p.text,
                    &Json(&p.metadata),
                    &p.stored_by_member,
                    &p.stored_by_pubkey,
                    &p.stored_at,
                    &(max_points as i64),
                    &(max_collections as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(if n == 1 {
            PointStored::Stored
        } else {
            PointStored::Full
        })
    }

    async fn search_points(
        &self,
        mesh_id: &str,
        collection: &str,
        query: &str,
        limit: usize,
    ) -> StoreResult<Vec<Point>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, mesh_id, collection, text, metadata, stored_by_member,
                        stored_by_pubkey, stored_at
                 FROM vector_point
                 WHERE mesh_id = $1 AND collection = $2 AND text ILIKE $3
                 ORDER BY seq LIMIT $4",
                &[
                    &mesh_id,
                    &collection,
                    &contains_pattern(query),
                    &(limit as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| Point {
                id: r.get(0),
                mesh_id: r.get(1),
                collection: r.get(2),
                text: r.get(3),
                metadata: r.get::<_, Json<Map<String, Value>>>(4).0,
                stored_by_member: r.get(5),
                stored_by_pubkey: r.get(6),
                stored_at: r.get(7),
            })
            .collect())
    }

    async fn delete_point(
        &self,
        mesh_id: &str,
        collection: &str,
        id: Uuid,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<PointDeleted> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "WITH t AS (SELECT 1 FROM vector_point
                            WHERE mesh_id = $1 AND collection = $2 AND id = $3),
                      d AS (DELETE FROM vector_point
                            WHERE mesh_id = $1 AND collection = $2 AND id = $3
                              AND ($5 OR stored_by_member = $4) RETURNING 1)
                 SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM d)",
                &[&mesh_id, &collection, &id, &member_id, &privileged],
            )
            .await
            .map_err(map_err)?;
        let (found, gone): (i64, i64) = (row.get(0), row.get(1));
        Ok(match (found, gone) {
            (0, _) => PointDeleted::NotFound,
            (_, 0) => PointDeleted::Forbidden,
            _ => PointDeleted::Deleted,
        })
    }

    async fn list_collections(&self, mesh_id: &str) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT collection FROM (SELECT DISTINCT collection FROM vector_point
                                         WHERE mesh_id = $1) c
                 ORDER BY collection COLLATE \"C\"",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_match_literally() {
        assert_eq!(super::contains_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }
}
