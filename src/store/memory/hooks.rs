//! Hook lookups and pending hooks of the memory store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MemoryStore, State};
use crate::protocol::Status;
use crate::store::*;

impl State {
    pub(super) fn by_hook_token(&self, hash: &[u8]) -> Option<Presence> {
        self.presences
            .values()
            .find(|p| p.hook_token_hash == hash)
            .cloned()
    }

    pub(super) fn hook_targets(&self, pid: Option<i64>, cwd: &str) -> Vec<Uuid> {
        let online = || {
            self.presences
                .values()
                .filter(move |p| p.state == PresenceState::Online && p.cwd.as_deref() == Some(cwd))
        };
        let exact: Vec<Uuid> = online()
            .filter(|p| pid.is_some() && p.pid == pid)
            .map(|p| p.id)
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        online()
            .max_by_key(|p| (p.connected_at, p.id))
            .map(|p| vec![p.id])
            .unwrap_or_default()
    }
}

#[async_trait]
impl HookStore for MemoryStore {
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
}
