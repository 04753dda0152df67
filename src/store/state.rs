//! Shared state (PROTOCOL-MESH.md §1): one JSON value per (mesh, key),
//! attributed to the member who wrote it last.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StoreResult;

/// One key's value, as `state_result` and `state_list` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEntry {
    pub key: String,
    pub value: Value,
    /// The writer's member display name at the time of the write.
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// A write to shared state.
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite<'a> {
    pub mesh_id: &'a str,
    pub key: &'a str,
    /// `None` deletes the key.
    pub value: Option<&'a Value>,
    pub member_id: &'a str,
    pub member_name: &'a str,
    pub at: DateTime<Utc>,
    /// Keys the mesh may hold; a write adding one past it is refused.
    pub max_keys: usize,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateWritten {
    Stored,
    /// A delete; `false` when there was no such key.
    Deleted(bool),
    /// Adding the key would pass `max_keys`: nothing changed.
    Full,
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Sets or deletes one key. The key cap is checked atomically against
    /// concurrent writers on any node; replacing a key is never refused.
    async fn write_state(&self, w: &StateWrite<'_>) -> StoreResult<StateWritten>;

    async fn get_state(&self, mesh_id: &str, key: &str) -> StoreResult<Option<StateEntry>>;

    /// Every key of the mesh, sorted by key (byte order).
    async fn list_state(&self, mesh_id: &str) -> StoreResult<Vec<StateEntry>>;
}
