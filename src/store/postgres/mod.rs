//! The cluster store: Postgres through a deadpool pool. Each trait method is
//! one transaction (or one statement); row locks, not process memory, make
//! the checks atomic across nodes.

mod messages;
pub mod migrate;
mod rows;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::Json;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::*;
use crate::protocol::status::{decide, Decision, Recorded};
use rows::{member_from, mesh_from, presence_from, PRESENCE_COLS};

pub struct PgStore {
    pool: Pool,
}

fn map_err(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict("unique key already exists");
    }
    StoreError::Unavailable(e.to_string())
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// How long a pooled connection attempt may take before the request fails
/// as `unavailable` instead of hanging while the database is unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl PgStore {
    /// Builds the pool (no connection is made until first use).
    pub fn connect(url: &str, pool_size: usize) -> anyhow::Result<PgStore> {
        let mut cfg = tokio_postgres::Config::from_str(url)
            .map_err(|e| anyhow::anyhow!("invalid database_url: {e}"))?;
        cfg.connect_timeout(CONNECT_TIMEOUT);
        cfg.application_name("claudemesh-broker");
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool_size)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        Ok(PgStore { pool })
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

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

async fn write_presence(
    tx: &deadpool_postgres::Transaction<'_>,
    p: &Presence,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "UPDATE presence SET node_id=$2, conn_id=$3, session_pubkey=$4, display_name=$5,
               pid=$6, cwd=$7, hostname=$8, peer_type=$9, channel=$10, model=$11,
               capabilities=$12, summary=$13, groups=$14, visible=$15, profile=$16,
               stats=$17, state=$18, grace_until=$19, hook_token_hash=$20, last_seen_at=$21
             WHERE id=$1",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &p.id,
            &p.node_id,
            &p.conn_id,
            &p.session_pubkey,
            &p.display_name,
            &p.pid,
            &p.cwd,
            &p.hostname,
            &p.peer_type,
            &p.channel,
            &p.model,
            &Json(&p.capabilities),
            &p.summary,
            &Json(&p.groups),
            &p.visible,
            &Json(&p.profile),
            &p.stats.as_ref().map(Json),
            &p.state.as_str(),
            &p.grace_until,
            &p.hook_token_hash,
            &p.last_seen_at,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
        let ended = tx
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
        tx.execute(
            "DELETE FROM delivery WHERE mesh_id = $1 AND recipient_member_id = $2",
            &[&mesh_id, &member_id],
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

    async fn revoke_invite(&self, token: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE invite SET revoked_at = $2 WHERE token = $1 AND revoked_at IS NULL",
                &[&token, &now],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn redeem_invite(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // The row lock serialises redemptions of one invite across nodes:
        // the use count can never pass max_uses.
        let Some(inv) = tx
            .query_opt(
                "SELECT mesh_id, role, max_uses, used_count, expires_at, revoked_at
                 FROM invite WHERE token = $1 FOR UPDATE",
                &[&r.token],
            )
            .await
            .map_err(map_err)?
        else {
            return Ok(Err(InviteRefusal::NotFound));
        };
        let (mesh_id, role): (String, String) = (inv.get(0), inv.get(1));
        let (max_uses, used): (i32, i32) = (inv.get(2), inv.get(3));
        let expires_at: DateTime<Utc> = inv.get(4);
        let revoked_at: Option<DateTime<Utc>> = inv.get(5);
        if mesh_id != r.mesh_id {
            return Ok(Err(InviteRefusal::MeshMismatch));
        }
        if revoked_at.is_some() {
            return Ok(Err(InviteRefusal::Revoked));
        }
        if expires_at <= r.now {
            return Ok(Err(InviteRefusal::Expired));
        }
        let existing = tx
            .query_opt(
                "SELECT id FROM member WHERE mesh_id = $1 AND peer_pubkey = $2",
                &[&r.mesh_id, &r.pubkey],
            )
            .await
            .map_err(map_err)?;
        if let Some(row) = existing {
            return Ok(Ok(Redeemed {
                member_id: row.get(0),
                already_member: true,
            }));
        }
        if used >= max_uses {
            return Ok(Err(InviteRefusal::Exhausted));
        }
        tx.execute(
            "UPDATE invite SET used_count = used_count + 1 WHERE token = $1",
            &[&r.token],
        )
        .await
        .map_err(map_err)?;
        let inserted = tx
            .query_opt(
                "INSERT INTO member (id, mesh_id, peer_pubkey, display_name, role, created_at)
                 VALUES ($1,$2,$3,$4,$5,$6)
                 ON CONFLICT (mesh_id, peer_pubkey) DO NOTHING RETURNING id",
                &[
                    &r.new_member_id,
                    &r.mesh_id,
                    &r.pubkey,
                    &r.display_name,
                    &role,
                    &r.now,
                ],
            )
            .await
            .map_err(map_err)?;
        if inserted.is_none() {
            // The same key joined through another invite meanwhile: keep this
            // invite's use and answer with the member that won.
            drop(tx);
            let row = c
                .query_one(
                    "SELECT id FROM member WHERE mesh_id = $1 AND peer_pubkey = $2",
                    &[&r.mesh_id, &r.pubkey],
                )
                .await
                .map_err(map_err)?;
            return Ok(Ok(Redeemed {
                member_id: row.get(0),
                already_member: true,
            }));
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Ok(Redeemed {
            member_id: r.new_member_id.clone(),
            already_member: false,
        }))
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
    ) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE broker_node SET heartbeat_at = $2, draining = $3 WHERE id = $1",
            &[&id, &now, &draining],
        )
        .await
        .map_err(map_err)?;
        Ok(())
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
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // Locking the mesh row serialises attaches per mesh across nodes,
        // which makes both the capacity count and the one-live-presence
        // check exact.
        tx.execute("SELECT 1 FROM mesh WHERE id = $1 FOR UPDATE", &[&p.mesh_id])
            .await
            .map_err(map_err)?;
        let sql = format!(
            "SELECT {PRESENCE_COLS} FROM presence
             WHERE mesh_id = $1 AND member_id = $2 AND state <> 'gone'
               AND (session_id = $3 OR ($4::text IS NOT NULL AND session_pubkey = $4))
             LIMIT 1"
        );
        let found = tx
            .query_opt(
                &sql,
                &[&p.mesh_id, &p.member_id, &p.session_id, &p.session_pubkey],
            )
            .await
            .map_err(map_err)?;
        if let Some(row) = found {
            let mut x = presence_from(&row);
            let was = x.state;
            let (old_node, old_conn) = (x.node_id, x.conn_id);
            x.reattach(p);
            write_presence(&tx, &x).await.map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            return Ok(match was {
                PresenceState::Online => Attach::Replaced {
                    presence: x,
                    old_node,
                    old_conn,
                },
                _ => Attach::Reattached(x),
            });
        }
        let count: i64 = tx
            .query_one(
                "SELECT count(*) FROM presence WHERE mesh_id = $1 AND state <> 'gone'",
                &[&p.mesh_id],
            )
            .await
            .map_err(map_err)?
            .get(0);
        if count >= i64::from(max_per_mesh) {
            return Ok(Attach::Capacity);
        }
        let x = Presence::from_new(p);
        tx.execute(
            "INSERT INTO presence (id, mesh_id, member_id, member_pubkey, node_id, conn_id,
               session_id, session_pubkey, display_name, pid, cwd, hostname, peer_type, channel,
               model, capabilities, status, status_source, status_updated_at, summary, groups,
               visible, profile, state, hook_token_hash, connected_at, last_seen_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,
                     $22,$23,'online',$24,$25,$25)",
            &[
                &x.id,
                &x.mesh_id,
                &x.member_id,
                &x.member_pubkey,
                &x.node_id,
                &x.conn_id,
                &x.session_id,
                &x.session_pubkey,
                &x.display_name,
                &x.pid,
                &x.cwd,
                &x.hostname,
                &x.peer_type,
                &x.channel,
                &x.model,
                &Json(&x.capabilities),
                &x.status.as_str(),
                &x.status_source.as_str(),
                &x.status_updated_at,
                &x.summary,
                &Json(&x.groups),
                &x.visible,
                &Json(&x.profile),
                &x.hook_token_hash,
                &x.connected_at,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Attach::Created(x))
    }

    async fn member_state(
        &self,
        mesh_id: &str,
        member_id: &str,
    ) -> StoreResult<Option<MemberState>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT groups, profile, visible, last_summary, last_seen_at
                 FROM member_state WHERE mesh_id = $1 AND member_id = $2",
                &[&mesh_id, &member_id],
            )
            .await
            .map_err(map_err)?;
        Ok(row.map(|r| MemberState {
            groups: r.get::<_, Json<_>>(0).0,
            profile: r.get::<_, Json<_>>(1).0,
            visible: r.get(2),
            last_summary: r.get(3),
            last_seen_at: r.get(4),
        }))
    }

    async fn update_presence(&self, id: Uuid, patch: &PresencePatch) -> StoreResult<PatchResult> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let sql = format!(
            "SELECT {PRESENCE_COLS} FROM presence WHERE id = $1 AND state <> 'gone' FOR UPDATE"
        );
        let Some(row) = tx.query_opt(&sql, &[&id]).await.map_err(map_err)? else {
            return Ok(PatchResult::Gone);
        };
        let mut p = presence_from(&row);
        if !patch.apply(&mut p) {
            return Ok(PatchResult::Refused);
        }
        write_presence(&tx, &p).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(PatchResult::Applied(Box::new(p)))
    }

    async fn write_status(
        &self,
        id: Uuid,
        status: Status,
        source: Source,
        now: DateTime<Utc>,
        fresh_window_ms: i64,
    ) -> StoreResult<Option<StatusWrite>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let Some(row) = tx
            .query_opt(
                "SELECT status, status_source, status_updated_at FROM presence
                 WHERE id = $1 AND state <> 'gone' FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(map_err)?
        else {
            return Ok(None);
        };
        let cur_status = Status::parse(row.get(0)).unwrap_or(Status::Idle);
        let cur_source = Source::parse(row.get(1)).unwrap_or(Source::Jsonl);
        let updated: DateTime<Utc> = row.get(2);
        let rec = Recorded {
            status: cur_status,
            source: cur_source,
            age_ms: (now - updated).num_milliseconds(),
        };
        let out = match decide(rec, status, source, fresh_window_ms) {
            Decision::Record(st, src) => {
                tx.execute(
                    "UPDATE presence SET status = $2, status_source = $3, status_updated_at = $4 WHERE id = $1",
                    &[&id, &st.as_str(), &src.as_str(), &now],
                )
                .await
                .map_err(map_err)?;
                StatusWrite {
                    status: st,
                    source: src,
                    changed: st != cur_status,
                }
            }
            Decision::Keep => StatusWrite {
                status: cur_status,
                source: cur_source,
                changed: false,
            },
        };
        tx.commit().await.map_err(map_err)?;
        Ok(Some(out))
    }

    async fn release_presence(
        &self,
        id: Uuid,
        conn_id: Uuid,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "WITH r AS (
                   UPDATE presence SET state = 'grace', grace_until = $3, last_seen_at = $4
                   WHERE id = $1 AND conn_id = $2 AND state = 'online'
                   RETURNING mesh_id, member_id, groups, profile, visible, summary)
                 INSERT INTO member_state (mesh_id, member_id, groups, profile, visible, last_summary, last_seen_at)
                 SELECT mesh_id, member_id, groups, profile, visible, summary, $4 FROM r
                 ON CONFLICT (mesh_id, member_id) DO UPDATE SET groups = excluded.groups,
                   profile = excluded.profile, visible = excluded.visible,
                   last_summary = excluded.last_summary, last_seen_at = excluded.last_seen_at",
                &[&id, &conn_id, &grace_until, &now],
            )
            .await
            .map_err(map_err)?;
        if n == 1 {
            // Unacked pushes go back to the queue at once: the session's
            // next socket (or a sibling) gets them without waiting a lease.
            tx.execute(
                "UPDATE delivery SET claimed_by = NULL, claimed_session = NULL, claim_until = NULL
                 WHERE claimed_session = $1",
                &[&id],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn list_presences(&self, mesh_id: &str) -> StoreResult<Vec<Presence>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {PRESENCE_COLS} FROM presence WHERE mesh_id = $1 AND state <> 'gone'
             ORDER BY connected_at, id"
        );
        let rows = c.query(&sql, &[&mesh_id]).await.map_err(map_err)?;
        Ok(rows.iter().map(presence_from).collect())
    }

    async fn expire_grace(&self, now: DateTime<Utc>) -> StoreResult<Vec<Presence>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let sql = format!(
            "DELETE FROM presence WHERE state = 'grace' AND grace_until <= $1 RETURNING {PRESENCE_COLS}"
        );
        let rows = tx.query(&sql, &[&now]).await.map_err(map_err)?;
        let ended: Vec<Presence> = rows
            .iter()
            .map(|r| {
                let mut p = presence_from(r);
                p.state = PresenceState::Gone;
                p
            })
            .collect();
        if !ended.is_empty() {
            let ids: Vec<Uuid> = ended.iter().map(|p| p.id).collect();
            tx.execute(
                "UPDATE delivery SET recipient_session = NULL, claimed_by = NULL,
                   claimed_session = NULL, claim_until = NULL
                 WHERE recipient_session = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ended)
    }

    async fn insert_message(
        &self,
        message: &NewMessage,
        deliveries: &[NewDelivery],
        bucket: &Bucket,
    ) -> StoreResult<SendResult> {
        self.insert_message_tx(message, deliveries, bucket).await
    }

    async fn claim_deliveries(&self, req: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        self.claim(req).await
    }

    async fn complete_deliveries(&self, presence: Uuid, delivery_ids: &[i64]) -> StoreResult<()> {
        self.complete(presence, delivery_ids).await
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
}
