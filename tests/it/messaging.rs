//! send → ack → push: routing of every target kind, acks, errors, limits.

use std::time::Duration;

use claudemesh_broker::protocol::crypto::KeyPair;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::{world, world_with, Backend, Peer};

pub fn send_frame(id: &str, target: &str, priority: &str, body: &str) -> Value {
    json!({"type": "send", "id": id, "targetSpec": target, "priority": priority,
           "nonce": "bm9uY2Vub25jZQ==", "ciphertext": body})
}

/// Sends and returns the ack, asserting it is for this send.
pub async fn send(p: &mut Peer, id: &str, target: &str, priority: &str, body: &str) -> Value {
    let ack = p.request(send_frame(id, target, priority, body)).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], id);
    ack
}

pub async fn expect_push(p: &mut Peer) -> Value {
    let v = p.recv().await;
    assert_eq!(v["type"], "push", "{v}");
    v
}

async fn direct_to_member_key(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let ack = send(&mut a, "c1", &w.bob.keys.public_hex, "now", "Y2lwaGVy").await;
    assert_eq!(ack["queued"], true);
    assert!(ack.get("error").is_none());
    let id = ack["messageId"].as_str().unwrap();
    // PROTOCOL-SESSIONS.md §2: 32 base62 characters, a UUIDv7 inside.
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
    let inner = claudemesh_broker::protocol::ids::decode(id).expect("one of ours");
    assert_eq!(inner.get_version_num(), 7);
    let push = expect_push(&mut b).await;
    assert_eq!(push["messageId"], id);
    assert_eq!(push["meshId"], w.alice.mesh_id);
    assert_eq!(push["senderPubkey"], w.alice.keys.public_hex);
    assert_eq!(push["senderMemberPubkey"], w.alice.keys.public_hex);
    assert_eq!(push["priority"], "now");
    assert_eq!(push["nonce"], "bm9uY2Vub25jZQ==");
    assert_eq!(push["ciphertext"], "Y2lwaGVy");
    assert!(push["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(push.get("subtype").is_none());
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "the sender gets nothing"
    );
}

async fn session_key_reaches_that_session_only(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (k1, k2, ka) = (
        KeyPair::generate(),
        KeyPair::generate(),
        KeyPair::generate(),
    );
    let (mut a, _) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"sessionPubkey": ka.public_hex}),
    )
    .await;
    let (mut b1, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"sessionPubkey": k1.public_hex})).await;
    let (mut b2, _) =
        Peer::join_with(&url, &w.bob, "b2", json!({"sessionPubkey": k2.public_hex})).await;
    send(&mut a, "c1", &k2.public_hex, "now", "eA==").await;
    let push = expect_push(&mut b2).await;
    assert_eq!(
        push["senderPubkey"], ka.public_hex,
        "the sender's session key"
    );
    assert_eq!(push["senderMemberPubkey"], w.alice.keys.public_hex);
    assert!(b1.quiet_for(Duration::from_millis(300)).await);
}

async fn member_key_reaches_exactly_one_session(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b1, _) = Peer::join(&url, &w.bob, "b1").await;
    let (mut b2, _) = Peer::join(&url, &w.bob, "b2").await;
    send(&mut a, "c1", &w.bob.keys.public_hex, "now", "eA==").await;
    let got1 = !b1.quiet_for(Duration::from_millis(500)).await;
    let got2 = !b2.quiet_for(Duration::from_millis(500)).await;
    assert!(
        got1 ^ got2,
        "exactly one session takes a member-addressed message"
    );
}

async fn sibling_sessions_can_be_targeted(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a1, _) = Peer::join(&url, &w.alice, "a1").await;
    let mut none = Peer::join(&url, &w.bob, "b1").await.0;
    // Own key, no sibling yet.
    let ack = send(&mut a1, "c0", &w.alice.keys.public_hex, "now", "eA==").await;
    assert_eq!(ack["code"], "no_recipient");
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let ack = send(&mut a1, "c1", &w.alice.keys.public_hex, "now", "eA==").await;
    assert_eq!(ack["queued"], true);
    assert_eq!(expect_push(&mut a2).await["messageId"], ack["messageId"]);
    assert!(
        a1.quiet_for(Duration::from_millis(300)).await,
        "never to the sending session"
    );
    assert!(none.quiet_for(Duration::from_millis(100)).await);
}

async fn no_recipient_when_nobody_matches(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let stranger = KeyPair::generate();
    for (id, target) in [
        ("x1", stranger.public_hex.as_str()),
        ("x2", w.bob.keys.public_hex.as_str()),
    ] {
        let ack = send(&mut a, id, target, "now", "eA==").await;
        assert_eq!(ack["queued"], false);
        assert_eq!(ack["messageId"], "");
        assert_eq!(ack["code"], "no_recipient", "{ack}");
        assert!(ack["error"].as_str().unwrap().starts_with("no_recipient: "));
    }
    // Another mesh's member is nobody here, even with a real key.
    w.node.create_mesh("other").await;
    let carol = w.node.add_member("other", "carol", &[]).await;
    let (_c, _) = Peer::join(&url, &carol, "c1").await;
    let ack = send(&mut a, "x3", &carol.keys.public_hex, "now", "eA==").await;
    assert_eq!(ack["code"], "no_recipient");
}

async fn groups_and_broadcast(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let carol = w.node.add_member("m", "carol", &["backend/api"]).await;
    let dave = w.node.add_member("m", "dave", &["backendish"]).await;
    let (mut a1, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"groups": [{"name": "backend"}]})).await;
    let (mut c, _) = Peer::join(&url, &carol, "c1").await;
    let (mut d, _) = Peer::join(&url, &dave, "d1").await;
    let ack = send(&mut a1, "g1", "@backend", "now", "Zw==").await;
    assert_eq!(ack["queued"], true);
    let pb = expect_push(&mut b).await;
    let pc = expect_push(&mut c).await;
    assert_eq!(pb, pc, "one serialisation for every recipient");
    assert!(
        d.quiet_for(Duration::from_millis(300)).await,
        "backendish is not backend"
    );
    assert!(
        a2.quiet_for(Duration::from_millis(100)).await,
        "not the sender's own member"
    );
    for target in ["@all", "*"] {
        send(&mut a1, target, target, "now", "YQ==").await;
        for p in [&mut b, &mut c, &mut d] {
            expect_push(p).await;
        }
        assert!(a2.quiet_for(Duration::from_millis(200)).await);
    }
    // Hidden sessions are left out of group and broadcast sends.
    d.request(json!({"type": "set_visible", "visible": false}))
        .await;
    send(&mut a1, "h", "*", "now", "YQ==").await;
    expect_push(&mut b).await;
    assert!(d.quiet_for(Duration::from_millis(300)).await);
    // A group with nobody in it is still a stored, acked send.
    let ack = send(&mut a1, "e", "@empty", "now", "YQ==").await;
    assert_eq!(ack["queued"], true);
}

async fn held_until_idle(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    b.send(json!({"type": "set_status", "status": "working"}))
        .await;
    b.request(json!({"type": "list_peers"})).await;
    let bob = w.bob.keys.public_hex.clone();
    send(&mut a, "n1", &bob, "next", "MQ==").await;
    send(&mut a, "l1", &bob, "low", "Mg==").await;
    send(&mut a, "w1", &bob, "now", "Mw==").await;
    assert_eq!(
        expect_push(&mut b).await["ciphertext"],
        "Mw==",
        "only `now` while working"
    );
    assert!(b.quiet_for(Duration::from_millis(400)).await);
    b.send(json!({"type": "set_status", "status": "dnd"})).await;
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "dnd holds them too"
    );
    b.send(json!({"type": "set_status", "status": "idle"}))
        .await;
    assert_eq!(expect_push(&mut b).await["ciphertext"], "MQ==");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "Mg==");
}

async fn pushes_keep_send_order(backend: Backend) {
    let w = world_with(backend, |s| s.send_burst = 500).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let n = 60;
    for i in 0..n {
        a.send(send_frame(
            &format!("o{i}"),
            &w.bob.keys.public_hex,
            "now",
            &format!("{i}"),
        ))
        .await;
    }
    for i in 0..n {
        assert_eq!(a.recv().await["id"], format!("o{i}"), "acks in order");
    }
    for i in 0..n {
        assert_eq!(expect_push(&mut b).await["ciphertext"], format!("{i}"));
    }
}

both_stores!(
    direct_to_member_key,
    session_key_reaches_that_session_only,
    member_key_reaches_exactly_one_session,
    sibling_sessions_can_be_targeted,
    no_recipient_when_nobody_matches,
    groups_and_broadcast,
    held_until_idle,
    pushes_keep_send_order,
);
