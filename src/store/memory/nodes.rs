//! The node registry of the memory store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

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
                heartbeat_at: node.started_at,
                draining: false,
                sockets: 0,
            },
        );
        Ok(())
    }

    async fn heartbeat_node(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        draining: bool,
    ) -> StoreResult<bool> {
        Ok(match self.lock().nodes.get_mut(&id) {
            Some(n) => {
                n.heartbeat_at = now;
                n.draining = draining;
                true
            }
            None => false,
        })
    }

    async fn reap_dead_nodes(
        &self,
        _dead_before: DateTime<Utc>,
        _grace_until: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>> {
        // One process, one node: the node that would reap is the only one.
        Ok(Vec::new())
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
