//! Streams (PROTOCOL-MESH.md §14): a decorative registry per (mesh, name),
//! and subscriptions that belong to presences, cluster-wide. A publish
//! reads, in one step, its member's budget and the online subscribers
//! with the node holding each.

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

/// Where a publish goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// The publishing member is revoked or unknown.
    Gone,
    /// Over its budget: dropped.
    Limited,
    /// The member's display name, and each online subscriber with the
    /// node that holds its socket (the publisher included).
    Route {
        published_by: String,
        to: Vec<(Uuid, Uuid)>,
    },
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

    /// Takes a token from `member_id`'s publish bucket (`per_min` a
    /// minute, a minute's worth at once) and reads where the publish goes.
    async fn publish_route(
        &self,
        mesh_id: &str,
        stream: &str,
        member_id: &str,
        per_min: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Publish>;
}
