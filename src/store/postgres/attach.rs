//! Attaching hellos to presences in Postgres. Each attach locks its mesh
//! row, which serialises attaches per mesh across nodes and makes both the
//! capacity count and the one-live-presence rules exact.

use deadpool_postgres::Transaction;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::presence::write_presence;
use super::rows::{presence_from, PRESENCE_COLS};
use super::{map_err, PgStore};
use crate::store::*;

async fn lock_mesh(tx: &Transaction<'_>, mesh_id: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT 1 FROM mesh WHERE id = $1 FOR UPDATE", &[&mesh_id])
        .await?;
    Ok(())
}

/// Presences that count toward the mesh's cap: online ones; a ghost in
/// grace (a crashed session) does not lock a full mesh out.
async fn count(tx: &Transaction<'_>, mesh_id: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(tx
        .query_one(
            "SELECT count(*) FROM presence WHERE mesh_id = $1 AND state = 'online'",
            &[&mesh_id],
        )
        .await?
        .get(0))
}

/// Takes over or re-attaches the found presence `x` for the hello `p`.
async fn take_over(
    tx: Transaction<'_>,
    mut x: Presence,
    refresh: impl FnOnce(&mut Presence),
) -> Result<Attach, tokio_postgres::Error> {
    let was = x.state;
    let (old_node, old_conn) = (x.node_id, x.conn_id);
    refresh(&mut x);
    write_presence(&tx, &x).await?;
    tx.commit().await?;
    Ok(match was {
        PresenceState::Online => Attach::Replaced {
            presence: x,
            old_node,
            old_conn,
        },
        PresenceState::Grace => Attach::Reattached(x),
    })
}

async fn insert_presence(tx: &Transaction<'_>, x: &Presence) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO presence (id, mesh_id, member_id, member_pubkey, node_id, conn_id,
           session_id, session_pubkey, display_name, pid, cwd, hostname, peer_type, channel,
           model, capabilities, status, status_source, status_updated_at, summary, groups,
           visible, profile, state, hook_token_hash, connected_at, last_seen_at, role,
           at_least_once)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,
                 $22,$23,'online',$24,$25,$25,$26,$27)",
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
            &x.role.as_str(),
            &x.at_least_once,
        ],
    )
    .await?;
    Ok(())
}

/// Ends presences inside `tx`, without grace: session rows become member
/// rows, member rows they held are freed (a live presence ends holding
/// claims, unlike one in grace). Returns them as they were, oldest first.
pub(super) async fn end_in(
    tx: &Transaction<'_>,
    ids: &[Uuid],
) -> Result<Vec<Presence>, tokio_postgres::Error> {
    let sql = format!("DELETE FROM presence WHERE id = ANY($1) RETURNING {PRESENCE_COLS}");
    let mut ended: Vec<Presence> = tx
        .query(&sql, &[&ids])
        .await?
        .iter()
        .map(presence_from)
        .collect();
    if ended.is_empty() {
        return Ok(ended);
    }
    let gone: Vec<Uuid> = ended.iter().map(|p| p.id).collect();
    tx.execute(
        "UPDATE delivery SET recipient_session = NULL, claimed_by = NULL, claim_until = NULL
         WHERE recipient_session = ANY($1)",
        &[&gone],
    )
    .await?;
    let mut members: Vec<(String, String)> = ended
        .iter()
        .map(|p| (p.mesh_id.clone(), p.member_id.clone()))
        .collect();
    members.sort();
    members.dedup();
    let (meshes, member_ids): (Vec<String>, Vec<String>) = members.into_iter().unzip();
    tx.execute(
        "UPDATE delivery d SET claimed_by = NULL, claim_until = NULL
         FROM unnest($2::text[], $3::text[]) AS m(mesh, member)
         WHERE d.recipient_session IS NULL AND d.mesh_id = m.mesh
           AND d.recipient_member_id = m.member AND d.claimed_session = ANY($1)",
        &[&gone, &meshes, &member_ids],
    )
    .await?;
    ended.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
    Ok(ended)
}

impl PgStore {
    /// A `hello`: the member's presence of this role with this session id
    /// or session key is re-attached or taken over; else a new one.
    pub(super) async fn attach_hello(
        &self,
        p: &NewPresence,
        max_per_mesh: u32,
    ) -> StoreResult<Attach> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        lock_mesh(&tx, &p.mesh_id).await.map_err(map_err)?;
        let sql = format!(
            "SELECT {PRESENCE_COLS} FROM presence
             WHERE mesh_id = $1 AND member_id = $2 AND role = $5
               AND (session_id = $3 OR ($4::text IS NOT NULL AND session_pubkey = $4))
             LIMIT 1"
        );
        let found = tx
            .query_opt(
                &sql,
                &[
                    &p.mesh_id,
                    &p.member_id,
                    &p.session_id,
                    &p.session_pubkey,
                    &p.role.as_str(),
                ],
            )
            .await
            .map_err(map_err)?;
        if let Some(row) = found {
            let x = presence_from(&row);
            return take_over(tx, x, |x| x.reattach(p)).await.map_err(map_err);
        }
        if count(&tx, &p.mesh_id).await.map_err(map_err)? >= i64::from(max_per_mesh) {
            return Ok(Attach::Capacity);
        }
        let x = Presence::from_new(p);
        insert_presence(&tx, &x).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Attach::Created(x))
    }

    /// A `session_hello`: see [`PresenceStore::attach_session`].
    pub(super) async fn attach_session_hello(
        &self,
        p: &NewPresence,
        max_per_mesh: u32,
    ) -> StoreResult<Attach> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        lock_mesh(&tx, &p.mesh_id).await.map_err(map_err)?;
        let by_key = format!(
            "SELECT {PRESENCE_COLS} FROM presence WHERE mesh_id = $1 AND session_pubkey = $2
             ORDER BY role = 'session' DESC LIMIT 1"
        );
        let found = tx
            .query_opt(&by_key, &[&p.mesh_id, &p.session_pubkey])
            .await
            .map_err(map_err)?;
        if let Some(row) = found {
            let x = presence_from(&row);
            if x.member_id != p.member_id || x.role != PeerRole::Session {
                return Ok(Attach::Foreign);
            }
            return take_over(tx, x, |x| x.reattach_session(p))
                .await
                .map_err(map_err);
        }
        let old: Option<(Uuid, bool)> = tx
            .query_opt(
                "SELECT id, state = 'online' FROM presence WHERE mesh_id = $1 AND member_id = $2
                   AND role = 'session' AND session_id = $3",
                &[&p.mesh_id, &p.member_id, &p.session_id],
            )
            .await
            .map_err(map_err)?
            .map(|r| (r.get(0), r.get(1)));
        let live = count(&tx, &p.mesh_id).await.map_err(map_err)?
            - i64::from(old.is_some_and(|(_, online)| online));
        let old = old.map(|(id, _)| id);
        if live >= i64::from(max_per_mesh) {
            return Ok(Attach::Capacity);
        }
        let ended = match old {
            Some(id) => end_in(&tx, &[id]).await.map_err(map_err)?,
            None => Vec::new(),
        };
        let x = Presence::from_new(p);
        insert_presence(&tx, &x).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(match ended.into_iter().next() {
            Some(o) => Attach::Superseded {
                presence: x,
                old: PresenceRef {
                    id: o.id,
                    node_id: o.node_id,
                    conn_id: o.conn_id,
                },
            },
            None => Attach::Created(x),
        })
    }
}
