//! Embedded, numbered migrations applied under one advisory transaction
//! lock, so any number of replicas may start (and migrate) at once.

use tokio_postgres::Client;

/// Arbitrary, fixed key for `pg_advisory_xact_lock`: every node and the
/// `migrate` command must agree on it, and nothing else may use it.
const MIGRATION_LOCK_KEY: i64 = 0x636d_6264_6d69_6772; // "cmbdmigr"

/// (version, name, SQL) in order. Add new files here; never edit old ones.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../../migrations/0001_init.sql"),
    ),
    (
        2,
        "0002_bucket_taken",
        include_str!("../../../migrations/0002_bucket_taken.sql"),
    ),
    (
        3,
        "0003_delivery_index_diet",
        include_str!("../../../migrations/0003_delivery_index_diet.sql"),
    ),
    (
        4,
        "0004_presence_states",
        include_str!("../../../migrations/0004_presence_states.sql"),
    ),
    (
        5,
        "0005_presence_role",
        include_str!("../../../migrations/0005_presence_role.sql"),
    ),
    (
        6,
        "0006_at_least_once",
        include_str!("../../../migrations/0006_at_least_once.sql"),
    ),
    (
        7,
        "0007_hello_signatures",
        include_str!("../../../migrations/0007_hello_signatures.sql"),
    ),
    (
        8,
        "0008_message_echo",
        include_str!("../../../migrations/0008_message_echo.sql"),
    ),
    (
        9,
        "0009_client_message_index",
        include_str!("../../../migrations/0009_client_message_index.sql"),
    ),
    (
        10,
        "0010_send_records",
        include_str!("../../../migrations/0010_send_records.sql"),
    ),
    (
        11,
        "0011_presence_activity",
        include_str!("../../../migrations/0011_presence_activity.sql"),
    ),
    (
        12,
        "0012_mesh_state",
        include_str!("../../../migrations/0012_mesh_state.sql"),
    ),
    (
        13,
        "0013_bus_payload",
        include_str!("../../../migrations/0013_bus_payload.sql"),
    ),
    (
        14,
        "0014_tasks",
        include_str!("../../../migrations/0014_tasks.sql"),
    ),
    (
        15,
        "0015_memory",
        include_str!("../../../migrations/0015_memory.sql"),
    ),
    (
        16,
        "0016_contexts",
        include_str!("../../../migrations/0016_contexts.sql"),
    ),
    (
        17,
        "0017_skills",
        include_str!("../../../migrations/0017_skills.sql"),
    ),
    (
        18,
        "0018_vault",
        include_str!("../../../migrations/0018_vault.sql"),
    ),
    (
        19,
        "0019_vectors",
        include_str!("../../../migrations/0019_vectors.sql"),
    ),
    (
        20,
        "0020_webhooks",
        include_str!("../../../migrations/0020_webhooks.sql"),
    ),
    (
        21,
        "0021_schedules",
        include_str!("../../../migrations/0021_schedules.sql"),
    ),
    (
        22,
        "0022_streams",
        include_str!("../../../migrations/0022_streams.sql"),
    ),
    (
        23,
        "0023_mesh_clock",
        include_str!("../../../migrations/0023_mesh_clock.sql"),
    ),
    (
        24,
        "0024_mcp_servers",
        include_str!("../../../migrations/0024_mcp_servers.sql"),
    ),
    (
        25,
        "0025_files",
        include_str!("../../../migrations/0025_files.sql"),
    ),
];

/// Applies every pending migration in one transaction. Returns the
/// versions this call applied (empty when the schema was current).
pub async fn run(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// The versions this build knows that the database has not applied
/// (every one on a database never migrated). Reads only.
pub async fn pending(client: &Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let done: Vec<i32> = if exists {
        client
            .query("SELECT version FROM schema_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .map(|(v, _, _)| *v)
        .filter(|v| !done.contains(v))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_match_file_names() {
        let mut last = 0;
        for (version, name, sql) in MIGRATIONS {
            assert!(*version > last);
            last = *version;
            assert!(name.starts_with(&format!("{version:04}_")));
            assert!(!sql.trim().is_empty());
        }
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .count();
        assert_eq!(
            files,
            MIGRATIONS.len(),
            "every migrations/ file is embedded"
        );
    }
}
