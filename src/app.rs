//! Wires one node together: store, listener, router, background loops and
//! the shutdown sequence. The only place that knows every layer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Node;
use crate::store::memory::MemoryStore;
use crate::store::postgres::PgStore;
use crate::store::{NodeRow, Store};

/// How long shutdown waits for session tasks after closing their sockets.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(3);

pub struct Application {
    node: Arc<Node>,
    listener: TcpListener,
    port: u16,
    stop: CancellationToken,
    /// Database URL and the bus's outgoing queue (cluster mode only).
    bus: Option<(String, BusReceiver)>,
}

type BusReceiver = tokio::sync::mpsc::UnboundedReceiver<(String, crate::cluster::bus::Signal)>;

/// Opens the configured store, migrating Postgres first.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.settings.database_url {
        Some(url) => {
            let applied = PgStore::migrate(url).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
            Ok(Arc::new(PgStore::connect(
                url,
                config.settings.db_pool_size,
            )?))
        }
        None => {
            tracing::info!(
                "no database_url configured: memory mode, single node, nothing persists"
            );
            Ok(Arc::new(MemoryStore::new()))
        }
    }
}

impl Application {
    /// Binds the listener and registers the node. Port 0 picks a free port
    /// (tests); `port()` tells which.
    pub async fn build(
        config: Config,
        store: Arc<dyn Store>,
        admin_token: Option<String>,
    ) -> anyhow::Result<Application> {
        let listener = TcpListener::bind((config.bind, config.settings.port)).await?;
        let addr = listener.local_addr()?;
        let public_url = config.public_url(addr.port());
        let admin_token = admin_token.or_else(|| config.settings.admin_token.clone());
        // The bus needs the database; memory mode is one node and needs none.
        let bus_url = config.settings.database_url.clone();
        let (bus, bus_rx) = match &bus_url {
            Some(_) => {
                let (bus, rx) = crate::cluster::bus::channel();
                (Some(bus), Some(rx))
            }
            None => (None, None),
        };
        let node = Arc::new(Node::new(config, store, public_url, admin_token, bus));
        node.store
            .register_node(&NodeRow {
                id: node.id,
                addr: addr.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: node.now(),
            })
            .await?;
        tracing::info!(node_id = %node.id, %addr, store = node.store.backend(), "node listening");
        Ok(Application {
            node,
            listener,
            port: addr.port(),
            stop: CancellationToken::new(),
            bus: bus_url.zip(bus_rx),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Cancel to begin a graceful shutdown (what SIGTERM does).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Serves until the stop token is cancelled, then drains: readiness
    /// 503 and no new sockets for `shutdown_drain_seconds`, then every
    /// socket closed with 1001 (presences go to grace), then the node row
    /// is removed.
    pub async fn run(self) -> anyhow::Result<()> {
        let Application {
            node,
            listener,
            stop,
            bus,
            ..
        } = self;
        let loops_stop = CancellationToken::new();
        let mut bus_tasks = Vec::new();
        if let Some((url, rx)) = bus {
            use crate::cluster::bus::{run_listener, run_notifier};
            bus_tasks.push(tokio::spawn(run_notifier(
                node.clone(),
                url.clone(),
                rx,
                loops_stop.clone(),
            )));
            bus_tasks.push(tokio::spawn(run_listener(
                node.clone(),
                url,
                loops_stop.clone(),
            )));
        }
        let heartbeat = tokio::spawn(crate::cluster::run_heartbeat(
            node.clone(),
            loops_stop.clone(),
        ));
        let audit_rx = node
            .audit_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("a node runs once");
        let send_rx = node
            .send_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("a node runs once");
        let claim_rx = node
            .claim_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("a node runs once");
        let complete_rx = node
            .complete_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("a node runs once");
        let batcher_stop = CancellationToken::new();
        let completer = tokio::spawn(crate::engine::completer::run(
            node.clone(),
            complete_rx,
            batcher_stop.clone(),
        ));
        let claimer = tokio::spawn(crate::engine::claims::run(
            node.clone(),
            claim_rx,
            batcher_stop.clone(),
        ));
        let batcher = tokio::spawn(crate::engine::batcher::run(
            node.clone(),
            send_rx,
            batcher_stop.clone(),
        ));
        let appender = tokio::spawn(crate::engine::audit::run_appender(
            node.clone(),
            audit_rx,
            loops_stop.clone(),
        ));
        let sweeper = tokio::spawn(crate::cluster::run_sweeper(
            node.clone(),
            loops_stop.clone(),
        ));

        let serve_stop = CancellationToken::new();
        let drain = {
            let node = node.clone();
            let serve_stop = serve_stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                node.draining.store(true, Ordering::Relaxed);
                tracing::info!(node_id = %node.id, "draining");
                let _ = node.store.heartbeat_node(node.id, node.now(), true).await;
                let drain = Duration::from_secs(node.config.settings.shutdown_drain_seconds);
                tokio::time::sleep(drain).await;
                node.close_sockets.cancel();
                serve_stop.cancel();
            })
        };

        let router = crate::http::router(node.clone());
        // Small frames must not wait for Nagle's algorithm (~40 ms tails).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // A make-service hands each connection a clone of the router (an
        // Arc); serving the `Router` itself rebuilds its route table per
        // accepted connection, a cost every WebSocket paid at connect.
        axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(serve_stop.cancelled_owned())
            .await?;
        let _ = drain.await;
        node.tracker.close();
        if tokio::time::timeout(SESSION_EXIT_WAIT, node.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(node_id = %node.id, "some sessions did not finish in time");
        }
        batcher_stop.cancel();
        let _ = batcher.await;
        let _ = claimer.await;
        let _ = completer.await;
        loops_stop.cancel();
        let _ = heartbeat.await;
        let _ = sweeper.await;
        let _ = appender.await;
        for t in bus_tasks {
            let _ = t.await;
        }
        if let Err(e) = node.store.remove_node(node.id).await {
            tracing::warn!(node_id = %node.id, error = %e, "could not remove node row");
        }
        tracing::info!(node_id = %node.id, "stopped");
        Ok(())
    }
}
