//! Tasks (PROTOCOL-MESH.md §3): a claim is one conditional update, so of
//! any number of racing claims on any nodes exactly one wins.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Open,
    Claimed,
    Done,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        match s {
            "open" => Some(TaskStatus::Open),
            "claimed" => Some(TaskStatus::Claimed),
            "done" => Some(TaskStatus::Done),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: Uuid,
    pub mesh_id: String,
    pub title: String,
    pub assignee: Option<String>,
    pub priority: String,
    pub status: TaskStatus,
    pub tags: Vec<String>,
    /// Display names at the time of the write, and the members behind them
    /// (for the completion rule).
    pub created_by: String,
    pub created_by_member: String,
    pub claimed_by: Option<String>,
    pub claimed_by_member: Option<String>,
    pub created_at: DateTime<Utc>,
    pub result: Option<String>,
}

/// Who acts on a task.
#[derive(Debug, Clone, Copy)]
pub struct TaskActor<'a> {
    pub member_id: &'a str,
    pub name: &'a str,
    /// Admin or mesh owner: may complete anyone's task.
    pub privileged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskClaim {
    Won,
    /// Unknown, or no longer open.
    NotClaimable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskCompletion {
    Done,
    NotFound,
    /// Claimed or done, and the actor is not its claimer, its creator or
    /// privileged.
    Forbidden,
}

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    async fn create_task(&self, t: &Task) -> StoreResult<()>;

    /// `open` → `claimed` by `by`, atomically.
    async fn claim_task(
        &self,
        mesh_id: &str,
        id: Uuid,
        by: TaskActor<'_>,
    ) -> StoreResult<TaskClaim>;

    /// → `done` with `result` (again: overwrites it), under the
    /// completion rule.
    async fn complete_task(
        &self,
        mesh_id: &str,
        id: Uuid,
        by: TaskActor<'_>,
        result: Option<&str>,
    ) -> StoreResult<TaskCompletion>;

    /// The mesh's tasks by status: (open, claimed, done).
    async fn count_tasks(&self, mesh_id: &str) -> StoreResult<(u64, u64, u64)>;

    /// Newest first, at most `limit`, with exact filters.
    async fn list_tasks(
        &self,
        mesh_id: &str,
        status: Option<&str>,
        assignee: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Task>>;
}
