//! Meshes, members and invites in Postgres. A redemption's row-dependent
//! `/join` checks and the use run in one transaction holding the invite
//! row's lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::rows::{member_from, mesh_from, presence_from, PRESENCE_COLS};
use super::{map_err, PgStore};
use crate::store::*;

#[async_trait]
impl IdentityStore for PgStore {
    async fn insert_mesh(&self, m: &Mesh) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO mesh (id, slug, name, owner_pubkey, owner_secret, root_key, created_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[
                &m.id,
                &m.slug,
                &m.name,
                &m.owner_pubkey,
                &m.owner_secret,
                &m.root_key,
                &m.created_at,
            ],
        )
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict("mesh slug already exists"),
            other => other,
        })?;
        Ok(())
    }

    async fn list_meshes(&self) -> StoreResult<Vec<Mesh>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT * FROM mesh ORDER BY created_at, slug", &[])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(mesh_from).collect())
    }

    async fn mesh_by_slug(&self, slug: &str) -> StoreResult<Option<Mesh>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT * FROM mesh WHERE slug = $1", &[&slug])
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(mesh_from))
    }

    async fn mesh_by_id(&self, id: &str) -> StoreResult<Option<Mesh>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT * FROM mesh WHERE id = $1", &[&id])
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(mesh_from))
    }

    async fn insert_member(&self, m: &Member) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO member (id, mesh_id, peer_pubkey, display_name, role, default_groups, created_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[&m.id, &m.mesh_id, &m.pubkey, &m.display_name, &m.role.as_str(), &Json(&m.default_groups), &m.created_at],
        )
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict("pubkey is already a member of this mesh"),
            other => other,
        })?;
        Ok(())
    }

    async fn list_members(&self, mesh_id: &str) -> StoreResult<Vec<Member>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT * FROM member WHERE mesh_id = $1 ORDER BY created_at, id",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(member_from).collect())
    }

    async fn member_by_id(&self, mesh_id: &str, member_id: &str) -> StoreResult<Option<Member>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT * FROM member WHERE id = $1 AND mesh_id = $2")
            .await
            .map_err(map_err)?;
        let row = c
            .query_opt(&stmt, &[&member_id, &mesh_id])
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(member_from))
    }

    async fn member_by_pubkey(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<Member>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT * FROM member WHERE mesh_id = $1 AND peer_pubkey = $2",
                &[&mesh_id, &pubkey],
            )
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(member_from))
    }

    async fn revoke_member(
        &self,
        mesh_id: &str,
        member_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<Presence>>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let hit = tx
            .query_opt(
                "UPDATE member SET revoked_at = $3
                 WHERE id = $1 AND mesh_id = $2 AND revoked_at IS NULL RETURNING id",
                &[&member_id, &mesh_id, &now],
            )
            .await
            .map_err(map_err)?;
        if hit.is_none() {
            return Ok(None);
        }
        let sql = format!("DELETE FROM presence WHERE member_id = $1 RETURNING {PRESENCE_COLS}");
        let mut ended: Vec<Presence> = tx
            .query(&sql, &[&member_id])
            .await
            .map_err(map_err)?
            .iter()
            .map(presence_from)
            .collect();
        ended.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
        // Session rows only ever name live or in-grace presences (an ended
        // presence's rows become member rows), so these two sets are all
        // of the member's rows.
        let sessions: Vec<Uuid> = ended.iter().map(|p| p.id).collect();
        tx.execute(
            "DELETE FROM delivery WHERE recipient_session = ANY($3)
                OR (recipient_session IS NULL AND mesh_id = $1 AND recipient_member_id = $2)",
            &[&mesh_id, &member_id, &sessions],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(ended))
    }

    async fn unrevoke_member(&self, mesh_id: &str, member_id: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE member SET revoked_at = NULL
                 WHERE id = $1 AND mesh_id = $2 AND revoked_at IS NOT NULL",
                &[&member_id, &mesh_id],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn insert_invite(&self, i: &Invite) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO invite (token, mesh_id, role, max_uses, used_count, expires_at, created_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[&i.token, &i.mesh_id, &i.role.as_str(), &i.max_uses, &i.used_count, &i.expires_at, &i.created_at],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn revoke_invite(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE invite SET revoked_at = $2 WHERE token = $1 AND revoked_at IS NULL
                 RETURNING mesh_id",
                &[&token, &now],
            )
            .await
            .map_err(map_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn redeem_invite(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // The row lock serialises redemptions of one invite across nodes:
        // the use count can never pass max_uses.
        let Some(inv) = tx
            .query_opt(
                "SELECT mesh_id, role, max_uses, used_count, expires_at, revoked_at
                 FROM invite WHERE token = $1 FOR UPDATE",
                &[&r.token],
            )
            .await
            .map_err(map_err)?
        else {
            return Ok(Err(InviteRefusal::NotFound));
        };
        let (mesh_id, role): (String, String) = (inv.get(0), inv.get(1));
        let (max_uses, used): (i32, i32) = (inv.get(2), inv.get(3));
        let expires_at: DateTime<Utc> = inv.get(4);
        let revoked_at: Option<DateTime<Utc>> = inv.get(5);
        if mesh_id != r.mesh_id {
            return Ok(Err(InviteRefusal::MeshMismatch));
        }
        if revoked_at.is_some() {
            return Ok(Err(InviteRefusal::Revoked));
        }
        if expires_at <= r.now {
            return Ok(Err(InviteRefusal::Expired));
        }
        let existing = tx
            .query_opt(
                "SELECT id FROM member WHERE mesh_id = $1 AND peer_pubkey = $2",
                &[&r.mesh_id, &r.pubkey],
            )
            .await
            .map_err(map_err)?;
        if let Some(row) = existing {
            return Ok(Ok(Redeemed {
                member_id: row.get(0),
                already_member: true,
            }));
        }
        if used >= max_uses {
            return Ok(Err(InviteRefusal::Exhausted));
        }
        tx.execute(
            "UPDATE invite SET used_count = used_count + 1 WHERE token = $1",
            &[&r.token],
        )
        .await
        .map_err(map_err)?;
        let inserted = tx
            .query_opt(
                "INSERT INTO member (id, mesh_id, peer_pubkey, display_name, role, created_at)
                 VALUES ($1,$2,$3,$4,$5,$6)
                 ON CONFLICT (mesh_id, peer_pubkey) DO NOTHING RETURNING id",
                &[
                    &r.new_member_id,
                    &r.mesh_id,
                    &r.pubkey,
                    &r.display_name,
                    &role,
                    &r.now,
                ],
            )
            .await
            .map_err(map_err)?;
        if inserted.is_none() {
            // The same key joined through another invite meanwhile: roll
            // back this invite's use (dropping the transaction) and answer
            // with the member that won, as an existing member.
            drop(tx);
            let row = c
                .query_one(
                    "SELECT id FROM member WHERE mesh_id = $1 AND peer_pubkey = $2",
                    &[&r.mesh_id, &r.pubkey],
                )
                .await
                .map_err(map_err)?;
            return Ok(Ok(Redeemed {
                member_id: row.get(0),
                already_member: true,
            }));
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Ok(Redeemed {
            member_id: r.new_member_id.clone(),
            already_member: false,
        }))
    }
}
