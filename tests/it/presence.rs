//! Presence frames: list_peers, set_status, set_summary, set_visible,
//! set_profile, set_stats, join_group, leave_group.

use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::{world, Backend, Peer};

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["displayName"] == name)
}

async fn list_peers_shows_every_live_session(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let sp = claudemesh_broker::protocol::crypto::KeyPair::generate();
    let (mut a, _) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"sessionPubkey": sp.public_hex, "hostname": "box", "peerType": "ai",
               "channel": "cli", "model": "opus", "displayName": "alice@box"}),
    )
    .await;
    let (_b, _) = Peer::join(&url, &w.bob, "b1").await;
    let list = a
        .request(json!({"type": "list_peers", "_reqId": "q1"}))
        .await;
    assert_eq!(list["type"], "peers_list");
    assert_eq!(list["_reqId"], "q1");
    assert_eq!(list["peers"].as_array().unwrap().len(), 2);
    let me = find(&list, "alice@box").expect("alice listed under her hello displayName");
    assert_eq!(
        me["pubkey"], sp.public_hex,
        "session pubkey when there is one"
    );
    assert_eq!(me["memberPubkey"], w.alice.keys.public_hex);
    assert_eq!(me["status"], "idle");
    assert_eq!(me["sessionId"], "a1");
    assert_eq!(me["cwd"], "/home/u/proj");
    assert_eq!(me["hostname"], "box");
    assert_eq!(me["peerType"], "ai");
    assert_eq!(me["channel"], "cli");
    assert_eq!(me["model"], "opus");
    assert_eq!(me["visible"], true);
    assert_eq!(me["peerRole"], "control-plane", "every hello presence");
    assert!(me["connectedAt"].as_str().unwrap().ends_with('Z'));
    let bob = find(&list, "bob").unwrap();
    assert_eq!(
        bob["pubkey"], w.bob.keys.public_hex,
        "member pubkey without a session key"
    );
    // A request without _reqId gets a reply without one.
    let list = a.request(json!({"type": "list_peers"})).await;
    assert!(list.get("_reqId").is_none());
}

async fn presence_updates_show_in_peers_list(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    a.send(json!({"type": "set_status", "status": "working"}))
        .await;
    a.send(json!({"type": "set_summary", "summary": "writing tests"}))
        .await;
    a.send(json!({"type": "set_stats", "stats": {"turns": 3, "tokens": 1200}}))
        .await;
    a.send(json!({"type": "join_group", "name": "ops/eu", "role": "lead"}))
        .await;
    a.send(json!({"type": "leave_group", "name": "backend"}))
        .await;
    let ack = a
        .request(
            json!({"type": "set_profile", "id": "p1", "avatar": "🦀", "title": "Crab",
                        "bio": "Rust", "capabilities": ["review"]}),
        )
        .await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "p1", "messageId": "", "queued": false})
    );
    // Frames of one socket are handled in order, so that ack means every
    // earlier frame was applied.
    let list = b.request(json!({"type": "list_peers"})).await;
    let me = find(&list, "alice").unwrap();
    assert_eq!(me["status"], "working");
    assert_eq!(me["summary"], "writing tests");
    assert_eq!(me["stats"], json!({"turns": 3, "tokens": 1200}));
    assert_eq!(me["groups"], json!([{"name": "ops/eu", "role": "lead"}]));
    assert_eq!(
        me["profile"],
        json!({"avatar": "🦀", "title": "Crab", "bio": "Rust", "capabilities": ["review"]})
    );
    // Changing a role keeps one entry per group.
    a.send(json!({"type": "join_group", "name": "ops/eu", "role": "member"}))
        .await;
    a.request(json!({"type": "list_peers"})).await;
    let list = b.request(json!({"type": "list_peers"})).await;
    assert_eq!(
        find(&list, "alice").unwrap()["groups"],
        json!([{"name": "ops/eu", "role": "member"}])
    );
    let admin = w.node.peers("m").await;
    let me = admin.iter().find(|p| p["displayName"] == "alice").unwrap();
    assert_eq!(me["statusSource"], "manual");
    a.send(json!({"type": "set_status", "status": "dnd"})).await;
    a.request(json!({"type": "list_peers"})).await;
    let list = b.request(json!({"type": "list_peers"})).await;
    assert_eq!(find(&list, "alice").unwrap()["status"], "dnd");
}

async fn hidden_sessions_are_left_out_for_others(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a1, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let ack = a1
        .request(json!({"type": "set_visible", "visible": false, "_reqId": "v"}))
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["queued"], false);
    assert_eq!(ack["_reqId"], "v");
    assert!(ack.get("error").is_none());
    let list = b.request(json!({"type": "list_peers"})).await;
    let sessions: Vec<&Value> = list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["sessionId"])
        .collect();
    assert!(
        !sessions.contains(&&json!("a1")),
        "hidden from other members: {list}"
    );
    assert!(sessions.contains(&&json!("a2")));
    let list = a2.request(json!({"type": "list_peers"})).await;
    assert_eq!(
        list["peers"].as_array().unwrap().len(),
        3,
        "own member sees its hidden session"
    );
    a1.request(json!({"type": "set_visible", "visible": true}))
        .await;
    let list = b.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["peers"].as_array().unwrap().len(), 3);
}

async fn group_count_is_capped(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    // alice starts in `backend`; 63 more reach the cap of 64.
    for i in 0..63 {
        a.send(json!({"type": "join_group", "name": format!("g{i}")}))
            .await;
    }
    let r = a
        .request(json!({"type": "join_group", "name": "one-too-many", "_reqId": "x"}))
        .await;
    assert_eq!(r["code"], "bad_request");
    assert_eq!(r["_reqId"], "x");
    let list = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["peers"][0]["groups"].as_array().unwrap().len(), 64);
}

async fn peers_of_other_meshes_are_invisible(backend: Backend) {
    let w = world(backend).await;
    w.node.create_mesh("other").await;
    let carol = w.node.add_member("other", "carol", &[]).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut c, _) = Peer::join(&url, &carol, "c1").await;
    let list = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["peers"].as_array().unwrap().len(), 1);
    let list = c.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["peers"].as_array().unwrap().len(), 1);
    assert_eq!(list["peers"][0]["displayName"], "carol");
}

both_stores!(
    list_peers_shows_every_live_session,
    presence_updates_show_in_peers_list,
    hidden_sessions_are_left_out_for_others,
    group_count_is_capped,
    peers_of_other_meshes_are_invisible,
);
