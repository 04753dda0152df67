//! System events (`peer_joined`, `peer_returned`, `peer_left`,
//! `peer_visible`, `peer_hidden`): pushes with `subtype: system` to the
//! other members' sessions of a mesh. Advisory and not stored: a client
//! that misses one still sees the truth in `list_peers`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::signal::{Signal, Skip, MAX_PAYLOAD};
use super::Ctx;
use crate::protocol::ids;
use crate::store::{MemberState, PeerRole, Presence};
use crate::time::iso;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    Joined,
    Returned,
    Left,
    Visible,
    Hidden,
}

impl PeerEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerEvent::Joined => "peer_joined",
            PeerEvent::Returned => "peer_returned",
            PeerEvent::Left => "peer_left",
            PeerEvent::Visible => "peer_visible",
            PeerEvent::Hidden => "peer_hidden",
        }
    }
}

/// The push frame of one event about `p`.
pub fn event_frame(
    event: PeerEvent,
    p: &Presence,
    saved: Option<&MemberState>,
    now: DateTime<Utc>,
) -> String {
    let mut data = json!({
        "name": p.display_name,
        "pubkey": p.pubkey(),
        "groups": p.groups,
    });
    if matches!(
        event,
        PeerEvent::Joined | PeerEvent::Returned | PeerEvent::Left
    ) {
        // The plain clients of both generations read `displayName`; the
        // MCP server and the 1.37 daemon read `name` (PROTOCOL-SESSIONS.md
        // §13 item 11).
        data["displayName"] = Value::String(p.display_name.clone());
    }
    if let (PeerEvent::Returned, Some(s)) = (event, saved) {
        data["lastSeenAt"] = Value::String(iso(s.last_seen_at));
        data["summary"] = s
            .last_summary
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null);
    }
    system_frame(&p.mesh_id, event.as_str(), data, now)
}

/// A system event's `push` frame (PROTOCOL-MESH.md §0): never leased, no
/// envelope, a fresh `messageId`.
pub fn system_frame(mesh_id: &str, event: &str, data: Value, now: DateTime<Utc>) -> String {
    json!({
        "type": "push",
        "subtype": "system",
        "messageId": ids::encode(Uuid::now_v7()),
        "meshId": mesh_id,
        "senderPubkey": "system",
        "priority": "low",
        "nonce": "",
        "ciphertext": "",
        "createdAt": iso(now),
        "event": event,
        "eventData": data,
    })
    .to_string()
}

/// Tells the mesh's other members about `p`. Hidden sessions announce
/// nothing but their own visibility changes.
pub fn announce(ctx: &Ctx, event: PeerEvent, p: &Presence, saved: Option<&MemberState>) {
    let hidden_ok = matches!(event, PeerEvent::Hidden | PeerEvent::Visible);
    if !p.visible && !hidden_ok {
        return;
    }
    let mut frame = event_frame(event, p, saved, ctx.now());
    if frame.len() > MAX_PAYLOAD {
        // Groups are the only unbounded part; the bus cannot carry more,
        // and list_peers has them anyway.
        let mut lean = p.clone();
        lean.groups.clear();
        frame = event_frame(event, &lean, saved, ctx.now());
    }
    // A session presence's join reaches its member's own other sessions
    // too (PROTOCOL-SESSIONS.md §3): only the presence itself is skipped.
    let skip = if event == PeerEvent::Joined && p.role == PeerRole::Session {
        Skip::Presence(p.id)
    } else {
        Skip::Member(p.member_id.clone())
    };
    ctx.signal_cluster(Signal::Event {
        mesh: p.mesh_id.clone(),
        skip,
        frame,
    });
}
