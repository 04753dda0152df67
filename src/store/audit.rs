//! The per-mesh audit chain: appended in order, read for verification,
//! pruned behind a checkpoint. Metadata only.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreResult;
use crate::audit::{Checkpoint, Entry};

/// An audit event before it is chained (seq and hashes come at append).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub mesh_id: String,
    pub event_type: &'static str,
    pub actor_member_id: Option<String>,
    pub actor_name: Option<String>,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// Audit chains.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Chains `entries` onto their meshes' audit logs, in order, one
    /// transaction per call, serialised per mesh.
    async fn append_audit(&self, entries: &[NewAuditEntry]) -> StoreResult<()>;

    /// A mesh's retained chain (oldest first) and its checkpoint, if pruned.
    async fn audit_chain(&self, mesh_id: &str) -> StoreResult<(Option<Checkpoint>, Vec<Entry>)>;

    /// Prunes entries created before `before`, checkpointing each mesh's
    /// last pruned entry. Returns how many went.
    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}
