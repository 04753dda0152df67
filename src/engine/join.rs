//! `/join`: redeeming a v1 invite, checks in PROTOCOL.md order. The checks
//! that need only the payload and the mesh row run here; the ones on the
//! invite row, and the use itself, run atomically in the Store.

use serde_json::json;
use uuid::Uuid;

use super::audit::Actor;
use super::Ctx;
use crate::protocol::crypto;
use crate::protocol::invite::InvitePayload;
use crate::protocol::limits::{within, MAX_DISPLAY_NAME};
use crate::store::{Redeem, Redeemed, StoreError};

#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    /// Refused with this PROTOCOL.md code.
    Refused(&'static str),
    Unavailable,
}

impl From<StoreError> for JoinError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failed during join");
        JoinError::Unavailable
    }
}

pub struct JoinRequest {
    pub token: String,
    /// The decoded payload if the client sent one; else the token's.
    pub payload: Option<InvitePayload>,
    pub pubkey: String,
    pub display_name: String,
}

pub async fn join(ctx: &Ctx, req: JoinRequest) -> Result<Redeemed, JoinError> {
    let token = req
        .token
        .strip_prefix("ic://join/")
        .unwrap_or(&req.token)
        .to_string();
    let token_prefix: String = token.chars().take(12).collect();
    let display_name = req.display_name.clone();
    if crypto::parse_pubkey(&req.pubkey).is_none() {
        return Err(JoinError::Refused("bad_request"));
    }
    if req.display_name.is_empty() || !within(&req.display_name, MAX_DISPLAY_NAME) {
        return Err(JoinError::Refused("bad_request"));
    }
    let payload = match req.payload {
        Some(p) => p,
        None => InvitePayload::from_token(&token).ok_or(JoinError::Refused("bad_request"))?,
    };
    if !payload.signature_valid() {
        return Err(JoinError::Refused("invite_bad_signature"));
    }
    let mesh = ctx
        .store
        .mesh_by_id(&payload.mesh_id)
        .await?
        .ok_or(JoinError::Refused("mesh_not_found"))?;
    if !mesh
        .owner_pubkey
        .eq_ignore_ascii_case(&payload.owner_pubkey)
    {
        return Err(JoinError::Refused("invite_owner_mismatch"));
    }
    let redeemed = ctx
        .store
        .redeem_invite(&Redeem {
            token: token.clone(),
            mesh_id: mesh.id.clone(),
            pubkey: req.pubkey.to_ascii_lowercase(),
            display_name: display_name.clone(),
            new_member_id: Uuid::now_v7().to_string(),
            now: ctx.now(),
        })
        .await?
        .map_err(|r| JoinError::Refused(r.code()))?;
    tracing::info!(mesh_id = %mesh.id, member_id = %redeemed.member_id,
        already_member = redeemed.already_member, "invite redeemed");
    if !redeemed.already_member {
        ctx.audit.record(
            &mesh.id,
            "invite_redeemed",
            Some(Actor {
                member_id: &redeemed.member_id,
                name: &display_name,
            }),
            json!({"member_id": redeemed.member_id, "token_prefix": &token_prefix}),
        );
    }
    Ok(redeemed)
}
