//! The presence table's bookkeeping: the by-mesh index kept in step with
//! the map, and a member's saved state when its last session goes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::State;
use crate::store::{MemberState, Presence};

pub(super) fn add_presence(s: &mut State, p: Presence) {
    s.presences_by_mesh
        .entry(p.mesh_id.clone())
        .or_default()
        .insert(p.id);
    s.presences.insert(p.id, p);
}

pub(super) fn remove_presence(s: &mut State, id: Uuid) -> Option<Presence> {
    let p = s.presences.remove(&id)?;
    if let Some(ids) = s.presences_by_mesh.get_mut(&p.mesh_id) {
        ids.remove(&id);
        if ids.is_empty() {
            s.presences_by_mesh.remove(&p.mesh_id);
        }
    }
    Some(p)
}

/// The presences of one mesh, in no order.
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
