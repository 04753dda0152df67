//! The sockets this node holds, by presence. The only in-memory state of a
//! node: everything here is rebuilt by clients reconnecting, never needed
//! by another node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use uuid::Uuid;

/// What a session's writer task sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Ping,
    /// Fired once every frame queued before it has been written.
    Marker(oneshot::Sender<()>),
    Close(u16, &'static str),
}

/// Close codes the broker uses (PROTOCOL.md and RFC 6455).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const REPLACED: u16 = 4000;
    pub const REVOKED: u16 = 4003;
}

#[derive(Clone)]
pub struct SessionHandle {
    /// Identifies this socket among re-attaches of the same presence.
    pub conn_id: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    pub tx: mpsc::Sender<Outbound>,
    /// Wakes the session's delivery loop: something may be claimable.
    pub wake: Arc<Notify>,
    /// Asks the session loop to close with (code, reason). A watch, not a
    /// queued frame, so a close gets through even when the queue is full.
    pub closer: watch::Sender<Option<(u16, &'static str)>>,
}

#[derive(Default)]
pub struct Sessions {
    by_presence: Mutex<HashMap<Uuid, SessionHandle>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SessionHandle>> {
        self.by_presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a socket for a presence, returning the one it displaced
    /// (a replaced session on this same node).
    pub fn insert(&self, presence: Uuid, handle: SessionHandle) -> Option<SessionHandle> {
        self.lock().insert(presence, handle)
    }

    /// Removes the entry only if it is still this socket's.
    pub fn remove(&self, presence: Uuid, conn_id: Uuid) {
        let mut map = self.lock();
        if map.get(&presence).is_some_and(|h| h.conn_id == conn_id) {
            map.remove(&presence);
        }
    }

    /// Closes the socket of `presence` if it is `conn_id` (any if `None`).
    pub fn close(&self, presence: Uuid, conn_id: Option<Uuid>, code: u16, reason: &'static str) {
        let handle = {
            let map = self.lock();
            map.get(&presence)
                .filter(|h| conn_id.is_none_or(|c| c == h.conn_id))
                .cloned()
        };
        if let Some(h) = handle {
            h.closer.send_replace(Some((code, reason)));
        }
    }

    /// Wakes the delivery loop of `presence` if this node holds it.
    pub fn wake(&self, presence: Uuid) {
        if let Some(h) = self.lock().get(&presence) {
            h.wake.notify_one();
        }
    }

    /// Wakes every local session of a member (member-addressed messages).
    pub fn wake_member(&self, member_id: &str) {
        for h in self.lock().values().filter(|h| h.member_id == member_id) {
            h.wake.notify_one();
        }
    }

    /// Closes every local socket with `code`.
    pub fn close_every(&self, code: u16, reason: &'static str) {
        for h in self.lock().values() {
            h.closer.send_replace(Some((code, reason)));
        }
    }

    /// Wakes every local delivery loop (catch-up after a bus outage).
    pub fn wake_all(&self) {
        for h in self.lock().values() {
            h.wake.notify_one();
        }
    }

    /// Queues `frame` to every local session of `mesh_id` except those of
    /// `skip_member`. A session whose queue is full misses it: system
    /// events are advisory, and `list_peers` has the truth.
    pub fn broadcast(&self, mesh_id: &str, skip_member: &str, frame: &Utf8Bytes) {
        for h in self
            .lock()
            .values()
            .filter(|h| h.mesh_id == mesh_id && h.member_id != skip_member)
        {
            let _ = h.tx.try_send(Outbound::Text(frame.clone()));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
