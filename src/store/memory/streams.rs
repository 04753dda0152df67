//! Streams of the memory store. Subscriptions are dropped with their
//! presence (`remove_presence`), as Postgres cascades.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryStore;
use crate::store::*;

#[derive(Default)]
pub(super) struct Streams {
    /// mesh → registered streams in creation order.
    registry: HashMap<String, Vec<StreamRow>>,
    /// (mesh, stream) → subscribed presences.
    subs: HashMap<(String, String), BTreeSet<Uuid>>,
    /// presence → its (mesh, stream) subscriptions.
    by_presence: HashMap<Uuid, Vec<(String, String)>>,
}

impl Streams {
    /// A presence ended: so do its subscriptions.
    pub(super) fn drop_presence(&mut self, presence: Uuid) {
        for key in self.by_presence.remove(&presence).unwrap_or_default() {
            if let Some(set) = self.subs.get_mut(&key) {
                set.remove(&presence);
                if set.is_empty() {
                    self.subs.remove(&key);
                }
            }
        }
    }

    fn count(&self, mesh_id: &str, stream: &str) -> u64 {
        self.subs
            .get(&(mesh_id.to_string(), stream.to_string()))
            .map_or(0, |s| s.len() as u64)
    }
}

#[async_trait]
impl StreamStore for MemoryStore {
    async fn create_stream(&self, s: &StreamRow, max: usize) -> StoreResult<StreamCreated> {
        let mut st = self.lock();
        let list = st.streams.registry.entry(s.mesh_id.clone()).or_default();
        if let Some(found) = list.iter().find(|x| x.name == s.name) {
            return Ok(StreamCreated::Existing(found.id));
        }
        if list.len() >= max {
            return Ok(StreamCreated::Full);
        }
        list.push(s.clone());
        Ok(StreamCreated::Created)
    }

    async fn list_streams(&self, mesh_id: &str) -> StoreResult<Vec<ListedStream>> {
        let st = self.lock();
        let mut v: Vec<ListedStream> = st
            .streams
            .registry
            .get(mesh_id)
            .into_iter()
            .flatten()
            .map(|s| ListedStream {
                stream: s.clone(),
                subscribers: st.streams.count(mesh_id, &s.name),
            })
            .collect();
        v.sort_by(|a, b| {
            (a.stream.created_at, a.stream.id).cmp(&(b.stream.created_at, b.stream.id))
        });
        Ok(v)
    }

    async fn subscribe(&self, mesh_id: &str, stream: &str, presence: Uuid) -> StoreResult<bool> {
        let mut st = self.lock();
        if st
            .presences
            .get(&presence)
            .is_none_or(|p| p.mesh_id != mesh_id)
        {
            return Ok(false);
        }
        let key = (mesh_id.to_string(), stream.to_string());
        if st
            .streams
            .subs
            .entry(key.clone())
            .or_default()
            .insert(presence)
        {
            st.streams
                .by_presence
                .entry(presence)
                .or_default()
                .push(key);
        }
        Ok(true)
    }

    async fn unsubscribe(&self, mesh_id: &str, stream: &str, presence: Uuid) -> StoreResult<()> {
        let mut st = self.lock();
        let key = (mesh_id.to_string(), stream.to_string());
        if let Some(set) = st.streams.subs.get_mut(&key) {
            set.remove(&presence);
            if set.is_empty() {
                st.streams.subs.remove(&key);
            }
        }
        if let Some(keys) = st.streams.by_presence.get_mut(&presence) {
            keys.retain(|k| *k != key);
        }
        Ok(())
    }

    async fn presence_streams(&self, presence: Uuid) -> StoreResult<Vec<String>> {
        let st = self.lock();
        let mut v: Vec<String> = st
            .streams
            .by_presence
            .get(&presence)
            .into_iter()
            .flatten()
            .map(|(_, stream)| stream.clone())
            .collect();
        v.sort();
        Ok(v)
    }
}
