//! This node's life: what it tells the world (its URL, its admin token),
//! its health as the heartbeat last saw it, draining, the admission of new
//! sockets, and the tasks that must end before it stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Ctx;
use crate::store::StoreResult;

pub struct NodeState {
    /// Where this node listens, as its registry row says.
    pub listen_addr: String,
    /// What invites name as `broker_url`.
    pub public_url: String,
    /// The admin token in force (configured, or made up by `--dev`).
    pub admin_token: Option<String>,
    /// Set at SIGTERM: readiness answers 503 and new sockets are refused.
    draining: AtomicBool,
    /// Last known database health, kept by the heartbeat and probes.
    db_up: AtomicBool,
    /// What readiness reports: `db_up` once it has held for
    /// [`READY_HOLD`], so a squeezed pool's odd timeout does not flap it.
    ready: Mutex<Settled>,
    /// Cancelled when the drain period ends: every socket closes with 1001.
    pub close_sockets: CancellationToken,
    /// Session tasks, so shutdown can wait for them (axum does not).
    pub tracker: TaskTracker,
    /// New-connection token bucket: (tokens, last refill).
    conn_rate: Mutex<(f64, Instant)>,
    /// Hellos worked on at once; the rest queue here, not on the pool, so
    /// a burst (every client of a restarted node) is answered in turn
    /// instead of timing out on the database deadline.
    pub hello_slots: tokio::sync::Semaphore,
    /// Since when every heartbeat has succeeded (`None` after a failure):
    /// only a node that has been beating for a whole lease may judge
    /// others, so after an outage every node beats before anyone is reaped.
    steady_since: Mutex<Option<Instant>>,
}

impl NodeState {
    pub fn new(
        listen_addr: String,
        public_url: String,
        admin_token: Option<String>,
        conn_burst: f64,
        hello_slots: usize,
    ) -> NodeState {
        NodeState {
            listen_addr,
            public_url,
            admin_token,
            draining: AtomicBool::new(false),
            db_up: AtomicBool::new(true),
            close_sockets: CancellationToken::new(),
            tracker: TaskTracker::new(),
            conn_rate: Mutex::new((conn_burst, Instant::now())),
            hello_slots: tokio::sync::Semaphore::new(hello_slots.max(1)),
            steady_since: Mutex::new(None),
            ready: Mutex::new(Settled {
                value: true,
                pending: None,
            }),
        }
    }

    /// The database health readiness reports (see `ready`).
    pub fn db_settled(&self) -> bool {
        let mut r = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        r.settle(Instant::now())
    }

    /// Records a heartbeat's outcome (see `steady_since`).
    pub fn beat(&self, ok: bool) {
        let mut s = self.steady_since.lock().unwrap_or_else(|e| e.into_inner());
        match (ok, *s) {
            (true, None) => *s = Some(Instant::now()),
            (false, _) => *s = None,
            (true, Some(_)) => {}
        }
    }

    /// How long heartbeats have succeeded without a failure.
    pub fn steady_for(&self) -> Duration {
        let s = self.steady_since.lock().unwrap_or_else(|e| e.into_inner());
        s.map_or(Duration::ZERO, |at| at.elapsed())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn db_up(&self) -> bool {
        self.db_up.load(Ordering::Relaxed)
    }

    /// Records database health; returns what it was before.
    pub fn set_db_up(&self, up: bool) -> bool {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(up, Instant::now());
        self.db_up.swap(up, Ordering::Relaxed)
    }
}

/// Readiness changes only after the database's new state has held this
/// long (every observation in between agreeing).
pub const READY_HOLD: Duration = Duration::from_secs(3);

/// A boolean that changes only after its new value has held for
/// [`READY_HOLD`].
struct Settled {
    value: bool,
    /// A differing value seen, and since when it has been seen.
    pending: Option<(bool, Instant)>,
}

impl Settled {
    fn observe(&mut self, v: bool, now: Instant) {
        match self.pending {
            _ if v == self.value => self.pending = None,
            Some((p, _)) if p == v => {}
            _ => self.pending = Some((v, now)),
        }
        self.settle(now);
    }

    fn settle(&mut self, now: Instant) -> bool {
        if let Some((v, since)) = self.pending {
            if now.duration_since(since) >= READY_HOLD {
                self.value = v;
                self.pending = None;
            }
        }
        self.value
    }
}

/// A readiness probe must answer well inside Kubernetes' 1 s default
/// timeout even when the database hangs.
const DB_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Asks the database for a round trip (bounded), and records the answer.
pub async fn probe_db(ctx: &Ctx) -> bool {
    let up = matches!(
        tokio::time::timeout(DB_PROBE_TIMEOUT, ctx.store.ping()).await,
        Ok(Ok(()))
    );
    ctx.node.set_db_up(up);
    up
}

/// `memory` or `postgres`.
pub fn store_backend(ctx: &Ctx) -> &'static str {
    ctx.store.backend()
}

/// Samples the database pools into the `db_pool` gauge (scrape time).
pub fn sample_pools(ctx: &Ctx) {
    if let Some((in_use, idle, waiting)) = ctx.store.pool_status() {
        use crate::metrics::StateLabel;
        let pool = &ctx.metrics.db_pool;
        pool.get_or_create(&StateLabel { state: "in_use" })
            .set(in_use);
        pool.get_or_create(&StateLabel { state: "idle" }).set(idle);
        pool.get_or_create(&StateLabel { state: "waiting" })
            .set(waiting);
    }
}

/// Starts draining: readiness turns 503, new sockets are refused, and the
/// registry shows it (so operators and the load balancer see why).
pub async fn begin_drain(ctx: &Ctx) -> StoreResult<bool> {
    ctx.node.draining.store(true, Ordering::Relaxed);
    tracing::info!(node_id = %ctx.node_id, "draining");
    ctx.store.heartbeat_node(ctx.node_id, true).await
}

/// Removes this node's registry row at the end of a clean shutdown.
pub async fn deregister(ctx: &Ctx) {
    if let Err(e) = ctx.store.remove_node(ctx.node_id).await {
        tracing::warn!(node_id = %ctx.node_id, error = %e, "could not remove node row");
    }
}

/// One admitted socket, counted in `broker_connections` while it lives.
pub struct ConnSlot(Arc<Ctx>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

/// Admits a new socket under the node's caps (concurrent sockets and new
/// sockets per second). The slot is counted from admission, not from when
/// the session starts, so concurrent upgrades cannot slip past the cap;
/// dropping it (socket closed, or upgrade never completed) frees it.
/// `None` means answer 503.
pub fn admit(ctx: &Arc<Ctx>) -> Option<ConnSlot> {
    let s = &ctx.config.settings;
    let rate = f64::from(s.max_new_connections_per_second);
    // The bucket's lock also serialises the count check and increment.
    let mut b = ctx.node.conn_rate.lock().unwrap_or_else(|e| e.into_inner());
    if ctx.metrics.connections.get() >= i64::from(s.max_connections_per_node) {
        return None;
    }
    let now = Instant::now();
    b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
    b.1 = now;
    if b.0 < 1.0 {
        return None;
    }
    b.0 -= 1.0;
    ctx.metrics.connections.inc();
    Some(ConnSlot(ctx.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_changes_only_after_the_new_state_held() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let mut s = Settled {
            value: true,
            pending: None,
        };
        s.observe(false, at(0));
        assert!(s.settle(at(2_900)), "not yet");
        s.observe(true, at(1_000));
        s.observe(false, at(1_500));
        assert!(s.settle(at(4_000)), "a flap restarts the wait");
        assert!(!s.settle(at(4_500)), "held 3 s since 1.5 s");
        s.observe(true, at(5_000));
        assert!(!s.settle(at(7_900)));
        assert!(s.settle(at(8_000)));
    }
}
