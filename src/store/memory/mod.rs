//! The single-node store: everything in one mutex-guarded struct. Every
//! operation takes the lock once, so each is atomic exactly like its
//! Postgres transaction. Not for clusters: nothing here is shared.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

mod audit;
mod messages;
mod presences;
mod status;

use super::*;
use crate::protocol::status::{decide, Decision, Recorded};
use presences::{add_presence, mesh_presences, remove_presence, save_member_state};

#[derive(Default)]
struct State {
    meshes: HashMap<String, Mesh>,
    slug_index: HashMap<String, String>,
    members: HashMap<String, Member>,
    /// (mesh_id, pubkey) → member id.
    pubkey_index: HashMap<(String, String), String>,
    invites: HashMap<String, Invite>,
    nodes: HashMap<Uuid, NodeInfo>,
    /// Only online and in-grace presences; gone ones are dropped.
    presences: HashMap<Uuid, Presence>,
    /// The ids in `presences` by mesh: hellos, routing and listings look
    /// at one mesh, not every presence of the store. Changed only with
    /// `presences` (add_presence, remove_presence).
    presences_by_mesh: HashMap<String, std::collections::HashSet<Uuid>>,
    member_states: HashMap<(String, String), MemberState>,
    queue: messages::Queue,
    /// (pid, cwd) → (status, created_at) of hooks that came first.
    pending: HashMap<(i64, String), (Status, DateTime<Utc>)>,
    audit: audit::Chains,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change
        // (each operation mutates after all its checks), so poison is safe
        // to ignore.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn insert_mesh(&self, mesh: &Mesh) -> StoreResult<()> {
        let mut s = self.lock();
        if s.slug_index.contains_key(&mesh.slug) || s.meshes.contains_key(&mesh.id) {
            return Err(StoreError::Conflict("mesh slug already exists"));
        }
        s.slug_index.insert(mesh.slug.clone(), mesh.id.clone());
        s.meshes.insert(mesh.id.clone(), mesh.clone());
        Ok(())
    }

    async fn list_meshes(&self) -> StoreResult<Vec<Mesh>> {
        let mut v: Vec<Mesh> = self.lock().meshes.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.slug.cmp(&b.slug)));
        Ok(v)
    }

    async fn mesh_by_slug(&self, slug: &str) -> StoreResult<Option<Mesh>> {
        let s = self.lock();
        Ok(s.slug_index
            .get(slug)
            .and_then(|id| s.meshes.get(id))
            .cloned())
    }

    async fn mesh_by_id(&self, id: &str) -> StoreResult<Option<Mesh>> {
        Ok(self.lock().meshes.get(id).cloned())
    }

    async fn insert_member(&self, member: &Member) -> StoreResult<()> {
        let mut s = self.lock();
        let key = (member.mesh_id.clone(), member.pubkey.clone());
        if s.pubkey_index.contains_key(&key) || s.members.contains_key(&member.id) {
            return Err(StoreError::Conflict(
                "pubkey is already a member of this mesh",
            ));
        }
        s.pubkey_index.insert(key, member.id.clone());
        s.members.insert(member.id.clone(), member.clone());
        Ok(())
    }

    async fn list_members(&self, mesh_id: &str) -> StoreResult<Vec<Member>> {
        let mut v: Vec<Member> = self
            .lock()
            .members
            .values()
            .filter(|m| m.mesh_id == mesh_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn member_by_id(&self, mesh_id: &str, member_id: &str) -> StoreResult<Option<Member>> {
        Ok(self
            .lock()
            .members
            .get(member_id)
            .filter(|m| m.mesh_id == mesh_id)
            .cloned())
    }

    async fn member_by_pubkey(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<Member>> {
        let s = self.lock();
        Ok(s.pubkey_index
            .get(&(mesh_id.to_string(), pubkey.to_string()))
            .and_then(|id| s.members.get(id))
            .cloned())
    }

    async fn revoke_member(
        &self,
        mesh_id: &str,
        member_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<PresenceRef>>> {
        let mut s = self.lock();
        match s.members.get_mut(member_id) {
            Some(m) if m.mesh_id == mesh_id && m.revoked_at.is_none() => m.revoked_at = Some(now),
            _ => return Ok(None),
        }
        let ended: Vec<PresenceRef> = s
            .presences
            .values()
            .filter(|p| p.member_id == member_id)
            .map(|p| PresenceRef {
                id: p.id,
                node_id: p.node_id,
                conn_id: p.conn_id,
            })
            .collect();
        for r in &ended {
            remove_presence(&mut s, r.id);
        }
        s.queue.drop_member(member_id);
        Ok(Some(ended))
    }

    async fn insert_invite(&self, invite: &Invite) -> StoreResult<()> {
        let mut s = self.lock();
        if s.invites.contains_key(&invite.token) {
            return Err(StoreError::Conflict("invite token already exists"));
        }
        s.invites.insert(invite.token.clone(), invite.clone());
        Ok(())
    }

    async fn revoke_invite(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        let mut s = self.lock();
        match s.invites.get_mut(token) {
            Some(inv) if inv.revoked_at.is_none() => {
                inv.revoked_at = Some(now);
                Ok(Some(inv.mesh_id.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn redeem_invite(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>> {
        let mut s = self.lock();
        let Some(inv) = s.invites.get(&r.token) else {
            return Ok(Err(InviteRefusal::NotFound));
        };
        if inv.mesh_id != r.mesh_id {
            return Ok(Err(InviteRefusal::MeshMismatch));
        }
        if inv.revoked_at.is_some() {
            return Ok(Err(InviteRefusal::Revoked));
        }
        if inv.expires_at <= r.now {
            return Ok(Err(InviteRefusal::Expired));
        }
        let role = inv.role;
        let key = (r.mesh_id.clone(), r.pubkey.clone());
        if let Some(id) = s.pubkey_index.get(&key) {
            return Ok(Ok(Redeemed {
                member_id: id.clone(),
                already_member: true,
            }));
        }
        let inv = s.invites.get_mut(&r.token).expect("checked above");
        if inv.used_count >= inv.max_uses {
            return Ok(Err(InviteRefusal::Exhausted));
        }
        inv.used_count += 1;
        let member = Member {
            id: r.new_member_id.clone(),
            mesh_id: r.mesh_id.clone(),
            pubkey: r.pubkey.clone(),
            display_name: r.display_name.clone(),
            role,
            default_groups: Vec::new(),
            revoked_at: None,
            created_at: r.now,
        };
        s.pubkey_index.insert(key, member.id.clone());
        s.members.insert(member.id.clone(), member);
        Ok(Ok(Redeemed {
            member_id: r.new_member_id.clone(),
            already_member: false,
        }))
    }

    async fn register_node(&self, node: &NodeRow) -> StoreResult<()> {
        self.lock().nodes.insert(
            node.id,
            NodeInfo {
                id: node.id,
                addr: node.addr.clone(),
                version: node.version.clone(),
                started_at: node.started_at,
                heartbeat_at: node.started_at,
                draining: false,
                sockets: 0,
            },
        );
        Ok(())
    }

    async fn heartbeat_node(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        draining: bool,
    ) -> StoreResult<bool> {
        Ok(match self.lock().nodes.get_mut(&id) {
            Some(n) => {
                n.heartbeat_at = now;
                n.draining = draining;
                true
            }
            None => false,
        })
    }

    async fn reap_dead_nodes(
        &self,
        _dead_before: DateTime<Utc>,
        _grace_until: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>> {
        // One process, one node: the node that would reap is the only one.
        Ok(Vec::new())
    }

    async fn remove_node(&self, id: Uuid) -> StoreResult<()> {
        self.lock().nodes.remove(&id);
        Ok(())
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        let s = self.lock();
        let mut v: Vec<NodeInfo> = s
            .nodes
            .values()
            .map(|n| NodeInfo {
                sockets: s
                    .presences
                    .values()
                    .filter(|p| p.node_id == n.id && p.state == PresenceState::Online)
                    .count() as i64,
                ..n.clone()
            })
            .collect();
        v.sort_by_key(|n| n.started_at);
        Ok(v)
    }

    async fn attach_presence(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach> {
        let mut s = self.lock();
        let existing = mesh_presences(&s, &p.mesh_id)
            .find(|x| {
                x.member_id == p.member_id
                    && (x.session_id == p.session_id
                        || (p.session_pubkey.is_some() && x.session_pubkey == p.session_pubkey))
            })
            .map(|x| x.id);
        if let Some(x) = existing.and_then(|id| s.presences.get_mut(&id)) {
            let was = x.state;
            let (old_node, old_conn) = (x.node_id, x.conn_id);
            x.reattach(p);
            let presence = x.clone();
            return Ok(match was {
                PresenceState::Online => Attach::Replaced {
                    presence,
                    old_node,
                    old_conn,
                },
                _ => Attach::Reattached(presence),
            });
        }
        let count = s
            .presences_by_mesh
            .get(&p.mesh_id)
            .map_or(0, |ids| ids.len());
        if count >= max_per_mesh as usize {
            return Ok(Attach::Capacity);
        }
        let presence = Presence::from_new(p);
        add_presence(&mut s, presence.clone());
        Ok(Attach::Created(presence))
    }

    async fn member_state(
        &self,
        mesh_id: &str,
        member_id: &str,
    ) -> StoreResult<Option<MemberState>> {
        Ok(self
            .lock()
            .member_states
            .get(&(mesh_id.to_string(), member_id.to_string()))
            .cloned())
    }

    async fn update_presence(&self, id: Uuid, patch: &PresencePatch) -> StoreResult<PatchResult> {
        let mut s = self.lock();
        Ok(match s.presences.get_mut(&id) {
            None => PatchResult::Gone,
            Some(p) => {
                if patch.apply(p) {
                    PatchResult::Applied(Box::new(p.clone()))
                } else {
                    PatchResult::Refused
                }
            }
        })
    }

    async fn write_status(
        &self,
        id: Uuid,
        status: Status,
        source: Source,
        now: DateTime<Utc>,
        fresh_window_ms: i64,
    ) -> StoreResult<Option<StatusWrite>> {
        let mut s = self.lock();
        let Some(p) = s.presences.get_mut(&id) else {
            return Ok(None);
        };
        let rec = Recorded {
            status: p.status,
            source: p.status_source,
            age_ms: (now - p.status_updated_at).num_milliseconds(),
        };
        Ok(Some(match decide(rec, status, source, fresh_window_ms) {
            Decision::Record(st, src) => {
                let changed = st != p.status;
                p.status = st;
                p.status_source = src;
                p.status_updated_at = now;
                StatusWrite {
                    status: st,
                    source: src,
                    changed,
                    node_id: p.node_id,
                }
            }
            Decision::Keep => StatusWrite {
                status: p.status,
                source: p.status_source,
                changed: false,
                node_id: p.node_id,
            },
        }))
    }

    async fn release_presence(
        &self,
        id: Uuid,
        conn_id: Uuid,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut s = self.lock();
        let Some(p) = s.presences.get_mut(&id) else {
            return Ok(false);
        };
        if p.conn_id != conn_id || p.state != PresenceState::Online {
            return Ok(false);
        }
        p.state = PresenceState::Grace;
        p.grace_until = Some(grace_until);
        p.last_seen_at = now;
        let snapshot = p.clone();
        save_member_state(&mut s, &snapshot, now);
        s.queue.release_claims(id);
        Ok(true)
    }

    async fn route_targets(&self, mesh_id: &str) -> StoreResult<Vec<RouteTarget>> {
        let s = self.lock();
        let mut v: Vec<&Presence> = mesh_presences(&s, mesh_id).collect();
        v.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
        Ok(v.into_iter().map(RouteTarget::of).collect())
    }

    async fn presence_by_id(&self, id: Uuid) -> StoreResult<Option<Presence>> {
        Ok(self.lock().presences.get(&id).cloned())
    }

    async fn list_presences(&self, mesh_id: &str) -> StoreResult<Vec<Presence>> {
        let s = self.lock();
        let mut v: Vec<Presence> = mesh_presences(&s, mesh_id).cloned().collect();
        v.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn expire_grace(&self, now: DateTime<Utc>) -> StoreResult<Vec<Presence>> {
        let mut s = self.lock();
        let ids: Vec<Uuid> = s
            .presences
            .values()
            .filter(|p| p.state == PresenceState::Grace && p.grace_until.is_some_and(|t| t <= now))
            .map(|p| p.id)
            .collect();
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = remove_presence(&mut s, id) {
                s.queue.orphan_session(id);
                ended.push(p);
            }
        }
        Ok(ended)
    }

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

    async fn claim_many(&self, reqs: &[ClaimRequest]) -> StoreResult<Vec<Vec<Claimed>>> {
        let mut s = self.lock();
        Ok(reqs.iter().map(|r| s.claim(r)).collect())
    }

    async fn complete_many(&self, done: &[(Uuid, i64)]) -> StoreResult<()> {
        let mut s = self.lock();
        for (presence, id) in done {
            s.complete(*presence, std::slice::from_ref(id));
        }
        Ok(())
    }

    async fn release_rows(&self, presence: Uuid, delivery_ids: &[i64]) -> StoreResult<()> {
        self.lock().release_rows(presence, delivery_ids);
        Ok(())
    }

    async fn ack_delivery(&self, presence: Uuid, message_id: Uuid) -> StoreResult<bool> {
        Ok(self.lock().ack(presence, message_id))
    }

    async fn sweep_messages(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(self.lock().sweep_messages(now))
    }

    async fn queue_depth(&self) -> StoreResult<i64> {
        Ok(self.lock().queue_depth())
    }

    async fn take_token(
        &self,
        scope: &str,
        bucket: &Bucket,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Ok(self.lock().take_token(scope, bucket, now))
    }

    async fn sweep_rate_buckets(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(self.lock().sweep_buckets(before))
    }

    async fn presence_by_hook_token(&self, hash: &[u8]) -> StoreResult<Option<Presence>> {
        Ok(self.lock().by_hook_token(hash))
    }

    async fn hook_targets(&self, pid: Option<i64>, cwd: &str) -> StoreResult<Vec<Uuid>> {
        Ok(self.lock().hook_targets(pid, cwd))
    }

    async fn insert_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.lock()
            .pending
            .insert((pid, cwd.to_string()), (status, now));
        Ok(())
    }

    async fn take_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Status>> {
        let taken = self.lock().pending.remove(&(pid, cwd.to_string()));
        Ok(taken.filter(|(_, at)| *at >= since).map(|(s, _)| s))
    }

    async fn sweep_pending_status(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut s = self.lock();
        let n = s.pending.len();
        s.pending.retain(|_, (_, at)| *at >= before);
        Ok((n - s.pending.len()) as u64)
    }

    async fn expire_working(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PresenceRef>> {
        Ok(self.lock().expire_working(before, now))
    }

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
