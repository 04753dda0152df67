//! The cluster store: Postgres through a deadpool pool. Each trait method is
//! one transaction (or one statement); row locks, not process memory, make
//! the checks atomic across nodes.

mod attach;
mod audit;
mod clocks;
mod contexts;
mod files;
mod hooks;
mod identity;
mod memories;
mod message_status;
mod messages;
pub mod migrate;
mod nodes;
mod presence;
mod rate;
mod records;
mod relay;
mod rows;
mod schedules;
mod signatures;
mod skills;
mod state;
mod streams;
mod tasks;
mod vault;
mod vectors;
mod webhooks;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

pub use crate::pgconn::Database;

use super::*;

pub struct PgStore {
    pool: Pool,
    /// Connections with `synchronous_commit = off`, for delivery
    /// bookkeeping only (see `connect`).
    fast: Pool,
    /// Send-batch routing views by mesh, checked against the table by the
    /// batch itself (see `messages::ROUTES_TOKEN`), so never trusted stale.
    routes: moka::sync::Cache<String, Routes>,
}

/// Presences (over all meshes) whose routing view a node keeps, about
/// 300 bytes each; idle meshes age out.
const ROUTES_CACHED: u64 = 200_000;
const ROUTES_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// The delivery-bookkeeping pool: half the main pool, at least two.
pub fn fast_pool_size(pool_size: usize) -> usize {
    (pool_size / 2).max(2)
}

fn build_pool(
    cfg: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    size: usize,
) -> anyhow::Result<Pool> {
    let mgr = Manager::from_config(
        cfg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(mgr)
        .max_size(size)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

pub(super) fn map_err(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict("unique key already exists");
    }
    StoreError::Unavailable(describe(&e))
}

pub use crate::pgconn::describe;

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match &e {
        deadpool_postgres::PoolError::Backend(pg) => {
            StoreError::Unavailable(format!("cannot connect to the database: {}", describe(pg)))
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Server options of every pooled connection.
const GENERIC_PLANS: &str = "-c plan_cache_mode=force_generic_plan";

/// How long a pooled connection attempt may take before the request fails
/// as `unavailable` instead of hanging while the database is unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl PgStore {
    /// Builds the pools (no connection is made until first use); TLS as
    /// the URL's `sslmode` says, verified against the platform's roots.
    pub fn connect(url: &str, pool_size: usize) -> anyhow::Result<PgStore> {
        Self::open(&Database::parse(url, None)?, pool_size)
    }

    /// Builds the pools for `db`.
    pub fn open(db: &Database, pool_size: usize) -> anyhow::Result<PgStore> {
        let mut cfg = db.config.clone();
        cfg.connect_timeout(CONNECT_TIMEOUT);
        cfg.application_name("claudemesh-broker");
        // Every statement is prepared once and keyed by ids, so the generic
        // plan is the plan: left to choose, Postgres re-planned the claim
        // on every call (planning was 70 % of its cost under load).
        cfg.options(GENERIC_PLANS);
        let pool = build_pool(cfg.clone(), db.tls.clone(), pool_size)?;
        // Claims and completions commit without waiting for the WAL flush:
        // a crash can only undo them, which redelivers (never loses) a
        // message. Envelopes, identities and audit stay fully durable.
        cfg.options(format!("{GENERIC_PLANS} -c synchronous_commit=off"));
        let fast = build_pool(cfg, db.tls.clone(), fast_pool_size(pool_size))?;
        let routes = moka::sync::Cache::builder()
            .weigher(|_: &String, r: &Routes| r.targets.len().clamp(1, u32::MAX as usize) as u32)
            .max_capacity(ROUTES_CACHED)
            .time_to_idle(ROUTES_IDLE)
            .build();
        Ok(PgStore { pool, fast, routes })
    }

    /// Applies pending migrations on a dedicated connection.
    pub async fn migrate(url: &str) -> anyhow::Result<Vec<i32>> {
        Self::migrate_db(&Database::parse(url, None)?).await
    }

    /// Applies pending migrations to `db` on a dedicated connection.
    pub async fn migrate_db(db: &Database) -> anyhow::Result<Vec<i32>> {
        let mut client = db.connect().await?;
        Ok(migrate::run(&mut client).await?)
    }

    /// Fails unless every migration this build knows is applied: a node
    /// that does not migrate (`migrate_on_start = false`) must not run
    /// against an older schema.
    pub async fn check_schema(db: &Database) -> anyhow::Result<()> {
        let client = db.connect().await?;
        let missing = migrate::pending(&client).await?;
        if !missing.is_empty() {
            anyhow::bail!(
                "the database schema lacks migrations {missing:?}: run `claudemesh-broker migrate` as the schema owner first (migrate_on_start is off)"
            );
        }
        Ok(())
    }

    pub(super) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// A connection whose commits do not wait for the WAL flush.
    pub(super) async fn fast_client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.fast.get().await.map_err(pool_err)
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_status(&self) -> Option<(i64, i64, i64)> {
        let (a, b) = (self.pool.status(), self.fast.status());
        let idle = (a.available + b.available) as i64;
        let in_use = (a.size + b.size) as i64 - idle;
        Some((in_use, idle, (a.waiting + b.waiting) as i64))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
