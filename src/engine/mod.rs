//! The protocol rules of PROTOCOL.md, written once over the store traits
//! and this node's session table. Knows the store traits, never SQL; knows
//! session handles, never raw sockets; knows the [`Bus`](signal::Bus) it is
//! given, never Postgres.
//!
//! Two kinds of parts:
//! - **families** (`hello`, `presence`, `messaging`, …): the handlers of
//!   one group of frames, registered in `dispatch`, plus the HTTP-facing
//!   actions (`status` for hooks, `join`, `admin`);
//! - **components** (`batcher`, `claims`, `completer`, `audit`, `sweeper`,
//!   `heartbeat`): each owns its queue and its loop, is started by
//!   [`start`] and reached through the handle it returns.
//!
//! [`Ctx`] is what every part shares; [`Engine`] adds the component
//! handles the socket-facing families need.

pub mod admin;
pub mod audit;
pub mod batcher;
pub mod claims;
pub mod clock;
pub mod clocks;
pub mod completer;
pub mod contexts;
pub mod delivery;
pub mod dispatch;
pub mod events;
pub mod files;
pub mod handoff;
pub mod heartbeat;
pub mod hello;
pub mod join;
pub mod memory;
pub mod mesh;
pub mod message_status;
pub mod messaging;
pub mod moderation;
pub mod node;
pub mod outbound;
pub mod presence;
pub mod relay;
pub mod relays;
pub mod routing;
pub mod scheduler;
pub mod schedules;
pub mod session_hello;
pub mod sessions;
pub mod signal;
pub mod skills;
pub mod state;
pub mod status;
pub mod streams;
pub mod sweeper;
pub mod tasks;
pub mod ticker;
pub mod transfers;
pub mod vault;
pub mod vectors;
pub mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{NodeRow, Store, StoreError};
use clock::Clock;
use node::NodeState;
use sessions::Sessions;
use signal::Bus;

/// What every family and component of one node shares.
pub struct Ctx {
    /// This node's id: its row in the registry, its bus channel.
    pub node_id: Uuid,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub store: Arc<dyn Store>,
    /// The sockets this node holds.
    pub sessions: Sessions,
    /// The audit appender's queue.
    pub audit: audit::AuditLog,
    pub node: NodeState,
    /// Wakes the scheduler when an entry is created or cancelled.
    pub schedules: scheduler::Wakeup,
    /// Wakes the ticker when a mesh clock changes.
    pub clocks: tokio::sync::Notify,
    /// Stream publish budgets and publisher names of this node.
    pub publishing: streams::Publishing,
    /// Relays between peers that this node's sockets are part of.
    pub relays: relays::Relays,
    /// Where shared files' bytes are.
    pub blobs: Arc<dyn crate::blobs::BlobStore>,
    /// The HMAC key of download links, the same on every node.
    pub download_key: Vec<u8>,
    /// Wake-ups to other nodes; `None` in memory mode (one node).
    bus: Option<Arc<dyn Bus>>,
}

impl Ctx {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// What is remembered of sends, as of now.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention::new(self.now(), self.config.settings.delivered_retention_seconds)
    }
}

/// The context plus the handles of the components sessions use.
pub struct Engine {
    pub ctx: Arc<Ctx>,
    pub sends: batcher::Sends,
    pub claims: claims::Claims,
    pub completions: completer::Completions,
    pub pushes: delivery::Pushes,
}

impl std::ops::Deref for Engine {
    type Target = Ctx;
    fn deref(&self) -> &Ctx {
        &self.ctx
    }
}

/// What a node is made of before it starts.
pub struct Parts {
    /// Chosen by the caller, so a bus can be built for it first.
    pub node_id: Uuid,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Where the node listens, as its registry row records it.
    pub listen_addr: String,
    pub public_url: String,
    pub admin_token: Option<String>,
    pub bus: Option<Arc<dyn Bus>>,
    pub blobs: Arc<dyn crate::blobs::BlobStore>,
}

/// Registers the node and starts every component. The returned
/// [`Running`] stops them in order.
pub async fn start(parts: Parts) -> Result<(Arc<Engine>, Running), StoreError> {
    let node_id = parts.node_id;
    set_db_timeout(std::time::Duration::from_secs(
        parts.config.settings.db_timeout_seconds,
    ));
    let metrics = Metrics::new(&node_id.to_string(), parts.store.backend());
    for (family, ty) in dispatch::frame_families() {
        let _ = metrics.frames.get_or_create(&crate::metrics::FrameLabels {
            family,
            r#type: ty,
            result: "ok",
        });
    }
    let (audit, audit_rx) = audit::channel(parts.clock.clone(), metrics.audit_dropped.clone());
    let conn_burst = f64::from(parts.config.settings.max_new_connections_per_second);
    // As many hellos at once as the pool has connections: more would only
    // queue on the pool, inside the database deadline.
    let hello_slots = parts.config.settings.db_pool_size;
    let download_key = match &parts.config.settings.download_url_key {
        Some(k) => k.as_bytes().to_vec(),
        None => {
            let candidate: [u8; 32] = rand::random();
            parts.store.download_key(&candidate).await?
        }
    };
    let ctx = Arc::new(Ctx {
        node_id,
        config: parts.config,
        clock: parts.clock,
        metrics,
        store: parts.store,
        sessions: Sessions::default(),
        audit,
        node: NodeState::new(
            parts.listen_addr,
            parts.public_url,
            parts.admin_token,
            conn_burst,
            hello_slots,
        ),
        schedules: scheduler::Wakeup::default(),
        clocks: tokio::sync::Notify::new(),
        publishing: streams::Publishing::default(),
        relays: relays::Relays::default(),
        blobs: parts.blobs,
        download_key,
        bus: parts.bus,
    });
    ctx.store
        .register_node(&NodeRow {
            id: node_id,
            addr: ctx.node.listen_addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: ctx.now(),
        })
        .await?;

    let mut running = Running::default();
    let (sends, batcher) = batcher::Batcher::new(ctx.clone());
    let (claims, hub) = claims::ClaimHub::new(ctx.clone());
    let (completions, completer) = completer::Completer::new(ctx.clone());
    let stop = running.sends_stop.clone();
    running.sends.push(tokio::spawn(batcher.run(stop.clone())));
    running.sends.push(tokio::spawn(hub.run(stop.clone())));
    running.sends.push(tokio::spawn(completer.run(stop)));
    let stop = running.loops_stop.clone();
    let loops = [
        tokio::spawn(audit::run_appender(ctx.clone(), audit_rx, stop.clone())),
        tokio::spawn(sweeper::run(ctx.clone(), stop.clone())),
        tokio::spawn(scheduler::run(ctx.clone(), stop.clone())),
        tokio::spawn(ticker::run(ctx.clone(), stop.clone())),
        tokio::spawn(relays::run(ctx.clone(), stop.clone())),
        tokio::spawn(heartbeat::run(ctx.clone(), stop)),
    ];
    running.loops.extend(loops);
    let engine = Arc::new(Engine {
        ctx,
        sends,
        claims,
        completions,
        pushes: delivery::Pushes::new(),
    });
    Ok((engine, running))
}

/// The tasks of a started node, in two groups: the send side (batcher,
/// claim hub, completer), stopped once sessions have ended so what they
/// still queue is answered; then the loops (appender, sweeper, heartbeat,
/// and whatever was [`adopt`](Running::adopt)ed, such as the bus).
#[derive(Default)]
pub struct Running {
    sends_stop: CancellationToken,
    sends: Vec<JoinHandle<()>>,
    loops_stop: CancellationToken,
    loops: Vec<JoinHandle<()>>,
}

impl Running {
    /// Cancelled when the loops are stopped: for tasks started elsewhere.
    pub fn loops_token(&self) -> CancellationToken {
        self.loops_stop.clone()
    }

    /// Stops `tasks` with the loops.
    pub fn adopt(&mut self, tasks: impl IntoIterator<Item = JoinHandle<()>>) {
        self.loops.extend(tasks);
    }

    pub async fn stop(self) {
        self.sends_stop.cancel();
        for t in self.sends {
            let _ = t.await;
        }
        self.loops_stop.cancel();
        for t in self.loops {
            let _ = t.await;
        }
    }
}

/// Longest wait for the database on a client's behalf, whole request
/// (`db_timeout_seconds`). A stalled link (blackholed, not refused) would
/// otherwise hold the client forever; past this it gets `unavailable` and
/// may retry. Process-wide: it bounds every database step, and steps run
/// where no settings are at hand; nodes sharing a process (tests) share it.
static DB_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(5_000);

pub fn db_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(DB_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed))
}

fn set_db_timeout(d: std::time::Duration) {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    DB_TIMEOUT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `fut` under [`db_timeout`]. A timed-out write may still commit
/// once the link recovers: the outcome is unknown, which `unavailable`
/// honestly reports as "retry". Not an `async fn`: that would hold `fut`
/// twice (argument and timer), doubling the state of every caller.
pub fn bounded<T>(
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> impl std::future::Future<Output = Result<T, StoreError>> {
    use futures_util::FutureExt;
    tokio::time::timeout(db_timeout(), fut).map(|r| match r {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(
            "the database did not answer in time".into(),
        )),
    })
}
