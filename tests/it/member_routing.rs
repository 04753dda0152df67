//! A send to a member pubkey goes to a presence of the member in
//! at-least-once mode when one can take it now, control-plane before
//! session; only when none can does it go to a presence outside the mode
//! (PROTOCOL-SESSIONS.md §5).

use std::time::Duration;

use serde_json::json;

use claudemesh_broker::protocol::crypto::KeyPair;

use crate::both_stores;
use crate::harness::{world, Backend, Peer};
use crate::messaging::{expect_push, send};

/// Sets `p`'s status and waits until it is recorded (frames of one socket
/// are handled in order).
async fn set_status(p: &mut Peer, status: &str) {
    p.send(json!({"type": "set_status", "status": status}))
        .await;
    let list = p
        .request(json!({"type": "list_peers", "_reqId": "sync"}))
        .await;
    assert_eq!(list["type"], "peers_list", "{list}");
}

async fn quiet(p: &mut Peer) -> bool {
    p.quiet_for(Duration::from_millis(300)).await
}

async fn member_sends_prefer_presences_that_ack(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    // Oldest first: a plain socket that never acks, a 1.37 session, the
    // daemon's member socket in the mode.
    let (mut plain, _) = Peer::join(&url, &w.bob, "cli").await;
    let (mut session, _) = Peer::join_session(&url, &w.bob, &KeyPair::generate(), "s1").await;
    let (mut daemon, _) = Peer::join_with(
        &url,
        &w.bob,
        "daemon",
        json!({"capabilities": ["client_ack"]}),
    )
    .await;
    let bob = w.bob.keys.public_hex.clone();

    let ack = send(&mut a, "m1", &bob, "next", "MQ==").await;
    let p = expect_push(&mut daemon).await;
    assert_eq!(
        p["messageId"], ack["messageId"],
        "control-plane in the mode first"
    );
    daemon
        .send(json!({"type": "client_ack", "brokerMessageId": ack["messageId"]}))
        .await;
    assert!(quiet(&mut plain).await && quiet(&mut session).await);

    // The daemon socket is busy: `next` cannot reach it now, the session can.
    set_status(&mut daemon, "working").await;
    let ack = send(&mut a, "m2", &bob, "next", "Mg==").await;
    let p = expect_push(&mut session).await;
    assert_eq!(
        p["messageId"], ack["messageId"],
        "then a session in the mode"
    );
    session
        .send(json!({"type": "client_ack", "brokerMessageId": ack["messageId"]}))
        .await;
    assert!(quiet(&mut plain).await && quiet(&mut daemon).await);

    // `now` passes any status: back to the daemon socket.
    let ack = send(&mut a, "m3", &bob, "now", "Mw==").await;
    assert_eq!(
        expect_push(&mut daemon).await["messageId"],
        ack["messageId"]
    );
    daemon
        .send(json!({"type": "client_ack", "brokerMessageId": ack["messageId"]}))
        .await;
    assert!(quiet(&mut plain).await && quiet(&mut session).await);

    // No presence in the mode can take `next` now: the plain socket gets it.
    set_status(&mut session, "working").await;
    let ack = send(&mut a, "m4", &bob, "next", "NA==").await;
    assert_eq!(expect_push(&mut plain).await["messageId"], ack["messageId"]);
    assert!(quiet(&mut session).await && quiet(&mut daemon).await);

    // Nobody can take it now: it waits, and goes to the first that can.
    set_status(&mut plain, "working").await;
    let ack = send(&mut a, "m5", &bob, "next", "NQ==").await;
    assert!(quiet(&mut plain).await && quiet(&mut session).await && quiet(&mut daemon).await);
    session
        .send(json!({"type": "set_status", "status": "idle"}))
        .await;
    assert_eq!(
        expect_push(&mut session).await["messageId"],
        ack["messageId"]
    );
}

both_stores!(member_sends_prefer_presences_that_ack);

/// The sender's node holds a plain socket of the member that could take
/// the message at once; the daemon socket in the mode is on another node
/// and still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_sends_cross_nodes_to_the_presence_that_acks() {
    let c = crate::cluster::cluster(2, |_| {}).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut plain, _) = Peer::join(&c.nodes[0].ws_url(), &c.bob, "cli").await;
    let (mut daemon, _) = Peer::join_with(
        &c.nodes[1].ws_url(),
        &c.bob,
        "daemon",
        json!({"capabilities": ["client_ack"]}),
    )
    .await;
    let bob = c.bob.keys.public_hex.clone();
    for i in 0..5 {
        let ack = send(&mut a, &format!("x{i}"), &bob, "now", "eA==").await;
        assert_eq!(
            expect_push(&mut daemon).await["messageId"],
            ack["messageId"]
        );
        daemon
            .send(json!({"type": "client_ack", "brokerMessageId": ack["messageId"]}))
            .await;
    }
    assert!(quiet(&mut plain).await);
}
