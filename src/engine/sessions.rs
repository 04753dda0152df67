//! The sockets this node holds, by presence. The only in-memory state of a
//! node: everything here is rebuilt by clients reconnecting, never needed
//! by another node.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{oneshot, watch, Notify};
use uuid::Uuid;

use super::outbound::OutboundTx;
use super::signal::Skip;
use crate::store::Claimed;

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
    pub const NORMAL: u16 = 1000;
    pub const REPLACED: u16 = 4000;
    /// `kick` (PROTOCOL-SESSIONS.md §12): the 1.37 plain client stops.
    pub const KICKED: u16 = 4001;
    /// The member was revoked (`ban`, admin revoke, a revoked member's
    /// hello); always after an `error` `revoked`.
    pub const BANNED: u16 = 4002;

    /// The reasons a close may give, as the static text the writer needs;
    /// what a signal names from elsewhere maps onto one of them.
    pub fn reason(name: Option<&str>, code: u16) -> &'static str {
        const KNOWN: &[&str] = &[
            "replaced",
            "banned",
            "kicked",
            "kicked_stale",
            "disconnected",
            "disconnected_stale",
        ];
        match name.and_then(|n| KNOWN.iter().find(|k| **k == n)) {
            Some(k) => k,
            None => match code {
                REPLACED => "replaced",
                BANNED => "banned",
                KICKED => "kicked",
                NORMAL => "disconnected",
                _ => "closed",
            },
        }
    }
}

#[derive(Clone)]
pub struct SessionHandle {
    /// Identifies this socket among re-attaches of the same presence.
    pub conn_id: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    pub tx: OutboundTx,
    /// Wakes the session's delivery loop and takes rows handed to it.
    pub mailbox: Arc<Mailbox>,
    /// Asks the session loop to close with (code, reason). A watch, not a
    /// queued frame, so a close gets through even when the queue is full.
    pub closer: watch::Sender<Option<(u16, &'static str)>>,
}

/// Between a session's delivery loop and the rest of the node: wake-ups
/// ("something may be claimable") and rows the send batcher stored already
/// claimed for it. A row may be handed over only while the loop is caught
/// up (its last claim came back short) and no wake-up is pending: then no
/// older row is waiting for it, so pushing the new one straight away keeps
/// the oldest-first order a claim would give.
#[derive(Default)]
pub struct Mailbox {
    notify: Notify,
    claim_wanted: AtomicBool,
    caught_up: AtomicBool,
    /// When the loop's last claim that took everything claimable began
    /// (µs since the epoch; 0: never). Rows held back by the status it
    /// read then are invisible to "caught up", so a handoff also needs the
    /// recipient's status to be older than that claim.
    claimed_all: std::sync::atomic::AtomicI64,
    handed: Mutex<Vec<Claimed>>,
    /// When the socket last sent a frame or pong, not yet recorded in the
    /// store (µs since the epoch; 0: nothing new).
    heard: std::sync::atomic::AtomicI64,
}

impl Mailbox {
    /// Something may be claimable: the loop claims on its next turn.
    pub fn wake(&self) {
        self.claim_wanted.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Whether a new row may be stored pre-claimed for this session.
    pub fn takes_handoff(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst) && !self.claim_wanted.load(Ordering::SeqCst)
    }

    /// Rows stored pre-claimed for this session, oldest first.
    pub fn hand(&self, rows: Vec<Claimed>) {
        self.handed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(rows);
        self.notify.notify_one();
    }

    /// The loop's side: rows handed over since the last call.
    pub fn take_handed(&self) -> Vec<Claimed> {
        std::mem::take(&mut *self.handed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The loop's side: whether a wake-up asked for a claim (and clears it).
    pub fn take_claim_wanted(&self) -> bool {
        self.claim_wanted.swap(false, Ordering::SeqCst)
    }

    /// The loop's side: a claim that began at `at` came back short.
    pub fn claimed_all_at(&self, at: chrono::DateTime<chrono::Utc>) {
        self.claimed_all
            .store(at.timestamp_micros(), Ordering::SeqCst);
    }

    /// When the last claim that took everything began, if any did.
    pub fn claimed_all(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.claimed_all.load(Ordering::SeqCst) {
            0 => None,
            us => chrono::DateTime::from_timestamp_micros(us),
        }
    }

    /// The socket's side: a frame or pong arrived at `at`.
    pub fn heard(&self, at: chrono::DateTime<chrono::Utc>) {
        self.heard.store(at.timestamp_micros(), Ordering::Relaxed);
    }

    /// When the socket was last heard from, if since the last call.
    fn take_heard(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.heard.swap(0, Ordering::Relaxed) {
            0 => None,
            us => chrono::DateTime::from_timestamp_micros(us),
        }
    }

    /// The loop's side: it is (or stops being) caught up and waiting.
    pub fn set_caught_up(&self, v: bool) {
        self.caught_up.store(v, Ordering::SeqCst);
    }

    /// The loop's side: the next wake-up or handed row.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

#[derive(Default)]
pub struct Sessions {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_presence: HashMap<Uuid, SessionHandle>,
    /// The presences of each mesh with a socket here: a mesh event visits
    /// that mesh's sessions, not every socket on the node (a scan of all
    /// of them per hello made connecting quadratic in the node's size).
    by_mesh: HashMap<String, HashSet<Uuid>>,
    /// The local presences subscribed to each (mesh, stream), and the
    /// streams of each: a publish visits its subscribers, not the mesh.
    by_stream: HashMap<(String, String), HashSet<Uuid>>,
    streams_of: HashMap<Uuid, HashSet<String>>,
}

impl Table {
    fn drop_subscription(&mut self, mesh: &str, stream: &str, presence: Uuid) {
        let key = (mesh.to_string(), stream.to_string());
        if let Some(set) = self.by_stream.get_mut(&key) {
            set.remove(&presence);
            if set.is_empty() {
                self.by_stream.remove(&key);
            }
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a socket for a presence, returning the one it displaced
    /// (a replaced session on this same node).
    pub fn insert(&self, presence: Uuid, handle: SessionHandle) -> Option<SessionHandle> {
        let mut t = self.lock();
        t.by_mesh
            .entry(handle.mesh_id.clone())
            .or_default()
            .insert(presence);
        t.by_presence.insert(presence, handle)
    }

    /// Removes the entry only if it is still this socket's; `false` when
    /// it was not.
    pub fn remove(&self, presence: Uuid, conn_id: Uuid) -> bool {
        let mut t = self.lock();
        let Entry::Occupied(entry) = t.by_presence.entry(presence) else {
            return false;
        };
        if entry.get().conn_id != conn_id {
            return false;
        }
        let h = entry.remove();
        if let Some(set) = t.by_mesh.get_mut(&h.mesh_id) {
            set.remove(&presence);
            if set.is_empty() {
                t.by_mesh.remove(&h.mesh_id);
            }
        }
        // Its subscriptions stay in the store, for wherever it re-attaches.
        for stream in t.streams_of.remove(&presence).unwrap_or_default() {
            t.drop_subscription(&h.mesh_id, &stream, presence);
        }
        true
    }

    /// Queues `frame` to the socket of `presence`, waiting for room if its
    /// queue is full (a reply, not an advisory event); `false` when this
    /// node holds no socket of it.
    pub fn send_to(&self, presence: Uuid, frame: String) -> bool {
        let Some(tx) = self.lock().by_presence.get(&presence).map(|h| h.tx.clone()) else {
            return false;
        };
        if let Err(Outbound::Text(frame)) = tx.try_send(Outbound::Text(frame.into())) {
            tokio::spawn(async move {
                let _ = tx.send(Outbound::Text(frame)).await;
            });
        }
        true
    }

    /// Closes the socket of `presence` if it is `conn_id` (any if `None`).
    /// Closes the socket of `presence` if it is `conn_id` (any if `None`),
    /// writing `error` first when given.
    pub fn close(
        &self,
        presence: Uuid,
        conn_id: Option<Uuid>,
        code: u16,
        reason: &'static str,
        error: Option<String>,
    ) {
        let handle = {
            let t = self.lock();
            t.by_presence
                .get(&presence)
                .filter(|h| conn_id.is_none_or(|c| c == h.conn_id))
                .cloned()
        };
        if let Some(h) = handle {
            if let Some(e) = error {
                // Queued before the close frame the session loop will send.
                let _ = h.tx.try_send(Outbound::Text(e.into()));
            }
            h.closer.send_replace(Some((code, reason)));
        }
    }

    /// Acts on a signal from the bus (or from this node itself), through
    /// `Ctx::apply`.
    pub fn apply(&self, signal: super::signal::Signal) {
        use super::signal::Signal;
        match signal {
            Signal::Wake { p } => p.into_iter().for_each(|id| self.wake(id)),
            Signal::WakeMember { m } => {
                for (_, member) in m {
                    self.wake_member(&member);
                }
            }
            Signal::Close {
                p,
                c,
                code,
                reason,
                error,
            } => {
                let reason = close::reason(reason.as_deref(), code);
                self.close(p, Some(c), code, reason, error);
            }
            Signal::Event { mesh, skip, frame } => self.broadcast(&mesh, &skip, &frame.into()),
            // `Ctx::apply` acts on these itself (the scheduler's, the
            // ticker's, and stream publishes, which it counts).
            Signal::Stream { .. }
            | Signal::Due { .. }
            | Signal::Clock
            | Signal::Forward { .. }
            | Signal::Answer { .. } => {}
        }
    }

    /// Wakes the delivery loop of `presence` if this node holds it.
    pub fn wake(&self, presence: Uuid) {
        if let Some(h) = self.lock().by_presence.get(&presence) {
            h.mailbox.wake();
        }
    }

    /// Wakes every local session of a member (member-addressed messages).
    pub fn wake_member(&self, member_id: &str) {
        let t = self.lock();
        for h in t.by_presence.values().filter(|h| h.member_id == member_id) {
            h.mailbox.wake();
        }
    }

    /// Closes every local socket with `code`.
    pub fn close_every(&self, code: u16, reason: &'static str) {
        for h in self.lock().by_presence.values() {
            h.closer.send_replace(Some((code, reason)));
        }
    }

    /// The presences with a socket here.
    pub fn presences(&self) -> Vec<Uuid> {
        self.lock().by_presence.keys().copied().collect()
    }

    /// Closes every local socket whose presence is not in `keep`; returns
    /// how many.
    pub fn close_unless(&self, keep: &HashSet<Uuid>, code: u16, reason: &'static str) -> usize {
        let t = self.lock();
        let mut n = 0;
        for (_, h) in t.by_presence.iter().filter(|(p, _)| !keep.contains(p)) {
            h.closer.send_replace(Some((code, reason)));
            n += 1;
        }
        n
    }

    /// Each local session heard from since the last call, with when.
    pub fn take_activity(&self) -> Vec<(Uuid, chrono::DateTime<chrono::Utc>)> {
        self.lock()
            .by_presence
            .iter()
            .filter_map(|(p, h)| Some((*p, h.mailbox.take_heard()?)))
            .collect()
    }

    /// Wakes every local delivery loop (catch-up after a bus outage).
    pub fn wake_all(&self) {
        for h in self.lock().by_presence.values() {
            h.mailbox.wake();
        }
    }

    /// Queues `frame` to every local session of `mesh_id` but `skip`. A
    /// session whose queue is full misses it: system events are advisory,
    /// and `list_peers` has the truth.
    pub fn broadcast(&self, mesh_id: &str, skip: &Skip, frame: &Utf8Bytes) {
        let t = self.lock();
        let Some(presences) = t.by_mesh.get(mesh_id) else {
            return;
        };
        let heard = |(p, h): &(&Uuid, &SessionHandle)| match skip {
            Skip::Member(m) => h.member_id != *m,
            Skip::Presence(s) => *p != s,
            Skip::Nobody => true,
        };
        for (_, h) in presences
            .iter()
            .filter_map(|p| Some((p, t.by_presence.get(p)?)))
            .filter(heard)
        {
            let _ = h.tx.try_send(Outbound::Text(frame.clone()));
        }
    }

    /// Queues `frame` to the local sessions subscribed to `stream` of
    /// `mesh` but `skip`; returns how many. A full queue misses it (stream
    /// data is at most once).
    pub fn stream_write(&self, mesh: &str, stream: &str, skip: Uuid, frame: &Utf8Bytes) -> usize {
        let t = self.lock();
        let key = (mesh.to_string(), stream.to_string());
        let mut n = 0;
        for h in t
            .by_stream
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|p| **p != skip)
            .filter_map(|p| t.by_presence.get(p))
        {
            if h.tx.try_send(Outbound::Text(frame.clone())).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// A local session's subscription to `stream` (after the store has
    /// it): publishes from any node reach it here.
    pub fn subscribe(&self, presence: Uuid, stream: &str) {
        let mut t = self.lock();
        let Some(mesh) = t.by_presence.get(&presence).map(|h| h.mesh_id.clone()) else {
            return;
        };
        t.by_stream
            .entry((mesh, stream.to_string()))
            .or_default()
            .insert(presence);
        t.streams_of
            .entry(presence)
            .or_default()
            .insert(stream.to_string());
    }

    pub fn unsubscribe(&self, presence: Uuid, stream: &str) {
        let mut t = self.lock();
        if let Some(set) = t.streams_of.get_mut(&presence) {
            set.remove(stream);
        }
        let Some(mesh) = t.by_presence.get(&presence).map(|h| h.mesh_id.clone()) else {
            return;
        };
        t.drop_subscription(&mesh, stream, presence);
    }

    /// The mailboxes of these presences that take a handoff now.
    pub fn handoff_targets(
        &self,
        presences: impl Iterator<Item = Uuid>,
    ) -> HashMap<Uuid, Arc<Mailbox>> {
        let t = self.lock();
        presences
            .filter_map(|p| {
                let h = t.by_presence.get(&p)?;
                h.mailbox.takes_handoff().then(|| (p, h.mailbox.clone()))
            })
            .collect()
    }

    /// The mailbox of a local presence.
    pub fn mailbox(&self, presence: Uuid) -> Option<Arc<Mailbox>> {
        self.lock()
            .by_presence
            .get(&presence)
            .map(|h| h.mailbox.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().by_presence.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{Mailbox, Outbound, SessionHandle, Sessions, Skip};
    use crate::engine::outbound::{self, OutboundRx};
    use std::sync::Arc;
    use uuid::Uuid;

    fn handle(mesh: &str, member: &str) -> (SessionHandle, OutboundRx) {
        let (tx, rx) = outbound::channel(8);
        let h = SessionHandle {
            conn_id: Uuid::now_v7(),
            mesh_id: mesh.into(),
            member_id: member.into(),
            tx,
            mailbox: Arc::new(Mailbox::default()),
            closer: tokio::sync::watch::channel(None).0,
        };
        (h, rx)
    }

    async fn got_event(rx: &mut OutboundRx) -> bool {
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), rx.recv());
        matches!(next.await, Ok(Some(Outbound::Text(_))))
    }

    #[tokio::test]
    async fn broadcast_reaches_the_other_members_of_that_mesh_only() {
        let s = Sessions::default();
        let (a, mut a_rx) = handle("m1", "alice");
        let (b, mut b_rx) = handle("m1", "bob");
        let (c, mut c_rx) = handle("m2", "carol");
        let (pa, pb, pc) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        s.insert(pa, a);
        s.insert(pb, b.clone());
        s.insert(pc, c);
        s.broadcast("m1", &Skip::Member("alice".into()), &"event".into());
        assert!(got_event(&mut b_rx).await);
        assert!(
            !got_event(&mut a_rx).await,
            "the announcing member is skipped"
        );
        assert!(!got_event(&mut c_rx).await, "another mesh hears nothing");

        // A stale socket of a re-attached presence removes nothing.
        let (b2, mut b2_rx) = handle("m1", "bob");
        s.insert(pb, b2);
        s.remove(pb, b.conn_id);
        s.broadcast("m1", &Skip::Member("alice".into()), &"event".into());
        assert!(got_event(&mut b2_rx).await);

        s.remove(pa, Uuid::now_v7());
        assert_eq!(s.len(), 3, "another socket's id removes nothing");
        let c_conn = s.lock().by_presence[&pc].conn_id;
        s.remove(pc, c_conn);
        assert!(
            !s.lock().by_mesh.contains_key("m2"),
            "an empty mesh is dropped"
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn handoffs_only_while_caught_up_and_no_wake_is_pending() {
        let m = Mailbox::default();
        assert!(!m.takes_handoff(), "a new loop has not claimed yet");
        m.set_caught_up(true);
        assert!(m.takes_handoff());
        // A wake means older rows may wait: a new row must queue behind
        // them, so no handoff until the loop has claimed.
        m.wake();
        assert!(!m.takes_handoff());
        assert!(m.take_claim_wanted());
        assert!(!m.take_claim_wanted(), "taken once");
        assert!(m.takes_handoff());
        m.set_caught_up(false);
        assert!(!m.takes_handoff(), "claiming a backlog");
        assert_eq!(m.claimed_all(), None);
        let t = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        m.claimed_all_at(t);
        assert_eq!(m.claimed_all(), Some(t));
    }

    #[test]
    fn handed_rows_come_out_once_in_order() {
        use crate::store::{Claimed, StoredMessage};
        use std::sync::Arc;
        let msg = Arc::new(StoredMessage {
            id: uuid::Uuid::now_v7(),
            mesh_id: "m".into(),
            sender_member_id: "m".into(),
            sender_member_pubkey: "k".into(),
            sender_session_pubkey: None,
            priority: crate::protocol::target::Priority::Now,
            nonce: "n".into(),
            ciphertext: "c".into(),
            created_at: chrono::Utc::now(),
            echo: Default::default(),
        });
        let row = |id| Claimed {
            delivery_id: id,
            message: msg.clone(),
            redelivery: false,
        };
        let m = Mailbox::default();
        m.hand(vec![row(1), row(2)]);
        m.hand(vec![row(3)]);
        let ids: Vec<i64> = m.take_handed().iter().map(|c| c.delivery_id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(m.take_handed().is_empty());
    }
}
