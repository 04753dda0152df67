//! `session_hello` (PROTOCOL-SESSIONS.md §3, §4): the presence it makes,
//! every refusal of §3's table with its code and close code, re-attach by
//! key and replacement by session id across nodes, and roles that never
//! collide.

use serde_json::{json, Value};

use claudemesh_broker::protocol::crypto::KeyPair;

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::session_hello_frame;
use crate::harness::{world, world_with, Backend, Peer};
use crate::messaging::{expect_push, send};

fn find<'a>(list: &'a Value, key: &str) -> Option<&'a Value> {
    list["peers"]
        .as_array()?
        .iter()
        .find(|p| p["pubkey"] == key)
}

/// The presence: role session, routable by its key, the parent's member,
/// its own name, no restored state, leased pushes from the start; its join
/// reaches the member's own other sessions.
async fn a_session_presence_is_the_members_and_its_own(backend: Backend) {
    let w = world_with(backend, |s| {
        s.claim_lease_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut daemon, _) = Peer::join(&url, &w.alice, "daemon-1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert_eq!(daemon.next_event().await["eventData"]["name"], "bob");
    let key = KeyPair::generate();
    let mut s = Peer::connect(&url).await;
    s.send(session_hello_frame(
        &w.alice,
        &key,
        "sess-1",
        json!({"displayName": "alice-api", "_reqId": "h"}),
    ))
    .await;
    let ack = s.recv().await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    assert_eq!(ack["_reqId"], "h");
    assert_eq!(ack["memberDisplayName"], "alice-api");
    assert_eq!(
        ack["memberProfile"]["groups"],
        json!([{"name": "backend"}]),
        "the member's default groups"
    );
    assert!(
        ack.get("restored").is_none() && ack.get("lastSummary").is_none(),
        "{ack}"
    );

    for peer in [&mut daemon, &mut b] {
        let e = peer.next_event().await;
        assert_eq!(e["event"], "peer_joined", "{e}");
        assert_eq!(e["eventData"]["pubkey"], key.public_hex);
        assert_eq!(e["eventData"]["name"], "alice-api");
    }
    let list = b.request(json!({"type": "list_peers"})).await;
    let row = find(&list, &key.public_hex).expect("listed by its session key");
    assert_eq!(row["peerRole"], "session");
    assert_eq!(row["memberPubkey"], w.alice.keys.public_hex);
    assert_eq!(
        (row["sessionId"].as_str(), row["channel"].as_str()),
        (Some("sess-1"), Some("claudemesh-session"))
    );
    assert_eq!(
        (
            row["cwd"].as_str(),
            row["hostname"].as_str(),
            row["visible"].as_bool()
        ),
        (Some("/home/u/proj"), Some("box"), Some(true))
    );
    assert_eq!(
        find(&list, &w.alice.keys.public_hex).unwrap()["peerRole"],
        "control-plane"
    );

    // A direct send to the session key reaches it alone, leased until acked.
    let sent = send(&mut b, "c1", &key.public_hex, "now", "MQ==").await;
    let id = sent["messageId"].as_str().unwrap().to_string();
    assert_eq!(expect_push(&mut s).await["messageId"], id);
    assert_eq!(
        expect_push(&mut s).await["messageId"],
        id,
        "at-least-once from the start"
    );
    s.send(json!({"type": "client_ack", "brokerMessageId": id}))
        .await;
    assert!(
        daemon
            .quiet_for(std::time::Duration::from_millis(500))
            .await,
        "not the member socket's"
    );
    // Its own sends carry its key.
    send(&mut s, "c2", &w.bob.keys.public_hex, "now", "Mg==").await;
    assert_eq!(expect_push(&mut b).await["senderPubkey"], key.public_hex);
}

/// A hello carrying a live session presence's sessionId gets its own
/// presence beside it (a 1.37 CLI verb inside a launched session).
async fn roles_never_collide_on_the_wire(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let key = KeyPair::generate();
    let (mut s, ack) = Peer::join_session(&url, &w.alice, &key, "shared").await;
    let (verb, verb_ack) = Peer::join(&url, &w.alice, "shared").await;
    assert_ne!(verb_ack["presenceId"], ack["presenceId"]);
    let list = s.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["peers"].as_array().unwrap().len(), 2, "{list}");
    verb.close().await;
    let list = s.request(json!({"type": "list_peers"})).await;
    assert!(
        find(&list, &key.public_hex).is_some(),
        "the session stays: {list}"
    );
}

/// Every refusal of §3's table: its code, then the close (1008, with the
/// code as reason; 4002 for a revoked member). Nothing is attached.
async fn every_bad_session_hello_gets_its_code(backend: Backend) {
    let w = world_with(backend, |s| s.max_connections_per_mesh = 3).await;
    let url = w.node.ws_url();
    let key = KeyPair::generate();
    let now = chrono::Utc::now().timestamp_millis();
    let stranger = crate::harness::Member {
        id: "nobody".into(),
        mesh_id: w.alice.mesh_id.clone(),
        keys: KeyPair::generate(),
    };
    let resign = |f: &mut Value, ts: i64| {
        // A valid session signature over an edited timestamp.
        let text = format!(
            "claudemesh-session-hello|{}|{}|{}|{ts}",
            f["meshId"].as_str().unwrap(),
            f["parentMemberPubkey"].as_str().unwrap(),
            f["sessionPubkey"].as_str().unwrap()
        );
        f["timestamp"] = json!(ts);
        f["signature"] = json!(claudemesh_broker::protocol::crypto::sign_hex(
            &key.secret_hex,
            text.as_bytes()
        )
        .unwrap());
    };
    type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let cases: Vec<(&str, Edit)> = vec![
        ("malformed", Box::new(|f| f["sessionId"] = json!(7))),
        ("malformed", Box::new(|f| f["timestamp"] = json!("now"))),
        (
            "bad_session_pubkey",
            Box::new(|f| {
                f["sessionPubkey"] = json!(f["sessionPubkey"].as_str().unwrap().to_uppercase())
            }),
        ),
        (
            "bad_parent_pubkey",
            Box::new(|f| f["parentMemberPubkey"] = json!("abc")),
        ),
        (
            "attestation_mismatch",
            Box::new(|f| {
                f["parentAttestation"]["sessionPubkey"] = json!(KeyPair::generate().public_hex)
            }),
        ),
        (
            "attestation_mismatch",
            Box::new(|f| f["parentAttestation"] = json!(null)),
        ),
        (
            "malformed",
            Box::new(|f| f["parentAttestation"]["expiresAt"] = json!("later")),
        ),
        (
            "expired",
            Box::new(move |f| f["parentAttestation"]["expiresAt"] = json!(now - 1000)),
        ),
        (
            "ttl_too_long",
            Box::new(move |f| f["parentAttestation"]["expiresAt"] = json!(now + 25 * 3600 * 1000)),
        ),
        (
            "malformed",
            Box::new(|f| f["parentAttestation"]["signature"] = json!("00")),
        ),
        (
            "bad_signature",
            Box::new(|f| f["parentAttestation"]["signature"] = f["signature"].clone()),
        ),
        (
            "timestamp_skew",
            Box::new(move |f| resign(f, now - 120_000)),
        ),
        ("malformed", Box::new(|f| f["signature"] = json!("zz"))),
        (
            "bad_signature",
            Box::new(|f| f["signature"] = f["parentAttestation"]["signature"].clone()),
        ),
        (
            "parent_member_id_mismatch",
            Box::new(|f| f["parentMemberId"] = json!("someone-else")),
        ),
    ];
    for (code, edit) in cases {
        let mut frame = session_hello_frame(&w.alice, &key, "s", json!({"_reqId": code}));
        edit(&mut frame);
        let mut p = Peer::connect(&url).await;
        p.send(frame.clone()).await;
        let r = p.recv().await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame} -> {r}"
        );
        assert_eq!(r["_reqId"], code);
        assert_eq!(p.expect_close().await, 1008, "{code}");
    }
    // An unknown member key (signed correctly by its own keys).
    let mut p = Peer::connect(&url).await;
    p.send(session_hello_frame(&stranger, &key, "s", json!({})))
        .await;
    assert_eq!(p.recv().await["code"], "unauthorized");
    assert_eq!(p.expect_close().await, 1008);
    // Another member's session key.
    let (_bob_s, _) = Peer::join_session(&url, &w.bob, &key, "bob-s").await;
    let mut p = Peer::connect(&url).await;
    p.send(session_hello_frame(&w.alice, &key, "s", json!({})))
        .await;
    assert_eq!(p.recv().await["code"], "unauthorized");
    assert_eq!(p.expect_close().await, 1008);
    // Replayed: the very frame that was accepted.
    let k2 = KeyPair::generate();
    let accepted = session_hello_frame(&w.alice, &k2, "s2", json!({}));
    let mut p = Peer::connect(&url).await;
    p.send(accepted.clone()).await;
    assert_eq!(p.recv().await["type"], "hello_ack");
    let mut again = Peer::connect(&url).await;
    again.send(accepted).await;
    assert_eq!(again.recv().await["code"], "replayed");
    assert_eq!(again.expect_close().await, 1008);
    // Capacity: bob's session and alice's make 2 of 3; one more fits,
    // the next does not (skipped for a re-attach).
    let (_c, _) = Peer::join(&url, &w.bob, "b-extra").await;
    let mut p = Peer::connect(&url).await;
    p.send(session_hello_frame(
        &w.alice,
        &KeyPair::generate(),
        "s3",
        json!({}),
    ))
    .await;
    assert_eq!(p.recv().await["code"], "capacity");
    assert_eq!(p.expect_close().await, 1008);
    let (_again, ack) = Peer::join_session(&url, &w.alice, &k2, "s2").await;
    assert_eq!(ack["type"], "hello_ack", "a re-attach at capacity");
    // Revoked: `revoked` then 4002.
    let path = format!("/meshes/m/members/{}", w.bob.id);
    assert_eq!(
        w.node.admin(reqwest::Method::DELETE, &path, None).await.0,
        204
    );
    let mut p = Peer::connect(&url).await;
    p.send(session_hello_frame(
        &w.bob,
        &KeyPair::generate(),
        "b",
        json!({}),
    ))
    .await;
    p.expect_banned().await;
}

/// Re-attach by key on another node keeps the presence and closes the
/// old socket 4000, silently; the same session id under a new key ends
/// the old presence (4000, no peer_left) and starts a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_reattach_and_are_replaced_across_nodes() {
    let c = cluster(3, |_| {}).await;
    // Alice's daemon (member socket) on node 2 hears her own session's
    // join from node 1; bob on node 0 hears it too.
    let (mut own, _) = Peer::join(&c.nodes[2].ws_url(), &c.alice, "daemon-1").await;
    let (mut watcher, _) = Peer::join(&c.nodes[0].ws_url(), &c.bob, "w").await;
    assert_eq!(own.next_event().await["eventData"]["name"], "bob");
    let key = KeyPair::generate();
    let (mut first, ack) = Peer::join_session(&c.nodes[1].ws_url(), &c.alice, &key, "sess").await;
    for peer in [&mut watcher, &mut own] {
        // The watcher joined right after the daemon: the daemon's own
        // join, sent from node 2, may still reach it first.
        let e = loop {
            let e = peer.next_event().await;
            if e["eventData"]["pubkey"] != c.alice.keys.public_hex {
                break e;
            }
        };
        assert_eq!(e["event"], "peer_joined", "{e}");
        assert_eq!(e["eventData"]["pubkey"], key.public_hex);
    }
    first
        .send(json!({"type": "join_group", "name": "kept"}))
        .await;
    let _ = first.request(json!({"type": "list_peers"})).await;

    let (mut second, again) =
        Peer::join_session(&c.nodes[2].ws_url(), &c.alice, &key, "sess-relaunched").await;
    assert_eq!(again["presenceId"], ack["presenceId"], "same presence");
    assert_eq!(first.expect_close().await, 4000);
    let list = second.request(json!({"type": "list_peers"})).await;
    let row = find(&list, &key.public_hex).unwrap();
    assert_eq!(row["sessionId"], "sess-relaunched", "refreshed");
    assert!(
        row["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "kept"),
        "groups kept: {row}"
    );
    assert!(
        watcher
            .quiet_for(std::time::Duration::from_millis(500))
            .await,
        "no leave, no join"
    );

    let other = KeyPair::generate();
    let (mut third, fresh) =
        Peer::join_session(&c.nodes[0].ws_url(), &c.alice, &other, "sess-relaunched").await;
    assert_ne!(fresh["presenceId"], ack["presenceId"], "a new presence");
    assert_eq!(second.expect_close().await, 4000);
    let e = watcher.next_event().await;
    assert_eq!(e["event"], "peer_joined", "only the new one announced: {e}");
    assert_eq!(e["eventData"]["pubkey"], other.public_hex);
    let list = third.request(json!({"type": "list_peers"})).await;
    assert!(
        find(&list, &key.public_hex).is_none(),
        "the old presence ended: {list}"
    );
}

both_stores!(
    a_session_presence_is_the_members_and_its_own,
    roles_never_collide_on_the_wire,
    every_bad_session_hello_gets_its_code,
);
