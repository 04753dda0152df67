//! Vectors (PROTOCOL-MESH.md §11): text points in collections, searched by
//! substring. Not a vector store: nothing is embedded or ranked.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub mesh_id: String,
    /// Normalized (see `protocol::vectors::normalize`).
    pub collection: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub stored_by_member: String,
    pub stored_by_pubkey: String,
    pub stored_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointStored {
    Stored,
    /// The mesh holds `max_points`, or a new collection would pass
    /// `max_collections`.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointDeleted {
    Deleted,
    NotFound,
    Forbidden,
}

#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    async fn store_point(
        &self,
        p: &Point,
        max_collections: usize,
        max_points: usize,
    ) -> StoreResult<PointStored>;

    /// Points of the collection whose text contains `query`
    /// (case-insensitive, literally), oldest first, at most `limit`.
    async fn search_points(
        &self,
        mesh_id: &str,
        collection: &str,
        query: &str,
        limit: usize,
    ) -> StoreResult<Vec<Point>>;

    /// Its storer's, or anyone's when `privileged`.
    async fn delete_point(
        &self,
        mesh_id: &str,
        collection: &str,
        id: Uuid,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<PointDeleted>;

    /// Collections holding points, sorted.
    async fn list_collections(&self, mesh_id: &str) -> StoreResult<Vec<String>>;
}
