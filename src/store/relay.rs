//! What relays between peers need of the store (PROTOCOL-MESH.md §15–§16):
//! the cluster-wide registry of peer-hosted MCP servers, and which live
//! presence (and node) a relay goes to. Pending calls are not stored: each
//! is held by the two nodes whose sockets it joins (`engine::relays`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreResult;

/// One registry entry, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct McpEntry {
    pub mesh_id: String,
    pub name: String,
    pub description: String,
    /// `[{name, description, inputSchema}]`, as registered.
    pub tools: Value,
    pub host_member: String,
    /// `None` once the host presence has ended.
    pub host_presence: Option<Uuid>,
    /// The host presence's display name.
    pub hosted_by: String,
    pub persistent: bool,
    /// Stamped by [`RelayStore::sweep_mcp`] once the host is not online.
    pub offline_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// An entry as read, with its host's liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct McpListed {
    pub entry: McpEntry,
    /// The node holding the host presence while it is online.
    pub host_node: Option<Uuid>,
    /// When the host presence's socket closed, while it is in grace.
    pub host_left_at: Option<DateTime<Utc>>,
}

impl McpListed {
    pub fn online(&self) -> bool {
        self.host_node.is_some()
    }

    /// Since when the host has not been online: stamped, or the moment
    /// its socket closed, or (not yet swept) `now`.
    pub fn offline_since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.entry
            .offline_since
            .or(self.host_left_at)
            .unwrap_or(now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpRegistered {
    Registered,
    /// Another member's entry holds the name.
    Taken,
    /// The mesh holds the maximum number of entries.
    Full,
    /// The registering presence is not online any more.
    Ended,
}

/// Where a relay goes: a live presence and the node holding its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHost {
    pub presence: Uuid,
    pub node: Uuid,
}

#[async_trait]
pub trait RelayStore: Send + Sync + 'static {
    /// Makes `e.host_presence` the host of `(mesh, name)`: a new entry
    /// under `max` per mesh, or the same member's entry replaced (another
    /// member's only when `privileged`). An entry whose non-persistent
    /// host ended counts as absent.
    async fn register_mcp(
        &self,
        e: &McpEntry,
        privileged: bool,
        max: usize,
    ) -> StoreResult<McpRegistered>;

    /// Deletes the entry if `member` hosts it or is `privileged`; returns
    /// it when deleted.
    async fn unregister_mcp(
        &self,
        mesh_id: &str,
        name: &str,
        member: &str,
        privileged: bool,
    ) -> StoreResult<Option<McpEntry>>;

    /// The mesh's entries by name, without non-persistent ones whose host
    /// ended.
    async fn list_mcp(&self, mesh_id: &str) -> StoreResult<Vec<McpListed>>;

    /// One entry, as `list_mcp` would show it.
    async fn mcp_server(&self, mesh_id: &str, name: &str) -> StoreResult<Option<McpListed>>;

    /// Deletes non-persistent entries whose host ended (returned, for
    /// `mcp_unregistered`) and stamps `offline_since` on persistent ones
    /// whose host is not online (when its socket closed, else `now`).
    async fn sweep_mcp(&self, now: DateTime<Utc>) -> StoreResult<Vec<McpEntry>>;

    /// The member's persistent entries whose host is not online (or that
    /// are stamped offline) move to `presence`; returns them, re-hosted.
    async fn rehost_mcp(
        &self,
        mesh_id: &str,
        member: &str,
        presence: Uuid,
        hosted_by: &str,
    ) -> StoreResult<Vec<McpEntry>>;

    /// The online presence a peer request for `pubkey` goes to: the one
    /// with that session pubkey, else one of the member with that member
    /// pubkey (`session` presences first, then the latest connected).
    async fn relay_target(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<RelayHost>>;

    /// Which of `presences` are online on a node whose last heartbeat is
    /// younger than `fresh` (by the store's clock).
    async fn live_hosts(
        &self,
        presences: &[Uuid],
        fresh: std::time::Duration,
    ) -> StoreResult<Vec<Uuid>>;
}
