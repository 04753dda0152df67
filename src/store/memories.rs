//! Memory (PROTOCOL-MESH.md §2): notes any member stores and anyone
//! recalls by full-text query; forgetting is a soft delete.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    pub id: Uuid,
    pub mesh_id: String,
    pub content: String,
    pub tags: Vec<String>,
    /// The member's display name at the time, and the member.
    pub remembered_by: String,
    pub remembered_by_member: String,
    pub remembered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgot {
    Done,
    /// Unknown, another mesh's, or forgotten already.
    NotFound,
    /// Another member's, and the caller is not privileged.
    Forbidden,
}

#[async_trait]
pub trait MemoriesStore: Send + Sync + 'static {
    async fn remember(&self, m: &Memory) -> StoreResult<()>;

    /// Memories matching every word of `query` (websearch syntax: quoted
    /// phrases, `or`, `-word`), best first, then newest; forgotten ones
    /// skipped; at most `limit`. English stemming and stop words: an
    /// empty or stop-words-only query matches nothing.
    async fn recall(&self, mesh_id: &str, query: &str, limit: usize) -> StoreResult<Vec<Memory>>;

    /// Memories of the mesh not forgotten.
    async fn count_memories(&self, mesh_id: &str) -> StoreResult<u64>;

    /// Soft-deletes a memory: its author's, or anyone's when `privileged`.
    async fn forget(
        &self,
        mesh_id: &str,
        id: Uuid,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<Forgot>;
}
