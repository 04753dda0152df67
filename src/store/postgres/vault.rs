//! The vault in Postgres. The per-member cap is counted under an advisory
//! lock on (mesh, member) only when a key is added.

use async_trait::async_trait;

use super::{map_err, PgStore};
use crate::store::*;

const VAULT_COLS: &str = "mesh_id, member_id, key, ciphertext, nonce, sealed_key, entry_type, \
    mount_path, description, updated_at";

fn entry(r: &tokio_postgres::Row) -> VaultEntry {
    VaultEntry {
        mesh_id: r.get(0),
        member_id: r.get(1),
        key: r.get(2),
        ciphertext: r.get(3),
        nonce: r.get(4),
        sealed_key: r.get(5),
        entry_type: r.get(6),
        mount_path: r.get(7),
        description: r.get(8),
        updated_at: r.get(9),
    }
}

#[async_trait]
impl VaultStore for PgStore {
    async fn vault_set(&self, e: &VaultEntry, max: usize) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('vault:' || $1 || ':' || $2, 0))",
            &[&e.mesh_id, &e.member_id],
        )
        .await
        .map_err(map_err)?;
        let n = tx
            .execute(
                "INSERT INTO vault_entry (mesh_id, member_id, key, ciphertext, nonce, sealed_key,
                                          entry_type, mount_path, description, updated_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
                 WHERE EXISTS (SELECT 1 FROM vault_entry
                               WHERE mesh_id = $1 AND member_id = $2 AND key = $3)
                    OR (SELECT count(*) FROM vault_entry WHERE mesh_id = $1 AND member_id = $2) < $11
                 ON CONFLICT (mesh_id, member_id, key) DO UPDATE SET
                   ciphertext = excluded.ciphertext, nonce = excluded.nonce,
                   sealed_key = excluded.sealed_key, entry_type = excluded.entry_type,
                   mount_path = excluded.mount_path, description = excluded.description,
                   updated_at = excluded.updated_at",
                &[
                    &e.mesh_id,
                    &e.member_id,
                    &e.key,
                    &e.ciphertext,
                    &e.nonce,
                    &e.sealed_key,
                    &e.entry_type,
                    &e.mount_path,
                    &e.description,
                    &e.updated_at,
                    &(max as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn vault_list(&self, mesh_id: &str, member_id: &str) -> StoreResult<Vec<VaultEntry>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {VAULT_COLS} FROM vault_entry WHERE mesh_id = $1 AND member_id = $2
             ORDER BY key COLLATE \"C\""
        );
        let rows = c
            .query(&sql, &[&mesh_id, &member_id])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn vault_get(
        &self,
        mesh_id: &str,
        member_id: &str,
        keys: &[String],
    ) -> StoreResult<Vec<VaultEntry>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {VAULT_COLS} FROM vault_entry v
             JOIN unnest($3::text[]) WITH ORDINALITY AS k(wanted, n) ON k.wanted = v.key
             WHERE v.mesh_id = $1 AND v.member_id = $2 ORDER BY k.n"
        );
        let rows = c
            .query(&sql, &[&mesh_id, &member_id, &keys])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn vault_delete(&self, mesh_id: &str, member_id: &str, key: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM vault_entry WHERE mesh_id = $1 AND member_id = $2 AND key = $3",
                &[&mesh_id, &member_id, &key],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }
}
