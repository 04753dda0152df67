//! The protocol rules of PROTOCOL.md, written once over the Store and this
//! node's session table. Knows the `Store` trait, never SQL; knows session
//! handles, never raw sockets.

pub mod admin;
pub mod audit;
pub mod batcher;
pub mod claims;
pub mod completer;
pub mod delivery;
pub mod events;
pub mod handoff;
pub mod hello;
pub mod join;
pub mod messaging;
pub mod outbound;
pub mod peers;
pub mod sessions;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::cluster::bus::{Bus, Signal};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{Source, Status};
use crate::store::{PatchResult, PresencePatch, Store, StoreError, StoredMessage};
use sessions::Sessions;

/// One admitted socket, counted in `broker_connections` while it lives.
pub struct ConnSlot(Arc<Node>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

/// One broker node: its identity, its store and the sockets it holds.
pub struct Node {
    pub id: Uuid,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    pub metrics: Metrics,
    /// What invites name as `broker_url`.
    pub public_url: String,
    /// Set at SIGTERM: readiness answers 503 and new sockets are refused.
    pub draining: AtomicBool,
    /// Last known database health, kept by the heartbeat loop.
    pub db_up: AtomicBool,
    /// Cancelled when the drain period ends: every socket closes with 1001.
    pub close_sockets: CancellationToken,
    /// Session tasks, so shutdown can wait for them (axum does not).
    pub tracker: TaskTracker,
    /// The admin token in force (configured, or made up by `--dev`).
    pub admin_token: Option<String>,
    /// Wake-ups to other nodes; `None` in memory mode (one node).
    bus: Option<Bus>,
    /// Claims on their way to the claim hub.
    claim_queue: tokio::sync::mpsc::Sender<claims::ClaimJob>,
    /// The hub's end, taken once by the app when it starts the task.
    pub claim_rx: std::sync::Mutex<Option<claims::ClaimQueue>>,
    /// Written rows on their way to the completer.
    complete_queue: tokio::sync::mpsc::Sender<completer::Job>,
    /// The completer's end, taken once by the app when it starts the task.
    pub complete_rx: std::sync::Mutex<Option<completer::CompleteQueue>>,
    /// Sends on their way to the batcher.
    send_queue: tokio::sync::mpsc::Sender<batcher::SendJob>,
    /// The batcher's end, taken once by the app when it starts the task.
    pub send_rx: std::sync::Mutex<Option<batcher::SendQueue>>,
    /// Audit entries on their way to the appender task.
    audit_tx: tokio::sync::mpsc::Sender<crate::store::NewAuditEntry>,
    /// The appender's end, taken once by the app when it starts the task.
    pub audit_rx: std::sync::Mutex<Option<audit::AuditRx>>,
    /// New-connection token bucket: (tokens, last refill).
    conn_rate: std::sync::Mutex<(f64, std::time::Instant)>,
    /// Serialised `push` frames by message id, so every local recipient of
    /// a multicast shares one allocation.
    push_cache: moka::sync::Cache<Uuid, Utf8Bytes>,
}

/// Longest wait for one database operation on a client's behalf. A
/// stalled link (blackholed, not refused) would otherwise hold the client
/// forever; past this it gets `unavailable` and may retry.
pub const DB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `fut` under [`DB_TIMEOUT`]. A timed-out write may still commit
/// once the link recovers: the outcome is unknown, which `unavailable`
/// honestly reports as "retry". Not an `async fn`: that would hold `fut`
/// twice (argument and timer), doubling the state of every caller.
pub fn bounded<T>(
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> impl std::future::Future<Output = Result<T, StoreError>> {
    use futures_util::FutureExt;
    tokio::time::timeout(DB_TIMEOUT, fut).map(|r| match r {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(
            "the database did not answer in time".into(),
        )),
    })
}

/// Bytes of push frames kept for sharing between recipients. A multicast
/// is claimed by all its local recipients within moments, so a small,
/// short-lived cache catches nearly every repeat.
const PUSH_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Idle time after which a cached push frame is dropped: local recipients
/// claim within milliseconds, so seconds are plenty.
const PUSH_CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

impl Node {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        public_url: String,
        admin_token: Option<String>,
        bus: Option<Bus>,
    ) -> Node {
        let id = Uuid::now_v7();
        let metrics = Metrics::new(&id.to_string(), store.backend());
        let (audit_tx, audit_rx) = audit::channel();
        let conn_burst = f64::from(config.settings.max_new_connections_per_second);
        let (send_queue, send_rx) = batcher::channel();
        let (claim_queue, claim_rx) = claims::channel();
        let (complete_queue, complete_rx) = completer::channel();
        Node {
            id,
            config,
            store,
            sessions: Sessions::default(),
            metrics,
            public_url,
            draining: AtomicBool::new(false),
            db_up: AtomicBool::new(true),
            close_sockets: CancellationToken::new(),
            tracker: TaskTracker::new(),
            admin_token,
            bus,
            audit_tx,
            audit_rx: std::sync::Mutex::new(Some(audit_rx)),
            send_queue,
            send_rx: std::sync::Mutex::new(Some(send_rx)),
            claim_queue,
            claim_rx: std::sync::Mutex::new(Some(claim_rx)),
            complete_queue,
            complete_rx: std::sync::Mutex::new(Some(complete_rx)),
            conn_rate: std::sync::Mutex::new((conn_burst, std::time::Instant::now())),
            push_cache: moka::sync::Cache::builder()
                .max_capacity(PUSH_CACHE_BYTES)
                .weigher(|_, v: &Utf8Bytes| v.len().try_into().unwrap_or(u32::MAX))
                .time_to_idle(PUSH_CACHE_IDLE)
                .build(),
        }
    }

    /// Acts on a signal from the bus (or from this node itself).
    pub fn apply_signal(&self, signal: Signal) {
        match signal {
            Signal::Wake { p } => p.into_iter().for_each(|id| self.sessions.wake(id)),
            Signal::WakeMember { m } => {
                for (_, member) in m {
                    self.sessions.wake_member(&member);
                }
            }
            Signal::Close { p, c, code } => {
                let reason = match code {
                    sessions::close::REPLACED => "replaced",
                    sessions::close::REVOKED => "revoked",
                    _ => "closed",
                };
                self.sessions.close(p, Some(c), code, reason);
            }
            Signal::Event { mesh, skip, frame } => {
                self.sessions.broadcast(&mesh, &skip, &frame.into())
            }
        }
    }

    /// Delivers `signal` to `node`: directly when it is this one.
    pub fn signal(&self, node: Uuid, signal: Signal) {
        if node == self.id {
            self.apply_signal(signal);
        } else if let Some(bus) = &self.bus {
            bus.to_node(node, signal);
        }
    }

    /// Applies `signal` here and sends it to every other node.
    pub fn signal_cluster(&self, signal: Signal) {
        if let Some(bus) = &self.bus {
            bus.to_cluster(signal.clone());
        }
        self.apply_signal(signal);
    }

    /// The serialised push of `m`, shared across recipients.
    pub fn push_bytes(&self, m: &StoredMessage) -> Utf8Bytes {
        self.push_cache.get_with(m.id, || delivery::push_frame(m))
    }

    /// Admits a new socket under the node's caps (concurrent sockets and
    /// new sockets per second). The slot is counted from admission, not
    /// from when the session starts, so concurrent upgrades cannot slip
    /// past the cap; dropping it (socket closed, or upgrade never
    /// completed) frees it. `None` means answer 503.
    pub fn admit_connection(self: &Arc<Self>) -> Option<ConnSlot> {
        let s = &self.config.settings;
        let rate = f64::from(s.max_new_connections_per_second);
        // The bucket's lock also serialises the count check and increment.
        let mut b = self.conn_rate.lock().unwrap_or_else(|e| e.into_inner());
        if self.metrics.connections.get() >= i64::from(s.max_connections_per_node) {
            return None;
        }
        let now = std::time::Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
        b.1 = now;
        if b.0 < 1.0 {
            return None;
        }
        b.0 -= 1.0;
        self.metrics.connections.inc();
        Some(ConnSlot(self.clone()))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// A manual `set_status` from the session itself.
    pub async fn set_status(&self, presence: Uuid, status: Status) -> Result<(), StoreError> {
        bounded(self.write_status(presence, status, Source::Manual)).await
    }

    pub async fn patch(
        &self,
        presence: Uuid,
        patch: PresencePatch,
    ) -> Result<PatchResult, StoreError> {
        bounded(self.store.update_presence(presence, &patch)).await
    }

    /// `client_ack` from the session holding `presence`.
    pub async fn ack(&self, presence: Uuid, message_id: Uuid) -> Result<bool, StoreError> {
        bounded(self.store.ack_delivery(presence, message_id)).await
    }

    /// The socket of `presence` closed: keep it in grace for re-attach.
    pub async fn release(&self, presence: Uuid, conn_id: Uuid) {
        self.sessions.remove(presence, conn_id);
        let now = self.now();
        let grace = chrono::Duration::seconds(self.config.settings.presence_grace_seconds as i64);
        if let Err(e) = bounded(
            self.store
                .release_presence(presence, conn_id, now + grace, now),
        )
        .await
        {
            tracing::warn!(presence_id = %presence, error = %e, "could not move presence to grace");
        }
    }
}
