//! Contexts (PROTOCOL-MESH.md §5): one per (mesh, member), replaced by
//! each share; its id stays the member's.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub id: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    /// The member's display name at the time of the share.
    pub peer_name: String,
    pub summary: String,
    pub files_read: Vec<String>,
    pub key_findings: Vec<String>,
    pub tags: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait ContextStore: Send + Sync + 'static {
    /// Stores the member's context, replacing its last one; returns the
    /// stored context (whose `id` is the member's first one).
    async fn share_context(&self, c: &Context) -> StoreResult<Context>;

    /// Newest first, at most `limit`: those whose summary contains `query`
    /// (case-insensitive) or one of whose tags equals it; every context
    /// for an empty query.
    async fn find_contexts(
        &self,
        mesh_id: &str,
        query: &str,
        limit: usize,
    ) -> StoreResult<Vec<Context>>;
}
