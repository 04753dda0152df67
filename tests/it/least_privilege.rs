//! Least privilege: the schema owner migrates (`claudemesh-broker
//! migrate`), every replica serves as a role that may only read and write
//! rows, with `migrate_on_start = false`. The grants here are the ones
//! docs/operations.md gives, word for word.

use std::time::Duration;

use serde_json::json;

use crate::harness::{BrokerProcess, Peer, TestDb};
use crate::messaging::{expect_push, send};

const TOKEN: &str = "least-privilege-admin-token";

async fn serve(url: &str, migrate_on_start: &str) -> BrokerProcess {
    BrokerProcess::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", url),
            ("BROKER_ADMIN_TOKEN", TOKEN),
            ("BROKER_MIGRATE_ON_START", migrate_on_start),
            ("BROKER_SEND_BURST", "100"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dml_only_role_serves_after_the_owner_migrates() {
    let db = TestDb::empty().await;
    let role = format!("cmb_dml_{}", uuid::Uuid::new_v4().simple());
    let owner = db.client().await;
    owner
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'dml-only-password'"
        ))
        .await
        .unwrap();
    let app_url = db.url_as(&role, "dml-only-password");

    // Not migrated yet: a non-migrating node refuses to start, saying why.
    let mut early = serve(&db.url, "false").await;
    assert!(!early.wait_exit(Duration::from_secs(15)).await.success());
    assert!(
        early.stderr().contains("claudemesh-broker migrate"),
        "{}",
        early.logs()
    );

    let mut migrate = BrokerProcess::spawn(&["migrate"], &[("DATABASE_URL", db.url.as_str())]);
    assert!(
        migrate.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        migrate.logs()
    );
    db.grant_dml(&role).await;

    // The role cannot change the schema: migrating as it fails.
    let denied = owner
        .query_one(
            "SELECT has_schema_privilege($1, 'public', 'CREATE')",
            &[&role],
        )
        .await
        .unwrap()
        .get::<_, bool>(0);
    assert!(!denied, "the role has no DDL right");

    let mut node = serve(&app_url, "false").await;
    node.wait_healthy().await;
    let (status, body) = node
        .admin(
            TOKEN,
            reqwest::Method::POST,
            "/meshes",
            Some(json!({"slug": "m", "name": "M"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (alice, bob) = (
        node.enrol(TOKEN, "alice").await,
        node.enrol(TOKEN, "bob").await,
    );
    let (mut a, _) = Peer::join(&node.ws_url(), &alice, "a").await;
    let (mut b, _) = Peer::join(&node.ws_url(), &bob, "b").await;
    let ack = send(&mut a, "x", &bob.keys.public_hex, "now", "ZG1s").await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "ZG1s");
    // State, tasks and memory write through the same grants.
    a.send(json!({"type": "set_state", "key": "k", "value": 1}))
        .await;
    let r = a
        .request(json!({"type": "get_state", "key": "k", "_reqId": "g"}))
        .await;
    assert_eq!(r["value"], 1, "{r}");
    let r = a
        .request(json!({"type": "remember", "content": "granted", "_reqId": "m"}))
        .await;
    assert_ne!(r["type"], "error", "{r}");
    let (status, v) = node
        .admin(TOKEN, reqwest::Method::GET, "/meshes/m/audit/verify", None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["valid"], true, "{v}");
    node.sigterm();
    assert!(
        node.wait_exit(Duration::from_secs(20)).await.success(),
        "{}",
        node.logs()
    );
    assert!(
        !node.logs().contains("permission denied"),
        "no statement needed more than the grants: {}",
        node.logs()
    );
    // Roles are cluster-wide: leave none behind.
    owner
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}
