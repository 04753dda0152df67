//! The `session_hello` handshake (PROTOCOL-SESSIONS.md §3): every check of
//! §3's table in its order, then the presence: role `session`, routable by
//! the session key, member = the parent, at-least-once from the start,
//! re-attached by key or superseding a presence of the same session id,
//! on any node. The session is then started as a hello's is.

use serde_json::json;
use uuid::Uuid;

use super::audit::Actor;
use super::events::PeerEvent;
use super::hello::{
    check_not_a_member_key, give_back, hook_token_hash, revoked, spend_signature, unavailable,
    HelloAck, Welcome,
};
use super::sessions::close;
use super::signal::Signal;
use super::Ctx;
use crate::protocol::hello::HelloRefusal;
use crate::protocol::session_hello::{check_keys, check_signatures, SessionHello};
use crate::protocol::{crypto, PROTOCOL_VERSION};
use crate::store::{Attach, NewPresence, PeerRole};

pub async fn session_hello(
    ctx: &Ctx,
    h: &SessionHello,
    conn_id: Uuid,
) -> Result<Welcome, HelloRefusal> {
    // The deadline starts with the work, not with the wait for a slot.
    let _slot = ctx.node.hello_slots.acquire().await;
    match tokio::time::timeout(super::db_timeout(), checked(ctx, h, conn_id)).await {
        Ok(r) => r,
        Err(_) => Err(unavailable("the database did not answer in time")),
    }
}

async fn checked(ctx: &Ctx, h: &SessionHello, conn_id: Uuid) -> Result<Welcome, HelloRefusal> {
    check_keys(h)?;
    let key = h.session_key();
    let max = ctx.config.settings.max_connections_per_mesh;
    // Check 4, before the signatures as the table orders it, and skipped
    // for a re-attach; the attach itself counts again, atomically.
    let live = ctx
        .store
        .route_targets(&h.mesh_id)
        .await
        .map_err(unavailable)?;
    let reattaching = live
        .iter()
        .any(|t| t.session_pubkey.as_deref() == Some(key));
    let online = live.iter().filter(|t| t.online).count();
    if !reattaching && online >= max as usize {
        return Err(capacity(max));
    }
    check_signatures(h, ctx.now().timestamp_millis())?;
    let unauthorized = || HelloRefusal::new("unauthorized", "not a member of this mesh");
    let member = ctx
        .store
        .member_by_pubkey(&h.mesh_id, h.parent_key())
        .await
        .map_err(unavailable)?
        .ok_or_else(unauthorized)?;
    if member.revoked_at.is_some() {
        return Err(revoked(ctx, &h.mesh_id).await);
    }
    if h.parent_member_id
        .as_ref()
        .is_some_and(|id| *id != member.id)
    {
        return Err(HelloRefusal::new(
            "parent_member_id_mismatch",
            "`parentMemberId` is not the id of the member with that key",
        ));
    }
    // Another member's key would route sends meant for it here (another
    // member's session key is the attach's `Foreign`).
    check_not_a_member_key(ctx, &member.id, &h.mesh_id, key).await?;
    let signature = spend_signature(ctx, &h.signature, h.timestamp).await?;
    let now = ctx.now();
    let hook_token = crypto::random_token(32);
    let named = h.display_name.as_ref().is_some_and(|n| !n.is_empty());
    let new = NewPresence {
        id: Uuid::now_v7(),
        mesh_id: h.mesh_id.clone(),
        member_id: member.id.clone(),
        member_pubkey: member.pubkey.clone(),
        node_id: ctx.node_id,
        conn_id,
        role: PeerRole::Session,
        session_id: h.session_id.clone(),
        session_pubkey: Some(key.to_string()),
        display_name: match &h.display_name {
            Some(n) if named => n.clone(),
            _ => member.display_name.clone(),
        },
        named,
        pid: h.pid,
        cwd: h.cwd.clone(),
        hostname: h.hostname.clone(),
        peer_type: h.peer_type.clone(),
        channel: h.channel.clone(),
        model: h.model.clone(),
        capabilities: Vec::new(),
        // The 1.37 daemon acks every push of its session sockets, from the
        // first one drained after hello_ack.
        at_least_once: true,
        groups: h
            .groups
            .clone()
            .unwrap_or_else(|| member.default_groups.clone()),
        profile: Default::default(),
        visible: true,
        summary: None,
        hook_token_hash: hook_token_hash(&hook_token),
        now,
    };
    let attached = ctx.store.attach_session(&new, max).await;
    let refused = match &attached {
        Ok(Attach::Foreign) => Some(HelloRefusal::new(
            "unauthorized",
            "sessionPubkey belongs to another member",
        )),
        Ok(Attach::Capacity) => Some(capacity(max)),
        Err(e) => Some(unavailable(e)),
        Ok(_) => None,
    };
    if let Some(refusal) = refused {
        give_back(ctx, &signature).await;
        return Err(refusal);
    }
    let replaced = |conn, p| Signal::Close {
        p,
        c: conn,
        code: close::REPLACED,
        reason: None,
        error: None,
    };
    let (presence, announce) = match attached.expect("refusals returned above") {
        Attach::Created(p) => (p, Some(PeerEvent::Joined)),
        Attach::Reattached(p) => (p, None),
        Attach::Replaced {
            presence,
            old_node,
            old_conn,
        } => {
            ctx.signal(old_node, replaced(old_conn, presence.id));
            (presence, None)
        }
        Attach::Superseded { presence, old } => {
            // The old presence ended without `peer_left`; the new one is
            // announced as any new session.
            ctx.signal(old.node_id, replaced(old.conn_id, old.id));
            (presence, Some(PeerEvent::Joined))
        }
        Attach::Foreign | Attach::Capacity => unreachable!("refused above"),
    };
    if let (Some(pid), Some(cwd)) = (h.pid, h.cwd.as_deref()) {
        super::status::apply_pending_hook(ctx, presence.id, pid, cwd)
            .await
            .map_err(unavailable)?;
    }
    let ack = HelloAck {
        ty: "hello_ack",
        presence_id: presence.id.to_string(),
        member_display_name: &presence.display_name,
        member_profile: json!({
            "roleTag": null,
            "groups": member.default_groups,
            "messageMode": "push",
        }),
        // Session presences neither use nor update the member's saved
        // state: no `restored*`.
        restored: None,
        last_summary: None,
        last_seen_at: None,
        restored_groups: None,
        hook_token: &hook_token,
        node_id: ctx.node_id.to_string(),
        protocol: PROTOCOL_VERSION,
    };
    let ack = serde_json::to_string(&ack).expect("hello_ack serialises");
    if let Some(event) = announce {
        ctx.audit.record(
            &presence.mesh_id,
            event.as_str(),
            Some(Actor {
                member_id: &presence.member_id,
                name: &presence.display_name,
            }),
            json!({"presence_id": presence.id, "session_id": presence.session_id,
                   "node_id": ctx.node_id, "role": "session"}),
        );
    }
    Ok(Welcome {
        presence,
        ack,
        client_ack: true,
        announce,
        saved: None,
    })
}

fn capacity(max: u32) -> HelloRefusal {
    HelloRefusal::new("capacity", format!("mesh already has {max} live sessions"))
}
