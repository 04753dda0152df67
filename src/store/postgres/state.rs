//! Shared state in Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::Json;

use super::{map_err, PgStore};
use crate::store::*;

/// Replaces an existing key; adds one only while the mesh is under its
/// cap. The cap is counted under a transaction-scoped advisory lock per
/// mesh, so two nodes adding keys at once cannot both pass it; replacing
/// a key takes no lock.
const REPLACE: &str = "
UPDATE mesh_state SET value = $3, updated_by = $4, updated_by_member = $5, updated_at = $6
WHERE mesh_id = $1 AND key = $2";

const ADD: &str = "
INSERT INTO mesh_state (mesh_id, key, value, updated_by, updated_by_member, updated_at)
SELECT $1, $2, $3, $4, $5, $6
WHERE (SELECT count(*) FROM mesh_state WHERE mesh_id = $1) < $7
   OR EXISTS (SELECT 1 FROM mesh_state WHERE mesh_id = $1 AND key = $2)
ON CONFLICT (mesh_id, key) DO UPDATE SET value = excluded.value,
  updated_by = excluded.updated_by, updated_by_member = excluded.updated_by_member,
  updated_at = excluded.updated_at";

fn entry(r: &tokio_postgres::Row) -> StateEntry {
    StateEntry {
        key: r.get(0),
        value: r.get::<_, Json<Value>>(1).0,
        updated_by: r.get(2),
        updated_at: r.get::<_, DateTime<Utc>>(3),
    }
}

#[async_trait]
impl StateStore for PgStore {
    async fn write_state(&self, w: &StateWrite<'_>) -> StoreResult<StateWritten> {
        let mut c = self.client().await?;
        let Some(value) = w.value else {
            let n = c
                .execute(
                    "DELETE FROM mesh_state WHERE mesh_id = $1 AND key = $2",
                    &[&w.mesh_id, &w.key],
                )
                .await
                .map_err(map_err)?;
            return Ok(StateWritten::Deleted(n == 1));
        };
        let value = Json(value);
        let replaced = c
            .execute(
                REPLACE,
                &[
                    &w.mesh_id,
                    &w.key,
                    &value,
                    &w.member_name,
                    &w.member_id,
                    &w.at,
                ],
            )
            .await
            .map_err(map_err)?;
        if replaced == 1 {
            return Ok(StateWritten::Stored);
        }
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('mesh_state:' || $1, 0))",
            &[&w.mesh_id],
        )
        .await
        .map_err(map_err)?;
        let max = w.max_keys as i64;
        let added = tx
            .execute(
                ADD,
                &[
                    &w.mesh_id,
                    &w.key,
                    &value,
                    &w.member_name,
                    &w.member_id,
                    &w.at,
                    &max,
                ],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(if added == 1 {
            StateWritten::Stored
        } else {
            StateWritten::Full
        })
    }

    async fn get_state(&self, mesh_id: &str, key: &str) -> StoreResult<Option<StateEntry>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT key, value, updated_by, updated_at FROM mesh_state
                 WHERE mesh_id = $1 AND key = $2",
                &[&mesh_id, &key],
            )
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(entry))
    }

    async fn list_state(&self, mesh_id: &str) -> StoreResult<Vec<StateEntry>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT key, value, updated_by, updated_at FROM mesh_state
                 WHERE mesh_id = $1 ORDER BY key COLLATE \"C\"",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(entry).collect())
    }
}
