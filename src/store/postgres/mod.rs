//! The cluster store: Postgres through a deadpool pool. Each trait method is
//! one transaction (or one statement); row locks, not process memory, make
//! the checks atomic across nodes.

mod audit;
mod invites;
mod messages;
pub mod migrate;
mod presence;
mod reaper;
mod rows;
mod status;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::Json;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::*;
use rows::{member_from, mesh_from};

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

fn build_pool(cfg: tokio_postgres::Config, size: usize) -> anyhow::Result<Pool> {
    let mgr = Manager::from_config(
        cfg,
        NoTls,
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
    StoreError::Unavailable(e.to_string())
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Server options of every pooled connection.
const GENERIC_PLANS: &str = "-c plan_cache_mode=force_generic_plan";

/// How long a pooled connection attempt may take before the request fails
/// as `unavailable` instead of hanging while the database is unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl PgStore {
    /// Builds the pools (no connection is made until first use).
    pub fn connect(url: &str, pool_size: usize) -> anyhow::Result<PgStore> {
        let mut cfg = tokio_postgres::Config::from_str(url)
            .map_err(|e| anyhow::anyhow!("invalid database_url: {e}"))?;
        cfg.connect_timeout(CONNECT_TIMEOUT);
        cfg.application_name("claudemesh-broker");
        // Every statement is prepared once and keyed by ids, so the generic
        // plan is the plan: left to choose, Postgres re-planned the claim
        // on every call (planning was 70 % of its cost under load).
        cfg.options(GENERIC_PLANS);
        let pool = build_pool(cfg.clone(), pool_size)?;
        // Claims and completions commit without waiting for the WAL flush:
        // a crash can only undo them, which redelivers (never loses) a
        // message. Envelopes, identities and audit stay fully durable.
        cfg.options(format!("{GENERIC_PLANS} -c synchronous_commit=off"));
        let fast = build_pool(cfg, fast_pool_size(pool_size))?;
        let routes = moka::sync::Cache::builder()
            .weigher(|_: &String, r: &Routes| r.targets.len().clamp(1, u32::MAX as usize) as u32)
            .max_capacity(ROUTES_CACHED)
            .time_to_idle(ROUTES_IDLE)
            .build();
        Ok(PgStore { pool, fast, routes })
    }

    /// Applies pending migrations on a dedicated connection.
    pub async fn migrate(url: &str) -> anyhow::Result<Vec<i32>> {
        let (mut client, conn) = tokio_postgres::connect(url, NoTls).await?;
        let task = tokio::spawn(conn);
        let applied = migrate::run(&mut client).await?;
        drop(client);
        let _ = task.await;
        Ok(applied)
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

    async fn insert_mesh(&self, m: &Mesh) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO mesh (id, slug, name, owner_pubkey, owner_secret, root_key, created_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[
                &m.id,
                &m.slug,
                &m.name,
                &m.owner_pubkey,
                &m.owner_secret,
                &m.root_key,
                &m.created_at,
            ],
        )
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict("mesh slug already exists"),
            other => other,
        })?;
        Ok(())
    }

    async fn list_meshes(&self) -> StoreResult<Vec<Mesh>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT * FROM mesh ORDER BY created_at, slug", &[])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(mesh_from).collect())
    }

    async fn mesh_by_slug(&self, slug: &str) -> StoreResult<Option<Mesh>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT * FROM mesh WHERE slug = $1", &[&slug])
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(mesh_from))
    }

    async fn mesh_by_id(&self, id: &str) -> StoreResult<Option<Mesh>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT * FROM mesh WHERE id = $1", &[&id])
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(mesh_from))
    }

    async fn insert_member(&self, m: &Member) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO member (id, mesh_id, peer_pubkey, display_name, role, default_groups, created_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[&m.id, &m.mesh_id, &m.pubkey, &m.display_name, &m.role.as_str(), &Json(&m.default_groups), &m.created_at],
        )
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict("pubkey is already a member of this mesh"),
            other => other,
        })?;
        Ok(())
    }

    async fn list_members(&self, mesh_id: &str) -> StoreResult<Vec<Member>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT * FROM member WHERE mesh_id = $1 ORDER BY created_at, id",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(member_from).collect())
    }

    async fn member_by_id(&self, mesh_id: &str, member_id: &str) -> StoreResult<Option<Member>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT * FROM member WHERE id = $1 AND mesh_id = $2")
            .await
            .map_err(map_err)?;
        let row = c
            .query_opt(&stmt, &[&member_id, &mesh_id])
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(member_from))
    }

    async fn member_by_pubkey(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<Member>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT * FROM member WHERE mesh_id = $1 AND peer_pubkey = $2",
                &[&mesh_id, &pubkey],
            )
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(member_from))
    }

    async fn revoke_member(
        &self,
        mesh_id: &str,
        member_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<PresenceRef>>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let hit = tx
            .query_opt(
                "UPDATE member SET revoked_at = $3
                 WHERE id = $1 AND mesh_id = $2 AND revoked_at IS NULL RETURNING id",
                &[&member_id, &mesh_id, &now],
            )
            .await
            .map_err(map_err)?;
        if hit.is_none() {
            return Ok(None);
        }
        let ended: Vec<PresenceRef> = tx
            .query(
                "DELETE FROM presence WHERE member_id = $1 RETURNING id, node_id, conn_id",
                &[&member_id],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| PresenceRef {
                id: r.get(0),
                node_id: r.get(1),
                conn_id: r.get(2),
            })
            .collect();
        // Session rows only ever name live or in-grace presences (an ended
        // presence's rows become member rows), so these two sets are all
        // of the member's rows.
        let sessions: Vec<Uuid> = ended.iter().map(|p| p.id).collect();
        tx.execute(
            "DELETE FROM delivery WHERE recipient_session = ANY($3)
                OR (recipient_session IS NULL AND mesh_id = $1 AND recipient_member_id = $2)",
            &[&mesh_id, &member_id, &sessions],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(ended))
    }

    async fn insert_invite(&self, i: &Invite) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO invite (token, mesh_id, role, max_uses, used_count, expires_at, created_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
            &[&i.token, &i.mesh_id, &i.role.as_str(), &i.max_uses, &i.used_count, &i.expires_at, &i.created_at],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn revoke_invite(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE invite SET revoked_at = $2 WHERE token = $1 AND revoked_at IS NULL
                 RETURNING mesh_id",
                &[&token, &now],
            )
            .await
            .map_err(map_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn redeem_invite(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>> {
        self.redeem(r).await
    }

    async fn register_node(&self, n: &NodeRow) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO broker_node (id, addr, version, started_at, heartbeat_at)
             VALUES ($1,$2,$3,$4,$4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            &[&n.id, &n.addr, &n.version, &n.started_at],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn heartbeat_node(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        draining: bool,
    ) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE broker_node SET heartbeat_at = $2, draining = $3 WHERE id = $1",
                &[&id, &now, &draining],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn reap_dead_nodes(
        &self,
        dead_before: DateTime<Utc>,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>> {
        self.reap(dead_before, grace_until, now).await
    }

    async fn remove_node(&self, id: Uuid) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM broker_node WHERE id = $1", &[&id])
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT n.id, n.addr, n.version, n.started_at, n.heartbeat_at, n.draining,
                        (SELECT count(*) FROM presence p WHERE p.node_id = n.id AND p.state = 'online')
                 FROM broker_node n ORDER BY n.started_at",
                &[],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| NodeInfo {
                id: r.get(0),
                addr: r.get(1),
                version: r.get(2),
                started_at: r.get(3),
                heartbeat_at: r.get(4),
                draining: r.get(5),
                sockets: r.get(6),
            })
            .collect())
    }

    async fn attach_presence(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach> {
        self.attach(p, max_per_mesh).await
    }

    async fn member_state(
        &self,
        mesh_id: &str,
        member_id: &str,
    ) -> StoreResult<Option<MemberState>> {
        self.saved_state(mesh_id, member_id).await
    }

    async fn update_presence(&self, id: Uuid, patch: &PresencePatch) -> StoreResult<PatchResult> {
        self.patch(id, patch).await
    }

    async fn write_status(
        &self,
        id: Uuid,
        status: Status,
        source: Source,
        now: DateTime<Utc>,
        fresh_window_ms: i64,
    ) -> StoreResult<Option<StatusWrite>> {
        self.status(id, status, source, now, fresh_window_ms).await
    }

    async fn release_presence(
        &self,
        id: Uuid,
        conn_id: Uuid,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.release(id, conn_id, grace_until, now).await
    }

    async fn route_targets(&self, mesh_id: &str) -> StoreResult<Vec<RouteTarget>> {
        self.routes(mesh_id).await
    }

    async fn presence_by_id(&self, id: Uuid) -> StoreResult<Option<Presence>> {
        self.by_id(id).await
    }

    async fn list_presences(&self, mesh_id: &str) -> StoreResult<Vec<Presence>> {
        self.presences(mesh_id).await
    }

    async fn expire_grace(&self, now: DateTime<Utc>) -> StoreResult<Vec<Presence>> {
        self.expire(now).await
    }

    async fn insert_messages(
        &self,
        batch: &[Outgoing],
        notices: &[Notice],
        checks: &[(&str, &str)],
    ) -> StoreResult<Option<Stored>> {
        self.insert_batch(batch, notices, checks).await
    }

    async fn send_routes(&self, mesh_id: &str, fresh: bool) -> StoreResult<Routes> {
        self.cached_routes(mesh_id, fresh).await
    }

    async fn claim_many(&self, reqs: &[ClaimRequest]) -> StoreResult<Vec<Vec<Claimed>>> {
        self.claim_batch(reqs).await
    }

    async fn release_rows(&self, presence: Uuid, delivery_ids: &[i64]) -> StoreResult<()> {
        self.release_batch(presence, delivery_ids).await
    }

    async fn complete_many(&self, done: &[(Uuid, i64)]) -> StoreResult<()> {
        self.complete_batch(done).await
    }

    async fn ack_delivery(&self, presence: Uuid, message_id: Uuid) -> StoreResult<bool> {
        self.ack(presence, message_id).await
    }

    async fn sweep_messages(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.sweep(now).await
    }

    async fn queue_depth(&self) -> StoreResult<i64> {
        self.depth().await
    }

    async fn take_token(
        &self,
        scope: &str,
        bucket: &Bucket,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.take(scope, bucket, now).await
    }

    async fn sweep_rate_buckets(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM rate_bucket WHERE updated_at < $1", &[&before])
            .await
            .map_err(map_err)
    }

    async fn presence_by_hook_token(&self, hash: &[u8]) -> StoreResult<Option<Presence>> {
        self.by_hook_token(hash).await
    }

    async fn hook_targets(&self, pid: Option<i64>, cwd: &str) -> StoreResult<Vec<Uuid>> {
        self.targets(pid, cwd).await
    }

    async fn insert_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.insert_pending(pid, cwd, status, now).await
    }

    async fn take_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Status>> {
        self.take_pending(pid, cwd, since).await
    }

    async fn sweep_pending_status(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.sweep_pending(before).await
    }

    async fn expire_working(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PresenceRef>> {
        self.flip_working(before, now).await
    }

    async fn append_audit(&self, entries: &[NewAuditEntry]) -> StoreResult<()> {
        self.append(entries).await
    }

    async fn audit_chain(
        &self,
        mesh_id: &str,
    ) -> StoreResult<(Option<crate::audit::Checkpoint>, Vec<crate::audit::Entry>)> {
        self.chain(mesh_id).await
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.prune(before).await
    }
}
