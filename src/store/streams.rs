//! Streams (PROTOCOL-MESH.md §14): a decorative registry per (mesh, name),
//! and subscriptions that belong to presences, cluster-wide. Publishing
//! reads nothing here: each node keeps the subscriptions of the sessions it
//! holds (loaded from here when a presence re-attaches) and writes a
//! publish, which reaches every node over the bus, to its own.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub id: Uuid,
    pub mesh_id: String,
    pub name: String,
    /// The creator's member display name at creation.
    pub created_by: String,
    pub created_by_member: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCreated {
    Created,
    /// The name was registered already: its id.
    Existing(Uuid),
    /// The mesh holds its cap of streams: nothing changed.
    Full,
}

/// A registered stream and its live and in-grace subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedStream {
    pub stream: StreamRow,
    pub subscribers: u64,
}

#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Registers `s.name` unless it is registered (its id) or the mesh
    /// holds `max` streams; atomic against concurrent creates.
    async fn create_stream(&self, s: &StreamRow, max: usize) -> StoreResult<StreamCreated>;

    /// The mesh's registered streams by creation time, with their live and
    /// in-grace subscriber counts.
    async fn list_streams(&self, mesh_id: &str) -> StoreResult<Vec<ListedStream>>;

    /// Subscribes a presence (again: nothing). `false` when the presence
    /// is gone.
    async fn subscribe(&self, mesh_id: &str, stream: &str, presence: Uuid) -> StoreResult<bool>;

    async fn unsubscribe(&self, mesh_id: &str, stream: &str, presence: Uuid) -> StoreResult<()>;

    /// The streams a presence is subscribed to (to restore them where it
    /// re-attaches).
    async fn presence_streams(&self, presence: Uuid) -> StoreResult<Vec<String>>;
}
