//! Moderation (PROTOCOL-SESSIONS.md §9): who may kick, disconnect, ban and
//! unban, what each selects, the replies and close codes, across nodes.

use reqwest::Method;
use serde_json::json;

use claudemesh_broker::protocol::crypto::KeyPair;

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Member, Peer, TestNode};

/// Enrols `name` in mesh `m` with `role` and `keys`.
async fn enrol(node: &TestNode, name: &str, role: &str, keys: KeyPair) -> Member {
    let (s, m) = node
        .admin(
            Method::POST,
            "/meshes/m/members",
            Some(json!({"pubkey": keys.public_hex, "displayName": name, "role": role})),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    Member {
        id: m["id"].as_str().unwrap().to_string(),
        mesh_id: m["meshId"].as_str().unwrap().to_string(),
        keys,
    }
}

/// An admin on node 0 disconnects a session on node 2 (1000, presence
/// ended, peer_left elsewhere); `kick` leaves control-plane presences
/// alone and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_kick_reach_every_node() {
    let c = cluster(3, |_| {}).await;
    let root = enrol(&c.nodes[0], "root", "admin", KeyPair::generate()).await;
    let (mut r, _) = Peer::join(&c.nodes[0].ws_url(), &root, "r1").await;
    let (mut a, _) = Peer::join(&c.nodes[1].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join(&c.nodes[2].ws_url(), &c.bob, "b1").await;

    let k = r
        .request(json!({"type": "kick", "target": "bob", "_reqId": "k1"}))
        .await;
    assert_eq!(k["type"], "kick_ack", "{k}");
    assert_eq!(k["kicked"], json!([]));
    assert_eq!(
        k["skipped_control_plane"],
        json!(["bob"]),
        "hello presences reconnect at once"
    );
    assert_eq!(k["_reqId"], "k1");

    let d = r
        .request(json!({"type": "disconnect", "target": "bob", "_reqId": "d1"}))
        .await;
    assert_eq!(d["type"], "disconnect_ack", "{d}");
    assert_eq!(
        (d["kicked"].clone(), d["affected"].clone()),
        (json!(["bob"]), json!(["bob"]))
    );
    assert!(
        d.get("skipped_control_plane").is_none(),
        "only when non-empty: {d}"
    );
    assert_eq!(b.expect_close().await, 1000);
    loop {
        let e = a.next_event().await;
        if e["event"] == "peer_left" {
            assert_eq!(e["eventData"]["name"], "bob");
            break;
        }
    }
    let peers = c.nodes[1].peers("m").await;
    assert!(
        peers.iter().all(|p| p["displayName"] != "bob"),
        "ended without grace: {peers:?}"
    );

    // Selection never includes the caller; all: true takes everyone else.
    let d = r
        .request(json!({"type": "disconnect", "all": true, "_reqId": "d2"}))
        .await;
    assert_eq!(d["kicked"], json!(["alice"]), "{d}");
    assert_eq!(a.expect_close().await, 1000);
    let d = r
        .request(json!({"type": "disconnect", "_reqId": "d3"}))
        .await;
    assert_eq!(d["kicked"], json!([]), "no selection selects none: {d}");
}

async fn only_owner_or_admin_moderates(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (_b, _) = Peer::join(&url, &w.bob, "b1").await;
    for (ty, verb) in [
        ("kick", "kick"),
        ("disconnect", "disconnect"),
        ("ban", "ban"),
        ("unban", "unban"),
    ] {
        let r = a
            .request(json!({"type": ty, "target": "bob", "_reqId": ty}))
            .await;
        assert_error(&r, "forbidden", ty);
        assert_eq!(r["message"], format!("only owner or admin can {verb}"));
    }
    let r = a.request(json!({"type": "list_bans", "_reqId": "l"})).await;
    assert_eq!(r["type"], "list_bans_result", "any member lists: {r}");
    assert_eq!(w.node.peers("m").await.len(), 2, "nothing happened");
}

/// The mesh owner's key is privileged without the admin role; a ban
/// closes the member's sessions 4002 after `revoked`, refuses its hellos,
/// shows in list_bans, and an unban lets it back.
async fn ban_list_and_unban(backend: Backend) {
    let w = world(backend).await;
    let (s, m) = w
        .node
        .admin(
            Method::POST,
            "/meshes",
            Some(json!({"slug": "m2", "showOwnerSecret": true})),
        )
        .await;
    assert_eq!(s, 201);
    // A mesh whose owner keys the test knows, with the owner enrolled as
    // a plain member: the key alone makes it privileged.
    let owner = KeyPair {
        public_hex: m["ownerPubkey"].as_str().unwrap().to_string(),
        secret_hex: m["ownerSecretKey"].as_str().unwrap().to_string(),
    };
    let (s, member) = w
        .node
        .admin(
            Method::POST,
            "/meshes/m2/members",
            Some(json!({"pubkey": owner.public_hex, "displayName": "owner"})),
        )
        .await;
    assert_eq!(s, 201, "{member}");
    let owner = Member {
        id: member["id"].as_str().unwrap().to_string(),
        mesh_id: member["meshId"].as_str().unwrap().to_string(),
        keys: owner,
    };
    let carol = w.node.add_member("m2", "carol", &[]).await;
    let url = w.node.ws_url();
    let (mut o, _) = Peer::join(&url, &owner, "o1").await;
    let (mut c1, _) = Peer::join(&url, &carol, "c1").await;
    let (mut c2, _) = Peer::join(&url, &carol, "c2").await;

    assert_error(
        &o.request(json!({"type": "ban", "_reqId": "b0"})).await,
        "invalid",
        "b0",
    );
    assert_error(
        &o.request(json!({"type": "ban", "target": "owner", "_reqId": "b1"}))
            .await,
        "invalid",
        "b1",
    );
    assert_error(
        &o.request(json!({"type": "ban", "target": "nobody", "_reqId": "b2"}))
            .await,
        "not_found",
        "b2",
    );

    let prefix = &carol.keys.public_hex[..8];
    let r = o
        .request(json!({"type": "ban", "target": prefix, "reason": "spam", "_reqId": "b3"}))
        .await;
    assert_eq!(
        (r["type"].as_str(), r["banned"].as_str()),
        (Some("ban_ack"), Some("carol")),
        "{r}"
    );
    c1.expect_banned().await;
    c2.expect_banned().await;
    let mut again = Peer::connect(&url).await;
    again
        .send(crate::harness::client::hello_frame(&carol, "c3", json!({})))
        .await;
    again.expect_banned().await;

    let l = o.request(json!({"type": "list_bans", "_reqId": "l"})).await;
    let bans = l["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{l}");
    assert_eq!(
        (bans[0]["name"].as_str(), bans[0]["pubkey"].as_str()),
        (Some("carol"), Some(carol.keys.public_hex.as_str()))
    );
    assert!(bans[0]["revokedAt"].as_str().unwrap().ends_with('Z'));
    assert_error(
        &o.request(json!({"type": "unban", "_reqId": "u0"})).await,
        "invalid",
        "u0",
    );
    assert_error(
        &o.request(json!({"type": "unban", "target": "owner", "_reqId": "u1"}))
            .await,
        "not_found",
        "u1",
    );
    let u = o
        .request(json!({"type": "unban", "target": "carol", "_reqId": "u2"}))
        .await;
    assert_eq!(
        (u["type"].as_str(), u["unbanned"].as_str()),
        (Some("unban_ack"), Some("carol")),
        "{u}"
    );
    let (_c, ack) = Peer::join(&url, &carol, "c4").await;
    assert_eq!(ack["type"], "hello_ack");
    let l = o.request(json!({"type": "list_bans"})).await;
    assert_eq!(l["bans"], json!([]));
    let (_, chain) = w
        .node
        .admin(Method::GET, "/meshes/m2/audit/verify", None)
        .await;
    assert_eq!(chain["valid"], true);
}

/// Two members answering to one name: a ban must not guess.
async fn an_ambiguous_ban_is_refused(backend: Backend) {
    let w = world(backend).await;
    let root = enrol(&w.node, "root", "admin", KeyPair::generate()).await;
    enrol(&w.node, "twin", "member", KeyPair::generate()).await;
    enrol(&w.node, "twin", "member", KeyPair::generate()).await;
    let (mut r, _) = Peer::join(&w.node.ws_url(), &root, "r1").await;
    let e = r
        .request(json!({"type": "ban", "target": "twin", "_reqId": "t"}))
        .await;
    assert_error(&e, "invalid", "t");
    let l = r.request(json!({"type": "list_bans"})).await;
    assert_eq!(l["bans"], json!([]));
}

/// A ban on node 0 closes the member's socket on node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_closes_sockets_on_every_node() {
    let c = cluster(2, |_| {}).await;
    let root = enrol(&c.nodes[0], "root", "admin", KeyPair::generate()).await;
    let (mut r, _) = Peer::join(&c.nodes[0].ws_url(), &root, "r1").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let ack = r
        .request(json!({"type": "ban", "target": "bob", "_reqId": "b"}))
        .await;
    assert_eq!(ack["type"], "ban_ack", "{ack}");
    b.expect_banned().await;
    loop {
        let e = r.next_event().await;
        if e["event"] == "peer_left" {
            break;
        }
    }
}

/// `stale` selects the presences not heard from within that many ms,
/// whatever node holds them: `kick` closes the silent 1.37 session
/// (4001) and skips the silent control-plane socket, `disconnect` closes
/// that one (1000); a socket that keeps talking is never selected.
async fn stale_selects_the_silent(moderator: &TestNode, holder: &TestNode) {
    let root = enrol(moderator, "root", "admin", KeyPair::generate()).await;
    let (mut r, _) = Peer::join(&moderator.ws_url(), &root, "r1").await;
    let bob = enrol(holder, "bob2", "member", KeyPair::generate()).await;
    let url = holder.ws_url();
    let (mut silent, _) =
        Peer::join_with(&url, &bob, "cp", json!({"displayName": "quiet-cp"})).await;
    let (mut session, _) = Peer::join_session(&url, &bob, &KeyPair::generate(), "s1").await;
    let (mut active, _) = Peer::join_with(&url, &bob, "a", json!({"displayName": "chatty"})).await;
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(3000);
    while tokio::time::Instant::now() < until {
        let l = active
            .request(json!({"type": "list_peers", "_reqId": "p"}))
            .await;
        assert_eq!(l["type"], "peers_list", "{l}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let k = r
        .request(json!({"type": "kick", "stale": 1800, "_reqId": "k"}))
        .await;
    assert_eq!(k["type"], "kick_ack", "{k}");
    assert_eq!(k["kicked"].as_array().map(Vec::len), Some(1), "{k}");
    assert_ne!(k["kicked"][0], "chatty", "{k}");
    assert_eq!(k["skipped_control_plane"], json!(["quiet-cp"]), "{k}");
    assert_eq!(session.expect_close().await, 4001);
    let d = r
        .request(json!({"type": "disconnect", "stale": 1800, "_reqId": "d"}))
        .await;
    assert_eq!(d["type"], "disconnect_ack", "{d}");
    assert_eq!(d["affected"], json!(["quiet-cp"]), "{d}");
    assert_eq!(silent.expect_close().await, 1000);
    // A `stale` wider than all time selects nobody.
    let none = r
        .request(json!({"type": "disconnect", "stale": 1e300, "_reqId": "n"}))
        .await;
    assert_eq!(none["affected"], json!([]), "{none}");
    let l = active
        .request(json!({"type": "list_peers", "_reqId": "p"}))
        .await;
    assert_eq!(
        l["type"], "peers_list",
        "the active socket is still open: {l}"
    );
}

async fn stale_selects_the_silent_on_one_node(backend: Backend) {
    let w = crate::harness::world_with(backend, |s| s.node_heartbeat_seconds = 1).await;
    stale_selects_the_silent(&w.node, &w.node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stale_selects_the_silent_on_every_node() {
    let c = cluster(2, |s| s.node_heartbeat_seconds = 1).await;
    stale_selects_the_silent(&c.nodes[0], &c.nodes[1]).await;
}

both_stores!(
    only_owner_or_admin_moderates,
    ban_list_and_unban,
    an_ambiguous_ban_is_refused,
    stale_selects_the_silent_on_one_node
);
