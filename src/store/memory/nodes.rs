//! The node registry of the memory store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::presence::save_member_state;
use super::MemoryStore;
use crate::store::*;

#[async_trait]
impl NodeStore for MemoryStore {
    async fn register_node(&self, node: &NodeRow) -> StoreResult<()> {
        self.lock().nodes.insert(
            node.id,
            NodeInfo {
                id: node.id,
                addr: node.addr.clone(),
                version: node.version.clone(),
                started_at: node.started_at,
                heartbeat_at: Utc::now(),
                draining: false,
                sockets: 0,
            },
        );
        Ok(())
    }

    async fn heartbeat_node(&self, id: Uuid, draining: bool) -> StoreResult<bool> {
        Ok(match self.lock().nodes.get_mut(&id) {
            Some(n) => {
                n.heartbeat_at = Utc::now();
                n.draining = draining;
                true
            }
            None => false,
        })
    }

    async fn reap_dead_nodes(
        &self,
        reaper: Uuid,
        lease: std::time::Duration,
        fresh: std::time::Duration,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>> {
        let ago = |d: std::time::Duration| {
            Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        };
        let dead_before = ago(lease);
        let mut s = self.lock();
        let reaper_fresh = s
            .nodes
            .get(&reaper)
            .is_some_and(|n| n.heartbeat_at >= ago(fresh));
        if !reaper_fresh {
            return Ok(Vec::new());
        }
        let dead: Vec<Uuid> = s
            .nodes
            .values()
            .filter(|n| n.id != reaper && n.heartbeat_at < dead_before)
            .map(|n| n.id)
            .collect();
        if dead.is_empty() {
            return Ok(dead);
        }
        for id in &dead {
            s.nodes.remove(id);
        }
        let orphans: Vec<Uuid> = s
            .presences
            .values()
            .filter(|p| p.state == PresenceState::Online && dead.contains(&p.node_id))
            .map(|p| p.id)
            .collect();
        for id in orphans {
            let Some(p) = s.presences.get_mut(&id) else {
                continue;
            };
            p.state = PresenceState::Grace;
            p.grace_until = Some(grace_until);
            p.last_seen_at = now;
            let snapshot = p.clone();
            if snapshot.role == PeerRole::ControlPlane {
                save_member_state(&mut s, &snapshot, now);
            }
        }
        s.queue.release_node_claims(&dead);
        Ok(dead)
    }

    async fn readopt_presences(&self, node: Uuid, presences: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let mut s = self.lock();
        let mut back = Vec::new();
        for id in presences {
            if let Some(p) = s.presences.get_mut(id).filter(|p| p.node_id == node) {
                p.state = PresenceState::Online;
                p.grace_until = None;
                back.push(*id);
            }
        }
        Ok(back)
    }

    async fn remove_node(&self, id: Uuid) -> StoreResult<()> {
        self.lock().nodes.remove(&id);
        Ok(())
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        let s = self.lock();
        let mut v: Vec<NodeInfo> = s
            .nodes
            .values()
            .map(|n| NodeInfo {
                sockets: s
                    .presences
                    .values()
                    .filter(|p| p.node_id == n.id && p.state == PresenceState::Online)
                    .count() as i64,
                ..n.clone()
            })
            .collect();
        v.sort_by_key(|n| n.started_at);
        Ok(v)
    }
}
