//! A node killed with SIGKILL: another node declares it dead after the
//! lease, its sessions wait in grace, re-attach elsewhere and get their
//! unacked messages again (invariant 1). Real processes: crash is the point.

use std::time::Duration;

use claudemesh_broker::protocol::crypto::KeyPair;
use serde_json::json;

use crate::harness::{BrokerProcess, Member, Peer, TestDb};
use crate::messaging::{expect_push, send};

const TOKEN: &str = "node-death-admin-token";

async fn start(db: &TestDb) -> BrokerProcess {
    let mut p = BrokerProcess::spawn(
        &["serve"],
        &[
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

async fn enrol(node: &BrokerProcess, name: &str) -> Member {
    let keys = KeyPair::generate();
    let (status, m) = node
        .admin(
            TOKEN,
            reqwest::Method::POST,
            "/meshes/m/members",
            Some(json!({"pubkey": keys.public_hex, "displayName": name})),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    Member {
        id: m["id"].as_str().unwrap().into(),
        mesh_id: m["meshId"].as_str().unwrap().into(),
        keys,
    }
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
    let alice = enrol(&a, "alice").await;
    let bob = enrol(&a, "bob").await;
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
