//! Wires one node together: store, bus, engine, listener, router and the
//! shutdown sequence. The only place that knows every layer.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::clock::{Clock, SystemClock};
use crate::engine::{self, Engine, Running};
use crate::store::memory::MemoryStore;
use crate::store::postgres::{Database as PgDatabase, PgStore};
use crate::store::Store;

/// How long shutdown waits for session tasks after closing their sockets.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(3);

pub struct Application {
    engine: Arc<Engine>,
    running: Running,
    listener: TcpListener,
    port: u16,
    stop: CancellationToken,
}

/// The configured database, TLS included; `None` in memory mode.
pub fn database(config: &Config) -> anyhow::Result<Option<PgDatabase>> {
    let s = &config.settings;
    s.database_url
        .as_deref()
        .map(|url| PgDatabase::parse(url, s.database_ca_file.as_deref()))
        .transpose()
}

/// The configured blob store for shared files.
pub fn open_blobs(
    config: &Config,
    db: Option<&PgDatabase>,
) -> anyhow::Result<Arc<dyn crate::blobs::BlobStore>> {
    use crate::config::FileStoreKind;
    let s = &config.settings;
    Ok(match (config.file_store, db) {
        (FileStoreKind::S3, _) => Arc::new(crate::blobs::s3::S3Blobs::open(
            &crate::blobs::s3::S3Config {
                endpoint: s.s3_endpoint.clone(),
                region: s.s3_region.clone(),
                bucket: s.s3_bucket.clone().unwrap_or_default(),
                access_key: s.s3_access_key.clone(),
                secret_key: s.s3_secret_key.clone(),
                path_style: s.s3_path_style,
            },
        )?),
        // A quarter of the store's pool: uploads hold theirs while the body
        // arrives.
        (FileStoreKind::Postgres, Some(db)) => Arc::new(crate::blobs::PgBlobs::open(
            db,
            (s.db_pool_size / 4).max(2),
        )?),
        _ => Arc::new(crate::blobs::MemoryBlobs::default()),
    })
}

/// Opens the configured store, migrating Postgres first unless
/// `migrate_on_start` is off (a DML-only role; the owner runs `migrate`).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match database(config)? {
        Some(db) => {
            if config.settings.migrate_on_start {
                let applied = PgStore::migrate_db(&db).await?;
                if !applied.is_empty() {
                    tracing::info!(?applied, "migrations applied");
                }
            } else {
                PgStore::check_schema(&db).await?;
            }
            Ok(Arc::new(PgStore::open(&db, config.settings.db_pool_size)?))
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
    /// Binds the listener, registers the node and starts its engine (and,
    /// with a database, its bus). Port 0 picks a free port (tests); `port()`
    /// tells which.
    pub async fn build(
        config: Config,
        store: Arc<dyn Store>,
        admin_token: Option<String>,
    ) -> anyhow::Result<Application> {
        Self::build_with_clock(config, store, admin_token, Arc::new(SystemClock)).await
    }

    /// [`build`](Application::build) with the clock the engine reads
    /// (tests move a [`TestClock`](crate::engine::clock::TestClock)).
    pub async fn build_with_clock(
        config: Config,
        store: Arc<dyn Store>,
        admin_token: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let listener = TcpListener::bind((config.bind, config.settings.port)).await?;
        let addr = listener.local_addr()?;
        let public_url = config.public_url(addr.port());
        let admin_token = admin_token.or_else(|| config.settings.admin_token.clone());
        // The bus needs the database; memory mode is one node and needs none.
        let database = database(&config)?;
        let node_id = uuid::Uuid::now_v7();
        let (bus, queue) = match &database {
            Some(_) => {
                let (bus, queue) = crate::cluster::bus::channel(node_id);
                (
                    Some(Arc::new(bus) as Arc<dyn engine::signal::Bus>),
                    Some(queue),
                )
            }
            None => (None, None),
        };
        let blobs = open_blobs(&config, database.as_ref())?;
        let (engine, mut running) = engine::start(engine::Parts {
            node_id,
            config,
            store,
            clock,
            listen_addr: addr.to_string(),
            public_url,
            admin_token,
            bus,
            blobs,
        })
        .await?;
        if let (Some(db), Some(queue)) = (database, queue) {
            let tasks =
                crate::cluster::bus::start(engine.ctx.clone(), db, queue, running.loops_token());
            running.adopt(tasks);
        }
        tracing::info!(node_id = %engine.node_id, %addr, store = engine.store.backend(), "node listening");
        Ok(Application {
            engine,
            running,
            listener,
            port: addr.port(),
            stop: CancellationToken::new(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
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
            engine,
            running,
            listener,
            stop,
            ..
        } = self;
        let serve_stop = CancellationToken::new();
        let drain = {
            let ctx = engine.ctx.clone();
            let serve_stop = serve_stop.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                // The drain period starts now, whatever the database does:
                // marking the registry row is best effort (the readiness
                // flag is set at once, before the write).
                let started = tokio::time::Instant::now();
                let drain = Duration::from_secs(ctx.config.settings.shutdown_drain_seconds);
                let _ = tokio::time::timeout(drain, engine::node::begin_drain(&ctx)).await;
                tokio::time::sleep_until(started + drain).await;
                ctx.node.close_sockets.cancel();
                serve_stop.cancel();
            })
        };

        let admin = crate::admin::api::router(engine.clone());
        let router = crate::http::router(engine.clone(), admin);
        let settings = &engine.config.settings;
        let limits = crate::http::server::Limits {
            max_connections: (settings.max_connections_per_node as usize)
                .saturating_add(settings.max_http_connections as usize),
            header_timeout: Duration::from_secs(settings.http_header_timeout_seconds),
            shutdown_wait: SESSION_EXIT_WAIT,
        };
        crate::http::server::serve(
            listener,
            router,
            limits,
            (
                engine.metrics.http_connections.clone(),
                engine.metrics.http_refused.clone(),
            ),
            serve_stop,
        )
        .await;
        let _ = drain.await;
        // Everything after the drain shares one database deadline: with the
        // database stalled, SIGTERM still exits within the drain period
        // plus `db_timeout_seconds` (what is left unfinished is what a crash
        // would leave, and the cluster recovers from that).
        let finish = async {
            let tracker = &engine.node.tracker;
            tracker.close();
            if tokio::time::timeout(SESSION_EXIT_WAIT, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(node_id = %engine.node_id, "some sessions did not finish in time");
            }
            running.stop().await;
            engine::node::deregister(&engine).await;
        };
        if tokio::time::timeout(engine::db_timeout(), finish)
            .await
            .is_err()
        {
            tracing::warn!(node_id = %engine.node_id, "shutdown cut short: the database did not answer in time");
        }
        tracing::info!(node_id = %engine.node_id, "stopped");
        Ok(())
    }
}
