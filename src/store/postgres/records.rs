//! What outlives a send's envelope in Postgres (PROTOCOL-SESSIONS.md §6,
//! §13 item 15): the remembered send keys and the per-delivery records,
//! written by the completions and swept past `delivered_retention_seconds`.

use std::sync::LazyLock;

use uuid::Uuid;

use super::map_err;
use crate::store::*;

/// What a completed delivery row hands to [`RECORD`].
const DONE_COLS: &str = "d.message_id, d.recipient_member_id, d.claimed_session";

/// Records completed rows (`d`, from a DELETE … RETURNING [`DONE_COLS`])
/// as delivered at `$3` to the presence that held them, for sends made
/// after `$4` (NULL: none). The message row is still there: only the
/// sweeper deletes it, after its last row.
const RECORD: &str = "
INSERT INTO delivery_record (message_id, mesh_id, sender_member_id, target_spec, client_message_id,
                             created_at, recipient_member_id, recipient_name, recipient_pubkey,
                             delivered_at)
SELECT m.id, m.mesh_id, m.sender_member_id, m.target_spec, m.client_message_id, m.created_at,
       d.recipient_member_id, coalesce(p.display_name, ''),
       coalesce(p.session_pubkey, p.member_pubkey, ''), $3
FROM d JOIN message m ON m.id = d.message_id LEFT JOIN presence p ON p.id = d.claimed_session
WHERE m.created_at > $4";

/// Completion: (row, presence) pairs; a row another session holds stays.
pub(super) static COMPLETE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH d AS (
           DELETE FROM delivery d USING unnest($1::bigint[], $2::uuid[]) AS c(id, p)
           WHERE d.id = c.id AND d.claimed_session = c.p
           RETURNING {DONE_COLS}) {RECORD}"
    )
});

/// `client_ack` by message id ($1) for presence $2; one row if any.
pub(super) static ACK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH d AS (
           DELETE FROM delivery d WHERE d.id = (
             SELECT id FROM delivery WHERE message_id = $1 AND claimed_session = $2 LIMIT 1)
           RETURNING {DONE_COLS}),
         r AS ({RECORD})
         SELECT count(*) FROM d"
    )
});

/// `client_ack` by client id ($2, in mesh $1) for presence $5.
pub(super) static ACK_CLIENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH d AS (
           DELETE FROM delivery d WHERE d.id = (
             SELECT x.id FROM message m JOIN delivery x ON x.message_id = m.id
             WHERE m.mesh_id = $1 AND m.client_message_id = $2 AND x.claimed_session = $5
             LIMIT 1)
           RETURNING {DONE_COLS}),
         r AS ({RECORD})
         SELECT count(*) FROM d"
    )
});

/// The messages of remembered sends, by key.
const REMEMBERED: &str = "
SELECT x.n, k.message_id
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(m, s, c, n)
JOIN send_key k ON k.mesh_id = x.m AND k.sender_member_id = x.s AND k.client_message_id = x.c";

/// The messages remembered for `keys`, one answer per key.
pub(super) async fn remembered(
    c: &deadpool_postgres::Object,
    keys: &[SendKey<'_>],
) -> StoreResult<Vec<Option<Uuid>>> {
    let stmt = c.prepare_cached(REMEMBERED).await.map_err(map_err)?;
    let meshes: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let members: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let cms: Vec<&str> = keys.iter().map(|k| k.2).collect();
    let rows = c
        .query(&stmt, &[&meshes, &members, &cms])
        .await
        .map_err(map_err)?;
    let mut out = vec![None; keys.len()];
    for r in rows {
        let n: i64 = r.get(0);
        out[n as usize - 1] = Some(r.get(1));
    }
    Ok(out)
}

/// Records the rows of expiring messages whose sends `r` still keeps as
/// undelivered. Runs in the sweep's transaction, before the delete.
pub(super) async fn record_expired(
    tx: &deadpool_postgres::Transaction<'_>,
    r: Retention,
) -> StoreResult<()> {
    // Expired rows of sends still remembered say so in their record:
    // nobody took them. The member's own name and key for a row no
    // session holds.
    tx.execute(
        "INSERT INTO delivery_record (message_id, mesh_id, sender_member_id, target_spec,
                                      client_message_id, created_at, recipient_member_id,
                                      recipient_name, recipient_pubkey, delivered_at)
         SELECT m.id, m.mesh_id, m.sender_member_id, m.target_spec, m.client_message_id,
                m.created_at, d.recipient_member_id,
                coalesce(p.display_name, mb.display_name, ''),
                coalesce(p.session_pubkey, p.member_pubkey, mb.peer_pubkey, ''), NULL
         FROM message m JOIN delivery d ON d.message_id = m.id
         LEFT JOIN presence p ON p.id = coalesce(d.recipient_session, d.claimed_session)
         LEFT JOIN member mb ON mb.id = d.recipient_member_id
         WHERE m.expires_at <= $1 AND m.created_at > $2",
        &[&r.now, &r.since],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Drops the keys and records of sends `r` no longer keeps.
pub(super) async fn forget_past(
    tx: &deadpool_postgres::Transaction<'_>,
    r: Retention,
) -> StoreResult<()> {
    let cutoff = r.cutoff_id();
    tx.execute("DELETE FROM send_key WHERE message_id < $1", &[&cutoff])
        .await
        .map_err(map_err)?;
    tx.execute(
        "DELETE FROM delivery_record WHERE message_id < $1",
        &[&cutoff],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

/// The records of `message_id` in `mesh_id`, delivered ones first.
pub(super) async fn records_of(
    c: &deadpool_postgres::Object,
    mesh_id: &str,
    message_id: Uuid,
) -> StoreResult<Vec<DeliveryRecord>> {
    let rows = c
        .query(
            "SELECT message_id, mesh_id, sender_member_id, target_spec, client_message_id,
                    created_at, recipient_member_id, recipient_name, recipient_pubkey,
                    delivered_at
             FROM delivery_record WHERE message_id = $1 AND mesh_id = $2
             ORDER BY delivered_at NULLS LAST, recipient_member_id",
            &[&message_id, &mesh_id],
        )
        .await
        .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| DeliveryRecord {
            message_id: r.get(0),
            mesh_id: r.get(1),
            sender_member_id: r.get(2),
            target_spec: r.get(3),
            client_message_id: r.get(4),
            created_at: r.get(5),
            recipient_member_id: r.get(6),
            recipient_name: r.get(7),
            recipient_pubkey: r.get(8),
            delivered_at: r.get(9),
        })
        .collect())
}
