//! Inbound webhooks (PROTOCOL-MESH.md §9): a secret per webhook, kept as
//! its SHA-256 and its first 8 characters, never in clear.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: Uuid,
    pub mesh_id: String,
    pub name: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// Its first 8 hex characters, for display.
    pub secret_prefix: String,
    pub created_by_member: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookCreated {
    Created,
    /// An active webhook of the mesh has that name.
    Exists,
    /// The mesh has `max` active webhooks.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookDeleted {
    Deleted,
    NotFound,
    Forbidden,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create_webhook(&self, w: &Webhook, max: usize) -> StoreResult<WebhookCreated>;

    /// The mesh's active webhooks, oldest first.
    async fn list_webhooks(&self, mesh_id: &str) -> StoreResult<Vec<Webhook>>;

    /// Deactivates it: its creator's, or anyone's when `privileged`.
    async fn delete_webhook(
        &self,
        mesh_id: &str,
        name: &str,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<WebhookDeleted>;
}
