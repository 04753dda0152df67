//! Skills (PROTOCOL-MESH.md §4): one per (mesh, name).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq)]
pub struct Skill {
    pub mesh_id: String,
    pub name: String,
    pub description: String,
    pub instructions: String,
    pub tags: Vec<String>,
    /// Any JSON, `Null` when absent.
    pub manifest: Value,
    /// The last writer's display name at the time, and the member.
    pub author: String,
    pub author_member: String,
    /// Kept when the skill is updated in place.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkillWrite {
    Shared,
    /// Another member's skill, and the writer is not privileged.
    Forbidden,
    /// A new name past the mesh's cap.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkillRemoval {
    Removed,
    NotFound,
    Forbidden,
}

#[async_trait]
pub trait SkillStore: Send + Sync + 'static {
    /// Adds a skill or updates it in place (its `created_at` kept).
    async fn share_skill(&self, s: &Skill, privileged: bool, max: usize)
        -> StoreResult<SkillWrite>;

    async fn get_skill(&self, mesh_id: &str, name: &str) -> StoreResult<Option<Skill>>;

    /// Sorted by name, at most `limit`; `query` a case-insensitive
    /// substring of the name, the description or a tag.
    async fn list_skills(
        &self,
        mesh_id: &str,
        query: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Skill>>;

    async fn remove_skill(
        &self,
        mesh_id: &str,
        name: &str,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<SkillRemoval>;
}
