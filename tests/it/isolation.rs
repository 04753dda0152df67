//! Isolation between meshes and between sessions: nothing of mesh `m`
//! (messages, broadcasts, group sends, system events) reaches a member of
//! mesh `other`, foreign keys are nobody, a session cannot ack another
//! session's delivery, and a captured hello cannot be turned into another
//! member's or replayed once stale.

use std::time::Duration;

use claudemesh_broker::protocol::crypto::KeyPair;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::client::{hello_frame, signed_hello};
use crate::harness::{world_with, Backend, Member, Peer, TestNode};
use crate::messaging::{expect_push, send};

const QUIET: Duration = Duration::from_millis(700);

/// Enrols an existing key pair in mesh `slug`.
async fn enrol(node: &TestNode, slug: &str, name: &str, keys: &KeyPair, groups: &[&str]) -> Member {
    let (status, m) = node
        .admin(
            reqwest::Method::POST,
            &format!("/meshes/{slug}/members"),
            Some(json!({"pubkey": keys.public_hex, "displayName": name, "groups": groups})),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    Member {
        id: m["id"].as_str().unwrap().to_string(),
        mesh_id: m["meshId"].as_str().unwrap().to_string(),
        keys: keys.clone(),
    }
}

/// True if no system event in `events` is about `member`.
fn nothing_about(events: &std::collections::VecDeque<Value>, member: &Member) -> bool {
    events.iter().all(|e| {
        e["eventData"]["pubkey"] != member.keys.public_hex.as_str()
            && e["meshId"] != member.mesh_id.as_str()
    })
}

/// No frame arrives, and no system event about `foreign`'s mesh.
async fn silent(p: &mut Peer, what: &str, foreign: &Member) {
    assert!(p.quiet_for(QUIET).await, "{what} got a frame");
    assert!(
        nothing_about(&p.events, foreign),
        "{what} got events: {:?}",
        p.events
    );
}

/// (a) A member of mesh `other` (in a group named like one of `m`'s) sees
/// none of `m`'s traffic or events, and its own broadcasts stay in `other`.
async fn another_mesh_hears_nothing(backend: Backend) {
    let w = world_with(backend, |s| {
        s.presence_grace_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    w.node.create_mesh("other").await;
    let carol = w.node.add_member("other", "carol", &["backend"]).await;
    let url = w.node.ws_url();
    let (mut c, _) = Peer::join(&url, &carol, "c1").await;
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    // Events do flow inside m.
    assert_eq!(a.next_event().await["event"], "peer_joined");

    let ack = send(&mut a, "m1", "*", "now", "YWxs").await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "YWxs");
    let ack = send(&mut a, "m2", "@all", "now", "YWxsMg==").await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "YWxsMg==");
    let ack = send(&mut b, "m3", "@backend", "now", "Z3JvdXA=").await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(expect_push(&mut a).await["ciphertext"], "Z3JvdXA=");
    a.request(json!({"type": "set_visible", "visible": false}))
        .await;
    assert_eq!(b.next_event().await["event"], "peer_hidden");
    a.request(json!({"type": "set_visible", "visible": true}))
        .await;
    assert_eq!(b.next_event().await["event"], "peer_visible");
    b.close().await;
    assert_eq!(a.next_event().await["event"], "peer_left");
    let (mut b, _) = Peer::join(&url, &w.bob, "b2").await;
    assert_eq!(a.next_event().await["event"], "peer_returned");

    silent(&mut c, "carol (mesh other)", &w.alice).await;
    assert!(c.events.is_empty(), "carol got events: {:?}", c.events);
    let peers = c.request(json!({"type": "list_peers"})).await;
    let peers = peers["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "carol lists only her mesh: {peers:?}");
    assert_eq!(peers[0]["memberPubkey"], carol.keys.public_hex);

    // The other way round: carol's broadcasts and group sends stay home.
    for (id, target) in [("o1", "*"), ("o2", "@all"), ("o3", "@backend")] {
        let ack = send(&mut c, id, target, "now", "b3RoZXI=").await;
        assert_ne!(ack["code"], "bad_request", "{ack}");
    }
    c.close().await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // carol's grace ends
    for (p, name) in [(&mut a, "alice"), (&mut b, "bob")] {
        assert!(p.quiet_for(QUIET).await, "{name} got carol's message");
        assert!(
            nothing_about(&p.events, &carol),
            "{name} heard of carol: {:?}",
            p.events
        );
    }
}

/// (b) Another mesh's member key or session key is nobody here, in both
/// directions; and a key enrolled in two meshes is routed by mesh.
async fn foreign_keys_are_no_recipient(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    w.node.create_mesh("other").await;
    let carol = w.node.add_member("other", "carol", &[]).await;
    let url = w.node.ws_url();
    let (ka, kc) = (KeyPair::generate(), KeyPair::generate());
    let (mut a, _) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"sessionPubkey": ka.public_hex}),
    )
    .await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let (mut c, _) =
        Peer::join_with(&url, &carol, "c1", json!({"sessionPubkey": kc.public_hex})).await;

    for (i, target) in [
        &w.alice.keys.public_hex,
        &ka.public_hex,
        &w.bob.keys.public_hex,
    ]
    .into_iter()
    .enumerate()
    {
        let ack = send(&mut c, &format!("f{i}"), target, "now", "Zm9yZ2Vk").await;
        assert_eq!(ack["code"], "no_recipient", "carol -> {target}: {ack}");
        assert_eq!(ack["messageId"], "");
    }
    // Upper case is the same key, and still nobody.
    let ack = send(
        &mut c,
        "f9",
        &w.alice.keys.public_hex.to_uppercase(),
        "now",
        "eA==",
    )
    .await;
    assert_eq!(ack["code"], "no_recipient", "{ack}");
    for (i, target) in [&carol.keys.public_hex, &kc.public_hex]
        .into_iter()
        .enumerate()
    {
        let ack = send(&mut a, &format!("g{i}"), target, "now", "Zm9yZ2Vk").await;
        assert_eq!(ack["code"], "no_recipient", "alice -> {target}: {ack}");
    }
    silent(&mut a, "alice", &carol).await;
    silent(&mut b, "bob", &carol).await;
    silent(&mut c, "carol", &w.alice).await;

    // A session in other claiming alice's session key, or her member key,
    // as its own session key takes nothing addressed to them in m.
    for (i, claimed) in [&ka.public_hex, &w.alice.keys.public_hex]
        .into_iter()
        .enumerate()
    {
        let (mut thief, _) = Peer::join_with(
            &url,
            &carol,
            &format!("claim{i}"),
            json!({"sessionPubkey": claimed}),
        )
        .await;
        let ack = send(&mut b, &format!("k{i}"), claimed, "now", "bWluZQ==").await;
        assert_eq!(ack["queued"], true, "{ack}");
        assert_eq!(expect_push(&mut a).await["ciphertext"], "bWluZQ==");
        assert!(
            thief.quiet_for(QUIET).await,
            "{claimed} taken across meshes"
        );
        thief.close().await;
    }

    // dave's key is enrolled in both meshes; his only session is in other.
    let dave_keys = KeyPair::generate();
    let dave_other = enrol(&w.node, "other", "dave", &dave_keys, &[]).await;
    let dave_m = enrol(&w.node, "m", "dave", &dave_keys, &[]).await;
    assert_ne!(dave_other.id, dave_m.id);
    let (mut d_other, _) = Peer::join(&url, &dave_other, "d1").await;
    let ack = send(&mut a, "h1", &dave_keys.public_hex, "now", "ZGF2ZQ==").await;
    assert_eq!(
        ack["code"], "no_recipient",
        "dave is not online in m: {ack}"
    );
    let (mut d_m, _) = Peer::join(&url, &dave_m, "d1").await;
    let ack = send(&mut a, "h2", &dave_keys.public_hex, "now", "ZGF2ZTI=").await;
    assert_eq!(ack["queued"], true, "{ack}");
    let push = expect_push(&mut d_m).await;
    assert_eq!(push["ciphertext"], "ZGF2ZTI=");
    assert_eq!(push["meshId"], w.alice.mesh_id);
    assert!(
        d_other.quiet_for(QUIET).await,
        "the session in the other mesh gets nothing"
    );
    // dave's broadcast in other reaches carol, not m.
    send(&mut d_other, "h3", "*", "now", "b3RoZXI=").await;
    assert_eq!(expect_push(&mut c).await["ciphertext"], "b3RoZXI=");
    assert!(a.quiet_for(QUIET).await);
    assert!(b.quiet_for(QUIET).await);
}

/// (c) Only the recipient session acks its delivery: another member of the
/// mesh, the sender, or a member of another mesh acking the message id
/// changes nothing, and it keeps being redelivered until the recipient
/// acks.
async fn only_the_recipient_acks(backend: Backend) {
    let w = world_with(backend, |s| {
        s.claim_lease_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let dave = w.node.add_member("m", "dave", &[]).await;
    w.node.create_mesh("other").await;
    let carol = w.node.add_member("other", "carol", &[]).await;
    let caps = json!({"capabilities": ["client_ack"]});
    let (mut a, _) = Peer::join_with(&url, &w.alice, "a1", caps.clone()).await;
    let (mut b, _) = Peer::join_with(&url, &w.bob, "b1", caps.clone()).await;
    let (mut d, _) = Peer::join_with(&url, &dave, "d1", caps.clone()).await;
    let (mut c, _) = Peer::join_with(&url, &carol, "c1", caps).await;
    let ack = send(&mut a, "c1", &w.bob.keys.public_hex, "now", "YWNr").await;
    let id = ack["messageId"].as_str().unwrap().to_string();
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    for p in [&mut d, &mut c, &mut a] {
        p.send(json!({"type": "client_ack", "messageId": id})).await;
        p.request(json!({"type": "list_peers"})).await; // the ack was handled
    }
    // Not acked by bob: the lease lapses and the same message comes again.
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    assert!(d.quiet_for(Duration::from_millis(300)).await);
    assert!(c.quiet_for(Duration::from_millis(300)).await);
    b.send(json!({"type": "client_ack", "messageId": id})).await;
    // A lease or two may have started before the ack landed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if b.quiet_for(Duration::from_millis(2500)).await {
            return;
        }
    }
    panic!("bob's own ack did not stop the redelivery");
}

/// (d) A captured hello replayed within the skew window is accepted, but
/// only as the member who signed it: its signed fields cannot be changed,
/// and once older than 60 s it is refused.
async fn replayed_hellos_stay_with_their_member(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let url = w.node.ws_url();
    w.node.create_mesh("other").await;
    let carol = w.node.add_member("other", "carol", &[]).await;
    let captured = hello_frame(&w.alice, "s1", json!({}));
    let mut p = Peer::connect(&url).await;
    p.send(captured.clone()).await;
    let first = p.recv().await;
    assert_eq!(first["type"], "hello_ack", "{first}");
    p.close().await;

    // PROTOCOL-SESSIONS.md §11: an accepted signature is single-use. The
    // very same frame again, or with another (unsigned) sessionId or
    // sessionPubkey, is refused `replayed` and closed 1008.
    let mallory = claudemesh_broker::protocol::crypto::KeyPair::generate();
    let mut other_session = captured.clone();
    other_session["sessionId"] = json!("replayed");
    other_session["sessionPubkey"] = json!(mallory.public_hex);
    for replay in [captured.clone(), other_session] {
        let mut p = Peer::connect(&url).await;
        p.send(replay).await;
        let r = p.recv().await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some("replayed")),
            "{r}"
        );
        assert_eq!(r["message"], "hello signature already used");
        assert_eq!(p.expect_close().await, 1008);
    }
    let peers = w.node.peers("m").await;
    assert_eq!(peers.len(), 1, "the replays opened nothing: {peers:?}");
    assert_eq!(peers[0]["sessionId"], "s1");

    // Signed fields cannot be changed.
    let now = chrono::Utc::now().timestamp_millis();
    let edits: Vec<(&str, Value)> = vec![
        ("memberId", json!(w.bob.id)),
        ("memberId", json!(carol.id)),
        ("meshId", json!(carol.mesh_id)),
        ("pubkey", json!(w.bob.keys.public_hex)),
        ("timestamp", json!(now)),
    ];
    for (field, value) in edits {
        let mut forged = captured.clone();
        forged[field] = value.clone();
        let mut p = Peer::connect(&url).await;
        p.send(forged).await;
        let err = p.recv().await;
        assert_eq!(err["type"], "error", "{field} = {value}: {err}");
        assert_eq!(err["code"], "bad_signature", "{field} = {value}: {err}");
        assert_eq!(p.expect_close().await, 1008);
    }
    // Moving both ids at once (bob's id, signed by alice's key over
    // alice's text) does not help either.
    let mut forged = captured.clone();
    forged["memberId"] = json!(w.bob.id);
    forged["pubkey"] = json!(w.bob.keys.public_hex);
    let mut p = Peer::connect(&url).await;
    p.send(forged).await;
    assert_eq!(p.recv().await["code"], "bad_signature");

    // A capture older than 60 s is refused, whatever else is right.
    let a = &w.alice;
    for age in [60_001, 61_000, 3_600_000] {
        let stale = signed_hello(&a.mesh_id, &a.id, &a.keys, "s1", now - age, json!({}));
        let mut p = Peer::connect(&url).await;
        p.send(stale).await;
        let err = p.recv().await;
        assert_eq!(err["code"], "timestamp_skew", "age {age}: {err}");
        assert_eq!(p.expect_close().await, 1008);
    }
    // Only alice's one session (in grace) and her replayed one exist.
    let peers = w.node.peers("m").await;
    assert!(!peers.is_empty());
    assert!(
        peers.iter().all(|p| p["memberId"] == w.alice.id.as_str()),
        "{peers:?}"
    );
    assert!(w.node.peers("other").await.is_empty());
}

both_stores!(
    another_mesh_hears_nothing,
    foreign_keys_are_no_recipient,
    only_the_recipient_acks,
    replayed_hellos_stay_with_their_member,
);

/// `sessionPubkey` is not signed (v1 signs meshId|memberId|pubkey|timestamp
/// only): bob announcing alice's member key (or her session key) as his
/// session key must not get him her direct messages. The broker refuses
/// such a hello.
async fn session_key_claims_cannot_shadow_another_member(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let url = w.node.ws_url();
    let dave = w.node.add_member("m", "dave", &[]).await;
    let ka = KeyPair::generate();
    let (mut a, _) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"sessionPubkey": ka.public_hex}),
    )
    .await;
    let (mut d, _) = Peer::join(&url, &dave, "d1").await;
    for (i, claimed) in [&w.alice.keys.public_hex, &ka.public_hex]
        .into_iter()
        .enumerate()
    {
        let mut bob = Peer::connect(&url).await;
        let hello = hello_frame(&w.bob, &format!("b{i}"), json!({"sessionPubkey": claimed}));
        bob.send(hello).await;
        if bob.recv().await["type"] != "hello_ack" {
            continue; // refused: fine
        }
        let ack = send(&mut d, &format!("s{i}"), claimed, "now", "YWxpY2U=").await;
        assert_eq!(ack["queued"], true, "{ack}");
        assert!(
            bob.quiet_for(QUIET).await,
            "bob took a message addressed to alice's {claimed}"
        );
        assert_eq!(expect_push(&mut a).await["ciphertext"], "YWxpY2U=");
        bob.close().await;
    }
}

mod session_keys {
    use crate::harness::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_key_claims_cannot_shadow_another_member_memory() {
        super::session_key_claims_cannot_shadow_another_member(Backend::Memory).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_key_claims_cannot_shadow_another_member_postgres() {
        super::session_key_claims_cannot_shadow_another_member(Backend::Postgres).await
    }
}
