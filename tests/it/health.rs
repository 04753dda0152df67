//! /health, /health/ready and /metrics.

use serde_json::Value;

use crate::both_stores;
use crate::harness::{store_for, test_settings, world, Backend, Peer, TestDb, TestNode};

async fn health_and_readiness_when_all_is_well(backend: Backend) {
    let w = world(backend).await;
    let r = reqwest::get(w.node.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["db"], "up");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["nodeId"], w.node.engine.node_id.to_string());
    let r = reqwest::get(w.node.url("/health/ready")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().contains_key("x-request-id"),
        "every answer carries an id"
    );
    let r = w
        .node
        .http
        .get(w.node.url("/health"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-request-id"],
        "trace-me-42",
        "a caller's id is kept"
    );
}

async fn metrics_count_connections_hellos_and_requests(backend: Backend) {
    let w = world(backend).await;
    let (_a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let mut bad = Peer::connect(&w.node.ws_url()).await;
    let mut h = crate::harness::client::hello_frame(&w.bob, "b1", serde_json::json!({}));
    h["signature"] = Value::String("00".repeat(64));
    bad.send(h).await;
    assert_eq!(bad.recv().await["code"], "bad_signature");
    assert_eq!(bad.expect_close().await, 1008);
    let _ = reqwest::get(w.node.url("/health")).await.unwrap();
    let r = reqwest::get(w.node.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("text"));
    let text = r.text().await.unwrap();
    for needle in [
        "broker_build_info{",
        "broker_connections 1",
        "broker_hellos_total{result=\"ok\"} 1",
        "broker_hellos_total{result=\"bad_signature\"} 1",
        "broker_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 1",
        "broker_http_requests_total{route=\"/admin/meshes/{slug}/members\",method=\"POST\",status=\"201\"} 2",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(
        !text.contains(&w.alice.keys.public_hex),
        "no pubkeys in labels"
    );
}

/// Unmatched routes answer a JSON body (the 1.37 client parses every
/// response as JSON).
async fn unmatched_routes_answer_json_404(backend: Backend) {
    let w = world(backend).await;
    for (method, path) in [
        (reqwest::Method::GET, "/nope"),
        (reqwest::Method::POST, "/upload/x"),
        (reqwest::Method::GET, "/hook"),
    ] {
        let r = w
            .node
            .http
            .request(method, w.node.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.expect("a JSON body");
        assert_eq!(body, serde_json::json!({"ok": false, "error": "not_found"}));
    }
}

both_stores!(
    unmatched_routes_answer_json_404,
    health_and_readiness_when_all_is_well,
    metrics_count_connections_hellos_and_requests,
);

/// The database disappears under a running node: liveness stays 200 with
/// `db: down`, readiness turns 503, sockets already open stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let (store, db) = store_for(Backend::Postgres).await;
    let node = TestNode::start_on(store, test_settings()).await;
    let db = db.unwrap();
    assert_eq!(
        reqwest::get(node.url("/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
    drop_database(&db).await;
    let r = reqwest::get(node.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["db"], "down");
    // Once the failure has held for the readiness hold (3 s).
    let gone = std::time::Instant::now();
    loop {
        let r = reqwest::get(node.url("/health/ready")).await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(
            gone.elapsed() < std::time::Duration::from_secs(6),
            "readiness still {}",
            r.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        gone.elapsed() >= std::time::Duration::from_millis(2_500),
        "readiness does not flip on one failed probe ({:?})",
        gone.elapsed()
    );
}

async fn drop_database(db: &TestDb) {
    let (c, conn) =
        tokio_postgres::connect(&crate::harness::db::server_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .await
        .unwrap();
}
