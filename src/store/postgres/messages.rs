//! Messages, delivery rows, claims and rate buckets in Postgres. Claims
//! use `FOR UPDATE SKIP LOCKED`, so any node may claim for its own
//! sessions at any time without blocking another.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::protocol::target::Priority;
use crate::store::{
    Bucket, ClaimRequest, Claimed, NewDelivery, NewMessage, SendResult, StoreResult, StoredMessage,
};

/// Refill-then-take in one statement: no row comes back when the bucket
/// holds less than one token, and then nothing is written.
pub(super) const TAKE_TOKEN: &str = "
INSERT INTO rate_bucket AS b (mesh_id, key, tokens, updated_at)
VALUES ($1, $2, $3::float8 - 1, $4)
ON CONFLICT (mesh_id, key) DO UPDATE SET
  tokens = LEAST($3::float8, b.tokens
      + GREATEST(0, EXTRACT(EPOCH FROM ($4 - b.updated_at))::float8) * $5::float8) - 1,
  updated_at = $4
WHERE LEAST($3::float8, b.tokens
      + GREATEST(0, EXTRACT(EPOCH FROM ($4 - b.updated_at))::float8) * $5::float8) >= 1
RETURNING tokens";

const INSERT_MESSAGE: &str = "
INSERT INTO message (id, mesh_id, sender_member_id, sender_member_pubkey, sender_session_pubkey,
                     target_spec, priority, nonce, ciphertext, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

const INSERT_DELIVERIES: &str = "
INSERT INTO delivery (message_id, mesh_id, recipient_member_id, recipient_session,
                      exclude_session, priority)
SELECT $1, $2, r, s, e, $3
FROM UNNEST($4::text[], $5::uuid[], $6::uuid[]) WITH ORDINALITY AS t(r, s, e, n)
ORDER BY n";

/// Oldest-first claim of this session's rows and its member's; `next` and
/// `low` only while the session's recorded status is idle (read live, so
/// a hook on another node gates immediately).
const CLAIM: &str = "
UPDATE delivery d
SET claimed_by = $4, claimed_session = $1, claim_until = $6
FROM (
  SELECT id FROM delivery
  WHERE (recipient_session = $1
         OR (recipient_session IS NULL AND mesh_id = $2 AND recipient_member_id = $3
             AND exclude_session IS DISTINCT FROM $1))
    AND (claim_until IS NULL OR claim_until < $5)
    AND (priority = 'now'
         OR (SELECT status FROM presence WHERE id = $1) = 'idle')
  ORDER BY id
  LIMIT $7
  FOR UPDATE SKIP LOCKED
) c, message m
WHERE d.id = c.id AND m.id = d.message_id
RETURNING d.id, m.id, m.mesh_id, m.sender_member_pubkey, m.sender_session_pubkey,
          m.priority, m.nonce, m.ciphertext, m.created_at";

impl PgStore {
    pub(super) async fn insert_message_tx(
        &self,
        m: &NewMessage,
        deliveries: &[NewDelivery],
        bucket: &Bucket,
    ) -> StoreResult<SendResult> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let take = tx.prepare_cached(TAKE_TOKEN).await.map_err(map_err)?;
        let burst = f64::from(bucket.burst);
        let per_sec = f64::from(bucket.rate_per_min) / 60.0;
        let took = tx
            .query_opt(
                &take,
                &[&m.mesh_id, &bucket.key, &burst, &m.created_at, &per_sec],
            )
            .await
            .map_err(map_err)?;
        if took.is_none() {
            return Ok(SendResult::RateLimited);
        }
        if !deliveries.is_empty() {
            let ins = tx.prepare_cached(INSERT_MESSAGE).await.map_err(map_err)?;
            tx.execute(
                &ins,
                &[
                    &m.id,
                    &m.mesh_id,
                    &m.sender_member_id,
                    &m.sender_member_pubkey,
                    &m.sender_session_pubkey,
                    &m.target_spec,
                    &m.priority.as_str(),
                    &m.nonce,
                    &m.ciphertext,
                    &m.created_at,
                    &m.expires_at,
                ],
            )
            .await
            .map_err(map_err)?;
            let members: Vec<&str> = deliveries
                .iter()
                .map(|d| d.recipient_member_id.as_str())
                .collect();
            let sessions: Vec<Option<Uuid>> =
                deliveries.iter().map(|d| d.recipient_session).collect();
            let excludes: Vec<Option<Uuid>> =
                deliveries.iter().map(|d| d.exclude_session).collect();
            let ins = tx
                .prepare_cached(INSERT_DELIVERIES)
                .await
                .map_err(map_err)?;
            tx.execute(
                &ins,
                &[
                    &m.id,
                    &m.mesh_id,
                    &m.priority.as_str(),
                    &members,
                    &sessions,
                    &excludes,
                ],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(SendResult::Queued)
    }

    pub(super) async fn claim(&self, req: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(CLAIM).await.map_err(map_err)?;
        let limit = req.limit as i64;
        let rows = c
            .query(
                &stmt,
                &[
                    &req.presence,
                    &req.mesh_id,
                    &req.member_id,
                    &req.node_id,
                    &req.now,
                    &req.lease_until,
                    &limit,
                ],
            )
            .await
            .map_err(map_err)?;
        let mut out: Vec<Claimed> = rows
            .iter()
            .map(|r| Claimed {
                delivery_id: r.get(0),
                message: Arc::new(StoredMessage {
                    id: r.get(1),
                    mesh_id: r.get(2),
                    sender_member_pubkey: r.get(3),
                    sender_session_pubkey: r.get(4),
                    priority: Priority::parse(r.get(5)).unwrap_or(Priority::Next),
                    nonce: r.get(6),
                    ciphertext: r.get(7),
                    created_at: r.get(8),
                }),
            })
            .collect();
        // RETURNING has no order of its own.
        out.sort_unstable_by_key(|c| c.delivery_id);
        Ok(out)
    }

    pub(super) async fn complete(&self, presence: Uuid, ids: &[i64]) -> StoreResult<()> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("DELETE FROM delivery WHERE id = ANY($1) AND claimed_session = $2")
            .await
            .map_err(map_err)?;
        c.execute(&stmt, &[&ids, &presence])
            .await
            .map_err(map_err)?;
        Ok(())
    }

    pub(super) async fn ack(&self, presence: Uuid, message_id: Uuid) -> StoreResult<bool> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "DELETE FROM delivery WHERE id = (
                   SELECT id FROM delivery WHERE message_id = $1 AND claimed_session = $2 LIMIT 1)",
            )
            .await
            .map_err(map_err)?;
        Ok(c.execute(&stmt, &[&message_id, &presence])
            .await
            .map_err(map_err)?
            == 1)
    }

    pub(super) async fn sweep(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let c = self.client().await?;
        let expired = c
            .execute("DELETE FROM message WHERE expires_at <= $1", &[&now])
            .await
            .map_err(map_err)?;
        // Every row of these was delivered: the envelope has no reader left.
        let done = c
            .execute(
                "DELETE FROM message m WHERE NOT EXISTS
                   (SELECT 1 FROM delivery d WHERE d.message_id = m.id)",
                &[],
            )
            .await
            .map_err(map_err)?;
        Ok(expired + done)
    }

    pub(super) async fn depth(&self) -> StoreResult<i64> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT count(*) FROM delivery", &[])
            .await
            .map_err(map_err)?;
        Ok(row.get(0))
    }
}
