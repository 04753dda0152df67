//! What became of a message (PROTOCOL-MESH.md §6): its live delivery rows
//! and the records of those that ended, one entry per delivery.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered(DateTime<Utc>),
    /// Not yet; its recipient (or, member-addressed, some presence of the
    /// member) is live or in grace.
    Held,
    /// Not delivered, and nobody there to take it (or it expired).
    Disconnected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub name: String,
    pub pubkey: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatus {
    pub id: Uuid,
    pub target_spec: String,
    /// Delivered ones first (by time), then the rest.
    pub recipients: Vec<RecipientStatus>,
}

#[async_trait]
pub trait MessageStatusStore: Send + Sync + 'static {
    /// The messages of `mesh_id` whose ids lie in `lo..=hi`, still live or
    /// still recorded; at most `limit`, by id.
    async fn message_status(
        &self,
        mesh_id: &str,
        lo: Uuid,
        hi: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<MessageStatus>>;
}

/// Orders recipients as the trait says.
pub fn order(v: &mut [RecipientStatus]) {
    v.sort_by_key(|r| match r.outcome {
        Outcome::Delivered(at) => (0, Some(at)),
        Outcome::Held => (1, None),
        Outcome::Disconnected => (2, None),
    });
}
