//! Messages, delivery rows, claims and rate buckets in Postgres. Claims
//! use `FOR UPDATE SKIP LOCKED`, so any node may claim for its own
//! sessions at any time without blocking another.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::records::*;
use super::{map_err, PgStore};
use crate::protocol::target::Priority;
use crate::store::*;
use async_trait::async_trait;

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

/// The version of a mesh's routing view: its live and in-grace presences'
/// ids and row versions (`xmin` changes with every update of the row).
/// Aggregates `presence` rows of one mesh.
pub(super) const ROUTES_TOKEN: &str =
    "md5(coalesce(string_agg(id::text || ':' || xmin::text, ',' ORDER BY id), ''))";

static SEND_BATCH_SQL: LazyLock<String> =
    LazyLock::new(|| SEND_BATCH.replace("ROUTES_TOKEN", ROUTES_TOKEN));

/// A whole group commit. `fresh` first checks that the presences of every
/// mesh routed from a cached read are still the ones read (their ids and
/// row versions); if not, nothing is written and one row says so. `b` refills each bucket and takes up to `n`
/// tokens (rows locked in key order: no deadlock between nodes; a new
/// bucket starts full); `ok` keeps the sends within what their bucket
/// gave; `k` remembers their send keys, and only the sends without one or
/// whose key went in (`w`: not a repeat of an earlier or a racing send,
/// whose insert this one waits for) store messages and their delivery
/// rows (row order kept with
/// ORDINALITY, so delivery ids follow send order). The foreign key from
/// delivery to message is checked at the end of the statement, when both
/// inserts are visible.
const SEND_BATCH: &str = "
WITH fresh AS MATERIALIZED (
  SELECT coalesce(bool_and(v.token = x.t), true) AS ok
  FROM unnest($29::text[], $30::text[]) AS x(m, t)
  CROSS JOIN LATERAL (SELECT ROUTES_TOKEN AS token FROM presence
                      WHERE mesh_id = x.m) v
),
t AS MATERIALIZED (
  SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::int4[])
    AS t(m, k, bu, rps, n)
  WHERE (SELECT ok FROM fresh)
),
b AS (
  INSERT INTO rate_bucket AS b (mesh_id, key, tokens, updated_at, taken)
  SELECT m, k, bu - LEAST(n, floor(bu)), $6, LEAST(n, floor(bu))::int4 FROM t ORDER BY m, k
  ON CONFLICT (mesh_id, key) DO UPDATE SET (tokens, updated_at, taken) = (
    SELECT r - LEAST(x.n, floor(r)), $6, LEAST(x.n, floor(r))::int4
    FROM (SELECT t.n, LEAST(t.bu, b.tokens
            + GREATEST(0, EXTRACT(EPOCH FROM ($6 - b.updated_at))::float8) * t.rps) AS r
          FROM t WHERE t.m = b.mesh_id AND t.k = b.key) x)
  RETURNING mesh_id, key, taken
),
ok AS (
  SELECT s.* FROM unnest($7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[],
                         $12::text[], $13::text[], $14::text[], $15::text[],
                         $16::timestamptz[], $17::timestamptz[], $18::text[], $19::int4[],
                         $31::text[], $32::text[], $33::text[], $34::text[])
    WITH ORDINALITY AS s(id, me, se, sk, ss, ts, pr, no, ct, ca, ea, bk, rk, sn, cm, rf, rt, ord)
  JOIN b ON b.mesh_id = s.me AND b.key = s.bk
  WHERE s.rk <= b.taken
),
k AS (
  INSERT INTO send_key (mesh_id, sender_member_id, client_message_id, message_id)
  SELECT me, se, cm, id FROM ok WHERE cm IS NOT NULL ORDER BY ord
  ON CONFLICT DO NOTHING
  RETURNING message_id
),
w AS MATERIALIZED (
  SELECT * FROM ok WHERE cm IS NULL OR id IN (SELECT message_id FROM k)
),
m AS (
  INSERT INTO message (id, mesh_id, sender_member_id, sender_member_pubkey, sender_session_pubkey,
                       target_spec, priority, nonce, ciphertext, created_at, expires_at,
                       sender_name, client_message_id, request_fingerprint, reply_to_id)
  SELECT id, me, se, sk, ss, ts, pr, no, ct, ca, ea, sn, cm, rf, rt FROM w
),
d AS (
  INSERT INTO delivery (message_id, mesh_id, recipient_member_id, recipient_session,
                        exclude_session, priority, claimed_by, claimed_session, claim_until)
  SELECT mi, dm, r, s, e, p, cb, cs, cu
  FROM unnest($20::uuid[], $21::text[], $22::text[], $23::uuid[], $24::uuid[], $25::text[],
              $26::uuid[], $27::uuid[], $28::timestamptz[])
       WITH ORDINALITY AS x(mi, dm, r, s, e, p, cb, cs, cu, n)
  WHERE mi IN (SELECT id FROM w)
  ORDER BY n
  RETURNING id, message_id, claimed_session
)
SELECT mesh_id, key, taken, NULL::int8, NULL::uuid, NULL::uuid FROM b
UNION ALL
SELECT NULL, NULL, NULL, id, message_id, claimed_session FROM d WHERE claimed_session IS NOT NULL
UNION ALL
SELECT NULL, NULL, NULL, -2, id, NULL FROM ok WHERE id NOT IN (SELECT id FROM w)
UNION ALL
SELECT NULL, NULL, NULL, -1, NULL, NULL FROM fresh WHERE NOT ok";

/// The notices of a send batch, each sent only if one of its messages
/// was stored. `synchronous_commit` off: a notification is not durable
/// anyway, and waiting for the flush would delay every listener.
const NOTIFY_AFTER: &str = "
SELECT pg_notify(n.c, n.p)
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS cfg,
     unnest($1::text[], $2::text[], $3::int4[], $4::int4[]) AS n(c, p, lo, hi)
WHERE EXISTS (SELECT 1 FROM message m WHERE m.id = ANY(($5::uuid[])[n.lo:n.hi]))";

/// Flattens notices for `NOTIFY_AFTER`: notice `i`'s messages are
/// `messages[lo[i]..=hi[i]]` (1-based, as Postgres slices arrays), so each
/// check is one primary-key probe per message.
fn notice_params(notices: &[Notice]) -> NoticeParams<'_> {
    let mut p = NoticeParams::default();
    for n in notices {
        p.channels.push(n.channel.as_str());
        p.payloads.push(n.payload.as_str());
        p.lo.push(p.messages.len() as i32 + 1);
        p.messages.extend(&n.messages);
        p.hi.push(p.messages.len() as i32);
    }
    p
}

#[derive(Default)]
struct NoticeParams<'a> {
    channels: Vec<&'a str>,
    payloads: Vec<&'a str>,
    lo: Vec<i32>,
    hi: Vec<i32>,
    messages: Vec<Uuid>,
}

/// Oldest-first claims for one or many sessions in one statement: each
/// request's rows picked by a LATERAL subquery (its own limit, time and lease,
/// SKIP LOCKED), a row wanted by two sessions of one member given to one of
/// them. `next` and `low` only while the session's recorded status is idle
/// (read live, so a hook on another node gates immediately). Session rows
/// and member rows come from two ordered index scans (a UNION of locked
/// subqueries, since `FOR UPDATE` cannot sit on a UNION itself): no sort,
/// no bitmap scan, and index scans mark the entries of completed rows dead
/// as they pass, so churn between vacuums does not slow claims down.
const CLAIM_MANY: &str = "
WITH req AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[],
                       $6::int8[], $7::uuid[], $8::timestamptz[])
    AS r(p, mesh, member, reclaim, now, lim, node, lease)),
picked AS (
  SELECT DISTINCT ON (x.id) r.p, r.node, r.lease, x.id, x.prev
  FROM req r CROSS JOIN LATERAL (
    SELECT id, prev FROM (
      SELECT * FROM (
        SELECT d.id, d.claimed_session AS prev FROM delivery d
        WHERE d.recipient_session = r.p
          AND (d.claim_until IS NULL OR d.claim_until < r.now
               OR (r.reclaim AND d.claimed_session = r.p))
          AND (d.priority = 'now' OR (SELECT status FROM presence WHERE id = r.p) = 'idle')
        ORDER BY d.id LIMIT r.lim
        FOR UPDATE SKIP LOCKED) s
      UNION ALL
      SELECT * FROM (
        SELECT d.id, d.claimed_session AS prev FROM delivery d
        WHERE d.recipient_session IS NULL AND d.mesh_id = r.mesh AND d.recipient_member_id = r.member
          AND d.exclude_session IS DISTINCT FROM r.p
          AND (d.claim_until IS NULL OR d.claim_until < r.now
               OR (r.reclaim AND d.claimed_session = r.p))
          AND (d.priority = 'now' OR (SELECT status FROM presence WHERE id = r.p) = 'idle')
        ORDER BY d.id LIMIT r.lim
        FOR UPDATE SKIP LOCKED) m
    ) u
    ORDER BY id
    LIMIT r.lim) x
  ORDER BY x.id, r.p)
UPDATE delivery d
SET claimed_by = picked.node, claimed_session = picked.p, claim_until = picked.lease
FROM picked, message m
WHERE d.id = picked.id AND m.id = d.message_id
RETURNING picked.p, d.id, m.id, m.mesh_id, m.sender_member_pubkey, m.sender_session_pubkey,
          m.priority, m.nonce, m.ciphertext, m.created_at, picked.prev IS NOT NULL,
          m.sender_member_id, m.sender_name, m.client_message_id, m.request_fingerprint,
          m.reply_to_id, m.subtype";

#[async_trait]
impl MessageStore for PgStore {
    /// One group commit in one statement (one round trip, one WAL
    /// flush): take tokens for every bucket, then store the sends the
    /// buckets let through with their delivery rows.
    async fn insert_messages(
        &self,
        batch: &[Outgoing],
        notices: &[Notice],
        checks: &[(&str, &str)],
    ) -> StoreResult<Option<Stored>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(&SEND_BATCH_SQL).await.map_err(map_err)?;
        let (check_meshes, check_tokens): (Vec<&str>, Vec<&str>) = checks.iter().copied().unzip();
        let notify = if notices.is_empty() {
            None
        } else {
            Some(c.prepare_cached(NOTIFY_AFTER).await.map_err(map_err)?)
        };
        let now = batch
            .first()
            .map(|o| o.message.created_at)
            .unwrap_or_else(Utc::now);

        // Sends per bucket, and each send's rank within its bucket: a
        // bucket that can give `taken` tokens lets its first `taken` sends
        // through, exactly as taking one token per send in order would.
        let mut keys: BTreeMap<(&str, &str), (&Bucket, i32)> = BTreeMap::new();
        let mut ranks = Vec::with_capacity(batch.len());
        for o in batch {
            let e = keys
                .entry((o.message.mesh_id.as_str(), o.bucket.key.as_str()))
                .or_insert((&o.bucket, 0));
            e.1 += 1;
            ranks.push(e.1);
        }
        let b_mesh: Vec<&str> = keys.keys().map(|k| k.0).collect();
        let b_key: Vec<&str> = keys.keys().map(|k| k.1).collect();
        let b_burst: Vec<f64> = keys.values().map(|(b, _)| f64::from(b.burst)).collect();
        let b_rate: Vec<f64> = keys
            .values()
            .map(|(b, _)| f64::from(b.rate_per_min) / 60.0)
            .collect();
        let b_n: Vec<i32> = keys.values().map(|(_, n)| *n).collect();

        let stored: Vec<(&Outgoing, i32)> = batch
            .iter()
            .zip(&ranks)
            // A send to nobody stores no rows, but its key is remembered.
            .filter(|(o, _)| !o.deliveries.is_empty() || o.message.echo.client_message_id.is_some())
            .map(|(o, r)| (o, *r))
            .collect();
        let m = |f: fn(&NewMessage) -> &str| {
            stored
                .iter()
                .map(|(o, _)| f(&o.message))
                .collect::<Vec<&str>>()
        };
        let ids: Vec<Uuid> = stored.iter().map(|(o, _)| o.message.id).collect();
        let session_keys: Vec<Option<&str>> = stored
            .iter()
            .map(|(o, _)| o.message.sender_session_pubkey.as_deref())
            .collect();
        let priorities: Vec<&str> = stored
            .iter()
            .map(|(o, _)| o.message.priority.as_str())
            .collect();
        let created: Vec<DateTime<Utc>> =
            stored.iter().map(|(o, _)| o.message.created_at).collect();
        let expires: Vec<DateTime<Utc>> =
            stored.iter().map(|(o, _)| o.message.expires_at).collect();
        let s_key: Vec<&str> = stored.iter().map(|(o, _)| o.bucket.key.as_str()).collect();
        let s_rank: Vec<i32> = stored.iter().map(|(_, r)| *r).collect();
        let (mesh_ids, senders, sender_keys, specs, nonces, ciphertexts) = (
            m(|x| &x.mesh_id),
            m(|x| &x.sender_member_id),
            m(|x| &x.sender_member_pubkey),
            m(|x| &x.target_spec),
            m(|x| &x.nonce),
            m(|x| &x.ciphertext),
        );
        let rows: Vec<(&NewMessage, &NewDelivery)> = stored
            .iter()
            .flat_map(|(o, _)| o.deliveries.iter().map(move |d| (&o.message, d)))
            .collect();
        let d_ids: Vec<Uuid> = rows.iter().map(|(m, _)| m.id).collect();
        let d_mesh: Vec<&str> = rows.iter().map(|(m, _)| m.mesh_id.as_str()).collect();
        let d_member: Vec<&str> = rows
            .iter()
            .map(|(_, d)| d.recipient_member_id.as_str())
            .collect();
        let d_session: Vec<Option<Uuid>> = rows.iter().map(|(_, d)| d.recipient_session).collect();
        let d_exclude: Vec<Option<Uuid>> = rows.iter().map(|(_, d)| d.exclude_session).collect();
        let d_prio: Vec<&str> = rows.iter().map(|(m, _)| m.priority.as_str()).collect();
        let d_claim_node: Vec<Option<Uuid>> =
            rows.iter().map(|(_, d)| d.claim.map(|c| c.node)).collect();
        let d_claim_session: Vec<Option<Uuid>> = rows
            .iter()
            .map(|(_, d)| d.claim.map(|c| c.session))
            .collect();
        let d_claim_until: Vec<Option<DateTime<Utc>>> =
            rows.iter().map(|(_, d)| d.claim.map(|c| c.until)).collect();

        let echo = |f: fn(&Echo) -> Option<&str>| {
            stored
                .iter()
                .map(|(o, _)| f(&o.message.echo))
                .collect::<Vec<Option<&str>>>()
        };
        let names: Vec<&str> = stored
            .iter()
            .map(|(o, _)| o.message.echo.sender_name.as_str())
            .collect();
        let (client_ids, fingerprints, reply_tos) = (
            echo(|e| e.client_message_id.as_deref()),
            echo(|e| e.request_fingerprint.as_deref()),
            echo(|e| e.reply_to_id.as_deref()),
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 34] = [
            &b_mesh,
            &b_key,
            &b_burst,
            &b_rate,
            &b_n,
            &now,
            &ids,
            &mesh_ids,
            &senders,
            &sender_keys,
            &session_keys,
            &specs,
            &priorities,
            &nonces,
            &ciphertexts,
            &created,
            &expires,
            &s_key,
            &s_rank,
            &d_ids,
            &d_mesh,
            &d_member,
            &d_session,
            &d_exclude,
            &d_prio,
            &d_claim_node,
            &d_claim_session,
            &d_claim_until,
            &check_meshes,
            &check_tokens,
            &names,
            &client_ids,
            &fingerprints,
            &reply_tos,
        ];
        let send = c.query(&stmt, &params);
        // Pipelined behind the send on the same connection: the backend
        // runs it the moment the batch commits, with no wake-up of a
        // second backend on the cross-node path. It is its own
        // transaction, so the send never holds the NOTIFY lock.
        let (rows, notified) = match &notify {
            None => (send.await, Ok(0)),
            Some(n) => {
                let p = notice_params(notices);
                let np: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                    [&p.channels, &p.payloads, &p.lo, &p.hi, &p.messages];
                let (rows, notified) = futures_util::join!(send, c.execute(n, &np));
                (rows, notified.map_err(map_err))
            }
        };
        let rows = rows.map_err(map_err)?;
        let mut taken: HashMap<(String, String), i32> = HashMap::new();
        let mut claimed: HashMap<(Uuid, Uuid), i64> = HashMap::new();
        let mut repeats: HashMap<Uuid, Option<Uuid>> = HashMap::new();
        for r in &rows {
            match r.get::<_, Option<i64>>(3) {
                Some(-1) => return Ok(None),
                Some(-2) => {
                    repeats.insert(r.get(4), None);
                }
                None => {
                    taken.insert((r.get(0), r.get(1)), r.get(2));
                }
                Some(id) => {
                    claimed.insert((r.get(4), r.get(5)), id);
                }
            }
        }
        if !repeats.is_empty() {
            // Read after the commit: the send that holds the key may be
            // another node's, committed while this batch waited on it.
            let again: Vec<&Outgoing> = batch
                .iter()
                .filter(|o| repeats.contains_key(&o.message.id))
                .collect();
            let keys: Vec<SendKey> = again.iter().filter_map(|o| send_key(&o.message)).collect();
            let originals = remembered(&c, &keys).await?;
            for (o, original) in again.iter().zip(originals) {
                repeats.insert(o.message.id, original);
            }
        }
        let results = batch
            .iter()
            .zip(&ranks)
            .map(|(o, rank)| {
                let key = (o.message.mesh_id.clone(), o.bucket.key.clone());
                if let Some(original) = repeats.get(&o.message.id) {
                    // `None`: gone between the commit and the read, which
                    // only a sweep past retention does.
                    return SendResult::Duplicate {
                        original: *original,
                    };
                }
                match taken.get(&key) {
                    Some(t) if rank <= t => SendResult::Queued {
                        claimed: o
                            .deliveries
                            .iter()
                            .filter_map(|d| claimed.get(&(o.message.id, d.claim?.session)).copied())
                            .collect(),
                    },
                    _ => SendResult::RateLimited,
                }
            })
            .collect();
        Ok(Some(Stored { results, notified }))
    }

    /// A send batch's routing view of a mesh: the cached one unless
    /// `fresh` (or none is cached), with the version the batch checks.
    async fn send_routes(&self, mesh_id: &str, fresh: bool) -> StoreResult<Routes> {
        if !fresh {
            if let Some(r) = self.routes.get(mesh_id) {
                return Ok(r);
            }
        }
        let (targets, token) = self.read_routes(mesh_id).await?;
        let routes = Routes {
            targets: Arc::new(targets),
            version: token.map(Arc::from),
        };
        if routes.version.is_some() {
            self.routes.insert(mesh_id.to_string(), routes.clone());
        }
        Ok(routes)
    }

    async fn claim_many(&self, reqs: &[ClaimRequest]) -> StoreResult<Vec<Vec<Claimed>>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.fast_client().await?;
        let stmt = c.prepare_cached(CLAIM_MANY).await.map_err(map_err)?;
        let presences: Vec<Uuid> = reqs.iter().map(|r| r.presence).collect();
        let meshes: Vec<&str> = reqs.iter().map(|r| r.mesh_id.as_str()).collect();
        let members: Vec<&str> = reqs.iter().map(|r| r.member_id.as_str()).collect();
        let reclaim: Vec<bool> = reqs.iter().map(|r| r.reclaim_own).collect();
        let now: Vec<DateTime<Utc>> = reqs.iter().map(|r| r.now).collect();
        let limit: Vec<i64> = reqs.iter().map(|r| r.limit as i64).collect();
        let node: Vec<Uuid> = reqs.iter().map(|r| r.node_id).collect();
        let lease: Vec<DateTime<Utc>> = reqs.iter().map(|r| r.lease_until).collect();
        let rows = c
            .query(
                &stmt,
                &[
                    &presences, &meshes, &members, &reclaim, &now, &limit, &node, &lease,
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
                    sender_member_id: r.get(11),
                    sender_member_pubkey: r.get(4),
                    sender_session_pubkey: r.get(5),
                    priority: Priority::parse(r.get(6)).unwrap_or(Priority::Next),
                    nonce: r.get(7),
                    ciphertext: r.get(8),
                    created_at: r.get(9),
                    echo: Echo {
                        sender_name: r.get(12),
                        client_message_id: r.get(13),
                        request_fingerprint: r.get(14),
                        reply_to_id: r.get(15),
                        subtype: r.get(16),
                    },
                }),
                redelivery: r.get(10),
            });
        }
        for v in &mut out {
            v.sort_unstable_by_key(|c| c.delivery_id);
        }
        Ok(out)
    }

    async fn release_rows(&self, presence: Uuid, ids: &[i64]) -> StoreResult<()> {
        let c = self.fast_client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE delivery SET claimed_by = NULL, claim_until = NULL
                 WHERE id = ANY($1) AND claimed_session = $2",
            )
            .await
            .map_err(map_err)?;
        c.execute(&stmt, &[&ids, &presence])
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn remembered_sends(&self, keys: &[SendKey<'_>]) -> StoreResult<Vec<Option<Uuid>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.fast_client().await?;
        remembered(&c, keys).await
    }

    async fn complete_many(&self, done: &[(Uuid, i64)], r: Retention) -> StoreResult<()> {
        let c = self.fast_client().await?;
        let stmt = c.prepare_cached(&COMPLETE).await.map_err(map_err)?;
        let ids: Vec<i64> = done.iter().map(|d| d.1).collect();
        let sessions: Vec<Uuid> = done.iter().map(|d| d.0).collect();
        c.execute(&stmt, &[&ids, &sessions, &r.now, &r.since])
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn ack_delivery(
        &self,
        presence: Uuid,
        message_id: Uuid,
        r: Retention,
    ) -> StoreResult<bool> {
        let c = self.fast_client().await?;
        let stmt = c.prepare_cached(&ACK).await.map_err(map_err)?;
        let row = c
            .query_one(&stmt, &[&message_id, &presence, &r.now, &r.since])
            .await
            .map_err(map_err)?;
        Ok(row.get::<_, i64>(0) == 1)
    }

    async fn ack_client_message(
        &self,
        presence: Uuid,
        mesh_id: &str,
        client_message_id: &str,
        r: Retention,
    ) -> StoreResult<bool> {
        let c = self.fast_client().await?;
        let stmt = c.prepare_cached(&ACK_CLIENT).await.map_err(map_err)?;
        let row = c
            .query_one(
                &stmt,
                &[&mesh_id, &client_message_id, &r.now, &r.since, &presence],
            )
            .await
            .map_err(map_err)?;
        Ok(row.get::<_, i64>(0) == 1)
    }

    async fn sweep_messages(&self, r: Retention) -> StoreResult<u64> {
        let mut c = self.client().await?;
        // Every row of these was delivered: the envelope has no reader left.
        // First, so that only undelivered messages count as expired.
        c.execute(
            "DELETE FROM message m WHERE NOT EXISTS
               (SELECT 1 FROM delivery d WHERE d.message_id = m.id)",
            &[],
        )
        .await
        .map_err(map_err)?;
        let tx = c.transaction().await.map_err(map_err)?;
        record_expired(&tx, r).await?;
        let expired = tx
            .execute("DELETE FROM message WHERE expires_at <= $1", &[&r.now])
            .await
            .map_err(map_err)?;
        forget_past(&tx, r).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(expired)
    }

    async fn delivery_records(
        &self,
        mesh_id: &str,
        message_id: Uuid,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let c = self.client().await?;
        records_of(&c, mesh_id, message_id).await
    }

    async fn queue_depth(&self) -> StoreResult<i64> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT count(*) FROM delivery", &[])
            .await
            .map_err(map_err)?;
        Ok(row.get(0))
    }
}
