//! `list_peers` and the admin peer view. Both read the presence table, so
//! every node answers the same.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Node;
use crate::protocol::{GroupRef, Profile};
use crate::store::{Presence, StoreError};
use crate::time::iso;

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

impl Node {
    /// The serialised `peers_list` for a caller of `member_id`: hidden
    /// sessions are left out except the caller's own member's.
    pub async fn peers_list(
        &self,
        mesh_id: &str,
        member_id: &str,
        req_id: Option<&str>,
    ) -> Result<String, StoreError> {
        let all = super::bounded(self.store.list_presences(mesh_id)).await?;
        let peers: Vec<PeerView> = all
            .iter()
            .filter(|p| p.visible || p.member_id == member_id)
            .map(PeerView::of)
            .collect();
        let mut frame = serde_json::json!({"type": "peers_list", "peers": peers});
        if let Some(r) = req_id {
            frame["_reqId"] = Value::String(r.to_string());
        }
        Ok(frame.to_string())
    }
}
