//! The MCP registry of the memory store. A host presence's removal clears
//! its entries' host (`remove_presence`), as Postgres's `SET NULL` does.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, State};
use crate::store::*;

#[derive(Default)]
pub(super) struct Registry {
    /// (mesh, name) → entry; ordered, so a mesh lists by name.
    entries: BTreeMap<(String, String), McpEntry>,
}

impl Registry {
    pub(super) fn drop_presence(&mut self, presence: Uuid) {
        for e in self.entries.values_mut() {
            if e.host_presence == Some(presence) {
                e.host_presence = None;
            }
        }
    }
}

fn visible(e: &McpEntry) -> bool {
    e.persistent || e.host_presence.is_some()
}

fn listed(s: &State, e: &McpEntry) -> McpListed {
    let host = e.host_presence.and_then(|p| s.presences.get(&p));
    McpListed {
        entry: e.clone(),
        host_node: host
            .filter(|p| p.state == PresenceState::Online)
            .map(|p| p.node_id),
        host_left_at: host
            .filter(|p| p.state == PresenceState::Grace)
            .map(|p| p.last_seen_at),
    }
}

fn online(s: &State, presence: Option<Uuid>) -> bool {
    presence
        .and_then(|p| s.presences.get(&p))
        .is_some_and(|p| p.state == PresenceState::Online)
}

#[async_trait]
impl RelayStore for MemoryStore {
    async fn register_mcp(
        &self,
        e: &McpEntry,
        privileged: bool,
        max: usize,
    ) -> StoreResult<McpRegistered> {
        let mut s = self.lock();
        if !online(&s, e.host_presence) {
            return Ok(McpRegistered::Ended);
        }
        let key = (e.mesh_id.clone(), e.name.clone());
        match s.mcp.entries.get(&key).filter(|f| visible(f)) {
            Some(f) if f.host_member != e.host_member && !privileged => {
                return Ok(McpRegistered::Taken)
            }
            Some(_) => {}
            None => {
                let n = s
                    .mcp
                    .entries
                    .range((e.mesh_id.clone(), String::new())..)
                    .take_while(|((m, _), _)| *m == e.mesh_id)
                    .filter(|(_, x)| visible(x))
                    .count();
                if n >= max {
                    return Ok(McpRegistered::Full);
                }
            }
        }
        let created_at = s
            .mcp
            .entries
            .get(&key)
            .map_or(e.created_at, |f| f.created_at);
        s.mcp.entries.insert(
            key,
            McpEntry {
                offline_since: None,
                created_at,
                ..e.clone()
            },
        );
        Ok(McpRegistered::Registered)
    }

    async fn unregister_mcp(
        &self,
        mesh_id: &str,
        name: &str,
        member: &str,
        privileged: bool,
    ) -> StoreResult<Option<McpEntry>> {
        let mut s = self.lock();
        let key = (mesh_id.to_string(), name.to_string());
        if s.mcp
            .entries
            .get(&key)
            .is_some_and(|e| e.host_member == member || privileged)
        {
            return Ok(s.mcp.entries.remove(&key));
        }
        Ok(None)
    }

    async fn list_mcp(&self, mesh_id: &str) -> StoreResult<Vec<McpListed>> {
        let s = self.lock();
        Ok(s.mcp
            .entries
            .range((mesh_id.to_string(), String::new())..)
            .take_while(|((m, _), _)| m == mesh_id)
            .filter(|(_, e)| visible(e))
            .map(|(_, e)| listed(&s, e))
            .collect())
    }

    async fn mcp_server(&self, mesh_id: &str, name: &str) -> StoreResult<Option<McpListed>> {
        let s = self.lock();
        Ok(s.mcp
            .entries
            .get(&(mesh_id.to_string(), name.to_string()))
            .filter(|e| visible(e))
            .map(|e| listed(&s, e)))
    }

    async fn sweep_mcp(&self, now: DateTime<Utc>) -> StoreResult<Vec<McpEntry>> {
        let mut s = self.lock();
        let st = &mut *s;
        let mut gone = Vec::new();
        st.mcp.entries.retain(|_, e| {
            let keep = visible(e);
            if !keep {
                gone.push(e.clone());
            }
            keep
        });
        for e in st.mcp.entries.values_mut() {
            let host = e.host_presence.and_then(|p| st.presences.get(&p));
            if e.persistent
                && e.offline_since.is_none()
                && !host.is_some_and(|p| p.state == PresenceState::Online)
            {
                e.offline_since = Some(host.map_or(now, |p| p.last_seen_at));
            }
        }
        Ok(gone)
    }

    async fn rehost_mcp(
        &self,
        mesh_id: &str,
        member: &str,
        presence: Uuid,
        hosted_by: &str,
    ) -> StoreResult<Vec<McpEntry>> {
        let mut s = self.lock();
        let st = &mut *s;
        if !st.presences.contains_key(&presence) {
            return Ok(Vec::new());
        }
        let mut moved = Vec::new();
        for ((m, _), e) in st.mcp.entries.iter_mut() {
            let hosted_elsewhere = e
                .host_presence
                .filter(|p| *p != presence)
                .and_then(|p| st.presences.get(&p))
                .is_some_and(|p| p.state == PresenceState::Online);
            if m == mesh_id
                && e.host_member == member
                && e.persistent
                && (e.offline_since.is_some() || e.host_presence != Some(presence))
                && !hosted_elsewhere
            {
                e.host_presence = Some(presence);
                e.hosted_by = hosted_by.to_string();
                e.offline_since = None;
                moved.push(e.clone());
            }
        }
        Ok(moved)
    }

    async fn relay_target(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<RelayHost>> {
        let s = self.lock();
        let best = super::presence::mesh_presences(&s, mesh_id)
            .filter(|p| p.state == PresenceState::Online)
            .filter(|p| p.session_pubkey.as_deref() == Some(pubkey) || p.member_pubkey == pubkey)
            .max_by_key(|p| {
                (
                    p.session_pubkey.as_deref() == Some(pubkey),
                    p.role == PeerRole::Session,
                    p.connected_at,
                )
            });
        Ok(best.map(|p| RelayHost {
            presence: p.id,
            node: p.node_id,
        }))
    }

    async fn live_hosts(
        &self,
        presences: &[Uuid],
        fresh: std::time::Duration,
    ) -> StoreResult<Vec<Uuid>> {
        let s = self.lock();
        let now = Utc::now();
        let fresh = chrono::Duration::from_std(fresh).unwrap_or(chrono::Duration::MAX);
        Ok(presences
            .iter()
            .copied()
            .filter(|id| {
                s.presences.get(id).is_some_and(|p| {
                    p.state == PresenceState::Online
                        && s.nodes
                            .get(&p.node_id)
                            .is_some_and(|n| now - n.heartbeat_at < fresh)
                })
            })
            .collect())
    }
}
