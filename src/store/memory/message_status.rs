//! Message status of the memory store, from its queue and its records.

use std::collections::BTreeMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryStore;
use crate::store::*;

#[async_trait]
impl MessageStatusStore for MemoryStore {
    async fn message_status(
        &self,
        mesh_id: &str,
        lo: Uuid,
        hi: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<MessageStatus>> {
        let s = self.lock();
        let q = &s.queue;
        let mut found: BTreeMap<Uuid, MessageStatus> = BTreeMap::new();
        for (id, held) in q.messages.iter().filter(|(id, _)| (lo..=hi).contains(*id)) {
            if held.message.mesh_id == mesh_id {
                found.insert(*id, status(*id, &held.target_spec));
            }
        }
        for (id, recs) in q.records.range(lo..=hi) {
            for r in recs.iter().filter(|r| r.mesh_id == mesh_id) {
                let st = found
                    .entry(*id)
                    .or_insert_with(|| status(*id, &r.target_spec));
                st.recipients.push(RecipientStatus {
                    name: r.recipient_name.clone(),
                    pubkey: r.recipient_pubkey.clone(),
                    outcome: r
                        .delivered_at
                        .map_or(Outcome::Disconnected, Outcome::Delivered),
                });
            }
        }
        for row in q.rows.values() {
            let Some(st) = found.get_mut(&row.message_id) else {
                continue;
            };
            let taker = row.session.or(row.claimed_session);
            let presence = taker.and_then(|p| s.presences.get(&p));
            let (name, pubkey) = match presence {
                Some(p) => (
                    p.display_name.clone(),
                    p.session_pubkey
                        .clone()
                        .unwrap_or_else(|| p.member_pubkey.clone()),
                ),
                None => s
                    .members
                    .get(&row.member_id)
                    .map(|m| (m.display_name.clone(), m.pubkey.clone()))
                    .unwrap_or_default(),
            };
            let live = match row.session {
                Some(p) => s.presences.contains_key(&p),
                None => s
                    .presences
                    .values()
                    .any(|p| p.mesh_id == mesh_id && p.member_id == row.member_id),
            };
            st.recipients.push(RecipientStatus {
                name,
                pubkey,
                outcome: if live {
                    Outcome::Held
                } else {
                    Outcome::Disconnected
                },
            });
        }
        let mut out: Vec<MessageStatus> = found.into_values().take(limit).collect();
        for st in &mut out {
            order(&mut st.recipients);
        }
        Ok(out)
    }
}

fn status(id: Uuid, target_spec: &str) -> MessageStatus {
    MessageStatus {
        id,
        target_spec: target_spec.to_string(),
        recipients: Vec::new(),
    }
}
