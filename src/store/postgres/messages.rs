//! Messages, delivery rows, claims and rate buckets in Postgres. Claims
//! use `FOR UPDATE SKIP LOCKED`, so any node may claim for its own
//! sessions at any time without blocking another.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::protocol::target::Priority;
use crate::store::bucket::take_token;
use crate::store::{
    Bucket, ClaimRequest, Claimed, NewDelivery, NewMessage, Outgoing, SendResult, StoreResult,
    StoredMessage,
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

/// Locks (creating full where missing) every bucket named, in key order.
const LOCK_BUCKETS: &str = "
INSERT INTO rate_bucket AS b (mesh_id, key, tokens, updated_at)
SELECT m, k, bu, $3 FROM unnest($1::text[], $2::text[], $4::float8[]) AS t(m, k, bu)
ORDER BY m, k
ON CONFLICT (mesh_id, key) DO UPDATE SET tokens = b.tokens
RETURNING mesh_id, key, tokens, updated_at";

const UPDATE_BUCKETS: &str = "
UPDATE rate_bucket b SET tokens = t.tok, updated_at = $3
FROM unnest($1::text[], $2::text[], $4::float8[]) AS t(m, k, tok)
WHERE b.mesh_id = t.m AND b.key = t.k";

const INSERT_MESSAGES: &str = "
INSERT INTO message (id, mesh_id, sender_member_id, sender_member_pubkey, sender_session_pubkey,
                     target_spec, priority, nonce, ciphertext, created_at, expires_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[])";

/// Row order is kept (ORDINALITY), so delivery ids follow send order.
const INSERT_DELIVERIES: &str = "
INSERT INTO delivery (message_id, mesh_id, recipient_member_id, recipient_session,
                      exclude_session, priority)
SELECT mi, me, r, s, e, p
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::text[])
     WITH ORDINALITY AS t(mi, me, r, s, e, p, n)
ORDER BY n";

/// Oldest-first claim of this session's rows and its member's; `next` and
/// `low` only while the session's recorded status is idle (read live, so
/// a hook on another node gates immediately).
const CLAIM: &str = "
WITH done AS (DELETE FROM delivery WHERE id = ANY($8) AND claimed_session = $1)
UPDATE delivery d
SET claimed_by = $4, claimed_session = $1, claim_until = $6
FROM (
  SELECT id, claimed_session AS prev FROM delivery
  WHERE (recipient_session = $1
         OR (recipient_session IS NULL AND mesh_id = $2 AND recipient_member_id = $3
             AND exclude_session IS DISTINCT FROM $1))
    AND (claim_until IS NULL OR claim_until < $5
         OR ($9 AND claimed_session = $1 AND NOT (id = ANY($8))))
    AND (priority = 'now'
         OR (SELECT status FROM presence WHERE id = $1) = 'idle')
  ORDER BY id
  LIMIT $7
  FOR UPDATE SKIP LOCKED
) c, message m
WHERE d.id = c.id AND m.id = d.message_id
RETURNING d.id, m.id, m.mesh_id, m.sender_member_pubkey, m.sender_session_pubkey,
          m.priority, m.nonce, m.ciphertext, m.created_at, c.prev IS NOT NULL";

/// `CLAIM` for many sessions in one statement: each request's rows picked
/// by a LATERAL subquery (oldest first, its own limit, SKIP LOCKED), a row
/// wanted by two sessions of one member given to one of them.
const CLAIM_MANY: &str = "
WITH done AS (
  DELETE FROM delivery d USING unnest($1::bigint[], $2::uuid[]) AS c(id, p)
  WHERE d.id = c.id AND d.claimed_session = c.p),
req AS (
  SELECT * FROM unnest($3::uuid[], $4::text[], $5::text[], $6::bool[]) AS r(p, mesh, member, reclaim)),
picked AS (
  SELECT DISTINCT ON (x.id) r.p, x.id, x.prev
  FROM req r CROSS JOIN LATERAL (
    SELECT d.id, d.claimed_session AS prev FROM delivery d
    WHERE (d.recipient_session = r.p
           OR (d.recipient_session IS NULL AND d.mesh_id = r.mesh AND d.recipient_member_id = r.member
               AND d.exclude_session IS DISTINCT FROM r.p))
      AND (d.claim_until IS NULL OR d.claim_until < $7
           OR (r.reclaim AND d.claimed_session = r.p AND NOT (d.id = ANY($1))))
      AND (d.priority = 'now' OR (SELECT status FROM presence WHERE id = r.p) = 'idle')
    ORDER BY d.id
    LIMIT $8
    FOR UPDATE SKIP LOCKED) x
  ORDER BY x.id, r.p)
UPDATE delivery d
SET claimed_by = $9, claimed_session = picked.p, claim_until = $10
FROM picked, message m
WHERE d.id = picked.id AND m.id = d.message_id
RETURNING picked.p, d.id, m.id, m.mesh_id, m.sender_member_pubkey, m.sender_session_pubkey,
          m.priority, m.nonce, m.ciphertext, m.created_at, picked.prev IS NOT NULL";

impl PgStore {
    pub(super) async fn claim_batch(
        &self,
        reqs: &[ClaimRequest],
    ) -> StoreResult<Vec<Vec<Claimed>>> {
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        let c = self.fast_client().await?;
        let stmt = c.prepare_cached(CLAIM_MANY).await.map_err(map_err)?;
        let (done_ids, done_by): (Vec<i64>, Vec<Uuid>) = reqs
            .iter()
            .flat_map(|r| r.complete.iter().map(move |id| (*id, r.presence)))
            .unzip();
        let presences: Vec<Uuid> = reqs.iter().map(|r| r.presence).collect();
        let meshes: Vec<&str> = reqs.iter().map(|r| r.mesh_id.as_str()).collect();
        let members: Vec<&str> = reqs.iter().map(|r| r.member_id.as_str()).collect();
        let reclaim: Vec<bool> = reqs.iter().map(|r| r.reclaim_own).collect();
        let limit = first.limit as i64;
        let rows = c
            .query(
                &stmt,
                &[
                    &done_ids,
                    &done_by,
                    &presences,
                    &meshes,
                    &members,
                    &reclaim,
                    &first.now,
                    &limit,
                    &first.node_id,
                    &first.lease_until,
                ],
            )
            .await
            .map_err(map_err)?;
        let mut out: Vec<Vec<Claimed>> = vec![Vec::new(); reqs.len()];
        let index: std::collections::HashMap<Uuid, usize> =
            presences.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        for r in &rows {
            let p: Uuid = r.get(0);
            let Some(&i) = index.get(&p) else { continue };
            out[i].push(Claimed {
                delivery_id: r.get(1),
                message: Arc::new(StoredMessage {
                    id: r.get(2),
                    mesh_id: r.get(3),
                    sender_member_pubkey: r.get(4),
                    sender_session_pubkey: r.get(5),
                    priority: Priority::parse(r.get(6)).unwrap_or(Priority::Next),
                    nonce: r.get(7),
                    ciphertext: r.get(8),
                    created_at: r.get(9),
                }),
                redelivery: r.get(10),
            });
        }
        for v in &mut out {
            v.sort_unstable_by_key(|c| c.delivery_id);
        }
        Ok(out)
    }

    pub(super) async fn insert_batch(&self, batch: &[Outgoing]) -> StoreResult<Vec<SendResult>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let now = batch
            .first()
            .map(|o| o.message.created_at)
            .unwrap_or_else(Utc::now);

        // Lock every bucket of the batch in one statement, in key order
        // (no deadlock between nodes), creating missing ones full.
        let mut keys: BTreeMap<(&str, &str), &Bucket> = BTreeMap::new();
        for o in batch {
            keys.insert(
                (o.message.mesh_id.as_str(), o.bucket.key.as_str()),
                &o.bucket,
            );
        }
        let meshes: Vec<&str> = keys.keys().map(|k| k.0).collect();
        let names: Vec<&str> = keys.keys().map(|k| k.1).collect();
        let bursts: Vec<f64> = keys.values().map(|b| f64::from(b.burst)).collect();
        let lock = tx.prepare_cached(LOCK_BUCKETS).await.map_err(map_err)?;
        let rows = tx
            .query(&lock, &[&meshes, &names, &now, &bursts])
            .await
            .map_err(map_err)?;
        let mut state: HashMap<(String, String), (f64, DateTime<Utc>)> = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect();

        let mut verdicts = Vec::with_capacity(batch.len());
        for o in batch {
            let key = (o.message.mesh_id.clone(), o.bucket.key.clone());
            let (tokens, updated) = state
                .get(&key)
                .copied()
                .unwrap_or((f64::from(o.bucket.burst), now));
            match take_token(tokens, updated, now, o.bucket.rate_per_min, o.bucket.burst) {
                Some(left) => {
                    state.insert(key, (left, now));
                    verdicts.push(SendResult::Queued);
                }
                None => verdicts.push(SendResult::RateLimited),
            }
        }
        let (bm, bk, bt): (Vec<&str>, Vec<&str>, Vec<f64>) = keys
            .keys()
            .filter_map(|(m, k)| {
                let (t, at) = state.get(&(m.to_string(), k.to_string()))?;
                (*at == now).then_some((*m, *k, *t))
            })
            .fold((vec![], vec![], vec![]), |mut acc, (m, k, t)| {
                acc.0.push(m);
                acc.1.push(k);
                acc.2.push(t);
                acc
            });
        if !bm.is_empty() {
            let upd = tx.prepare_cached(UPDATE_BUCKETS).await.map_err(map_err)?;
            tx.execute(&upd, &[&bm, &bk, &now, &bt])
                .await
                .map_err(map_err)?;
        }

        let stored: Vec<&Outgoing> = batch
            .iter()
            .zip(&verdicts)
            .filter(|(o, v)| **v == SendResult::Queued && !o.deliveries.is_empty())
            .map(|(o, _)| o)
            .collect();
        if !stored.is_empty() {
            let m = |f: fn(&NewMessage) -> &str| {
                stored.iter().map(|o| f(&o.message)).collect::<Vec<&str>>()
            };
            let ids: Vec<Uuid> = stored.iter().map(|o| o.message.id).collect();
            let session_keys: Vec<Option<&str>> = stored
                .iter()
                .map(|o| o.message.sender_session_pubkey.as_deref())
                .collect();
            let priorities: Vec<&str> =
                stored.iter().map(|o| o.message.priority.as_str()).collect();
            let created: Vec<DateTime<Utc>> = stored.iter().map(|o| o.message.created_at).collect();
            let expires: Vec<DateTime<Utc>> = stored.iter().map(|o| o.message.expires_at).collect();
            let ins = tx.prepare_cached(INSERT_MESSAGES).await.map_err(map_err)?;
            tx.execute(
                &ins,
                &[
                    &ids,
                    &m(|x| &x.mesh_id),
                    &m(|x| &x.sender_member_id),
                    &m(|x| &x.sender_member_pubkey),
                    &session_keys,
                    &m(|x| &x.target_spec),
                    &priorities,
                    &m(|x| &x.nonce),
                    &m(|x| &x.ciphertext),
                    &created,
                    &expires,
                ],
            )
            .await
            .map_err(map_err)?;
            let rows: Vec<(&NewMessage, &NewDelivery)> = stored
                .iter()
                .flat_map(|o| o.deliveries.iter().map(move |d| (&o.message, d)))
                .collect();
            let d_ids: Vec<Uuid> = rows.iter().map(|(m, _)| m.id).collect();
            let d_mesh: Vec<&str> = rows.iter().map(|(m, _)| m.mesh_id.as_str()).collect();
            let d_member: Vec<&str> = rows
                .iter()
                .map(|(_, d)| d.recipient_member_id.as_str())
                .collect();
            let d_session: Vec<Option<Uuid>> =
                rows.iter().map(|(_, d)| d.recipient_session).collect();
            let d_exclude: Vec<Option<Uuid>> =
                rows.iter().map(|(_, d)| d.exclude_session).collect();
            let d_prio: Vec<&str> = rows.iter().map(|(m, _)| m.priority.as_str()).collect();
            let ins = tx
                .prepare_cached(INSERT_DELIVERIES)
                .await
                .map_err(map_err)?;
            tx.execute(
                &ins,
                &[&d_ids, &d_mesh, &d_member, &d_session, &d_exclude, &d_prio],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(verdicts)
    }

    pub(super) async fn claim(&self, req: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let c = self.fast_client().await?;
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
                    &req.complete,
                    &req.reclaim_own,
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
                redelivery: r.get(9),
            })
            .collect();
        // RETURNING has no order of its own.
        out.sort_unstable_by_key(|c| c.delivery_id);
        Ok(out)
    }

    pub(super) async fn complete(&self, presence: Uuid, ids: &[i64]) -> StoreResult<()> {
        let c = self.fast_client().await?;
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
        let c = self.fast_client().await?;
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
