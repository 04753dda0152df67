//! The MCP registry and relay lookups in Postgres. An entry's host
//! reference is cleared by the presence row's deletion (`ON DELETE SET
//! NULL`), whichever path ends it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

/// The columns of an entry, as `entry` reads them.
macro_rules! cols {
    () => {
        "m.mesh_id, m.name, m.description, m.tools, m.host_member, m.host_presence, \
         m.hosted_by, m.persistent, m.offline_since, m.created_at"
    };
}

/// Entries with their host's liveness; `$1` is the mesh. A non-persistent
/// entry whose host ended is gone already, though not yet swept.
macro_rules! listed {
    () => {
        concat!(
            "SELECT ",
            cols!(),
            ", CASE WHEN p.state = 'online' THEN p.node_id END, ",
            "CASE WHEN p.state = 'grace' THEN p.last_seen_at END ",
            "FROM mcp_server m LEFT JOIN presence p ON p.id = m.host_presence ",
            "WHERE m.mesh_id = $1 AND (m.persistent OR m.host_presence IS NOT NULL)"
        )
    };
}

const LIST: &str = concat!(listed!(), " ORDER BY m.name");
const ONE: &str = concat!(listed!(), " AND m.name = $2");
const UNREGISTER: &str = concat!(
    "DELETE FROM mcp_server m WHERE m.mesh_id = $1 AND m.name = $2 ",
    "AND (m.host_member = $3 OR $4) RETURNING ",
    cols!()
);

const UPSERT: &str = "
INSERT INTO mcp_server (mesh_id, name, description, tools, host_member, host_presence,
                        hosted_by, persistent, offline_since, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9)
ON CONFLICT (mesh_id, name) DO UPDATE SET
    description = EXCLUDED.description, tools = EXCLUDED.tools,
    host_member = EXCLUDED.host_member, host_presence = EXCLUDED.host_presence,
    hosted_by = EXCLUDED.hosted_by, persistent = EXCLUDED.persistent, offline_since = NULL";

const SWEEP_GONE: &str = concat!(
    "DELETE FROM mcp_server m WHERE m.host_presence IS NULL AND NOT m.persistent RETURNING ",
    cols!()
);

const SWEEP_OFFLINE: &str = "
UPDATE mcp_server m
SET offline_since = COALESCE((SELECT p.last_seen_at FROM presence p WHERE p.id = m.host_presence), $1)
WHERE m.persistent AND m.offline_since IS NULL
  AND NOT EXISTS (SELECT 1 FROM presence p WHERE p.id = m.host_presence AND p.state = 'online')";

const REHOST: &str = concat!(
    "UPDATE mcp_server m SET host_presence = $3, hosted_by = $4, offline_since = NULL ",
    "WHERE m.mesh_id = $1 AND m.host_member = $2 AND m.persistent ",
    "AND (m.offline_since IS NOT NULL OR m.host_presence IS DISTINCT FROM $3) ",
    "AND NOT EXISTS (SELECT 1 FROM presence p WHERE p.id = m.host_presence ",
    "AND p.state = 'online' AND p.id <> $3) ",
    "AND EXISTS (SELECT 1 FROM presence p WHERE p.id = $3) RETURNING ",
    cols!()
);

const TARGET: &str = "
SELECT id, node_id FROM presence
WHERE mesh_id = $1 AND state = 'online' AND (session_pubkey = $2 OR member_pubkey = $2)
ORDER BY (session_pubkey IS NOT DISTINCT FROM $2) DESC, (role = 'session') DESC, connected_at DESC
LIMIT 1";

const LIVE: &str = "
SELECT p.id FROM presence p JOIN broker_node n ON n.id = p.node_id
WHERE p.id = ANY($1) AND p.state = 'online'
  AND n.heartbeat_at > now() - make_interval(secs => $2)";

fn entry(r: &tokio_postgres::Row) -> McpEntry {
    McpEntry {
        mesh_id: r.get(0),
        name: r.get(1),
        description: r.get(2),
        tools: r.get(3),
        host_member: r.get(4),
        host_presence: r.get(5),
        hosted_by: r.get(6),
        persistent: r.get(7),
        offline_since: r.get(8),
        created_at: r.get(9),
    }
}

fn listed(r: &tokio_postgres::Row) -> McpListed {
    McpListed {
        entry: entry(r),
        host_node: r.get(10),
        host_left_at: r.get(11),
    }
}

#[async_trait]
impl RelayStore for PgStore {
    async fn register_mcp(
        &self,
        e: &McpEntry,
        privileged: bool,
        max: usize,
    ) -> StoreResult<McpRegistered> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // Serialises registrations of one mesh, so the cap holds.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('mcp:' || $1, 0))",
            &[&e.mesh_id],
        )
        .await
        .map_err(map_err)?;
        // Keeps the host row from ending under the insert (its reference
        // would fail) and tells whether it still can host.
        let host = tx
            .query_opt(
                "SELECT 1 FROM presence WHERE id = $1 AND state = 'online' FOR SHARE",
                &[&e.host_presence],
            )
            .await
            .map_err(map_err)?;
        if host.is_none() {
            return Ok(McpRegistered::Ended);
        }
        let found = tx
            .query_opt(ONE, &[&e.mesh_id, &e.name])
            .await
            .map_err(map_err)?;
        match found.map(|r| listed(&r)) {
            Some(f) if f.entry.host_member != e.host_member && !privileged => {
                return Ok(McpRegistered::Taken)
            }
            Some(_) => {}
            None => {
                let n: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM mcp_server
                         WHERE mesh_id = $1 AND (persistent OR host_presence IS NOT NULL)",
                        &[&e.mesh_id],
                    )
                    .await
                    .map_err(map_err)?
                    .get(0);
                if n as usize >= max {
                    return Ok(McpRegistered::Full);
                }
            }
        }
        tx.execute(
            UPSERT,
            &[
                &e.mesh_id,
                &e.name,
                &e.description,
                &e.tools,
                &e.host_member,
                &e.host_presence,
                &e.hosted_by,
                &e.persistent,
                &e.created_at,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(McpRegistered::Registered)
    }

    async fn unregister_mcp(
        &self,
        mesh_id: &str,
        name: &str,
        member: &str,
        privileged: bool,
    ) -> StoreResult<Option<McpEntry>> {
        let c = self.client().await?;
        let r = c
            .query_opt(UNREGISTER, &[&mesh_id, &name, &member, &privileged])
            .await
            .map_err(map_err)?;
        Ok(r.map(|r| entry(&r)))
    }

    async fn list_mcp(&self, mesh_id: &str) -> StoreResult<Vec<McpListed>> {
        let c = self.client().await?;
        let rows = c.query(LIST, &[&mesh_id]).await.map_err(map_err)?;
        Ok(rows.iter().map(listed).collect())
    }

    async fn mcp_server(&self, mesh_id: &str, name: &str) -> StoreResult<Option<McpListed>> {
        let c = self.client().await?;
        let r = c
            .query_opt(ONE, &[&mesh_id, &name])
            .await
            .map_err(map_err)?;
        Ok(r.map(|r| listed(&r)))
    }

    async fn sweep_mcp(&self, now: DateTime<Utc>) -> StoreResult<Vec<McpEntry>> {
        let c = self.client().await?;
        let gone = c.query(SWEEP_GONE, &[]).await.map_err(map_err)?;
        c.execute(SWEEP_OFFLINE, &[&now]).await.map_err(map_err)?;
        Ok(gone.iter().map(entry).collect())
    }

    async fn rehost_mcp(
        &self,
        mesh_id: &str,
        member: &str,
        presence: Uuid,
        hosted_by: &str,
    ) -> StoreResult<Vec<McpEntry>> {
        let c = self.client().await?;
        let rows = c
            .query(REHOST, &[&mesh_id, &member, &presence, &hosted_by])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn relay_target(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<RelayHost>> {
        let c = self.client().await?;
        let r = c
            .query_opt(TARGET, &[&mesh_id, &pubkey])
            .await
            .map_err(map_err)?;
        Ok(r.map(|r| RelayHost {
            presence: r.get(0),
            node: r.get(1),
        }))
    }

    async fn live_hosts(
        &self,
        presences: &[Uuid],
        fresh: std::time::Duration,
    ) -> StoreResult<Vec<Uuid>> {
        if presences.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let rows = c
            .query(LIVE, &[&presences, &fresh.as_secs_f64()])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
