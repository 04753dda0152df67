//! Scheduled messages (PROTOCOL-MESH.md §12): entries that fire exactly
//! once cluster-wide. A fire locks its due entries so no other node can
//! take them, asks the engine how to route each (with the mesh's live and
//! in-grace presences as of now), and in the same transaction stores the
//! messages and advances (cron) or removes (one-shot) the entries. A node
//! that dies mid-fire rolls back and leaves them to another.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{NewDelivery, NewMessage, RouteTarget, StoreResult};

/// One active entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: Uuid,
    pub mesh_id: String,
    /// The creating member: the fire is a send from it.
    pub member_id: String,
    pub member_pubkey: String,
    pub member_name: String,
    /// The `to` as sent.
    pub to: String,
    /// For a key target, the member that key named at creation.
    pub to_member_id: Option<String>,
    /// Plaintext; never logged.
    pub message: String,
    pub subtype: Option<String>,
    pub cron: Option<String>,
    pub next_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub fired_count: i64,
}

/// What firing one due entry does, as the engine decides it.
#[derive(Debug, Clone)]
pub struct Fire {
    /// The message and its rows; `None` (or no rows) fires into nothing.
    pub send: Option<(NewMessage, Vec<NewDelivery>)>,
    /// The entry's next fire time (cron); `None` removes it.
    pub next_at: Option<DateTime<Utc>>,
}

/// One entry fired by [`ScheduleStore::fire_due`]: the entry as it was due,
/// what was stored, and the presences it was routed by (for wake-ups).
#[derive(Debug, Clone)]
pub struct Fired {
    pub schedule: Schedule,
    pub fire: Fire,
    pub targets: std::sync::Arc<Vec<RouteTarget>>,
}

/// Routes a due entry: called by the store inside the firing transaction.
pub type FirePlanner<'a> = &'a (dyn Fn(&Schedule, &[RouteTarget]) -> Fire + Send + Sync);

#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Stores a new entry unless its member already has `max_per_member`
    /// active ones (`false`), atomically against concurrent creates.
    async fn create_schedule(&self, s: &Schedule, max_per_member: usize) -> StoreResult<bool>;

    /// The active entries made by a member, by next fire time.
    async fn list_schedules(&self, mesh_id: &str, member_id: &str) -> StoreResult<Vec<Schedule>>;

    /// Cancels an active entry of `mesh_id`: only the member's own, unless
    /// `member` is `None` (a privileged caller). `false` when there was no
    /// such active entry (unknown, fired, cancelled, another member's).
    async fn cancel_schedule(
        &self,
        mesh_id: &str,
        id: Uuid,
        member: Option<&str>,
    ) -> StoreResult<bool>;

    /// The earliest next fire time of any active entry, all meshes.
    async fn next_schedule_due(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// Fires up to `limit` entries due at `now` that no other node is
    /// firing, oldest due first, each routed by `plan`; all in one
    /// transaction. `lease` bounds how long the entries stay locked if
    /// this node stalls mid-fire: after it, the database ends the
    /// transaction and another node may fire them.
    async fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: std::time::Duration,
        plan: FirePlanner<'_>,
    ) -> StoreResult<Vec<Fired>>;
}
