//! The handshake: from a parsed `hello` to an attached presence and the
//! `hello_ack` bytes, or a refusal with its PROTOCOL.md code; then the
//! session put to work, and released to grace when its socket closes.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use tokio::sync::watch;

use super::audit::Actor;
use super::delivery::{Deliverer, Recipient};
use super::dispatch::Session;
use super::events::{announce, PeerEvent};
use super::outbound::OutboundTx;
use super::sessions::{close, Mailbox, Outbound, SessionHandle};
use super::signal::Signal;
use super::{Ctx, Engine};
use crate::protocol::hello::{verify, Hello, HelloRefusal};
use crate::protocol::wire::with_req_id;
use crate::protocol::{crypto, GroupRef, PROTOCOL_VERSION};
use crate::store::{Attach, MemberState, NewPresence, PeerRole, Presence};

/// A successful handshake.
pub struct Welcome {
    pub presence: Presence,
    /// Serialised `hello_ack`, without `_reqId`.
    pub ack: String,
    pub client_ack: bool,
    /// What to tell the mesh: nothing for a silent re-attach.
    pub announce: Option<PeerEvent>,
    /// The member's saved state, for `peer_returned`.
    pub saved: Option<MemberState>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HelloAck<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub presence_id: String,
    pub member_display_name: &'a str,
    pub member_profile: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_summary: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_groups: Option<&'a [GroupRef]>,
    pub hook_token: &'a str,
    pub node_id: String,
    pub protocol: u32,
}

/// `sessionPubkey` is not covered by the hello signature (v1), so a
/// session may not claim a key that routes to someone else: another
/// member's key, or another member's live session key. Otherwise
/// direct sends to that key would reach it.
async fn check_session_key(
    ctx: &Ctx,
    member_id: &str,
    mesh_id: &str,
    key: &str,
) -> Result<(), HelloRefusal> {
    check_not_a_member_key(ctx, member_id, mesh_id, key).await?;
    let live = ctx
        .store
        .route_targets(mesh_id)
        .await
        .map_err(unavailable)?;
    if live
        .iter()
        .any(|t| t.session_pubkey.as_deref() == Some(key) && t.member_id != member_id)
    {
        return Err(key_taken());
    }
    Ok(())
}

fn key_taken() -> HelloRefusal {
    HelloRefusal::new("unauthorized", "sessionPubkey belongs to another member")
}

/// A session key may not be another member's own key. (A `session_hello`
/// needs only this: its attach refuses another member's session key.)
pub(super) async fn check_not_a_member_key(
    ctx: &Ctx,
    member_id: &str,
    mesh_id: &str,
    key: &str,
) -> Result<(), HelloRefusal> {
    match ctx
        .store
        .member_by_pubkey(mesh_id, key)
        .await
        .map_err(unavailable)?
    {
        Some(owner) if owner.id != member_id => Err(key_taken()),
        _ => Ok(()),
    }
}

/// The refusal of a revoked member's hello (PROTOCOL-SESSIONS.md §9): the
/// 1.37 client stops on this code (and on close 4002), where it would
/// retry `unauthorized` forever.
pub(super) async fn revoked(ctx: &Ctx, mesh_id: &str) -> HelloRefusal {
    match ctx.store.mesh_by_id(mesh_id).await {
        Ok(Some(mesh)) => HelloRefusal::new("revoked", super::moderation::revoked_message(&mesh)),
        Ok(None) => HelloRefusal::new("unauthorized", "not a member of this mesh"),
        Err(e) => unavailable(e),
    }
}

/// Spends an accepted hello's signature (§11): the last check, so only a
/// hello that passed every other one spends it. Returns what to give back
/// if the attach refuses the hello after all.
pub(super) async fn spend_signature(
    ctx: &Ctx,
    signature: &str,
    timestamp_ms: i64,
) -> Result<Vec<u8>, HelloRefusal> {
    let hash = signature_hash(signature);
    let until = chrono::DateTime::from_timestamp_millis(timestamp_ms).unwrap_or(ctx.now())
        + chrono::Duration::milliseconds(SIGNATURE_KEPT_MS);
    if ctx
        .store
        .use_signature(&hash, until)
        .await
        .map_err(unavailable)?
    {
        Ok(hash)
    } else {
        Err(HelloRefusal::new(
            "replayed",
            "hello signature already used",
        ))
    }
}

/// Gives back the signature of a hello the attach refused.
pub(super) async fn give_back(ctx: &Ctx, hash: &[u8]) {
    if let Err(e) = ctx.store.release_signature(hash).await {
        tracing::warn!(error = %e, "could not give back a refused hello's signature");
    }
}

/// How long an accepted signature is remembered after its hello's
/// timestamp: the skew window (60 s) and a margin for clock steps.
const SIGNATURE_KEPT_MS: i64 = 65_000;

/// What the store keeps of a signature: the SHA-256 of its bytes (of its
/// text when it is not hex, which `verify` has refused already), so the
/// same signature in upper- and lower-case hex is one signature.
fn signature_hash(sig: &str) -> Vec<u8> {
    match hex::decode(sig) {
        Ok(bytes) => Sha256::digest(bytes).to_vec(),
        Err(_) => Sha256::digest(sig.as_bytes()).to_vec(),
    }
}

/// SHA-256 of a hook token: only the hash is stored, so a database leak
/// does not hand out hook credentials.
pub fn hook_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> HelloRefusal {
    tracing::warn!(error = %e, "store failed during hello");
    HelloRefusal::new("unavailable", "the broker cannot reach its database; retry")
}

/// Runs every hello check in PROTOCOL.md order and attaches the
/// presence. `conn_id` names the socket asking.
pub async fn hello(ctx: &Ctx, h: &Hello, conn_id: Uuid) -> Result<Welcome, HelloRefusal> {
    // The deadline starts with the work, not with the wait for a slot.
    let _slot = ctx.node.hello_slots.acquire().await;
    match tokio::time::timeout(super::db_timeout(), hello_inner(ctx, h, conn_id)).await {
        Ok(r) => r,
        Err(_) => Err(unavailable("the database did not answer in time")),
    }
}

async fn hello_inner(ctx: &Ctx, h: &Hello, conn_id: Uuid) -> Result<Welcome, HelloRefusal> {
    verify(h, ctx.now().timestamp_millis())?;
    let unauthorized = || HelloRefusal::new("unauthorized", "not a member of this mesh");
    let member = ctx
        .store
        .member_by_id(&h.mesh_id, &h.member_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(unauthorized)?;
    if !member.pubkey.eq_ignore_ascii_case(&h.pubkey) {
        return Err(unauthorized());
    }
    if member.revoked_at.is_some() {
        return Err(revoked(ctx, &h.mesh_id).await);
    }
    if let Some(sp) = &h.session_pubkey {
        check_session_key(ctx, &member.id, &h.mesh_id, &sp.to_ascii_lowercase()).await?;
    }
    let saved = ctx
        .store
        .member_state(&h.mesh_id, &h.member_id)
        .await
        .map_err(unavailable)?;
    let groups = match &h.groups {
        Some(g) if !g.is_empty() => g.clone(),
        _ => match &saved {
            Some(s) if !s.groups.is_empty() => s.groups.clone(),
            _ => member.default_groups.clone(),
        },
    };
    let hook_token = crypto::random_token(32);
    let now = ctx.now();
    let new = NewPresence {
        id: Uuid::now_v7(),
        mesh_id: h.mesh_id.clone(),
        member_id: member.id.clone(),
        member_pubkey: member.pubkey.clone(),
        node_id: ctx.node_id,
        conn_id,
        role: PeerRole::ControlPlane,
        session_id: h.session_id.clone(),
        session_pubkey: h.session_pubkey.as_ref().map(|s| s.to_ascii_lowercase()),
        display_name: h
            .display_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| member.display_name.clone()),
        named: h.display_name.as_ref().is_some_and(|n| !n.is_empty()),
        pid: h.pid,
        cwd: h.cwd.clone(),
        hostname: h.hostname.clone(),
        peer_type: h.peer_type.clone(),
        channel: h.channel.clone(),
        model: h.model.clone(),
        at_least_once: h
            .capabilities
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c == "client_ack")),
        capabilities: h.capabilities.clone().unwrap_or_default(),
        groups,
        profile: saved
            .as_ref()
            .map(|s| s.profile.clone())
            .unwrap_or_default(),
        visible: saved.as_ref().is_none_or(|s| s.visible),
        summary: saved.as_ref().and_then(|s| s.last_summary.clone()),
        hook_token_hash: hook_token_hash(&hook_token),
        now,
    };
    let max = ctx.config.settings.max_connections_per_mesh;
    let signature = spend_signature(ctx, &h.signature, h.timestamp).await?;
    let attached = ctx.store.attach_presence(&new, max).await;
    if !matches!(
        attached,
        Ok(Attach::Created(_) | Attach::Reattached(_) | Attach::Replaced { .. })
    ) {
        give_back(ctx, &signature).await;
    }
    let mut announce = None;
    let presence = match attached.map_err(unavailable)? {
        Attach::Created(p) => {
            announce = Some(if saved.is_some() {
                PeerEvent::Returned
            } else {
                PeerEvent::Joined
            });
            p
        }
        Attach::Reattached(p) => p,
        Attach::Replaced {
            presence,
            old_node,
            old_conn,
        } => {
            let close = Signal::Close {
                p: presence.id,
                c: old_conn,
                code: close::REPLACED,
                reason: None,
                error: None,
            };
            ctx.signal(old_node, close);
            presence
        }
        Attach::Capacity => {
            return Err(HelloRefusal::new(
                "capacity",
                format!("mesh already has {max} live sessions"),
            ))
        }
        // Only a session_hello's attach answers these.
        Attach::Superseded { .. } | Attach::Foreign => return Err(unauthorized()),
    };
    if let (Some(pid), Some(cwd)) = (h.pid, h.cwd.as_deref()) {
        // A hook may have beaten its session's hello here.
        super::status::apply_pending_hook(ctx, presence.id, pid, cwd)
            .await
            .map_err(unavailable)?;
    }
    let ack = HelloAck {
        ty: "hello_ack",
        presence_id: presence.id.to_string(),
        member_display_name: &member.display_name,
        member_profile: json!({
            "roleTag": null,
            "groups": presence.groups,
            "messageMode": "push",
        }),
        restored: saved.as_ref().map(|_| true),
        last_summary: saved.as_ref().and_then(|s| s.last_summary.as_deref()),
        last_seen_at: saved.as_ref().map(|s| crate::time::iso(s.last_seen_at)),
        restored_groups: saved.as_ref().map(|s| s.groups.as_slice()),
        hook_token: &hook_token,
        node_id: ctx.node_id.to_string(),
        protocol: PROTOCOL_VERSION,
    };
    let ack = serde_json::to_string(&ack).expect("hello_ack serialises");
    let client_ack = presence.at_least_once;
    if let Some(event) = announce {
        ctx.audit.record(
            &presence.mesh_id,
            event.as_str(),
            Some(Actor {
                member_id: &presence.member_id,
                name: &presence.display_name,
            }),
            serde_json::json!({"presence_id": presence.id, "session_id": presence.session_id,
                               "node_id": ctx.node_id}),
        );
    }
    Ok(Welcome {
        presence,
        ack,
        client_ack,
        announce,
        saved,
    })
}

/// The socket a session is started on, as the socket layer owns it.
pub struct Socket {
    pub conn_id: Uuid,
    pub tx: OutboundTx,
    pub closer: watch::Sender<Option<(u16, &'static str)>>,
    /// The client's address, kept only under `upload_auth = "peer_address"`.
    pub remote: Option<std::net::IpAddr>,
}

/// Puts an accepted hello to work: registers the socket in the session
/// table, writes `hello_ack` (first: queued pushes follow it), announces
/// the session, and starts its delivery loop.
pub async fn start_session(
    engine: &Arc<Engine>,
    welcome: Welcome,
    socket: &Socket,
    req_id: Option<&str>,
) -> (Session, Deliverer) {
    let p = &welcome.presence;
    let mailbox = Arc::new(Mailbox::default());
    let handle = SessionHandle {
        conn_id: socket.conn_id,
        mesh_id: p.mesh_id.clone(),
        member_id: p.member_id.clone(),
        tx: socket.tx.clone(),
        mailbox: mailbox.clone(),
        closer: socket.closer.clone(),
    };
    engine.sessions.insert(p.id, handle);
    if welcome.announce.is_none() {
        // Not a new presence: it keeps its stream subscriptions here.
        super::streams::restore(engine, p.id).await;
    }
    tracing::info!(conn_id = %socket.conn_id, presence_id = %p.id,
        mesh_id = %p.mesh_id, member_id = %p.member_id, node_id = %engine.node_id,
        "hello accepted");
    let ack = with_req_id(welcome.ack, req_id);
    let _ = socket.tx.send(Outbound::Text(ack.into())).await;
    if let Some(event) = welcome.announce {
        announce(engine, event, p, welcome.saved.as_ref());
    }
    {
        // Off the hello's path: most members host nothing, and only some
        // brokers match uploads to sessions by address.
        let ctx = engine.ctx.clone();
        let p = p.clone();
        let remote = socket.remote;
        tokio::spawn(async move {
            super::relay::rehost(&ctx, &p).await;
            if let Some(addr) = remote {
                let addr = addr.to_string();
                let recorded = super::bounded(ctx.store.record_presence_addr(p.id, &addr));
                if let Err(e) = recorded.await {
                    tracing::warn!(presence_id = %p.id, error = %e, "could not record the session's address");
                }
            }
        });
    }
    let at_least_once = Arc::new(AtomicBool::new(welcome.client_ack));
    let who = Recipient {
        presence: p.id,
        mesh_id: p.mesh_id.clone(),
        member_id: p.member_id.clone(),
        at_least_once: at_least_once.clone(),
    };
    let deliverer = Deliverer::start(engine.clone(), who, socket.tx.clone(), mailbox.clone());
    let session = Session {
        engine: engine.clone(),
        presence: Arc::new(welcome.presence),
        at_least_once,
        mailbox,
    };
    (session, deliverer)
}

/// The socket of `presence` closed: keep it in grace for re-attach.
pub async fn release(ctx: &Ctx, presence: Uuid, conn_id: Uuid) {
    if ctx.sessions.remove(presence, conn_id) {
        ctx.relays.closed(ctx, presence);
    }
    let now = ctx.now();
    let grace = chrono::Duration::seconds(ctx.config.settings.presence_grace_seconds as i64);
    let released = ctx
        .store
        .release_presence(presence, conn_id, now + grace, now);
    if let Err(e) = super::bounded(released).await {
        tracing::warn!(presence_id = %presence, error = %e, "could not move presence to grace");
    }
}
