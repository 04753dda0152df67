//! Hook support of the memory store: token lookup, v1 (pid, cwd) targets,
//! pending hooks, the stuck-`working` sweep and hook rate buckets.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::State;
use crate::protocol::{Source, Status};
use crate::store::{Bucket, Presence, PresenceRef, PresenceState};

impl State {
    pub(super) fn take_token(&mut self, scope: &str, b: &Bucket, now: DateTime<Utc>) -> bool {
        let key = (scope.to_string(), b.key.clone());
        let (tokens, updated) = self
            .queue
            .buckets
            .get(&key)
            .copied()
            .unwrap_or((f64::from(b.burst), now));
        match super::messages::take_token(tokens, updated, now, b.rate_per_min, b.burst) {
            Some(left) => {
                self.queue.buckets.insert(key, (left, now));
                true
            }
            None => false,
        }
    }

    pub(super) fn sweep_buckets(&mut self, before: DateTime<Utc>) -> u64 {
        let b = &mut self.queue.buckets;
        let n = b.len();
        b.retain(|_, (_, at)| *at >= before);
        (n - b.len()) as u64
    }

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
