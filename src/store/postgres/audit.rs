//! Audit chains in Postgres. An append locks each touched mesh's
//! `audit_tail` row (in mesh order, so concurrent appenders cannot
//! deadlock), chains the entries in Rust and writes them in the same
//! transaction: one unbroken chain per mesh, whatever node appends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use super::{map_err, PgStore};
use crate::audit::{entry_hash, hash_time, Checkpoint, Entry, GENESIS};
use crate::store::*;
use async_trait::async_trait;

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, entries: &[NewAuditEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut by_mesh: BTreeMap<&str, Vec<&NewAuditEntry>> = BTreeMap::new();
        for e in entries {
            by_mesh.entry(&e.mesh_id).or_default().push(e);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let tail_stmt = tx
            .prepare_cached(
                "INSERT INTO audit_tail AS t (mesh_id, seq, hash)
                 SELECT $1, COALESCE(c.seq, 0), COALESCE(c.hash, $2)
                 FROM (SELECT 1) one LEFT JOIN audit_checkpoint c ON c.mesh_id = $1
                 ON CONFLICT (mesh_id) DO UPDATE SET seq = t.seq
                 RETURNING seq, hash",
            )
            .await
            .map_err(map_err)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO audit_log (mesh_id, seq, event_type, actor_member_id, actor_name,
                                        payload, prev_hash, hash, created_at)
                 SELECT $1, s, e, a, n, p, ph, h, t
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                             $7::text[], $8::text[], $9::timestamptz[])
                      AS x(s, e, a, n, p, ph, h, t)",
            )
            .await
            .map_err(map_err)?;
        for (mesh, list) in by_mesh {
            // The upsert takes the row lock: later appenders of this mesh
            // wait here until we commit.
            let row = tx
                .query_one(&tail_stmt, &[&mesh, &GENESIS])
                .await
                .map_err(map_err)?;
            let (mut seq, mut prev): (i64, String) = (row.get(0), row.get(1));
            let mut seqs = Vec::with_capacity(list.len());
            let mut types = Vec::with_capacity(list.len());
            let mut actors = Vec::with_capacity(list.len());
            let mut names = Vec::with_capacity(list.len());
            let mut payloads = Vec::with_capacity(list.len());
            let mut prevs = Vec::with_capacity(list.len());
            let mut hashes = Vec::with_capacity(list.len());
            let mut times = Vec::with_capacity(list.len());
            for e in list {
                seq += 1;
                let t = hash_time(e.created_at);
                let hash = entry_hash(
                    mesh,
                    seq,
                    e.event_type,
                    e.actor_member_id.as_deref(),
                    e.actor_name.as_deref(),
                    &e.payload,
                    &prev,
                    t,
                );
                seqs.push(seq);
                types.push(e.event_type);
                actors.push(e.actor_member_id.as_deref());
                names.push(e.actor_name.as_deref());
                payloads.push(Json(&e.payload));
                prevs.push(std::mem::replace(&mut prev, hash.clone()));
                hashes.push(hash);
                times.push(t);
            }
            tx.execute(
                &insert,
                &[
                    &mesh, &seqs, &types, &actors, &names, &payloads, &prevs, &hashes, &times,
                ],
            )
            .await
            .map_err(map_err)?;
            tx.execute(
                "UPDATE audit_tail SET seq = $2, hash = $3 WHERE mesh_id = $1",
                &[&mesh, &seq, &prev],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn audit_chain(&self, mesh_id: &str) -> StoreResult<(Option<Checkpoint>, Vec<Entry>)> {
        let c = self.client().await?;
        let cp = c
            .query_opt(
                "SELECT seq, hash FROM audit_checkpoint WHERE mesh_id = $1",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?
            .map(|r| Checkpoint {
                seq: r.get(0),
                hash: r.get(1),
            });
        let rows = c
            .query(
                "SELECT seq, event_type, actor_member_id, actor_name, payload, prev_hash, hash, created_at
                 FROM audit_log WHERE mesh_id = $1 ORDER BY seq",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        let entries = rows
            .iter()
            .map(|r| Entry {
                mesh_id: mesh_id.to_string(),
                seq: r.get(0),
                event_type: r.get(1),
                actor_member_id: r.get(2),
                actor_name: r.get(3),
                payload: r.get::<_, Json<serde_json::Value>>(4).0,
                prev_hash: r.get(5),
                hash: r.get(6),
                created_at: r.get(7),
            })
            .collect();
        Ok((cp, entries))
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "INSERT INTO audit_checkpoint (mesh_id, seq, hash)
             SELECT DISTINCT ON (mesh_id) mesh_id, seq, hash FROM audit_log
             WHERE created_at < $1 ORDER BY mesh_id, seq DESC
             ON CONFLICT (mesh_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
               created_at = now()",
            &[&before],
        )
        .await
        .map_err(map_err)?;
        let n = tx
            .execute(
                "DELETE FROM audit_log a USING audit_checkpoint c
                 WHERE a.mesh_id = c.mesh_id AND a.seq <= c.seq",
                &[],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }
}
