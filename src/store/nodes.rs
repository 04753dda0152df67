//! The node registry: one row per running node, its heartbeat, and the
//! takeover of a node that stopped beating.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: Uuid,
    pub addr: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: Uuid,
    pub addr: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub draining: bool,
    pub sockets: i64,
}

/// The nodes of the cluster and their leases.
///
/// Heartbeats and leases are stamped and judged by the store's own clock
/// (Postgres: the database's `now()`), never a node's: nodes whose clocks
/// disagree, or a node paused for a while, must still agree on who beat
/// last, and every heartbeat of the cluster lands on the same time line.
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Writes the node's row, replacing any row of that id whole (a node
    /// whose lease was lost registers again): not draining, heartbeat now.
    async fn register_node(&self, node: &NodeRow) -> StoreResult<()>;

    /// Stamps the node's heartbeat now. `false` when the node's row is
    /// gone: another node declared it dead.
    async fn heartbeat_node(&self, id: Uuid, draining: bool) -> StoreResult<bool>;

    /// Declares nodes whose last heartbeat is older than `lease` dead,
    /// under a cluster-wide lock (one reaper at a time): their online
    /// presences go to grace until `grace_until`, their claims are released
    /// and their rows removed. Returns the dead nodes' ids. `reaper`, the
    /// node asking, is never among them: a node never declares itself dead
    /// (a stalled process may sweep before it heartbeats). Nobody is reaped
    /// unless the reaper's own heartbeat is younger than `fresh` when the
    /// statement runs: a request that stalled on a cut link and reaches
    /// the database only when the link is back (every heartbeat then stale)
    /// judges nobody.
    async fn reap_dead_nodes(
        &self,
        reaper: Uuid,
        lease: std::time::Duration,
        fresh: std::time::Duration,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>>;

    /// A node that found its row reaped takes back those of `presences`
    /// (its live sockets) that are still its own: online again, out of
    /// grace. Returns the ones taken back; the rest were ended or taken
    /// over by another node meanwhile.
    async fn readopt_presences(&self, node: Uuid, presences: &[Uuid]) -> StoreResult<Vec<Uuid>>;

    async fn remove_node(&self, id: Uuid) -> StoreResult<()>;

    /// Nodes with the number of online presences each holds.
    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>>;
}
