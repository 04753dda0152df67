//! The handshake: hello_ack fields, every refusal code, no_hello, restored
//! state, re-attach and replacement.

use serde_json::json;

use crate::both_stores;
use crate::harness::client::{hello_frame, signed_hello};
use crate::harness::{world, world_with, Backend, Peer};

async fn hello_ack_has_every_field(backend: Backend) {
    let w = world(backend).await;
    let (_p, ack) = Peer::join(&w.node.ws_url(), &w.alice, "s1").await;
    assert!(ack["presenceId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(ack["memberDisplayName"], "alice");
    assert_eq!(ack["memberProfile"]["roleTag"], json!(null));
    assert_eq!(ack["memberProfile"]["messageMode"], "push");
    assert_eq!(
        ack["memberProfile"]["groups"],
        json!([{"name": "backend"}]),
        "default groups"
    );
    assert!(ack["hookToken"].as_str().is_some_and(|s| s.len() >= 32));
    assert_eq!(ack["nodeId"], w.node.engine.node_id.to_string());
    assert_eq!(ack["protocol"], 1);
    assert!(
        ack.get("restored").is_none(),
        "no saved state on a first hello: {ack}"
    );
}

async fn hello_refusals_close_1008_and_leave_nothing(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let now = chrono::Utc::now().timestamp_millis();
    let a = &w.alice;
    let cases = vec![
        (
            "timestamp_skew",
            signed_hello(&a.mesh_id, &a.id, &a.keys, "s", now - 61_000, json!({})),
        ),
        (
            "timestamp_skew",
            signed_hello(&a.mesh_id, &a.id, &a.keys, "s", now + 61_000, json!({})),
        ),
        ("malformed", {
            let mut h = hello_frame(a, "s", json!({}));
            h["pubkey"] = json!("xyz");
            h
        }),
        ("malformed", {
            let mut h = hello_frame(a, "s", json!({}));
            h.as_object_mut().unwrap().remove("sessionId");
            h
        }),
        (
            "malformed",
            hello_frame(a, "s", json!({"pid": "not a number"})),
        ),
        (
            "malformed",
            hello_frame(a, "s", json!({"displayName": "x".repeat(200)})),
        ),
        (
            "malformed",
            hello_frame(a, "s", json!({"cwd": "c".repeat(5000)})),
        ),
        (
            "malformed",
            hello_frame(a, "s", json!({"groups": [{"name": "has space"}]})),
        ),
        (
            "malformed",
            hello_frame(
                a,
                "s",
                json!({"groups": (0..65).map(|i| format!("g{i}")).collect::<Vec<_>>()}),
            ),
        ),
        (
            "malformed",
            hello_frame(a, "s", json!({"sessionPubkey": "abc"})),
        ),
        ("bad_signature", {
            let mut h = hello_frame(a, "s", json!({}));
            h["signature"] = json!("00".repeat(64));
            h
        }),
        // Signed by alice's key but claiming bob's member id.
        (
            "unauthorized",
            signed_hello(&a.mesh_id, &w.bob.id, &a.keys, "s", now, json!({})),
        ),
        (
            "unauthorized",
            signed_hello(&a.mesh_id, "no-such-member", &a.keys, "s", now, json!({})),
        ),
        (
            "unauthorized",
            signed_hello("no-such-mesh", &a.id, &a.keys, "s", now, json!({})),
        ),
    ];
    for (code, frame) in cases {
        let mut p = Peer::connect(&url).await;
        p.send(frame.clone()).await;
        let err = p.recv().await;
        assert_eq!(err["type"], "error", "{frame}");
        assert_eq!(err["code"], code, "{frame} -> {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(p.expect_close().await, 1008, "{code}");
    }
    assert!(
        w.node.peers("m").await.is_empty(),
        "refused hellos leave no presence"
    );
}

async fn revoked_member_is_told_and_closed_4002(backend: Backend) {
    let w = world(backend).await;
    let (status, _) = w
        .node
        .admin(
            reqwest::Method::DELETE,
            &format!("/meshes/m/members/{}", w.bob.id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let mut p = Peer::connect(&w.node.ws_url()).await;
    p.send(hello_frame(&w.bob, "s", json!({"_reqId": "h1"})))
        .await;
    let e = p.expect_banned().await;
    assert_eq!(
        e["message"],
        "You've been removed from \"m\". Contact the mesh owner to rejoin."
    );
    assert_eq!(e["_reqId"], "h1");
}

async fn capacity_is_enforced(backend: Backend) {
    let w = world_with(backend, |s| s.max_connections_per_mesh = 2).await;
    let url = w.node.ws_url();
    let (_a1, _) = Peer::join(&url, &w.alice, "a1").await;
    let (_b1, _) = Peer::join(&url, &w.bob, "b1").await;
    let mut p = Peer::connect(&url).await;
    p.send(hello_frame(&w.alice, "a2", json!({}))).await;
    assert_eq!(p.recv().await["code"], "capacity");
    assert_eq!(p.expect_close().await, 1008);
    assert_eq!(w.node.peers("m").await.len(), 2);
    // Re-attaching an existing session needs no new slot.
    let (_a1b, _) = Peer::join(&url, &w.alice, "a1").await;
}

/// Ghosts of crashed sessions (in grace) do not lock a full mesh out;
/// a ghost's own session still comes back when the mesh is full of live
/// ones. PROTOCOL.md counts live presences.
async fn ghosts_in_grace_do_not_fill_the_mesh(backend: Backend) {
    let w = world_with(backend, |s| s.max_connections_per_mesh = 2).await;
    let url = w.node.ws_url();
    let key = claudemesh_broker::protocol::crypto::KeyPair::generate();
    let (a1, _) = Peer::join(&url, &w.alice, "a1").await;
    let (b1, _) = Peer::join_session(&url, &w.bob, &key, "b1").await;
    // Gone without a close frame, as a crashed client: both go to grace.
    drop((a1, b1));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while w
        .node
        .peers("m")
        .await
        .iter()
        .any(|p| p["state"] != "grace")
    {
        assert!(tokio::time::Instant::now() < deadline, "never in grace");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let other = claudemesh_broker::protocol::crypto::KeyPair::generate();
    let (_b2, _) = Peer::join_session(&url, &w.bob, &other, "b2").await;
    let mut p = Peer::connect(&url).await;
    p.send(hello_frame(&w.alice, "a3", json!({}))).await;
    assert_eq!(p.recv().await["code"], "capacity", "two live of two");
    let (_a1, ack) = Peer::join(&url, &w.alice, "a1").await;
    assert_eq!(ack["type"], "hello_ack", "a re-attach within grace");
    let (_b1, ack) = Peer::join_session(&url, &w.bob, &key, "b1").await;
    assert_eq!(ack["type"], "hello_ack", "a 1.37 re-attach within grace");
}

async fn frames_before_hello_get_no_hello(backend: Backend) {
    let w = world(backend).await;
    let mut p = Peer::connect(&w.node.ws_url()).await;
    let r = p
        .request(json!({"type": "list_peers", "_reqId": "r1"}))
        .await;
    assert_eq!(r["code"], "no_hello");
    assert_eq!(r["_reqId"], "r1");
    p.send_text("garbage").await;
    assert_eq!(p.recv().await["code"], "no_hello");
    let r = p
        .request(
            json!({"type": "send", "id": "c1", "targetSpec": "*", "nonce": "", "ciphertext": ""}),
        )
        .await;
    assert_eq!(r["type"], "ack", "sends are always acked");
    assert_eq!(r["id"], "c1");
    assert_eq!(r["code"], "no_hello");
    // The socket stayed open: a hello still works.
    p.send(hello_frame(&w.alice, "s1", json!({}))).await;
    assert_eq!(p.recv().await["type"], "hello_ack");
}

async fn restored_state_comes_back(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut p, _) = Peer::join(&url, &w.alice, "s1").await;
    p.send(json!({"type": "set_summary", "summary": "refactoring the parser"}))
        .await;
    p.send(json!({"type": "join_group", "name": "ops/eu", "role": "lead"}))
        .await;
    let r = p
        .request(json!({"type": "set_profile", "title": "Parser wrangler", "_reqId": "p"}))
        .await;
    assert_eq!(r["type"], "ack");
    p.close().await;
    let (_p2, ack) = Peer::join(&url, &w.alice, "s2").await;
    assert_eq!(ack["restored"], true, "{ack}");
    assert_eq!(ack["lastSummary"], "refactoring the parser");
    assert!(ack["lastSeenAt"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(
        ack["restoredGroups"],
        json!([{"name": "backend"}, {"name": "ops/eu", "role": "lead"}])
    );
    assert_eq!(
        ack["memberProfile"]["groups"], ack["restoredGroups"],
        "restored groups apply"
    );
    // Hello groups win over restored ones.
    let (_p3, ack) =
        Peer::join_with(&url, &w.alice, "s3", json!({"groups": [{"name": "qa"}]})).await;
    assert_eq!(ack["memberProfile"]["groups"], json!([{"name": "qa"}]));
}

async fn same_session_reattaches_within_grace(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (p, ack1) = Peer::join(&url, &w.alice, "s1").await;
    p.close().await;
    let peers = w.node.peers("m").await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["state"], "grace");
    let (_p, ack2) = Peer::join(&url, &w.alice, "s1").await;
    assert_eq!(
        ack1["presenceId"], ack2["presenceId"],
        "same presence after re-attach"
    );
    let peers = w.node.peers("m").await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["state"], "online");
}

async fn live_session_is_replaced_with_4000(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut old, ack1) = Peer::join(&url, &w.alice, "s1").await;
    let (mut new, ack2) = Peer::join(&url, &w.alice, "s1").await;
    assert_eq!(ack1["presenceId"], ack2["presenceId"]);
    assert_eq!(old.expect_close().await, 4000);
    let peers = w.node.peers("m").await;
    assert_eq!(peers.len(), 1, "one live presence per session: {peers:?}");
    assert_eq!(
        peers[0]["state"], "online",
        "the old socket's close must not release the new one"
    );
    let r = new.request(json!({"type": "list_peers"})).await;
    assert_eq!(r["peers"].as_array().unwrap().len(), 1);
}

async fn grace_expiry_ends_the_presence(backend: Backend) {
    let w = world_with(backend, |s| {
        s.presence_grace_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let (p, _) = Peer::join(&w.node.ws_url(), &w.alice, "s1").await;
    p.close().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while w
        .node
        .peers("m")
        .await
        .iter()
        .any(|p| p["state"] != "grace")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "grace never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn in_process_shutdown_closes_1001_and_keeps_grace(backend: Backend) {
    let w = world(backend).await;
    let (mut p, _) = Peer::join(&w.node.ws_url(), &w.alice, "s1").await;
    let node = w.node.engine.clone();
    let mesh_id = w.alice.mesh_id.clone();
    w.node.shutdown().await;
    assert_eq!(p.expect_close().await, 1001);
    let left = node.store.list_presences(&mesh_id).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state.as_str(), "grace", "a restart is not a leave");
    assert!(
        node.store.list_nodes().await.unwrap().is_empty(),
        "node row removed"
    );
}

both_stores!(
    in_process_shutdown_closes_1001_and_keeps_grace,
    hello_ack_has_every_field,
    hello_refusals_close_1008_and_leave_nothing,
    revoked_member_is_told_and_closed_4002,
    capacity_is_enforced,
    ghosts_in_grace_do_not_fill_the_mesh,
    frames_before_hello_get_no_hello,
    restored_state_comes_back,
    same_session_reattaches_within_grace,
    live_session_is_replaced_with_4000,
    grace_expiry_ends_the_presence,
);
