//! Inbound webhooks in Postgres. Names are unique among active webhooks
//! (a partial unique index); the cap is counted under a per-mesh lock.

use async_trait::async_trait;

use super::{map_err, PgStore};
use crate::store::*;

fn webhook(r: &tokio_postgres::Row) -> Webhook {
    Webhook {
        id: r.get(0),
        mesh_id: r.get(1),
        name: r.get(2),
        secret_hash: r.get(3),
        secret_prefix: r.get(4),
        created_by_member: r.get(5),
        created_at: r.get(6),
    }
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook(&self, w: &Webhook, max: usize) -> StoreResult<WebhookCreated> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('webhook:' || $1, 0))",
            &[&w.mesh_id],
        )
        .await
        .map_err(map_err)?;
        let row = tx
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE name = $2)
                 FROM webhook WHERE mesh_id = $1 AND active",
                &[&w.mesh_id, &w.name],
            )
            .await
            .map_err(map_err)?;
        let (active, same): (i64, i64) = (row.get(0), row.get(1));
        if same > 0 {
            return Ok(WebhookCreated::Exists);
        }
        if active as usize >= max {
            return Ok(WebhookCreated::Full);
        }
        tx.execute(
            "INSERT INTO webhook (id, mesh_id, name, secret_hash, secret_prefix, created_by_member,
                                  created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &w.id,
                &w.mesh_id,
                &w.name,
                &w.secret_hash,
                &w.secret_prefix,
                &w.created_by_member,
                &w.created_at,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(WebhookCreated::Created)
    }

    async fn list_webhooks(&self, mesh_id: &str) -> StoreResult<Vec<Webhook>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, mesh_id, name, secret_hash, secret_prefix, created_by_member, created_at
                 FROM webhook WHERE mesh_id = $1 AND active ORDER BY created_at, id",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(webhook).collect())
    }

    async fn delete_webhook(
        &self,
        mesh_id: &str,
        name: &str,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<WebhookDeleted> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "WITH t AS (SELECT 1 FROM webhook WHERE mesh_id = $1 AND name = $2 AND active),
                      u AS (UPDATE webhook SET active = false, deleted_at = now()
                            WHERE mesh_id = $1 AND name = $2 AND active
                              AND ($4 OR created_by_member = $3) RETURNING 1)
                 SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u)",
                &[&mesh_id, &name, &member_id, &privileged],
            )
            .await
            .map_err(map_err)?;
        let (found, gone): (i64, i64) = (row.get(0), row.get(1));
        Ok(match (found, gone) {
            (0, _) => WebhookDeleted::NotFound,
            (_, 0) => WebhookDeleted::Forbidden,
            _ => WebhookDeleted::Deleted,
        })
    }
}
