//! Acknowledged delivery (PROTOCOL-SESSIONS.md §5): the ways into
//! at-least-once mode, the mode kept across re-attach, every form of
//! `client_ack`, and that a `client_ack` is never answered.

use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::harness::{world_with, Backend, Peer, World};
use crate::messaging::{expect_push, send};

async fn short_leases(backend: Backend) -> World {
    world_with(backend, |s| {
        s.claim_lease_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await
}

/// Waits out a lease or two: true when nothing else is pushed.
async fn stays_quiet(p: &mut Peer) -> bool {
    p.quiet_for(Duration::from_millis(2500)).await
}

/// A plain hello is outside the mode until its first `client_ack`, which
/// leases every push written after it; an ack naming the push settles it.
async fn a_first_client_ack_turns_the_mode_on(backend: Backend) {
    let w = short_leases(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let bob = w.bob.keys.public_hex.clone();
    send(&mut a, "c1", &bob, "now", "MQ==").await;
    expect_push(&mut b).await;
    assert!(
        stays_quiet(&mut b).await,
        "written means delivered outside the mode"
    );
    // An ack that names nothing still switches the mode on.
    b.send(json!({"type": "client_ack"})).await;
    let ack = send(&mut a, "c2", &bob, "now", "Mg==").await;
    let id = ack["messageId"].as_str().unwrap().to_string();
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    assert_eq!(
        expect_push(&mut b).await["messageId"],
        id,
        "leased: redelivered"
    );
    b.send(json!({"type": "client_ack", "brokerMessageId": id, "clientMessageId": "x"}))
        .await;
    assert!(
        stays_quiet(&mut b).await || stays_quiet(&mut b).await,
        "settled"
    );
}

/// The mode lives on the presence: a re-attach in grace keeps it, even
/// from a hello that does not ask for it.
async fn the_mode_survives_a_reattach(backend: Backend) {
    let w = short_leases(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    b.send(json!({"type": "client_ack", "messageId": "nothing"}))
        .await;
    // The ack is handled before the list is answered.
    let list = b.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["type"], "peers_list");
    b.close().await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let ack = send(&mut a, "c1", &w.bob.keys.public_hex, "now", "MQ==").await;
    let id = ack["messageId"].as_str().unwrap().to_string();
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    assert_eq!(expect_push(&mut b).await["messageId"], id, "still leased");
    // `clientMessageId` carrying the push's own id settles it too (what
    // the 1.37 daemon sends for a push without a client id).
    b.send(json!({"type": "client_ack", "clientMessageId": id}))
        .await;
    assert!(
        stays_quiet(&mut b).await || stays_quiet(&mut b).await,
        "settled"
    );
}

/// No reply and no error, whatever the frame holds; the socket works on.
async fn client_ack_is_never_answered(backend: Backend) {
    let w = short_leases(backend).await;
    let (mut b, _) = Peer::join(&w.node.ws_url(), &w.bob, "b1").await;
    for frame in [
        json!({"type": "client_ack"}),
        json!({"type": "client_ack", "_reqId": "r1"}),
        json!({"type": "client_ack", "brokerMessageId": 7, "messageId": [1], "_reqId": "r2"}),
        json!({"type": "client_ack", "brokerMessageId": "not-ours", "clientMessageId": {}}),
        json!({"type": "client_ack", "messageId": uuid::Uuid::now_v7().to_string()}),
        json!({"type": "client_ack", "brokerMessageId": "a\u{0}b", "_reqId": "r3"}),
    ] {
        b.send(frame).await;
    }
    assert!(
        b.quiet_for(Duration::from_millis(500)).await,
        "nothing answered"
    );
    let list = b
        .request(json!({"type": "list_peers", "_reqId": "q"}))
        .await;
    assert_eq!(
        (list["type"].as_str(), list["_reqId"].as_str()),
        (Some("peers_list"), Some("q"))
    );
}

/// An ack from a session that never held the delivery settles nothing.
async fn only_the_pushed_presence_can_settle(backend: Backend) {
    let w = short_leases(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"capabilities": ["client_ack"]})).await;
    let (mut b2, _) = Peer::join(&url, &w.bob, "b2").await;
    let sent = send(&mut a, "c2", "*", "now", "Mg==").await;
    let id = sent["messageId"].as_str().unwrap().to_string();
    // b and b2 each get the broadcast; b2's ack cannot settle b's copy.
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    expect_push(&mut b2).await;
    b2.send(json!({"type": "client_ack", "brokerMessageId": id}))
        .await;
    assert_eq!(
        expect_push(&mut b).await["messageId"],
        id,
        "b's copy is still leased"
    );
    b.send(json!({"type": "client_ack", "brokerMessageId": id}))
        .await;
    assert!(stays_quiet(&mut b).await || stays_quiet(&mut b).await);
}

/// `clientMessageId` names the send's own `client_message_id` (the 1.37
/// daemon's usual ack).
async fn a_client_message_id_settles_its_push(backend: Backend) {
    let w = short_leases(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"capabilities": ["client_ack"]})).await;
    let mut frame = crate::messaging::send_frame("c1", &w.bob.keys.public_hex, "now", "MQ==");
    frame["client_message_id"] = json!("daemon-7");
    let ack = a.request(frame).await;
    assert_eq!(ack["queued"], true, "{ack}");
    let p = expect_push(&mut b).await;
    assert_eq!(p["client_message_id"], "daemon-7");
    b.send(
        json!({"type": "client_ack", "clientMessageId": "daemon-7", "brokerMessageId": "not-ours"}),
    )
    .await;
    assert!(
        stays_quiet(&mut b).await || stays_quiet(&mut b).await,
        "settled"
    );
}

/// System pushes are never leased: a presence in the mode gets each one
/// once, however long it leaves it unacked, and an ack naming it is
/// ignored.
async fn system_pushes_are_never_leased(backend: Backend) {
    let w = short_leases(backend).await;
    let url = w.node.ws_url();
    let (mut b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"capabilities": ["client_ack"]})).await;
    let (_a, _) = Peer::join(&url, &w.alice, "a1").await;
    let e = b.next_event().await;
    assert_eq!(
        (e["event"].as_str(), e["subtype"].as_str()),
        (Some("peer_joined"), Some("system")),
        "{e}"
    );
    assert!(stays_quiet(&mut b).await);
    assert!(b.events.is_empty(), "pushed again: {:?}", b.events);
    b.send(json!({"type": "client_ack", "brokerMessageId": e["messageId"]}))
        .await;
    assert!(b.quiet_for(Duration::from_millis(500)).await && b.events.is_empty());
}

both_stores!(
    system_pushes_are_never_leased,
    a_client_message_id_settles_its_push,
    a_first_client_ack_turns_the_mode_on,
    the_mode_survives_a_reattach,
    client_ack_is_never_answered,
    only_the_pushed_presence_can_settle,
);
