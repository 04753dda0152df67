//! Contexts in Postgres.

use async_trait::async_trait;
use tokio_postgres::types::Json;

use super::{map_err, PgStore};
use crate::store::*;

fn context(r: &tokio_postgres::Row) -> Context {
    Context {
        id: r.get(0),
        mesh_id: r.get(1),
        member_id: r.get(2),
        peer_name: r.get(3),
        summary: r.get(4),
        files_read: r.get::<_, Json<Vec<String>>>(5).0,
        key_findings: r.get::<_, Json<Vec<String>>>(6).0,
        tags: r.get::<_, Json<Vec<String>>>(7).0,
        updated_at: r.get(8),
    }
}

#[async_trait]
impl ContextStore for PgStore {
    async fn share_context(&self, c: &Context) -> StoreResult<Context> {
        let cl = self.client().await?;
        // The id is kept on replace: it names the member's context.
        let row = cl
            .query_one(
                "INSERT INTO context (mesh_id, member_id, id, peer_name, summary, files_read,
                                      key_findings, tags, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (mesh_id, member_id) DO UPDATE SET peer_name = excluded.peer_name,
                   summary = excluded.summary, files_read = excluded.files_read,
                   key_findings = excluded.key_findings, tags = excluded.tags,
                   updated_at = excluded.updated_at
                 RETURNING id, mesh_id, member_id, peer_name, summary, files_read, key_findings,
                           tags, updated_at",
                &[
                    &c.mesh_id,
                    &c.member_id,
                    &c.id,
                    &c.peer_name,
                    &c.summary,
                    &Json(&c.files_read),
                    &Json(&c.key_findings),
                    &Json(&c.tags),
                    &c.updated_at,
                ],
            )
            .await
            .map_err(map_err)?;
        Ok(context(&row))
    }

    async fn find_contexts(
        &self,
        mesh_id: &str,
        query: &str,
        limit: usize,
    ) -> StoreResult<Vec<Context>> {
        let c = self.client().await?;
        // strpos on lower() rather than ILIKE: the query is matched as a
        // plain substring, `%` and `_` included.
        let rows = c
            .query(
                "SELECT id, mesh_id, member_id, peer_name, summary, files_read, key_findings,
                        tags, updated_at
                 FROM context
                 WHERE mesh_id = $1
                   AND ($2 = '' OR strpos(lower(summary), lower($2)) > 0 OR tags ? $2)
                 ORDER BY updated_at DESC, member_id DESC LIMIT $3",
                &[&mesh_id, &query, &(limit as i64)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(context).collect())
    }
}
