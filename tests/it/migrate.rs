//! Migrations: concurrent migrators on one empty database, the `migrate`
//! subcommand, and several nodes migrating at start.

use std::time::Duration;

use claudemesh_broker::store::postgres::migrate::MIGRATIONS;
use claudemesh_broker::store::postgres::PgStore;

use crate::harness::{BrokerProcess, TestDb};

/// Tables the first migration must create (a sample, not the full list).
const TABLES: &[&str] = &[
    "schema_migrations",
    "mesh",
    "member",
    "invite",
    "broker_node",
    "presence",
    "audit_log",
];

/// A one-shot command (`migrate`, a refused `serve`) exits within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

fn all_versions() -> Vec<i32> {
    MIGRATIONS.iter().map(|(v, _, _)| *v).collect()
}

async fn applied_versions(db: &TestDb) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations exists")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn assert_tables_exist(db: &TestDb) {
    let c = db.client().await;
    for table in TABLES {
        let row = c
            .query_one(
                "SELECT to_regclass($1)::text",
                &[&format!("public.{table}")],
            )
            .await
            .unwrap();
        let found: Option<String> = row.get(0);
        assert!(found.is_some(), "table {table} was not created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrators_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::migrate(&url).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task").expect("every migrator succeeds"));
    }
    let winners: Vec<_> = results.iter().filter(|r| !r.is_empty()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one migrator applies: {results:?}"
    );
    assert_eq!(*winners[0], all_versions());
    assert!(winners[0].contains(&1));
    assert_eq!(
        results.iter().filter(|r| r.is_empty()).count(),
        2,
        "the others apply nothing: {results:?}"
    );
    assert_eq!(applied_versions(&db).await, all_versions());
    assert_tables_exist(&db).await;

    let again = PgStore::migrate(&db.url).await.expect("re-run succeeds");
    assert!(
        again.is_empty(),
        "a current schema applies nothing: {again:?}"
    );
    assert_eq!(applied_versions(&db).await, all_versions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_subcommand_creates_the_schema() {
    let db = TestDb::empty().await;
    let mut p = BrokerProcess::spawn(&["migrate"], &[("DATABASE_URL", &db.url)]);
    let status = p.wait_exit(COMMAND_TIMEOUT).await;
    assert!(status.success(), "migrate exits 0\n{}", p.logs());
    assert_tables_exist(&db).await;
    assert_eq!(applied_versions(&db).await, all_versions());

    // A second run finds the schema current and still succeeds.
    let mut p = BrokerProcess::spawn(&["migrate"], &[("DATABASE_URL", &db.url)]);
    let status = p.wait_exit(COMMAND_TIMEOUT).await;
    assert!(status.success(), "re-running migrate exits 0\n{}", p.logs());
    assert_eq!(applied_versions(&db).await, all_versions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_subcommand_without_database_fails() {
    // No DATABASE_URL (the harness strips the runner's) and no config file.
    let mut p = BrokerProcess::spawn(&["migrate"], &[]);
    let status = p.wait_exit(COMMAND_TIMEOUT).await;
    assert!(!status.success(), "migrate without a database must fail");
    let err = p.stderr();
    assert!(
        err.contains("database_url") || err.contains("DATABASE_URL"),
        "stderr names the missing setting\n{}",
        p.logs()
    );
    assert!(
        p.stdout().trim().is_empty(),
        "errors go to stderr\n{}",
        p.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_migrate_one_empty_database_at_start() {
    let db = TestDb::empty().await;
    let mut nodes: Vec<BrokerProcess> = (0..3)
        .map(|_| {
            BrokerProcess::spawn(
                &["serve"],
                &[("DATABASE_URL", &db.url), ("BROKER_LOG_FORMAT", "json")],
            )
        })
        .collect();
    for n in &mut nodes {
        n.wait_healthy().await;
    }
    for n in &nodes {
        let ready = n.http.get(n.url("/health/ready")).send().await.unwrap();
        assert_eq!(ready.status().as_u16(), 200, "{}", n.logs());
    }
    assert_eq!(applied_versions(&db).await, all_versions());
    let c = db.client().await;
    let registered: i64 = c
        .query_one("SELECT count(*) FROM broker_node", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(registered, 3, "every node registered itself");
    let applied_logs = nodes
        .iter()
        .filter(|n| n.stderr().contains("migrations applied"))
        .count();
    assert_eq!(
        applied_logs, 1,
        "one node applied, the others found it current"
    );
    // The nodes are killed before `db` is dropped (reverse declaration order).
    drop(nodes);
}
