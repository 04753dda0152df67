//! Mesh clocks of the memory store: one node, so it owns every clock; the
//! rules (takeover, auto-pause, one tick per pass) are Postgres's.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::presence::mesh_presences;
use super::MemoryStore;
use crate::store::*;

/// mesh → its clock.
pub(super) type Clocks = HashMap<String, MeshClock>;

#[async_trait]
impl ClockStore for MemoryStore {
    async fn get_clock(&self, mesh_id: &str) -> StoreResult<Option<MeshClock>> {
        Ok(self.lock().clocks.get(mesh_id).cloned())
    }

    async fn change_clock(
        &self,
        mesh_id: &str,
        change: ClockChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<MeshClock>> {
        let mut s = self.lock();
        let existing = s.clocks.get_mut(mesh_id);
        let changed = match (change, existing) {
            (ClockChange::Set { speed, node }, None) => {
                let c = MeshClock::start(mesh_id, speed, node, now);
                s.clocks.insert(mesh_id.to_string(), c.clone());
                return Ok(Some(c));
            }
            (_, None) => return Ok(None),
            (ClockChange::Set { speed, .. }, Some(c)) => {
                c.speed = speed;
                if !c.paused {
                    c.next_tick_at = Some(now + tick_interval(speed));
                }
                c
            }
            (ClockChange::Pause, Some(c)) => {
                c.paused = true;
                c.next_tick_at = None;
                c
            }
            (ClockChange::Resume, Some(c)) => {
                c.paused = false;
                c.next_tick_at = Some(now + tick_interval(c.speed));
                c
            }
        };
        Ok(Some(changed.clone()))
    }

    async fn tick_clocks(&self, node: Uuid, now: DateTime<Utc>) -> StoreResult<Ticks> {
        let mut s = self.lock();
        let live: std::collections::HashSet<String> = s
            .clocks
            .keys()
            .filter(|m| mesh_presences(&s, m).any(|p| p.state == PresenceState::Online))
            .cloned()
            .collect();
        let registered: std::collections::HashSet<Uuid> = s.nodes.keys().copied().collect();
        let mut out = Ticks::default();
        for c in s.clocks.values_mut() {
            if c.owner_node.is_none_or(|o| !registered.contains(&o)) {
                c.owner_node = Some(node);
            }
            if c.owner_node != Some(node) || c.paused {
                continue;
            }
            if !live.contains(&c.mesh_id) {
                c.paused = true;
                c.next_tick_at = None;
                out.paused.push(c.mesh_id.clone());
                continue;
            }
            if c.next_tick_at.is_some_and(|t| t <= now) {
                *c = c.ticked(now);
                out.ticked.push(c.clone());
            }
            out.next_due = match (out.next_due, c.next_tick_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(out)
    }
}
