//! Invite redemption: the row-dependent `/join` checks and the use, in one
//! transaction holding the invite row's lock.

use chrono::{DateTime, Utc};

use super::{map_err, PgStore};
use crate::store::{InviteRefusal, Redeem, Redeemed, StoreResult};

impl PgStore {
    pub(super) async fn redeem(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>> {
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
