//! Shared state of the memory store.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::*;

/// mesh → key → entry; a `BTreeMap` lists keys in byte order.
pub(super) type States = std::collections::HashMap<String, BTreeMap<String, StateEntry>>;

#[async_trait]
impl StateStore for MemoryStore {
    async fn write_state(&self, w: &StateWrite<'_>) -> StoreResult<StateWritten> {
        let mut s = self.lock();
        let keys = s.state.entry(w.mesh_id.to_string()).or_default();
        let Some(value) = w.value else {
            return Ok(StateWritten::Deleted(keys.remove(w.key).is_some()));
        };
        if !keys.contains_key(w.key) && keys.len() >= w.max_keys {
            return Ok(StateWritten::Full);
        }
        keys.insert(
            w.key.to_string(),
            StateEntry {
                key: w.key.to_string(),
                value: value.clone(),
                updated_by: w.member_name.to_string(),
                updated_at: w.at,
            },
        );
        Ok(StateWritten::Stored)
    }

    async fn get_state(&self, mesh_id: &str, key: &str) -> StoreResult<Option<StateEntry>> {
        Ok(self
            .lock()
            .state
            .get(mesh_id)
            .and_then(|k| k.get(key))
            .cloned())
    }

    async fn list_state(&self, mesh_id: &str) -> StoreResult<Vec<StateEntry>> {
        Ok(self
            .lock()
            .state
            .get(mesh_id)
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default())
    }
}
