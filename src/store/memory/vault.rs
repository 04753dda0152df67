//! The vault of the memory store.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::*;

/// (mesh, member) → key → entry.
pub(super) type Vaults = std::collections::HashMap<(String, String), BTreeMap<String, VaultEntry>>;

#[async_trait]
impl VaultStore for MemoryStore {
    async fn vault_set(&self, e: &VaultEntry, max: usize) -> StoreResult<bool> {
        let mut s = self.lock();
        let v = s
            .vaults
            .entry((e.mesh_id.clone(), e.member_id.clone()))
            .or_default();
        if !v.contains_key(&e.key) && v.len() >= max {
            return Ok(false);
        }
        v.insert(e.key.clone(), e.clone());
        Ok(true)
    }

    async fn vault_list(&self, mesh_id: &str, member_id: &str) -> StoreResult<Vec<VaultEntry>> {
        let s = self.lock();
        let key = (mesh_id.to_string(), member_id.to_string());
        Ok(s.vaults
            .get(&key)
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn vault_get(
        &self,
        mesh_id: &str,
        member_id: &str,
        keys: &[String],
    ) -> StoreResult<Vec<VaultEntry>> {
        let s = self.lock();
        let Some(v) = s.vaults.get(&(mesh_id.to_string(), member_id.to_string())) else {
            return Ok(Vec::new());
        };
        Ok(keys.iter().filter_map(|k| v.get(k).cloned()).collect())
    }

    async fn vault_delete(&self, mesh_id: &str, member_id: &str, key: &str) -> StoreResult<bool> {
        let mut s = self.lock();
        let key_of = (mesh_id.to_string(), member_id.to_string());
        Ok(s.vaults
            .get_mut(&key_of)
            .is_some_and(|v| v.remove(key).is_some()))
    }
}
