//! Tasks of the memory store: claims and completions under the store's
//! one lock, so a claim is atomic as the Postgres update is.

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryStore;
use crate::store::*;

/// mesh → tasks in creation order.
pub(super) type Tasks = std::collections::HashMap<String, Vec<Task>>;

#[async_trait]
impl TaskStore for MemoryStore {
    async fn create_task(&self, t: &Task) -> StoreResult<()> {
        self.lock()
            .tasks
            .entry(t.mesh_id.clone())
            .or_default()
            .push(t.clone());
        Ok(())
    }

    async fn claim_task(
        &self,
        mesh_id: &str,
        id: Uuid,
        by: TaskActor<'_>,
    ) -> StoreResult<TaskClaim> {
        let mut s = self.lock();
        let task = s
            .tasks
            .get_mut(mesh_id)
            .and_then(|ts| ts.iter_mut().find(|t| t.id == id));
        Ok(match task {
            Some(t) if t.status == TaskStatus::Open => {
                t.status = TaskStatus::Claimed;
                t.claimed_by = Some(by.name.to_string());
                t.claimed_by_member = Some(by.member_id.to_string());
                TaskClaim::Won
            }
            _ => TaskClaim::NotClaimable,
        })
    }

    async fn complete_task(
        &self,
        mesh_id: &str,
        id: Uuid,
        by: TaskActor<'_>,
        result: Option<&str>,
    ) -> StoreResult<TaskCompletion> {
        let mut s = self.lock();
        let Some(t) = s
            .tasks
            .get_mut(mesh_id)
            .and_then(|ts| ts.iter_mut().find(|t| t.id == id))
        else {
            return Ok(TaskCompletion::NotFound);
        };
        let allowed = t.status == TaskStatus::Open
            || by.privileged
            || t.created_by_member == by.member_id
            || t.claimed_by_member.as_deref() == Some(by.member_id);
        if !allowed {
            return Ok(TaskCompletion::Forbidden);
        }
        t.status = TaskStatus::Done;
        t.result = result.map(str::to_string);
        Ok(TaskCompletion::Done)
    }

    async fn count_tasks(&self, mesh_id: &str) -> StoreResult<(u64, u64, u64)> {
        let s = self.lock();
        let mut n = (0, 0, 0);
        for t in s.tasks.get(mesh_id).into_iter().flatten() {
            match t.status {
                TaskStatus::Open => n.0 += 1,
                TaskStatus::Claimed => n.1 += 1,
                TaskStatus::Done => n.2 += 1,
            }
        }
        Ok(n)
    }

    async fn list_tasks(
        &self,
        mesh_id: &str,
        status: Option<&str>,
        assignee: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Task>> {
        let s = self.lock();
        Ok(s.tasks
            .get(mesh_id)
            .into_iter()
            .flatten()
            .rev()
            .filter(|t| status.is_none_or(|st| t.status.as_str() == st))
            .filter(|t| assignee.is_none_or(|a| t.assignee.as_deref() == Some(a)))
            .take(limit)
            .cloned()
            .collect())
    }
}
