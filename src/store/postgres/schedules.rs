//! Scheduled messages in Postgres. A fire is one transaction: lock the due
//! rows no other node holds (`FOR UPDATE SKIP LOCKED`), store each
//! planned message with its deliveries, then advance or delete the rows.
//! The lease is the server's `idle_in_transaction_session_timeout`: a
//! node that stalls mid-fire loses its transaction (and its locks) to the
//! server, never a fire it did not commit.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::presence::read_routes_on;
use super::{map_err, PgStore};
use crate::store::*;

const LIST: &str = "
SELECT id, mesh_id, member_id, member_pubkey, member_name, to_spec, to_member_id,
       message, subtype, cron, next_at, created_at, fired_count
FROM schedule WHERE mesh_id = $1 AND member_id = $2 ORDER BY next_at, id";

fn schedule(r: &tokio_postgres::Row) -> Schedule {
    Schedule {
        id: r.get(0),
        mesh_id: r.get(1),
        member_id: r.get(2),
        member_pubkey: r.get(3),
        member_name: r.get(4),
        to: r.get(5),
        to_member_id: r.get(6),
        message: r.get(7),
        subtype: r.get(8),
        cron: r.get(9),
        next_at: r.get(10),
        created_at: r.get(11),
        fired_count: r.get(12),
    }
}

/// Counted under a transaction-scoped advisory lock per member, so two
/// nodes creating at once cannot both pass the cap.
const CREATE: &str = "
INSERT INTO schedule (id, mesh_id, member_id, member_pubkey, member_name, to_spec, to_member_id,
                      message, subtype, cron, next_at, created_at, fired_count)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13
WHERE (SELECT count(*) FROM schedule WHERE mesh_id = $2 AND member_id = $3) < $14";

const DUE: &str = "
SELECT id, mesh_id, member_id, member_pubkey, member_name, to_spec, to_member_id,
       message, subtype, cron, next_at, created_at, fired_count
FROM schedule WHERE next_at <= $1
ORDER BY next_at, id LIMIT $2
FOR UPDATE SKIP LOCKED";

/// The fired messages and their rows in one statement; the foreign key
/// from delivery to message is checked at its end, when both are in.
const STORE_FIRED: &str = "
WITH m AS (
  INSERT INTO message (id, mesh_id, sender_member_id, sender_member_pubkey, sender_session_pubkey,
                       target_spec, priority, nonce, ciphertext, created_at, expires_at,
                       sender_name, subtype)
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::text[], $10::timestamptz[],
                       $11::timestamptz[], $12::text[], $13::text[])
),
d AS (
  INSERT INTO delivery (message_id, mesh_id, recipient_member_id, recipient_session,
                        exclude_session, priority)
  SELECT * FROM unnest($14::uuid[], $15::text[], $16::text[], $17::uuid[], $18::uuid[],
                       $19::text[])
  RETURNING 1
)
SELECT count(*) FROM d";

const ADVANCE: &str = "
UPDATE schedule s SET next_at = x.n, fired_count = s.fired_count + 1
FROM unnest($1::uuid[], $2::timestamptz[]) AS x(id, n)
WHERE s.id = x.id";

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(&self, s: &Schedule, max_per_member: usize) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('schedule:' || $1 || ':' || $2, 0))",
            &[&s.mesh_id, &s.member_id],
        )
        .await
        .map_err(map_err)?;
        let n = tx
            .execute(
                CREATE,
                &[
                    &s.id,
                    &s.mesh_id,
                    &s.member_id,
                    &s.member_pubkey,
                    &s.member_name,
                    &s.to,
                    &s.to_member_id,
                    &s.message,
                    &s.subtype,
                    &s.cron,
                    &s.next_at,
                    &s.created_at,
                    &s.fired_count,
                    &(max_per_member as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn list_schedules(&self, mesh_id: &str, member_id: &str) -> StoreResult<Vec<Schedule>> {
        let c = self.client().await?;
        let rows = c
            .query(LIST, &[&mesh_id, &member_id])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(schedule).collect())
    }

    async fn cancel_schedule(
        &self,
        mesh_id: &str,
        id: Uuid,
        member: Option<&str>,
    ) -> StoreResult<bool> {
        let c = self.client().await?;
        // Waits for a fire holding the row; a one-shot it fired is gone.
        let n = c
            .execute(
                "DELETE FROM schedule WHERE id = $1 AND mesh_id = $2
                   AND ($3::text IS NULL OR member_id = $3)",
                &[&id, &mesh_id, &member],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn next_schedule_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT min(next_at) FROM schedule", &[])
            .await
            .map_err(map_err)?;
        Ok(row.get(0))
    }

    async fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: std::time::Duration,
        plan: FirePlanner<'_>,
    ) -> StoreResult<Vec<Fired>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let lease_ms = format!("{}ms", lease.as_millis().max(1));
        tx.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
            &[&lease_ms],
        )
        .await
        .map_err(map_err)?;
        let rows = tx
            .query(DUE, &[&now, &(limit as i64)])
            .await
            .map_err(map_err)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let due: Vec<Schedule> = rows.iter().map(schedule).collect();
        let mut routes: HashMap<&str, Arc<Vec<RouteTarget>>> = HashMap::new();
        for s in &due {
            if !routes.contains_key(s.mesh_id.as_str()) {
                let (targets, _) = read_routes_on(&tx, &s.mesh_id).await?;
                routes.insert(&s.mesh_id, Arc::new(targets));
            }
        }
        let fired: Vec<Fired> = due
            .iter()
            .map(|s| {
                let targets = routes[s.mesh_id.as_str()].clone();
                Fired {
                    schedule: s.clone(),
                    fire: plan(s, &targets),
                    targets,
                }
            })
            .collect();

        let mut msg = FiredColumns::default();
        for (m, deliveries) in fired
            .iter()
            .filter_map(|f| f.fire.send.as_ref())
            .filter(|(_, d)| !d.is_empty())
        {
            msg.push(m, deliveries);
        }
        if !msg.id.is_empty() {
            tx.query_one(
                STORE_FIRED,
                &[
                    &msg.id,
                    &msg.mesh,
                    &msg.sender,
                    &msg.sender_key,
                    &msg.session_key,
                    &msg.target,
                    &msg.priority,
                    &msg.nonce,
                    &msg.ciphertext,
                    &msg.created,
                    &msg.expires,
                    &msg.name,
                    &msg.subtype,
                    &msg.d_message,
                    &msg.d_mesh,
                    &msg.d_member,
                    &msg.d_session,
                    &msg.d_exclude,
                    &msg.d_priority,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        let (advance, gone): (Vec<&Fired>, Vec<&Fired>) =
            fired.iter().partition(|f| f.fire.next_at.is_some());
        if !gone.is_empty() {
            let ids: Vec<Uuid> = gone.iter().map(|f| f.schedule.id).collect();
            tx.execute("DELETE FROM schedule WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(map_err)?;
        }
        if !advance.is_empty() {
            let ids: Vec<Uuid> = advance.iter().map(|f| f.schedule.id).collect();
            let next: Vec<DateTime<Utc>> = advance.iter().filter_map(|f| f.fire.next_at).collect();
            tx.execute(ADVANCE, &[&ids, &next]).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(fired)
    }
}

/// The columns of `STORE_FIRED`, one entry per message or per row.
#[derive(Default)]
struct FiredColumns<'a> {
    id: Vec<Uuid>,
    mesh: Vec<&'a str>,
    sender: Vec<&'a str>,
    sender_key: Vec<&'a str>,
    session_key: Vec<Option<&'a str>>,
    target: Vec<&'a str>,
    priority: Vec<&'static str>,
    nonce: Vec<&'a str>,
    ciphertext: Vec<&'a str>,
    created: Vec<DateTime<Utc>>,
    expires: Vec<DateTime<Utc>>,
    name: Vec<&'a str>,
    subtype: Vec<Option<&'a str>>,
    d_message: Vec<Uuid>,
    d_mesh: Vec<&'a str>,
    d_member: Vec<&'a str>,
    d_session: Vec<Option<Uuid>>,
    d_exclude: Vec<Option<Uuid>>,
    d_priority: Vec<&'static str>,
}

impl<'a> FiredColumns<'a> {
    fn push(&mut self, m: &'a NewMessage, deliveries: &'a [NewDelivery]) {
        self.id.push(m.id);
        self.mesh.push(&m.mesh_id);
        self.sender.push(&m.sender_member_id);
        self.sender_key.push(&m.sender_member_pubkey);
        self.session_key.push(m.sender_session_pubkey.as_deref());
        self.target.push(&m.target_spec);
        self.priority.push(m.priority.as_str());
        self.nonce.push(&m.nonce);
        self.ciphertext.push(&m.ciphertext);
        self.created.push(m.created_at);
        self.expires.push(m.expires_at);
        self.name.push(&m.echo.sender_name);
        self.subtype.push(m.echo.subtype.as_deref());
        for d in deliveries {
            self.d_message.push(m.id);
            self.d_mesh.push(&m.mesh_id);
            self.d_member.push(&d.recipient_member_id);
            self.d_session.push(d.recipient_session);
            self.d_exclude.push(d.exclude_session);
            self.d_priority.push(m.priority.as_str());
        }
    }
}
