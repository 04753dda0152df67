//! Prometheus metrics of one node. A registry per node (no global
//! recorder) so several nodes can run in one test process. Labels never
//! carry pubkeys or mesh ids: cardinality stays fixed.

pub mod fanout;
pub mod relay;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// A registered frame type: a fixed set.
    pub r#type: &'static str,
    pub code: &'static str,
}

/// A handled frame: its family, its type and its result (`ok` or the
/// refusal's code). All three are fixed sets.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameLabels {
    pub family: &'static str,
    pub r#type: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections on this node (helloed or not).
    pub connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub hellos: Family<ResultLabel, Counter<u64, AtomicU64>>,
    pub http_requests: Family<HttpLabels, Counter<u64, AtomicU64>>,
    /// Fire-and-forget frames refused without an answer (no `_reqId`).
    pub ws_refused: Family<RefusedLabels, Counter<u64, AtomicU64>>,
    /// Every handled frame after the handshake, by family, type, result.
    pub frames: Family<FrameLabels, Counter<u64, AtomicU64>>,
    /// Frames answered with `bad_request`.
    pub bad_frames: Counter<u64, AtomicU64>,
    /// Sockets closed for missing pongs.
    pub pong_timeouts: Counter<u64, AtomicU64>,
    /// Frames over the size limit (socket closed 1009).
    pub oversized_frames: Counter<u64, AtomicU64>,
    /// `send`s by result (`queued` or the refusal code).
    pub messages: Family<ResultLabel, Counter<u64, AtomicU64>>,
    /// Pushes written to sockets (redeliveries included).
    pub deliveries: Counter<u64, AtomicU64>,
    /// Send commit → push written, seconds.
    pub delivery_latency: Histogram,
    /// NOTIFYs this node sent (after coalescing).
    pub notify_sent: Counter<u64, AtomicU64>,
    /// Notifications this node received.
    pub notify_received: Counter<u64, AtomicU64>,
    /// Times the LISTEN connection was re-established.
    pub listen_reconnects: Counter<u64, AtomicU64>,
    /// Audit entries dropped (queue full during a long outage).
    pub audit_dropped: Counter<u64, AtomicU64>,
    /// Audit append transaction time, seconds.
    pub audit_append: Histogram,
    /// Sockets dropped because the client stopped reading.
    pub slow_consumers: Counter<u64, AtomicU64>,
    /// WebSocket upgrades refused (node at its socket cap or rate).
    pub refused_upgrades: Counter<u64, AtomicU64>,
    /// Frames refused over a socket's `max_frames_per_second`.
    pub throttled_frames: Counter<u64, AtomicU64>,
    /// Pushes of rows claimed before (lapsed lease, re-attach, dead node).
    pub redeliveries: Counter<u64, AtomicU64>,
    /// Claim statements run (each may also complete written rows).
    pub claims: Counter<u64, AtomicU64>,
    /// Rows stored pre-claimed and pushed without a claim.
    pub handoffs: Counter<u64, AtomicU64>,
    /// Sends stored per group-commit transaction.
    pub send_batch: Histogram,
    /// One group commit (presence read + store transaction), seconds.
    pub send_commit: Histogram,
    /// One claim statement (claim hub round trip), seconds.
    pub claim_duration: Histogram,
    /// Sweeper passes and their duration, seconds.
    pub sweeps: Counter<u64, AtomicU64>,
    pub sweep_duration: Histogram,
    /// Database pool connections by state (`in_use`, `idle`, `waiting`
    /// for callers queued on the pool), sampled at scrape time.
    pub db_pool: Family<StateLabel, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// `/hook/set-status` requests by result.
    pub hook_requests: Family<ResultLabel, Counter<u64, AtomicU64>>,
    /// Undelivered rows cluster-wide, sampled by the sweeper.
    pub queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Open TCP connections of the HTTP listener (WebSockets included).
    pub http_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// TCP connections closed at accept: the node at its connection cap.
    pub http_refused: Counter<u64, AtomicU64>,
    /// Schedules, clock and streams.
    pub fanout: fanout::FanoutMetrics,
    /// Relays between peers.
    pub relay: relay::RelayMetrics,
}

impl Metrics {
    pub fn new(node_id: &str, backend: &'static str) -> Metrics {
        let mut registry = Registry::with_prefix("broker");
        let connections = Gauge::default();
        let hellos = Family::default();
        let http_requests = Family::default();
        let bad_frames = Counter::default();
        let ws_refused = Family::default();
        let frames = Family::default();
        let pong_timeouts = Counter::default();
        let oversized_frames = Counter::default();
        let messages = Family::default();
        let deliveries = Counter::default();
        // 0.5 ms … ~16 s: local pushes take well under a millisecond,
        // held messages (busy recipient) take minutes and land in +Inf.
        let delivery_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16),
        );
        let queue_depth = Gauge::default();
        let hook_requests = Family::default();
        let slow_consumers = Counter::default();
        let refused_upgrades = Counter::default();
        let throttled_frames = Counter::default();
        registry.register(
            "slow_consumer_disconnects",
            "Sockets dropped because the client stopped reading",
            slow_consumers.clone(),
        );
        registry.register(
            "refused_upgrades",
            "WebSocket upgrades refused at the node's caps",
            refused_upgrades.clone(),
        );
        registry.register(
            "throttled_frames",
            "Frames refused over the per-socket rate",
            throttled_frames.clone(),
        );
        let claims = Counter::default();
        let redeliveries = Counter::default();
        registry.register(
            "redeliveries",
            "Pushes of previously claimed rows",
            redeliveries.clone(),
        );
        let send_batch = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10),
        );
        // 0.1 ms … ~0.8 s: a commit is a few round trips and one WAL flush.
        let send_commit = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 14),
        );
        let claim_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 14),
        );
        registry.register_with_unit(
            "send_commit",
            "Group commit of sends (presence read and store transaction)",
            prometheus_client::registry::Unit::Seconds,
            send_commit.clone(),
        );
        registry.register_with_unit(
            "claim",
            "Claim statement time",
            prometheus_client::registry::Unit::Seconds,
            claim_duration.clone(),
        );
        let sweeps = Counter::default();
        let sweep_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14),
        );
        let db_pool = Family::default();
        registry.register("claims", "Claim statements run", claims.clone());
        let handoffs = Counter::default();
        registry.register(
            "handoffs",
            "Rows stored pre-claimed and pushed without a claim",
            handoffs.clone(),
        );
        registry.register(
            "send_batch_size",
            "Sends per group commit",
            send_batch.clone(),
        );
        registry.register("sweeps", "Sweeper passes", sweeps.clone());
        registry.register_with_unit(
            "sweep_duration",
            "Sweeper pass duration",
            prometheus_client::registry::Unit::Seconds,
            sweep_duration.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            db_pool.clone(),
        );
        let audit_dropped = Counter::default();
        let audit_append = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
        );
        registry.register(
            "audit_dropped",
            "Audit entries dropped",
            audit_dropped.clone(),
        );
        registry.register_with_unit(
            "audit_append",
            "Audit append transaction time",
            prometheus_client::registry::Unit::Seconds,
            audit_append.clone(),
        );
        let notify_sent = Counter::default();
        let notify_received = Counter::default();
        let listen_reconnects = Counter::default();
        registry.register("notify_sent", "NOTIFYs sent", notify_sent.clone());
        registry.register(
            "notify_received",
            "Notifications received",
            notify_received.clone(),
        );
        registry.register(
            "listen_reconnects",
            "LISTEN connection re-establishments",
            listen_reconnects.clone(),
        );
        registry.register(
            "hook_requests",
            "Hook posts by result",
            hook_requests.clone(),
        );
        registry.register("messages", "Sends by result", messages.clone());
        registry.register(
            "deliveries",
            "Pushes written to sockets",
            deliveries.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "Send commit to push written",
            prometheus_client::registry::Unit::Seconds,
            delivery_latency.clone(),
        );
        registry.register(
            "queue_depth",
            "Undelivered delivery rows",
            queue_depth.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("store", backend.to_string()),
                ("node_id", node_id.to_string()),
            ]),
        );
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register("hellos", "Hello handshakes by result", hellos.clone());
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        registry.register(
            "bad_frames",
            "Client frames refused as bad_request",
            bad_frames.clone(),
        );
        registry.register(
            "ws_refused",
            "Fire-and-forget frames refused without an answer, by type and code",
            ws_refused.clone(),
        );
        registry.register(
            "frames",
            "Frames handled after the handshake, by family, type and result (ok or the error code)",
            frames.clone(),
        );
        registry.register(
            "pong_timeouts",
            "Sockets closed because pongs stopped",
            pong_timeouts.clone(),
        );
        registry.register(
            "oversized_frames",
            "Frames refused for size (close 1009)",
            oversized_frames.clone(),
        );
        let http_connections = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let http_refused = Counter::<u64, AtomicU64>::default();
        registry.register(
            "http_connections",
            "Open TCP connections (WebSockets included)",
            http_connections.clone(),
        );
        registry.register(
            "http_refused_connections",
            "TCP connections closed at accept (connection cap)",
            http_refused.clone(),
        );
        // Every family shows from the first scrape: a dashboard's rate()
        // over a series that appears only at its first event misses it.
        let _ = hook_requests.get_or_create(&ResultLabel { result: "ok" });
        let _ = hellos.get_or_create(&ResultLabel { result: "ok" });
        let _ = messages.get_or_create(&ResultLabel { result: "queued" });
        for state in ["in_use", "idle", "waiting"] {
            let _ = db_pool.get_or_create(&StateLabel { state });
        }
        let fanout = fanout::FanoutMetrics::register(&mut registry);
        let relay = relay::RelayMetrics::register(&mut registry);
        Metrics {
            fanout,
            relay,
            http_connections,
            http_refused,
            registry,
            connections,
            hellos,
            http_requests,
            bad_frames,
            ws_refused,
            frames,
            pong_timeouts,
            oversized_frames,
            messages,
            deliveries,
            delivery_latency,
            queue_depth,
            hook_requests,
            slow_consumers,
            refused_upgrades,
            throttled_frames,
            redeliveries,
            claims,
            send_batch,
            send_commit,
            claim_duration,
            handoffs,
            sweeps,
            sweep_duration,
            db_pool,
            audit_dropped,
            audit_append,
            notify_sent,
            notify_received,
            listen_reconnects,
        }
    }

    pub fn hook(&self, result: &'static str) {
        self.hook_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn message(&self, result: &'static str) {
        self.messages.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn delivered(&self, latency_seconds: f64) {
        self.deliveries.inc();
        self.delivery_latency.observe(latency_seconds.max(0.0));
    }

    pub fn hello(&self, result: &'static str) {
        self.hellos.get_or_create(&ResultLabel { result }).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
