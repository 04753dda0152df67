//! Shared files' metadata in Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

macro_rules! cols {
    () => {
        "f.id, f.mesh_id, f.name, f.size, f.content_type, f.tags, f.uploader_member, \
         f.uploaded_by, f.persistent, f.expires_at, f.target_spec, f.encrypted, \
         f.owner_pubkey, f.created_at, \
         COALESCE((SELECT jsonb_agg(jsonb_build_array(k.peer_pubkey, k.sealed_key) \
                   ORDER BY k.peer_pubkey) FROM file_key k WHERE k.file_id = f.id), '[]')"
    };
}

/// A live stored file: `$1` mesh, `$2` now.
macro_rules! live {
    () => {
        "f.mesh_id = $1 AND f.state = 'stored' AND f.deleted_at IS NULL \
         AND (f.expires_at IS NULL OR f.expires_at > $2)"
    };
}

const ONE: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM file f WHERE ",
    live!(),
    " AND f.id = $3"
);
const LIST: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM file f WHERE ",
    live!(),
    " ORDER BY f.created_at DESC, f.id DESC LIMIT $3"
);

const INSERT: &str = "
INSERT INTO file (id, mesh_id, name, size, content_type, tags, uploader_member, uploaded_by,
                  persistent, expires_at, target_spec, encrypted, owner_pubkey, state, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'uploading', $14)";

const USED: &str =
    "SELECT COALESCE(sum(size), 0)::bigint FROM file WHERE mesh_id = $1 AND deleted_at IS NULL";

const EXPIRE: &str = "
WITH ended AS (
    UPDATE file SET deleted_at = $1
    WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $1
    RETURNING mesh_id, id
), stale AS (
    DELETE FROM file WHERE state = 'uploading' AND created_at < $2 RETURNING mesh_id, id
)
SELECT mesh_id, id FROM ended UNION ALL SELECT mesh_id, id FROM stale";

fn stored(r: &tokio_postgres::Row) -> StoredFile {
    let tags: serde_json::Value = r.get(5);
    let keys: serde_json::Value = r.get(14);
    StoredFile {
        file: FileRow {
            id: r.get(0),
            mesh_id: r.get(1),
            name: r.get(2),
            size: r.get(3),
            content_type: r.get(4),
            tags: serde_json::from_value(tags).unwrap_or_default(),
            uploader_member: r.get(6),
            uploaded_by: r.get(7),
            persistent: r.get(8),
            expires_at: r.get(9),
            target_spec: r.get(10),
            encrypted: r.get(11),
            owner_pubkey: r.get(12),
            created_at: r.get(13),
        },
        keys: keys
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| {
                Some(FileKey {
                    peer_pubkey: k.get(0)?.as_str()?.to_string(),
                    sealed_key: k.get(1)?.as_str()?.to_string(),
                })
            })
            .collect(),
    }
}

#[async_trait]
impl FileStore for PgStore {
    async fn reserve_file(
        &self,
        f: &FileRow,
        keys: &[FileKey],
        quota: u64,
    ) -> StoreResult<Reserved> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // One reservation of a mesh at a time, so the quota holds.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('file:' || $1, 0))",
            &[&f.mesh_id],
        )
        .await
        .map_err(map_err)?;
        let used: i64 = tx
            .query_one(USED, &[&f.mesh_id])
            .await
            .map_err(map_err)?
            .get(0);
        if (used as u64).saturating_add(f.size as u64) > quota {
            return Ok(Reserved::OverQuota);
        }
        let tags = serde_json::json!(f.tags);
        tx.execute(
            INSERT,
            &[
                &f.id,
                &f.mesh_id,
                &f.name,
                &f.size,
                &f.content_type,
                &tags,
                &f.uploader_member,
                &f.uploaded_by,
                &f.persistent,
                &f.expires_at,
                &f.target_spec,
                &f.encrypted,
                &f.owner_pubkey,
                &f.created_at,
            ],
        )
        .await
        .map_err(map_err)?;
        for k in keys {
            tx.execute(
                "INSERT INTO file_key (file_id, peer_pubkey, sealed_key) VALUES ($1, $2, $3)
                 ON CONFLICT (file_id, peer_pubkey) DO UPDATE SET sealed_key = EXCLUDED.sealed_key",
                &[&f.id, &k.peer_pubkey, &k.sealed_key],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Reserved::Reserved)
    }

    async fn finish_file(&self, id: Uuid, size: i64) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE file SET state = 'stored', size = $2 WHERE id = $1 AND state = 'uploading'",
                &[&id, &size],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn abandon_file(&self, id: Uuid) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM file WHERE id = $1 AND state = 'uploading'",
            &[&id],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn stored_file(
        &self,
        mesh_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StoredFile>> {
        let c = self.client().await?;
        let r = c
            .query_opt(ONE, &[&mesh_id, &now, &id])
            .await
            .map_err(map_err)?;
        Ok(r.map(|r| stored(&r)))
    }

    async fn list_files(
        &self,
        mesh_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<StoredFile>> {
        let c = self.client().await?;
        let rows = c
            .query(LIST, &[&mesh_id, &now, &(limit as i64)])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(stored).collect())
    }

    async fn record_access(&self, id: Uuid, peer_name: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO file_access (file_id, peer_name, accessed_at)
             SELECT id, $2, $3 FROM file WHERE id = $1",
            &[&id, &peer_name, &at],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn file_accesses(
        &self,
        mesh_id: &str,
        id: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT a.peer_name, a.accessed_at FROM file_access a JOIN file f ON f.id = a.file_id
                 WHERE f.id = $1 AND f.mesh_id = $2 ORDER BY a.accessed_at DESC LIMIT $3",
                &[&id, &mesh_id, &(limit as i64)],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn delete_file(
        &self,
        mesh_id: &str,
        id: Uuid,
        member: &str,
        privileged: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<FileDeleted> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let sql = concat!(
            "SELECT ",
            cols!(),
            " FROM file f WHERE ",
            live!(),
            " AND f.id = $3 FOR UPDATE"
        );
        let Some(r) = tx
            .query_opt(sql, &[&mesh_id, &now, &id])
            .await
            .map_err(map_err)?
        else {
            return Ok(FileDeleted::Missing);
        };
        let f = stored(&r).file;
        if f.uploader_member != member && !privileged {
            return Ok(FileDeleted::Forbidden);
        }
        tx.execute(
            "UPDATE file SET deleted_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(FileDeleted::Deleted(Box::new(f)))
    }

    async fn grant_file_key(
        &self,
        mesh_id: &str,
        id: Uuid,
        key: &FileKey,
        max: usize,
        now: DateTime<Utc>,
    ) -> StoreResult<Granted> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let sql = concat!(
            "SELECT f.id FROM file f WHERE ",
            live!(),
            " AND f.id = $3 FOR UPDATE"
        );
        if tx
            .query_opt(sql, &[&mesh_id, &now, &id])
            .await
            .map_err(map_err)?
            .is_none()
        {
            return Ok(Granted::Missing);
        }
        let (n, has): (i64, bool) = {
            let r = tx
                .query_one(
                    "SELECT count(*), bool_or(peer_pubkey = $2) FROM file_key WHERE file_id = $1",
                    &[&id, &key.peer_pubkey],
                )
                .await
                .map_err(map_err)?;
            (r.get(0), r.get::<_, Option<bool>>(1).unwrap_or(false))
        };
        if !has && n as usize >= max {
            return Ok(Granted::Full);
        }
        tx.execute(
            "INSERT INTO file_key (file_id, peer_pubkey, sealed_key) VALUES ($1, $2, $3)
             ON CONFLICT (file_id, peer_pubkey) DO UPDATE SET sealed_key = EXCLUDED.sealed_key",
            &[&id, &key.peer_pubkey, &key.sealed_key],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Granted::Granted)
    }

    async fn expire_files(
        &self,
        now: DateTime<Utc>,
        stale: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        let rows = c.query(EXPIRE, &[&now, &stale]).await.map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| blob_key(r.get::<_, &str>(0), r.get(1)))
            .collect())
    }

    async fn download_key(&self, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "WITH i AS (INSERT INTO broker_secret (name, value) VALUES ('download_url_key', $1)
                            ON CONFLICT (name) DO NOTHING RETURNING value)
                 SELECT value FROM i UNION ALL
                 SELECT value FROM broker_secret WHERE name = 'download_url_key' LIMIT 1",
                &[&candidate],
            )
            .await
            .map_err(map_err)?;
        if let Some(r) = r {
            return Ok(r.get(0));
        }
        // Another node stored one while this statement ran: it is
        // committed now.
        let r = c
            .query_one(
                "SELECT value FROM broker_secret WHERE name = 'download_url_key'",
                &[],
            )
            .await
            .map_err(map_err)?;
        Ok(r.get(0))
    }

    async fn record_presence_addr(&self, presence: Uuid, addr: &str) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO presence_addr (presence_id, addr) SELECT id, $2 FROM presence WHERE id = $1
             ON CONFLICT (presence_id) DO UPDATE SET addr = EXCLUDED.addr",
            &[&presence, &addr],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn presence_at_addr(
        &self,
        mesh_id: &str,
        addr: &str,
        member: Option<&str>,
    ) -> StoreResult<Option<Uuid>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT p.id FROM presence_addr a JOIN presence p ON p.id = a.presence_id
                 WHERE a.addr = $2 AND p.mesh_id = $1 AND p.state = 'online'
                   AND ($3::text IS NULL OR p.member_id = $3)
                 ORDER BY COALESCE(p.last_active_at, p.connected_at) DESC LIMIT 1",
                &[&mesh_id, &addr, &member],
            )
            .await
            .map_err(map_err)?;
        Ok(r.map(|r| r.get(0)))
    }
}
