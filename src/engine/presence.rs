//! The presence family: `list_peers` and the frames a session uses to
//! describe itself (status, summary, visibility, profile, stats, groups).
//! `list_peers` reads the presence table, so every node answers the same;
//! a visibility change is announced cluster-wide.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::dispatch::{Handled, Refusal, Reply, Session};
use super::events::{announce, PeerEvent};
use super::{bounded, Ctx};
use crate::protocol::presence::PresenceFrame;
use crate::protocol::wire::{ok_ack, Head};
use crate::protocol::{GroupRef, Profile, Source};
use crate::store::{PatchResult, Presence, PresencePatch, StoreError};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: PresenceFrame, head: &Head) -> Handled {
    let acked = || Reply::Frame(ok_ack(head.id.as_deref()));
    match frame {
        PresenceFrame::ListPeers => {
            let p = &s.presence;
            Ok(Reply::Frame(
                peers_list(&s.engine, &p.mesh_id, &p.member_id).await?,
            ))
        }
        PresenceFrame::SetStatus(status) => {
            let write =
                super::status::write_status(&s.engine, s.presence.id, status, Source::Manual);
            bounded(write).await?;
            Ok(Reply::None)
        }
        PresenceFrame::SetSummary(v) => patch(s, PresencePatch::Summary(v), Reply::None).await,
        PresenceFrame::SetVisible(v) => patch(s, PresencePatch::Visible(v), acked()).await,
        PresenceFrame::SetProfile(v) => patch(s, PresencePatch::Profile(v), acked()).await,
        PresenceFrame::SetStats(v) => patch(s, PresencePatch::Stats(v), Reply::None).await,
        PresenceFrame::JoinGroup(g) => patch(s, PresencePatch::JoinGroup(g), Reply::None).await,
        PresenceFrame::LeaveGroup(n) => patch(s, PresencePatch::LeaveGroup(n), Reply::None).await,
    }
}

/// A presence field change; `ok` is the reply once applied.
async fn patch(s: &mut Session, patch: PresencePatch, ok: Reply) -> Handled {
    let before = s.presence.clone();
    match bounded(s.engine.store.update_presence(before.id, &patch)).await? {
        PatchResult::Applied(after) => {
            if after.visible != before.visible {
                let event = if after.visible {
                    PeerEvent::Visible
                } else {
                    PeerEvent::Hidden
                };
                announce(&s.engine, event, &after, None);
            }
            s.presence = Arc::new(*after);
            Ok(ok)
        }
        PatchResult::Refused => Err(Refusal::bad_request("too many groups")),
        PatchResult::Gone => Err(Refusal::bad_request("this session's presence has ended")),
    }
}

/// The serialised `peers_list` (without `_reqId`) for a caller of
/// `member_id`: hidden sessions are left out except the caller's own
/// member's.
pub async fn peers_list(ctx: &Ctx, mesh_id: &str, member_id: &str) -> Result<String, StoreError> {
    let all = bounded(ctx.store.list_presences(mesh_id)).await?;
    let peers: Vec<PeerView> = all
        .iter()
        .filter(|p| p.visible || p.member_id == member_id)
        .map(PeerView::of)
        .collect();
    Ok(serde_json::json!({"type": "peers_list", "peers": peers}).to_string())
}

/// One `peers_list.peers[]` entry (PROTOCOL.md "Presence and status").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView<'a> {
    pub pubkey: &'a str,
    pub member_pubkey: &'a str,
    pub display_name: &'a str,
    pub status: &'static str,
    pub summary: Option<&'a str>,
    pub groups: &'a [GroupRef],
    pub session_id: &'a str,
    pub connected_at: String,
    pub cwd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<&'a Map<String, Value>>,
    pub visible: bool,
    pub profile: &'a Profile,
    /// `control-plane` or `session` (PROTOCOL-SESSIONS.md §4).
    pub peer_role: &'static str,
}

impl<'a> PeerView<'a> {
    pub fn of(p: &'a Presence) -> PeerView<'a> {
        PeerView {
            pubkey: p.pubkey(),
            member_pubkey: &p.member_pubkey,
            display_name: &p.display_name,
            status: p.status.as_str(),
            summary: p.summary.as_deref(),
            groups: &p.groups,
            session_id: &p.session_id,
            connected_at: iso(p.connected_at),
            cwd: p.cwd.as_deref(),
            hostname: p.hostname.as_deref(),
            peer_type: p.peer_type.as_deref(),
            channel: p.channel.as_deref(),
            model: p.model.as_deref(),
            stats: p.stats.as_ref(),
            visible: p.visible,
            profile: &p.profile,
            peer_role: p.role.as_str(),
        }
    }
}

/// The admin view adds what operators need and peers should not see.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminPeerView<'a> {
    pub presence_id: String,
    pub member_id: &'a str,
    pub node_id: String,
    pub state: &'static str,
    pub status_source: &'static str,
    pub status_updated_at: String,
    #[serde(flatten)]
    pub peer: PeerView<'a>,
}

impl<'a> AdminPeerView<'a> {
    pub fn of(p: &'a Presence) -> AdminPeerView<'a> {
        AdminPeerView {
            presence_id: p.id.to_string(),
            member_id: &p.member_id,
            node_id: p.node_id.to_string(),
            state: p.state.as_str(),
            status_source: p.status_source.as_str(),
            status_updated_at: iso(p.status_updated_at),
            peer: PeerView::of(p),
        }
    }
}
