//! Memory of the memory store: notes with their words indexed at
//! `remember`, searched with `text`'s Postgres-like rules.

use async_trait::async_trait;
use uuid::Uuid;

use std::collections::{BTreeSet, HashMap};

use super::text::{lexemes, parse, score, Query};
use super::MemoryStore;
use crate::store::*;

pub(super) struct Note {
    memory: Memory,
    words: Vec<(usize, String)>,
    forgotten: bool,
}

/// One mesh's notes in the order remembered, and which notes hold each
/// stem, so a recall scores only the notes that can match.
#[derive(Default)]
pub(super) struct MeshNotes {
    notes: Vec<Note>,
    by_stem: HashMap<String, BTreeSet<usize>>,
}

/// mesh → its notes.
pub(super) type Notes = HashMap<String, MeshNotes>;

/// The notes `q` can match, when the index can say (`None`: any note,
/// as for a query that is only a negation).
fn candidates(q: &Query, by_stem: &HashMap<String, BTreeSet<usize>>) -> Option<BTreeSet<usize>> {
    match q {
        // Every stem of a phrase is in a matching note: its first will do.
        Query::Phrase(stems) => Some(by_stem.get(&stems[0].1).cloned().unwrap_or_default()),
        Query::Not(_) => None,
        // Any positive part bounds the whole; the smallest is cheapest.
        Query::All(qs) => qs
            .iter()
            .filter_map(|q| candidates(q, by_stem))
            .min_by_key(BTreeSet::len),
        Query::Any(qs) => {
            qs.iter()
                .map(|q| candidates(q, by_stem))
                .try_fold(BTreeSet::new(), |mut all, c| {
                    all.extend(c?);
                    Some(all)
                })
        }
    }
}

#[async_trait]
impl MemoriesStore for MemoryStore {
    async fn remember(&self, m: &Memory) -> StoreResult<()> {
        let note = Note {
            words: lexemes(&m.content),
            memory: m.clone(),
            forgotten: false,
        };
        let mut s = self.lock();
        let mesh = s.notes.entry(m.mesh_id.clone()).or_default();
        let i = mesh.notes.len();
        for (_, stem) in &note.words {
            mesh.by_stem.entry(stem.clone()).or_default().insert(i);
        }
        mesh.notes.push(note);
        Ok(())
    }

    async fn recall(&self, mesh_id: &str, query: &str, limit: usize) -> StoreResult<Vec<Memory>> {
        let Some(q) = parse(query) else {
            return Ok(Vec::new());
        };
        let s = self.lock();
        let Some(mesh) = s.notes.get(mesh_id) else {
            return Ok(Vec::new());
        };
        let scored = |i: usize| {
            let n = &mesh.notes[i];
            if n.forgotten {
                return None;
            }
            Some((score(&q, &n.words)?, i, &n.memory))
        };
        let mut hits: Vec<(usize, usize, &Memory)> = match candidates(&q, &mesh.by_stem) {
            Some(c) => c.into_iter().filter_map(scored).collect(),
            None => (0..mesh.notes.len()).filter_map(scored).collect(),
        };
        // Best first, then newest (later in the list when times tie).
        hits.sort_by_key(|h| std::cmp::Reverse((h.0, h.2.remembered_at, h.1)));
        Ok(hits.into_iter().take(limit).map(|h| h.2.clone()).collect())
    }

    async fn count_memories(&self, mesh_id: &str) -> StoreResult<u64> {
        let s = self.lock();
        let notes = s.notes.get(mesh_id).into_iter().flat_map(|m| &m.notes);
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
        let Some(n) = s.notes.get_mut(mesh_id).and_then(|m| {
            m.notes
                .iter_mut()
                .find(|n| n.memory.id == id && !n.forgotten)
        }) else {
            return Ok(Forgot::NotFound);
        };
        if !privileged && n.memory.remembered_by_member != member_id {
            return Ok(Forgot::Forbidden);
        }
        n.forgotten = true;
        Ok(Forgot::Done)
    }
}
