//! The presence table's bookkeeping: the by-mesh index kept in step with
//! the map, and a member's saved state when its last session goes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use async_trait::async_trait;

use super::{MemoryStore, State};
use crate::protocol::status::{decide, Decision, Recorded};
use crate::protocol::{Source, Status};
use crate::store::*;

pub(super) fn add_presence(s: &mut State, p: Presence) {
    s.presences_by_mesh
        .entry(p.mesh_id.clone())
        .or_default()
        .insert(p.id);
    s.presences.insert(p.id, p);
}

pub(super) fn remove_presence(s: &mut State, id: Uuid) -> Option<Presence> {
    let p = s.presences.remove(&id)?;
    s.streams.drop_presence(id);
    s.mcp.drop_presence(id);
    s.files.drop_presence(id);
    if let Some(ids) = s.presences_by_mesh.get_mut(&p.mesh_id) {
        ids.remove(&id);
        if ids.is_empty() {
            s.presences_by_mesh.remove(&p.mesh_id);
        }
    }
    Some(p)
}

/// The presences of one mesh, in no order.
/// A mesh's routing view, oldest connection first (as Postgres orders it).
pub(super) fn route_targets_of(s: &State, mesh_id: &str) -> Vec<RouteTarget> {
    let mut v: Vec<&Presence> = mesh_presences(s, mesh_id).collect();
    v.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
    v.into_iter().map(RouteTarget::of).collect()
}

pub(super) fn mesh_presences<'a>(
    s: &'a State,
    mesh_id: &str,
) -> impl Iterator<Item = &'a Presence> {
    s.presences_by_mesh
        .get(mesh_id)
        .into_iter()
        .flatten()
        .filter_map(|id| s.presences.get(id))
}

pub(super) fn save_member_state(s: &mut State, p: &Presence, now: DateTime<Utc>) {
    s.member_states.insert(
        (p.mesh_id.clone(), p.member_id.clone()),
        MemberState {
            groups: p.groups.clone(),
            profile: p.profile.clone(),
            visible: p.visible,
            last_summary: p.summary.clone(),
            last_seen_at: now,
        },
    );
}

impl State {
    pub(super) fn expire_working(
        &mut self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<PresenceRef> {
        let mut out = Vec::new();
        for p in self.presences.values_mut() {
            if p.status == Status::Working && p.status_updated_at < before {
                p.status = Status::Idle;
                p.status_source = Source::Jsonl;
                p.status_updated_at = now;
                out.push(PresenceRef {
                    id: p.id,
                    node_id: p.node_id,
                    conn_id: p.conn_id,
                });
            }
        }
        out
    }
}

/// Re-attaches `x` (`refresh` says how): taken over from its socket if it
/// is online, else back from grace.
fn take_over(x: &mut Presence, refresh: impl FnOnce(&mut Presence)) -> Attach {
    let was = x.state;
    let (old_node, old_conn) = (x.node_id, x.conn_id);
    refresh(x);
    let presence = x.clone();
    match was {
        PresenceState::Online => Attach::Replaced {
            presence,
            old_node,
            old_conn,
        },
        PresenceState::Grace => Attach::Reattached(presence),
    }
}

/// Presences of a mesh that count toward its cap: online ones; a ghost in
/// grace (a crashed session) does not lock a full mesh out.
fn live_count(s: &State, mesh_id: &str) -> usize {
    mesh_presences(s, mesh_id)
        .filter(|x| x.state == PresenceState::Online)
        .count()
}

#[async_trait]
impl PresenceStore for MemoryStore {
    async fn attach_presence(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach> {
        let mut s = self.lock();
        let existing = mesh_presences(&s, &p.mesh_id)
            .find(|x| {
                x.member_id == p.member_id
                    && x.role == p.role
                    && (x.session_id == p.session_id
                        || (p.session_pubkey.is_some() && x.session_pubkey == p.session_pubkey))
            })
            .map(|x| x.id);
        if let Some(x) = existing.and_then(|id| s.presences.get_mut(&id)) {
            return Ok(take_over(x, |x| x.reattach(p)));
        }
        if live_count(&s, &p.mesh_id) >= max_per_mesh as usize {
            return Ok(Attach::Capacity);
        }
        let presence = Presence::from_new(p);
        add_presence(&mut s, presence.clone());
        Ok(Attach::Created(presence))
    }

    async fn attach_session(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach> {
        let mut s = self.lock();
        let by_key = mesh_presences(&s, &p.mesh_id)
            .filter(|x| p.session_pubkey.is_some() && x.session_pubkey == p.session_pubkey)
            .max_by_key(|x| x.role == PeerRole::Session)
            .map(|x| {
                (
                    x.id,
                    x.member_id == p.member_id && x.role == PeerRole::Session,
                )
            });
        match by_key {
            Some((_, false)) => return Ok(Attach::Foreign),
            Some((id, true)) => {
                let x = s.presences.get_mut(&id).expect("listed by mesh");
                return Ok(take_over(x, |x| x.reattach_session(p)));
            }
            None => {}
        }
        let old = mesh_presences(&s, &p.mesh_id)
            .find(|x| {
                x.member_id == p.member_id
                    && x.role == PeerRole::Session
                    && x.session_id == p.session_id
            })
            .map(|x| (x.id, x.state == PresenceState::Online));
        let count = live_count(&s, &p.mesh_id) - usize::from(old.is_some_and(|(_, live)| live));
        let old = old.map(|(id, _)| id);
        if count >= max_per_mesh as usize {
            return Ok(Attach::Capacity);
        }
        let ended = old.and_then(|id| {
            let o = remove_presence(&mut s, id)?;
            s.queue.orphan_session(id);
            s.queue.release_claims(id);
            Some(PresenceRef {
                id: o.id,
                node_id: o.node_id,
                conn_id: o.conn_id,
            })
        });
        let presence = Presence::from_new(p);
        add_presence(&mut s, presence.clone());
        Ok(match ended {
            Some(old) => Attach::Superseded { presence, old },
            None => Attach::Created(presence),
        })
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

    async fn end_presences(&self, ids: &[Uuid]) -> StoreResult<Vec<Presence>> {
        let mut s = self.lock();
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = remove_presence(&mut s, *id) {
                s.queue.orphan_session(*id);
                s.queue.release_claims(*id);
                ended.push(p);
            }
        }
        ended.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
        Ok(ended)
    }

    async fn enter_at_least_once(&self, id: Uuid) -> StoreResult<bool> {
        Ok(match self.lock().presences.get_mut(&id) {
            Some(p) => {
                p.at_least_once = true;
                true
            }
            None => false,
        })
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
        if snapshot.role == PeerRole::ControlPlane {
            save_member_state(&mut s, &snapshot, now);
        }
        s.queue.release_claims(id);
        Ok(true)
    }

    async fn record_activity(&self, heard: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
        let mut s = self.lock();
        for (id, t) in heard {
            if let Some(p) = s.presences.get_mut(id) {
                if p.last_active_at.is_none_or(|a| a < *t) {
                    p.last_active_at = Some(*t);
                }
            }
        }
        Ok(())
    }

    async fn route_targets(&self, mesh_id: &str) -> StoreResult<Vec<RouteTarget>> {
        Ok(route_targets_of(&self.lock(), mesh_id))
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

    async fn expire_working(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PresenceRef>> {
        Ok(self.lock().expire_working(before, now))
    }
}
