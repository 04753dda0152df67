//! The memory store's audit chains: one vector per mesh, appended under
//! the store's lock, so the chain is as ordered as Postgres'.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{MemoryStore, State};
use crate::audit::{entry_hash, hash_time, Checkpoint, Entry, GENESIS};
use crate::store::*;
use async_trait::async_trait;

#[derive(Default)]
pub(super) struct Chains {
    logs: HashMap<String, Vec<Entry>>,
    checkpoints: HashMap<String, Checkpoint>,
}

impl State {
    pub(super) fn append_audit(&mut self, entries: &[NewAuditEntry]) {
        let chains = &mut self.audit;
        for n in entries {
            let checkpoint = chains.checkpoints.get(&n.mesh_id).cloned();
            let log = chains.logs.entry(n.mesh_id.clone()).or_default();
            let (seq, prev) = match (log.last(), checkpoint) {
                (Some(e), _) => (e.seq, e.hash.clone()),
                (None, Some(c)) => (c.seq, c.hash),
                (None, None) => (0, GENESIS.to_string()),
            };
            let created_at = hash_time(n.created_at);
            let hash = entry_hash(
                &n.mesh_id,
                seq + 1,
                n.event_type,
                n.actor_member_id.as_deref(),
                n.actor_name.as_deref(),
                &n.payload,
                &prev,
                created_at,
            );
            log.push(Entry {
                mesh_id: n.mesh_id.clone(),
                seq: seq + 1,
                event_type: n.event_type.to_string(),
                actor_member_id: n.actor_member_id.clone(),
                actor_name: n.actor_name.clone(),
                payload: n.payload.clone(),
                prev_hash: prev,
                hash,
                created_at,
            });
        }
    }

    pub(super) fn audit_chain(&self, mesh_id: &str) -> (Option<Checkpoint>, Vec<Entry>) {
        (
            self.audit.checkpoints.get(mesh_id).cloned(),
            self.audit.logs.get(mesh_id).cloned().unwrap_or_default(),
        )
    }

    pub(super) fn prune_audit(&mut self, before: DateTime<Utc>) -> u64 {
        let chains = &mut self.audit;
        let mut pruned = 0;
        for (mesh, log) in chains.logs.iter_mut() {
            let cut = log.iter().take_while(|e| e.created_at < before).count();
            if cut == 0 {
                continue;
            }
            let last = &log[cut - 1];
            chains.checkpoints.insert(
                mesh.clone(),
                Checkpoint {
                    seq: last.seq,
                    hash: last.hash.clone(),
                },
            );
            log.drain(..cut);
            pruned += cut as u64;
        }
        pruned
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, entries: &[NewAuditEntry]) -> StoreResult<()> {
        self.lock().append_audit(entries);
        Ok(())
    }

    async fn audit_chain(
        &self,
        mesh_id: &str,
    ) -> StoreResult<(Option<crate::audit::Checkpoint>, Vec<crate::audit::Entry>)> {
        Ok(self.lock().audit_chain(mesh_id))
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(self.lock().prune_audit(before))
    }
}
