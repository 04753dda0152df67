//! What `POST /hook/set-status` needs beyond a status write: finding the
//! presence a hook names, and hooks kept for a hello that has not come yet.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::presence::Presence;
use super::StoreResult;
use crate::protocol::Status;

/// Hook lookups and pending hooks.
#[async_trait]
pub trait HookStore: Send + Sync + 'static {
    /// The online or in-grace presence whose hook token hashes to `hash`.
    async fn presence_by_hook_token(&self, hash: &[u8]) -> StoreResult<Option<Presence>>;

    /// Online presences a v1 hook names: those with this (pid, cwd) in any
    /// mesh, else the newest one with this cwd.
    async fn hook_targets(&self, pid: Option<i64>, cwd: &str) -> StoreResult<Vec<Uuid>>;

    /// Keeps a hook that named no presence, for a hello that follows.
    async fn insert_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Removes and returns a pending hook newer than `since`.
    async fn take_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Status>>;

    /// Drops pending hooks older than `before`.
    async fn sweep_pending_status(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}
