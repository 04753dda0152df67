//! The vault (PROTOCOL-MESH.md §10): per (mesh, member, key) blobs the
//! broker stores and never decrypts. A member sees only its own.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultEntry {
    pub mesh_id: String,
    pub member_id: String,
    pub key: String,
    pub ciphertext: String,
    pub nonce: String,
    pub sealed_key: String,
    pub entry_type: String,
    pub mount_path: Option<String>,
    pub description: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait VaultStore: Send + Sync + 'static {
    /// Stores or replaces an entry; `false` (nothing written) when it
    /// would be the member's `max + 1`th.
    async fn vault_set(&self, e: &VaultEntry, max: usize) -> StoreResult<bool>;

    /// The member's entries, sorted by key.
    async fn vault_list(&self, mesh_id: &str, member_id: &str) -> StoreResult<Vec<VaultEntry>>;

    /// The member's entries named in `keys` that exist, in that order.
    async fn vault_get(
        &self,
        mesh_id: &str,
        member_id: &str,
        keys: &[String],
    ) -> StoreResult<Vec<VaultEntry>>;

    /// `false` when the member has no such entry.
    async fn vault_delete(&self, mesh_id: &str, member_id: &str, key: &str) -> StoreResult<bool>;
}
