//! Messages, delivery rows, claims and rate buckets of the memory store.
//! Rows live in a `BTreeMap` keyed by a monotonic id (oldest first), with
//! per-session and per-member indexes so a claim scans only its own rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, State};
use crate::protocol::target::Priority;
use crate::protocol::Status;
use crate::store::*;
use async_trait::async_trait;

pub(super) struct Row {
    pub(super) message_id: Uuid,
    mesh_id: String,
    pub(super) member_id: String,
    pub(super) session: Option<Uuid>,
    exclude: Option<Uuid>,
    priority: Priority,
    pub(super) claimed_session: Option<Uuid>,
    /// The node that made the claim, so a dead node's claims can be freed.
    claimed_by: Option<Uuid>,
    claim_until: Option<DateTime<Utc>>,
}

pub(super) struct Held {
    pub(super) message: Arc<StoredMessage>,
    pub(super) target_spec: String,
    expires_at: DateTime<Utc>,
    /// Delivery rows still pointing here.
    rows: usize,
}

#[derive(Default)]
pub(super) struct Queue {
    next_id: i64,
    pub(super) rows: BTreeMap<i64, Row>,
    by_session: HashMap<Uuid, BTreeSet<i64>>,
    /// (mesh, member) → member-addressed rows.
    by_member: HashMap<(String, String), BTreeSet<i64>>,
    pub(super) messages: HashMap<Uuid, Held>,
    /// Remembered sends (mesh, sender member, client_message_id) → message.
    send_keys: HashMap<(String, String, String), Uuid>,
    /// Ended deliveries by message, for `delivered_retention_seconds`.
    pub(super) records: BTreeMap<Uuid, Vec<DeliveryRecord>>,
    /// (scope, key) → (tokens, updated_at). Scope is the mesh id for send
    /// budgets.
    pub(super) buckets: HashMap<(String, String), (f64, DateTime<Utc>)>,
}

impl Queue {
    fn index(&mut self, id: i64) {
        let r = &self.rows[&id];
        match r.session {
            Some(s) => self.by_session.entry(s).or_default().insert(id),
            None => self
                .by_member
                .entry((r.mesh_id.clone(), r.member_id.clone()))
                .or_default()
                .insert(id),
        };
    }

    fn unindex(&mut self, id: i64) {
        let r = &self.rows[&id];
        match r.session {
            Some(s) => {
                if let Some(set) = self.by_session.get_mut(&s) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_session.remove(&s);
                    }
                }
            }
            None => {
                let key = (r.mesh_id.clone(), r.member_id.clone());
                if let Some(set) = self.by_member.get_mut(&key) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_member.remove(&key);
                    }
                }
            }
        }
    }

    fn remove_row(&mut self, id: i64) {
        if !self.rows.contains_key(&id) {
            return;
        }
        self.unindex(id);
        let row = self.rows.remove(&id).expect("present");
        if let Some(h) = self.messages.get_mut(&row.message_id) {
            h.rows -= 1;
            if h.rows == 0 {
                self.messages.remove(&row.message_id);
            }
        }
    }

    /// Frees the claims a session holds, so its next socket (or a sibling)
    /// gets those rows at once instead of after the lease.
    pub fn release_claims(&mut self, presence: Uuid) {
        for r in self.rows.values_mut() {
            if r.claimed_session == Some(presence) {
                // `claimed_session` stays: the next push is a redelivery.
                r.claimed_by = None;
                r.claim_until = None;
            }
        }
    }

    /// Frees every claim made by these (dead) nodes.
    pub fn release_node_claims(&mut self, nodes: &[Uuid]) {
        for r in self.rows.values_mut() {
            if r.claimed_by.is_some_and(|n| nodes.contains(&n)) {
                r.claimed_by = None;
                r.claim_until = None;
            }
        }
    }

    /// An ended session's rows become its member's.
    pub fn orphan_session(&mut self, presence: Uuid) {
        let Some(ids) = self.by_session.remove(&presence) else {
            return;
        };
        for id in ids {
            let r = self.rows.get_mut(&id).expect("indexed row exists");
            r.session = None;
            r.claim_until = None;
            self.index(id);
        }
    }

    /// A revoked member's rows go with it.
    pub fn drop_member(&mut self, member_id: &str) {
        let ids: Vec<i64> = self
            .rows
            .iter()
            .filter(|(_, r)| r.member_id == member_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove_row(id);
        }
    }
}

impl Queue {
    /// Stores a message and its rows (none: nothing); the ids of the rows
    /// stored pre-claimed.
    pub(super) fn store(&mut self, m: &NewMessage, deliveries: &[NewDelivery]) -> Vec<i64> {
        let mut claimed = Vec::new();
        if deliveries.is_empty() {
            return claimed;
        }
        self.messages.insert(
            m.id,
            Held {
                message: Arc::new(StoredMessage::of(m)),
                target_spec: m.target_spec.clone(),
                expires_at: m.expires_at,
                rows: deliveries.len(),
            },
        );
        for d in deliveries {
            self.next_id += 1;
            let id = self.next_id;
            self.rows.insert(
                id,
                Row {
                    message_id: m.id,
                    mesh_id: m.mesh_id.clone(),
                    member_id: d.recipient_member_id.clone(),
                    session: d.recipient_session,
                    exclude: d.exclude_session,
                    priority: m.priority,
                    claimed_session: d.claim.map(|c| c.session),
                    claimed_by: d.claim.map(|c| c.node),
                    claim_until: d.claim.map(|c| c.until),
                },
            );
            self.index(id);
            if d.claim.is_some() {
                claimed.push(id);
            }
        }
        claimed
    }
}

impl State {
    pub(super) fn insert_message(
        &mut self,
        m: &NewMessage,
        deliveries: &[NewDelivery],
        bucket: &Bucket,
    ) -> SendResult {
        if !self.take_token(&m.mesh_id, bucket, m.created_at) {
            return SendResult::RateLimited;
        }
        let q = &mut self.queue;
        if let Some((mesh, member, cm)) = send_key(m) {
            let key = (mesh.to_string(), member.to_string(), cm.to_string());
            if let Some(original) = q.send_keys.get(&key) {
                return SendResult::Duplicate {
                    original: Some(*original),
                };
            }
            q.send_keys.insert(key, m.id);
        }
        SendResult::Queued {
            claimed: q.store(m, deliveries),
        }
    }

    pub(super) fn claim(&mut self, req: &ClaimRequest) -> Vec<Claimed> {
        let idle = self
            .presences
            .get(&req.presence)
            .is_some_and(|p| p.status == Status::Idle);
        let q = &mut self.queue;
        let mine = q.by_session.get(&req.presence).into_iter().flatten();
        let members = q
            .by_member
            .get(&(req.mesh_id.clone(), req.member_id.clone()))
            .into_iter()
            .flatten();
        // Both sets are ordered; merging them keeps oldest-first.
        let mut candidates: Vec<i64> = mine.chain(members).copied().collect();
        candidates.sort_unstable();
        let mut out = Vec::new();
        for id in candidates {
            if out.len() >= req.limit {
                break;
            }
            let r = q.rows.get_mut(&id).expect("indexed row exists");
            let free = r.claim_until.is_none_or(|t| t < req.now)
                || (req.reclaim_own && r.claimed_session == Some(req.presence));
            let allowed = idle || r.priority == Priority::Now;
            if !free || !allowed || r.exclude == Some(req.presence) {
                continue;
            }
            let redelivery = r.claimed_session.is_some();
            r.claimed_session = Some(req.presence);
            r.claimed_by = Some(req.node_id);
            r.claim_until = Some(req.lease_until);
            let message = q.messages[&r.message_id].message.clone();
            out.push(Claimed {
                delivery_id: id,
                message,
                redelivery,
            });
        }
        out
    }

    pub(super) fn release_rows(&mut self, presence: Uuid, ids: &[i64]) {
        for id in ids {
            if let Some(r) = self.queue.rows.get_mut(id) {
                if r.claimed_session == Some(presence) {
                    r.claimed_by = None;
                    r.claim_until = None;
                }
            }
        }
    }

    pub(super) fn complete(&mut self, presence: Uuid, ids: &[i64], r: Retention) {
        for id in ids {
            if self
                .queue
                .rows
                .get(id)
                .is_some_and(|r| r.claimed_session == Some(presence))
            {
                self.record(*id, Some(r.now), r);
                self.queue.remove_row(*id);
            }
        }
    }

    /// Records row `id` as it ends (delivered at `at`, or expired when
    /// `None`) if `r` keeps its send: named after the presence that took
    /// it, else the member's own name and key.
    fn record(&mut self, id: i64, at: Option<DateTime<Utc>>, r: Retention) {
        let q = &self.queue;
        let Some(row) = q.rows.get(&id) else { return };
        let Some(held) = q.messages.get(&row.message_id) else {
            return;
        };
        let m = &held.message;
        if !r.keeps(m.created_at) {
            return;
        }
        let taker = row
            .session
            .or(row.claimed_session)
            .and_then(|p| self.presences.get(&p));
        let (name, pubkey) = match taker {
            Some(p) => (
                p.display_name.clone(),
                p.session_pubkey
                    .clone()
                    .unwrap_or_else(|| p.member_pubkey.clone()),
            ),
            None => self
                .members
                .get(&row.member_id)
                .map(|mb| (mb.display_name.clone(), mb.pubkey.clone()))
                .unwrap_or_default(),
        };
        let rec = DeliveryRecord {
            message_id: m.id,
            mesh_id: m.mesh_id.clone(),
            sender_member_id: m.sender_member_id.clone(),
            target_spec: held.target_spec.clone(),
            client_message_id: m.echo.client_message_id.clone(),
            created_at: m.created_at,
            recipient_member_id: row.member_id.clone(),
            recipient_name: name,
            recipient_pubkey: pubkey,
            delivered_at: at,
        };
        self.queue.records.entry(m.id).or_default().push(rec);
    }

    pub(super) fn remembered(&self, keys: &[SendKey<'_>]) -> Vec<Option<Uuid>> {
        keys.iter()
            .map(|(m, s, c)| {
                self.queue
                    .send_keys
                    .get(&(m.to_string(), s.to_string(), c.to_string()))
                    .copied()
            })
            .collect()
    }

    pub(super) fn records(&self, mesh_id: &str, message_id: Uuid) -> Vec<DeliveryRecord> {
        let mut out: Vec<DeliveryRecord> = self
            .queue
            .records
            .get(&message_id)
            .into_iter()
            .flatten()
            .filter(|r| r.mesh_id == mesh_id)
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (
                a.delivered_at.is_none(),
                a.delivered_at,
                &a.recipient_member_id,
            )
                .cmp(&(
                    b.delivered_at.is_none(),
                    b.delivered_at,
                    &b.recipient_member_id,
                ))
        });
        out
    }

    /// Completes the first row `presence` holds for which `matches` holds.
    /// Only its own rows and its member's can be held by it, so only those
    /// are looked at (1.37 clients ack every push).
    fn settle(
        &mut self,
        presence: Uuid,
        r: Retention,
        matches: impl Fn(&Row, &Held) -> bool,
    ) -> bool {
        let Some(p) = self.presences.get(&presence) else {
            return false;
        };
        let q = &self.queue;
        let member = (p.mesh_id.clone(), p.member_id.clone());
        let found = q
            .by_session
            .get(&presence)
            .into_iter()
            .flatten()
            .chain(q.by_member.get(&member).into_iter().flatten())
            .copied()
            .find(|id| {
                let r = &q.rows[id];
                r.claimed_session == Some(presence)
                    && q.messages.get(&r.message_id).is_some_and(|h| matches(r, h))
            });
        match found {
            Some(id) => {
                self.record(id, Some(r.now), r);
                self.queue.remove_row(id);
                true
            }
            None => false,
        }
    }

    pub(super) fn ack(&mut self, presence: Uuid, message_id: Uuid, r: Retention) -> bool {
        self.settle(presence, r, |row, _| row.message_id == message_id)
    }

    pub(super) fn ack_client(
        &mut self,
        presence: Uuid,
        mesh_id: &str,
        cid: &str,
        ret: Retention,
    ) -> bool {
        self.settle(presence, ret, |r, h| {
            r.mesh_id == mesh_id && h.message.echo.client_message_id.as_deref() == Some(cid)
        })
    }

    pub(super) fn sweep_messages(&mut self, r: Retention) -> u64 {
        let cutoff = r.cutoff_id();
        let q = &mut self.queue;
        q.send_keys.retain(|_, id| *id >= cutoff);
        q.records = q.records.split_off(&cutoff);
        let expired: BTreeSet<Uuid> = q
            .messages
            .iter()
            .filter(|(_, h)| h.expires_at <= r.now)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let rows: Vec<i64> = q
            .rows
            .iter()
            .filter(|(_, row)| expired.contains(&row.message_id))
            .map(|(id, _)| *id)
            .collect();
        for id in rows {
            self.record(id, None, r);
            self.queue.remove_row(id);
        }
        // Rows keep messages alive; a message whose rows are gone is gone.
        for id in &expired {
            self.queue.messages.remove(id);
        }
        expired.len() as u64
    }

    pub(super) fn queue_depth(&self) -> i64 {
        self.queue.rows.len() as i64
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    /// One node, no bus: there are no other nodes to notify, and no
    /// routing view can be older than the lock it is read under.
    async fn insert_messages(
        &self,
        batch: &[Outgoing],
        _notices: &[Notice],
        _checks: &[(&str, &str)],
    ) -> StoreResult<Option<Stored>> {
        let mut s = self.lock();
        let results = batch
            .iter()
            .map(|o| s.insert_message(&o.message, &o.deliveries, &o.bucket))
            .collect();
        Ok(Some(Stored {
            results,
            notified: Ok(0),
        }))
    }

    /// One node: the view is read under the lock it is stored under, so
    /// it can never be stale and carries no version.
    async fn send_routes(&self, mesh_id: &str, _fresh: bool) -> StoreResult<Routes> {
        Ok(Routes {
            targets: std::sync::Arc::new(self.route_targets(mesh_id).await?),
            version: None,
        })
    }

    async fn claim_many(&self, reqs: &[ClaimRequest]) -> StoreResult<Vec<Vec<Claimed>>> {
        let mut s = self.lock();
        Ok(reqs.iter().map(|r| s.claim(r)).collect())
    }

    async fn release_rows(&self, presence: Uuid, delivery_ids: &[i64]) -> StoreResult<()> {
        self.lock().release_rows(presence, delivery_ids);
        Ok(())
    }

    async fn remembered_sends(&self, keys: &[SendKey<'_>]) -> StoreResult<Vec<Option<Uuid>>> {
        Ok(self.lock().remembered(keys))
    }

    async fn complete_many(&self, done: &[(Uuid, i64)], r: Retention) -> StoreResult<()> {
        let mut s = self.lock();
        for (presence, id) in done {
            s.complete(*presence, std::slice::from_ref(id), r);
        }
        Ok(())
    }

    async fn ack_delivery(
        &self,
        presence: Uuid,
        message_id: Uuid,
        r: Retention,
    ) -> StoreResult<bool> {
        Ok(self.lock().ack(presence, message_id, r))
    }

    async fn ack_client_message(
        &self,
        presence: Uuid,
        mesh_id: &str,
        client_message_id: &str,
        r: Retention,
    ) -> StoreResult<bool> {
        Ok(self
            .lock()
            .ack_client(presence, mesh_id, client_message_id, r))
    }

    async fn sweep_messages(&self, r: Retention) -> StoreResult<u64> {
        Ok(self.lock().sweep_messages(r))
    }

    async fn delivery_records(
        &self,
        mesh_id: &str,
        message_id: Uuid,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        Ok(self.lock().records(mesh_id, message_id))
    }

    async fn queue_depth(&self) -> StoreResult<i64> {
        Ok(self.lock().queue_depth())
    }
}
