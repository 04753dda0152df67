//! Presence rows: attach (with the per-mesh capacity lock), field and
//! status updates, release to grace and grace expiry.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::attach::end_in;
use super::messages::ROUTES_TOKEN;
use super::rows::{presence_from, PRESENCE_COLS};
use super::{map_err, PgStore};
use crate::protocol::status::{decide, Decision, Recorded};
use crate::protocol::{Source, Status};
use crate::store::*;
use async_trait::async_trait;

pub(super) async fn write_presence(
    tx: &deadpool_postgres::Transaction<'_>,
    p: &Presence,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "UPDATE presence SET node_id=$2, conn_id=$3, session_pubkey=$4, display_name=$5,
               pid=$6, cwd=$7, hostname=$8, peer_type=$9, channel=$10, model=$11,
               capabilities=$12, summary=$13, groups=$14, visible=$15, profile=$16,
               stats=$17, state=$18, grace_until=$19, hook_token_hash=$20, last_seen_at=$21,
               at_least_once=$22, session_id=$23
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
            &p.at_least_once,
            &p.session_id,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// The presences of a mesh a send may route to, and their version
    /// (`None` for a mesh without any).
    pub(super) async fn read_routes(
        &self,
        mesh_id: &str,
    ) -> StoreResult<(Vec<RouteTarget>, Option<String>)> {
        read_routes_on(&self.client().await?, mesh_id).await
    }
}

/// `read_routes` on a given connection or transaction.
pub(super) async fn read_routes_on(
    c: &impl deadpool_postgres::GenericClient,
    mesh_id: &str,
) -> StoreResult<(Vec<RouteTarget>, Option<String>)> {
    let sql = format!(
        "WITH p AS MATERIALIZED (
           SELECT id, member_id, member_pubkey, session_pubkey, node_id, visible, groups,
                  status, status_updated_at, connected_at, state, at_least_once, role, xmin
           FROM presence WHERE mesh_id = $1)
         SELECT p.id, member_id, member_pubkey, session_pubkey, node_id, visible, groups,
                status, status_updated_at, v.token, state = 'online', at_least_once, role
         FROM p, (SELECT {ROUTES_TOKEN} AS token FROM p) v
         ORDER BY p.connected_at, p.id"
    );
    let stmt = c.prepare_cached(&sql).await.map_err(map_err)?;
    let rows = c.query(&stmt, &[&mesh_id]).await.map_err(map_err)?;
    let token = rows.first().map(|r| r.get::<_, String>(9));
    let targets = rows
        .iter()
        .map(|r| RouteTarget {
            id: r.get(0),
            mesh_id: mesh_id.to_string(),
            member_id: r.get(1),
            member_pubkey: r.get(2),
            session_pubkey: r.get(3),
            node_id: r.get(4),
            visible: r.get(5),
            groups: r.get::<_, Json<_>>(6).0,
            status: Status::parse(r.get(7)).unwrap_or(Status::Idle),
            status_updated_at: r.get(8),
            online: r.get(10),
            at_least_once: r.get(11),
            role: PeerRole::parse(r.get(12)),
        })
        .collect();
    Ok((targets, token))
}

#[async_trait]
impl PresenceStore for PgStore {
    async fn attach_presence(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach> {
        self.attach_hello(p, max_per_mesh).await
    }

    async fn attach_session(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach> {
        self.attach_session_hello(p, max_per_mesh).await
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
        let sql = format!("SELECT {PRESENCE_COLS} FROM presence WHERE id = $1 FOR UPDATE");
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
                "SELECT status, status_source, status_updated_at, node_id FROM presence
                 WHERE id = $1 FOR UPDATE",
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
        let node_id: Uuid = row.get(3);
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
                    node_id,
                }
            }
            Decision::Keep => StatusWrite {
                status: cur_status,
                source: cur_source,
                changed: false,
                node_id,
            },
        };
        tx.commit().await.map_err(map_err)?;
        Ok(Some(out))
    }

    async fn end_presences(&self, ids: &[Uuid]) -> StoreResult<Vec<Presence>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let ended = end_in(&tx, ids).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(ended)
    }

    async fn enter_at_least_once(&self, id: Uuid) -> StoreResult<bool> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("UPDATE presence SET at_least_once = true WHERE id = $1")
            .await
            .map_err(map_err)?;
        Ok(c.execute(&stmt, &[&id]).await.map_err(map_err)? == 1)
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
        // Session presences neither use nor update the member's saved
        // state (PROTOCOL-SESSIONS.md §3): only a control-plane one saves it.
        let n: i64 = tx
            .query_one(
                "WITH r AS (
                   UPDATE presence SET state = 'grace', grace_until = $3, last_seen_at = $4
                   WHERE id = $1 AND conn_id = $2 AND state = 'online'
                   RETURNING mesh_id, member_id, groups, profile, visible, summary, role),
                 saved AS (
                   INSERT INTO member_state (mesh_id, member_id, groups, profile, visible, last_summary, last_seen_at)
                   SELECT mesh_id, member_id, groups, profile, visible, summary, $4 FROM r
                   WHERE role = 'control-plane'
                   ON CONFLICT (mesh_id, member_id) DO UPDATE SET groups = excluded.groups,
                     profile = excluded.profile, visible = excluded.visible,
                     last_summary = excluded.last_summary, last_seen_at = excluded.last_seen_at)
                 SELECT count(*) FROM r",
                &[&id, &conn_id, &grace_until, &now],
            )
            .await
            .map_err(map_err)?
            .get(0);
        if n == 1 {
            // Unacked pushes go back to the queue at once: the session's
            // next socket (or a sibling) gets them without waiting a lease.
            tx.execute(
                "UPDATE delivery SET claimed_by = NULL, claim_until = NULL
                 WHERE id IN (
                   SELECT id FROM delivery
                   WHERE recipient_session = $1 AND claimed_session = $1
                   UNION ALL
                   SELECT d.id FROM presence p JOIN delivery d
                     ON d.recipient_session IS NULL AND d.mesh_id = p.mesh_id
                    AND d.recipient_member_id = p.member_id
                   WHERE p.id = $1 AND d.claimed_session = $1)",
                &[&id],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn route_targets(&self, mesh_id: &str) -> StoreResult<Vec<RouteTarget>> {
        Ok(self.read_routes(mesh_id).await?.0)
    }

    async fn record_activity(&self, heard: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()> {
        if heard.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE presence p SET last_active_at = x.t
                 FROM unnest($1::uuid[], $2::timestamptz[]) AS x(id, t)
                 WHERE p.id = x.id AND (p.last_active_at IS NULL OR p.last_active_at < x.t)",
            )
            .await
            .map_err(map_err)?;
        let ids: Vec<Uuid> = heard.iter().map(|h| h.0).collect();
        let times: Vec<DateTime<Utc>> = heard.iter().map(|h| h.1).collect();
        c.execute(&stmt, &[&ids, &times]).await.map_err(map_err)?;
        Ok(())
    }

    async fn presence_by_id(&self, id: Uuid) -> StoreResult<Option<Presence>> {
        let c = self.client().await?;
        let sql = format!("SELECT {PRESENCE_COLS} FROM presence WHERE id = $1");
        let row = c.query_opt(&sql, &[&id]).await.map_err(map_err)?;
        Ok(row.as_ref().map(presence_from))
    }

    async fn list_presences(&self, mesh_id: &str) -> StoreResult<Vec<Presence>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {PRESENCE_COLS} FROM presence WHERE mesh_id = $1
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
        let ended: Vec<Presence> = rows.iter().map(presence_from).collect();
        if !ended.is_empty() {
            let ids: Vec<Uuid> = ended.iter().map(|p| p.id).collect();
            tx.execute(
                "UPDATE delivery SET recipient_session = NULL, claimed_by = NULL,
                   claim_until = NULL
                 WHERE recipient_session = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(ended)
    }

    async fn expire_working(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PresenceRef>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "UPDATE presence SET status = 'idle', status_source = 'jsonl', status_updated_at = $2
                 WHERE status = 'working' AND status_updated_at < $1
                 RETURNING id, node_id, conn_id",
                &[&before, &now],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| PresenceRef {
                id: r.get(0),
                node_id: r.get(1),
                conn_id: r.get(2),
            })
            .collect())
    }
}
