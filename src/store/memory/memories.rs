//! Memory of the memory store: notes with their words indexed at
//! `remember`, searched with `text`'s Postgres-like rules.

use async_trait::async_trait;
use uuid::Uuid;

use super::text::{lexemes, parse, score};
use super::MemoryStore;
use crate::store::*;

pub(super) struct Note {
    memory: Memory,
    words: Vec<(usize, String)>,
    forgotten: bool,
}

/// mesh → notes in the order remembered.
pub(super) type Notes = std::collections::HashMap<String, Vec<Note>>;

#[async_trait]
impl MemoriesStore for MemoryStore {
    async fn remember(&self, m: &Memory) -> StoreResult<()> {
        let note = Note {
            words: lexemes(&m.content),
            memory: m.clone(),
            forgotten: false,
        };
        self.lock()
            .notes
            .entry(m.mesh_id.clone())
            .or_default()
            .push(note);
        Ok(())
    }

    async fn recall(&self, mesh_id: &str, query: &str, limit: usize) -> StoreResult<Vec<Memory>> {
        let Some(q) = parse(query) else {
            return Ok(Vec::new());
        };
        let s = self.lock();
        let mut hits: Vec<(usize, usize, &Memory)> = s
            .notes
            .get(mesh_id)
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, n)| !n.forgotten)
            .filter_map(|(i, n)| Some((score(&q, &n.words)?, i, &n.memory)))
            .collect();
        // Best first, then newest (later in the list when times tie).
        hits.sort_by_key(|h| std::cmp::Reverse((h.0, h.2.remembered_at, h.1)));
        Ok(hits.into_iter().take(limit).map(|h| h.2.clone()).collect())
    }

    async fn count_memories(&self, mesh_id: &str) -> StoreResult<u64> {
        let s = self.lock();
        let notes = s.notes.get(mesh_id).into_iter().flatten();
        Ok(notes.filter(|n| !n.forgotten).count() as u64)
    }

    async fn forget(
        &self,
        mesh_id: &str,
        id: Uuid,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<Forgot> {
        let mut s = self.lock();
        let Some(n) = s
            .notes
            .get_mut(mesh_id)
            .and_then(|ns| ns.iter_mut().find(|n| n.memory.id == id && !n.forgotten))
        else {
            return Ok(Forgot::NotFound);
        };
        if !privileged && n.memory.remembered_by_member != member_id {
            return Ok(Forgot::Forbidden);
        }
        n.forgotten = true;
        Ok(Forgot::Done)
    }
}
