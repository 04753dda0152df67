//! Scheduled messages of the memory store: a fire routes, stores and
//! advances under the store's one lock, so it is atomic as the Postgres
//! transaction is (and one node has nobody to race).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::presence::route_targets_of;
use super::MemoryStore;
use crate::store::*;

/// Active entries by id.
pub(super) type Schedules = HashMap<Uuid, Schedule>;

fn ordered<'a>(it: impl Iterator<Item = &'a Schedule>) -> Vec<Schedule> {
    let mut v: Vec<Schedule> = it.cloned().collect();
    v.sort_by(|a, b| a.next_at.cmp(&b.next_at).then(a.id.cmp(&b.id)));
    v
}

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn create_schedule(&self, s: &Schedule, max_per_member: usize) -> StoreResult<bool> {
        let mut st = self.lock();
        let held = st
            .schedules
            .values()
            .filter(|x| x.mesh_id == s.mesh_id && x.member_id == s.member_id)
            .count();
        if held >= max_per_member {
            return Ok(false);
        }
        st.schedules.insert(s.id, s.clone());
        Ok(true)
    }

    async fn list_schedules(&self, mesh_id: &str, member_id: &str) -> StoreResult<Vec<Schedule>> {
        let st = self.lock();
        Ok(ordered(st.schedules.values().filter(|x| {
            x.mesh_id == mesh_id && x.member_id == member_id
        })))
    }

    async fn cancel_schedule(
        &self,
        mesh_id: &str,
        id: Uuid,
        member: Option<&str>,
    ) -> StoreResult<bool> {
        let mut st = self.lock();
        let ours = st
            .schedules
            .get(&id)
            .is_some_and(|x| x.mesh_id == mesh_id && member.is_none_or(|m| x.member_id == m));
        if ours {
            st.schedules.remove(&id);
        }
        Ok(ours)
    }

    async fn next_schedule_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.lock().schedules.values().map(|s| s.next_at).min())
    }

    async fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        _lease: std::time::Duration,
        plan: FirePlanner<'_>,
    ) -> StoreResult<Vec<Fired>> {
        let mut st = self.lock();
        let mut due = ordered(st.schedules.values().filter(|s| s.next_at <= now));
        due.truncate(limit);
        let mut routes: HashMap<String, Arc<Vec<RouteTarget>>> = HashMap::new();
        let mut fired = Vec::with_capacity(due.len());
        for s in due {
            let targets = routes
                .entry(s.mesh_id.clone())
                .or_insert_with(|| Arc::new(route_targets_of(&st, &s.mesh_id)))
                .clone();
            let fire = plan(&s, &targets);
            if let Some((m, deliveries)) = &fire.send {
                st.queue.store(m, deliveries);
            }
            match fire.next_at {
                Some(next) => {
                    let e = st.schedules.get_mut(&s.id).expect("a due entry is held");
                    e.next_at = next;
                    e.fired_count += 1;
                }
                None => {
                    st.schedules.remove(&s.id);
                }
            }
            fired.push(Fired {
                schedule: s,
                fire,
                targets,
            });
        }
        Ok(fired)
    }
}
