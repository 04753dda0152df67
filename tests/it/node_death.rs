//! A node killed with SIGKILL: another node declares it dead after the
//! lease, its sessions wait in grace, re-attach elsewhere and get their
//! unacked messages again (invariant 1). Real processes: crash is the point.

use std::time::Duration;

use serde_json::json;

use crate::harness::{BrokerProcess, Peer, TestDb};
use crate::messaging::{expect_push, send};

const TOKEN: &str = "node-death-admin-token";

async fn start(db: &TestDb) -> BrokerProcess {
    start_with(db, "90").await
}

async fn start_with(db: &TestDb, grace: &str) -> BrokerProcess {
    let mut p = BrokerProcess::spawn(
        &["serve"],
        &[
            ("BROKER_PRESENCE_GRACE_SECONDS", grace),
            ("BROKER_SEND_BURST", "1000"),
            ("DATABASE_URL", db.url.as_str()),
            ("BROKER_ADMIN_TOKEN", TOKEN),
            ("BROKER_NODE_HEARTBEAT_SECONDS", "1"),
            ("BROKER_NODE_LEASE_SECONDS", "2"),
            ("BROKER_SWEEP_INTERVAL_SECONDS", "1"),
            // Long: redelivery must come from the takeover, not the lease.
            ("BROKER_CLAIM_LEASE_SECONDS", "60"),
            ("BROKER_LOG_FORMAT", "json"),
        ],
    );
    p.wait_healthy().await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_killed_node_reattach_and_get_unacked_messages() {
    let db = TestDb::migrated().await;
    let a = start(&db).await;
    let mut b = start(&db).await;
    let (status, _) = a
        .admin(
            TOKEN,
            reqwest::Method::POST,
            "/meshes",
            Some(json!({"slug": "m"})),
        )
        .await;
    assert_eq!(status, 201);
    let alice = a.enrol(TOKEN, "alice").await;
    let bob = a.enrol(TOKEN, "bob").await;
    let ack_cap = json!({"capabilities": ["client_ack"]});
    let (mut pa, _) = Peer::join(&a.ws_url(), &alice, "a1").await;
    let (mut pb, hello_b) = Peer::join_with(&b.ws_url(), &bob, "b1", ack_cap.clone()).await;
    assert_eq!(pa.next_event().await["event"], "peer_joined");
    let ack = send(&mut pa, "m1", &bob.keys.public_hex, "now", "dW5hY2tlZA==").await;
    let first = expect_push(&mut pb).await;
    assert_eq!(first["messageId"], ack["messageId"]);

    b.sigkill();
    drop(pb);
    // Node A notices the silence and takes over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, nodes) = a.admin(TOKEN, reqwest::Method::GET, "/nodes", None).await;
        if nodes.as_array().is_some_and(|n| n.len() == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead node never reaped: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, peers) = a
        .admin(TOKEN, reqwest::Method::GET, "/meshes/m/peers", None)
        .await;
    let bob_row = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sessionId"] == "b1")
        .cloned();
    assert_eq!(bob_row.expect("bob still listed")["state"], "grace");

    let (mut pb2, hello_b2) = Peer::join_with(&a.ws_url(), &bob, "b1", ack_cap).await;
    assert_eq!(
        hello_b2["presenceId"], hello_b["presenceId"],
        "re-attached, same presence"
    );
    let again = expect_push(&mut pb2).await;
    assert_eq!(
        again["messageId"], ack["messageId"],
        "the unacked message comes again"
    );
    pb2.send(json!({"type": "client_ack", "messageId": again["messageId"]}))
        .await;
    assert!(
        pa.quiet_for(Duration::from_millis(500)).await,
        "no peer_left for a crash survivor"
    );
    assert!(pa.events.is_empty(), "{:?}", pa.events);
}

async fn wait_reaped(a: &BrokerProcess) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, nodes) = a.admin(TOKEN, reqwest::Method::GET, "/nodes", None).await;
        if nodes.as_array().is_some_and(|n| n.len() == 1) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead node never reaped: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sender streams to a client_ack recipient whose node is killed midway:
/// every acked message reaches the recipient after it re-attaches
/// elsewhere (duplicates allowed, same messageId).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_through_a_crash_loses_nothing_acked() {
    let db = TestDb::migrated().await;
    let a = start(&db).await;
    let mut b = start(&db).await;
    a.admin(
        TOKEN,
        reqwest::Method::POST,
        "/meshes",
        Some(json!({"slug": "m"})),
    )
    .await;
    let alice = a.enrol(TOKEN, "alice").await;
    let bob = a.enrol(TOKEN, "bob").await;
    let cap = json!({"capabilities": ["client_ack"]});
    let (mut pa, _) = Peer::join(&a.ws_url(), &alice, "a1").await;
    let (mut pb, _) = Peer::join_with(&b.ws_url(), &bob, "b1", cap.clone()).await;
    let mut acked = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        if i == 20 {
            b.sigkill();
        }
        let ack = send(
            &mut pa,
            &format!("s{i}"),
            &bob.keys.public_hex,
            "now",
            "c3RyZWFt",
        )
        .await;
        if ack["queued"] == true {
            acked.insert(ack["messageId"].as_str().unwrap().to_string());
        }
        if i < 20 {
            // Read but never ack: these must come again after the crash.
            let p = expect_push(&mut pb).await;
            seen.insert(p["messageId"].as_str().unwrap().to_string());
        }
    }
    drop(pb);
    assert_eq!(
        acked.len(),
        40,
        "the recipient is in grace, not gone: sends are stored"
    );
    wait_reaped(&a).await;
    let (mut pb2, _) = Peer::join_with(&a.ws_url(), &bob, "b1", cap).await;
    let mut after = std::collections::BTreeSet::new();
    while !acked.is_subset(&after) {
        let p = expect_push(&mut pb2).await;
        let id = p["messageId"].as_str().unwrap().to_string();
        pb2.send(json!({"type": "client_ack", "messageId": id}))
            .await;
        after.insert(id);
    }
    assert_eq!(seen.len(), 20);
}

/// Nobody comes back: the dead node's sessions end after lease + grace,
/// and the rest of the mesh is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_nodes_sessions_end_after_lease_and_grace() {
    let db = TestDb::migrated().await;
    let a = start_with(&db, "2").await;
    let mut b = start_with(&db, "2").await;
    a.admin(
        TOKEN,
        reqwest::Method::POST,
        "/meshes",
        Some(json!({"slug": "m"})),
    )
    .await;
    let alice = a.enrol(TOKEN, "alice").await;
    let bob = a.enrol(TOKEN, "bob").await;
    let (mut pa, _) = Peer::join(&a.ws_url(), &alice, "a1").await;
    let (_pb, _) = Peer::join(&b.ws_url(), &bob, "b1").await;
    assert_eq!(pa.next_event().await["event"], "peer_joined");
    let killed = tokio::time::Instant::now();
    b.sigkill();
    let deadline = Duration::from_secs(12);
    let e = loop {
        assert!(killed.elapsed() < deadline, "no peer_left");
        if !pa.quiet_for(Duration::from_millis(200)).await || !pa.events.is_empty() {
            break pa.next_event().await;
        }
    };
    assert_eq!(e["event"], "peer_left");
    assert_eq!(e["eventData"]["name"], "bob");
    // Lease 2 s + grace 2 s, swept each second.
    assert!(
        killed.elapsed() >= Duration::from_secs(3),
        "too early: {:?}",
        killed.elapsed()
    );
    let (_, peers) = a
        .admin(TOKEN, reqwest::Method::GET, "/meshes/m/peers", None)
        .await;
    assert_eq!(peers.as_array().unwrap().len(), 1);
}
