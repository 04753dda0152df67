//! Dead-node takeover: one node at a time (transaction-scoped advisory
//! lock) moves a silent node's sessions to grace and frees its claims, so
//! its clients re-attach anywhere and get their unacked messages again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::StoreResult;

/// Fixed key for the reaper's `pg_try_advisory_xact_lock`; distinct from
/// the migration lock.
const REAPER_LOCK_KEY: i64 = 0x636d_6264_7265_6170; // "cmbdreap"

impl PgStore {
    pub(super) async fn reap(
        &self,
        dead_before: DateTime<Utc>,
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
                "DELETE FROM broker_node WHERE heartbeat_at < $1 RETURNING id",
                &[&dead_before],
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
               RETURNING mesh_id, member_id, groups, profile, visible, summary)
             INSERT INTO member_state (mesh_id, member_id, groups, profile, visible, last_summary, last_seen_at)
             SELECT DISTINCT ON (mesh_id, member_id) mesh_id, member_id, groups, profile, visible, summary, $3 FROM r
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
}
