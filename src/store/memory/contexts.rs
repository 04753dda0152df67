//! Contexts of the memory store.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::*;

/// (mesh, member) → the member's context.
pub(super) type Contexts = std::collections::HashMap<(String, String), Context>;

/// The rule of `find_contexts`, shared by nothing else: summary contains
/// the query (case-insensitive) or a tag equals it.
fn found(c: &Context, query: &str) -> bool {
    query.is_empty()
        || c.summary.to_lowercase().contains(&query.to_lowercase())
        || c.tags.iter().any(|t| t == query)
}

#[async_trait]
impl ContextStore for MemoryStore {
    async fn share_context(&self, c: &Context) -> StoreResult<Context> {
        let mut s = self.lock();
        let key = (c.mesh_id.clone(), c.member_id.clone());
        let id = s.contexts.get(&key).map_or(c.id, |old| old.id);
        let stored = Context { id, ..c.clone() };
        s.contexts.insert(key, stored.clone());
        Ok(stored)
    }

    async fn find_contexts(
        &self,
        mesh_id: &str,
        query: &str,
        limit: usize,
    ) -> StoreResult<Vec<Context>> {
        let s = self.lock();
        let mut v: Vec<Context> = s
            .contexts
            .values()
            .filter(|c| c.mesh_id == mesh_id && found(c, query))
            .cloned()
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse((c.updated_at, c.member_id.clone())));
        v.truncate(limit);
        Ok(v)
    }
}
