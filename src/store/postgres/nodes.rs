//! The node registry in Postgres, and dead-node takeover: one node at a
//! time (transaction-scoped advisory lock) moves a silent node's sessions
//! to grace and frees its claims, so its clients re-attach anywhere and
//! get their unacked messages again.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

/// Fixed key for the reaper's `pg_try_advisory_xact_lock`; distinct from
/// the migration lock.
const REAPER_LOCK_KEY: i64 = 0x636d_6264_7265_6170; // "cmbdreap"

#[async_trait]
impl NodeStore for PgStore {
    async fn register_node(&self, n: &NodeRow) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO broker_node (id, addr, version, started_at, heartbeat_at)
             VALUES ($1,$2,$3,$4,now())
             ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, version = excluded.version,
               started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
               draining = false",
            &[&n.id, &n.addr, &n.version, &n.started_at],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn heartbeat_node(&self, id: Uuid, draining: bool) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE broker_node SET heartbeat_at = now(), draining = $2 WHERE id = $1",
                &[&id, &draining],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn reap_dead_nodes(
        &self,
        reaper: Uuid,
        lease: std::time::Duration,
        fresh: std::time::Duration,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&REAPER_LOCK_KEY])
            .await
            .map_err(map_err)?
            .get(0);
        if !locked {
            return Ok(Vec::new());
        }
        let dead: Vec<Uuid> = tx
            .query(
                "DELETE FROM broker_node
                 WHERE heartbeat_at < now() - make_interval(secs => $1) AND id <> $2
                   AND EXISTS (SELECT 1 FROM broker_node me WHERE me.id = $2
                               AND me.heartbeat_at >= now() - make_interval(secs => $3))
                 RETURNING id",
                &[&lease.as_secs_f64(), &reaper, &fresh.as_secs_f64()],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if dead.is_empty() {
            return Ok(dead);
        }
        tx.execute(
            "WITH r AS (
               UPDATE presence SET state = 'grace', grace_until = $2, last_seen_at = $3
               WHERE node_id = ANY($1) AND state = 'online'
               RETURNING mesh_id, member_id, groups, profile, visible, summary, role)
             INSERT INTO member_state (mesh_id, member_id, groups, profile, visible, last_summary, last_seen_at)
             SELECT DISTINCT ON (mesh_id, member_id) mesh_id, member_id, groups, profile, visible, summary, $3
             FROM r WHERE role = 'control-plane'
             ON CONFLICT (mesh_id, member_id) DO UPDATE SET groups = excluded.groups,
               profile = excluded.profile, visible = excluded.visible,
               last_summary = excluded.last_summary, last_seen_at = excluded.last_seen_at",
            &[&dead, &grace_until, &now],
        )
        .await
        .map_err(map_err)?;
        tx.execute(
            "UPDATE delivery SET claimed_by = NULL, claim_until = NULL
             WHERE claimed_by = ANY($1)",
            &[&dead],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(dead)
    }

    async fn readopt_presences(&self, node: Uuid, presences: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        if presences.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let rows = c
            .query(
                "UPDATE presence SET state = 'online', grace_until = NULL
                 WHERE node_id = $1 AND id = ANY($2)
                 RETURNING id",
                &[&node, &presences],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
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
}
