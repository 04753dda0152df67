//! `POST /join`: redeeming v1 invites over real HTTP, every refusal code in
//! PROTOCOL.md order, body limits, and one-use invites under contention.

use std::time::Duration;

use claudemesh_broker::protocol::crypto::KeyPair;
use claudemesh_broker::protocol::invite::InvitePayload;
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::client::hello_frame;
use crate::harness::{node_with, Backend, Member, Peer, TestNode};

/// POSTs raw bytes to `/join`; returns (status, JSON body or Null).
async fn post_raw(node: &TestNode, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = node
        .http
        .post(node.url("/join"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("join request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(node: &TestNode, body: Value) -> (u16, Value) {
    post_raw(node, body.to_string()).await
}

fn body(token: &str, keys: &KeyPair, name: &str) -> Value {
    json!({"invite_token": token, "peer_pubkey": keys.public_hex, "display_name": name})
}

/// Joins with a fresh key; returns the reply and the key.
async fn join_new(node: &TestNode, token: &str) -> ((u16, Value), KeyPair) {
    let keys = KeyPair::generate();
    (post(node, body(token, &keys, "newcomer")).await, keys)
}

#[track_caller]
fn assert_refused(got: &(u16, Value), code: &str) {
    assert_eq!(got.0, 400, "{code}: {}", got.1);
    assert_eq!(got.1, json!({"ok": false, "error": code}));
}

#[track_caller]
fn assert_joined(got: &(u16, Value)) -> String {
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["ok"], true, "{}", got.1);
    assert!(got.1.get("alreadyMember").is_none(), "{}", got.1);
    assert_eq!(got.1.as_object().unwrap().len(), 2, "{}", got.1);
    got.1["memberId"].as_str().expect("memberId").to_string()
}

#[track_caller]
fn assert_already(got: &(u16, Value), member_id: &str) {
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(
        got.1,
        json!({"ok": true, "memberId": member_id, "alreadyMember": true})
    );
}

/// Creates mesh `slug`; returns its JSON including `ownerSecretKey`.
async fn mesh_with_secret(node: &TestNode, slug: &str) -> Value {
    let body = json!({"slug": slug, "showOwnerSecret": true});
    let (s, m) = node.admin(Method::POST, "/meshes", Some(body)).await;
    assert_eq!(s, 201, "{m}");
    m
}

/// Creates an invite; returns its token.
async fn invite(node: &TestNode, slug: &str, body: Value) -> String {
    let path = format!("/meshes/{slug}/invites");
    let (s, inv) = node.admin(Method::POST, &path, Some(body)).await;
    assert_eq!(s, 201, "{inv}");
    inv["token"].as_str().unwrap().to_string()
}

async fn members(node: &TestNode, slug: &str) -> Vec<Value> {
    let path = format!("/meshes/{slug}/members");
    let (s, v) = node.admin(Method::GET, &path, None).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

fn as_member(id: &str, mesh_id: &str, keys: &KeyPair) -> Member {
    Member {
        id: id.to_string(),
        mesh_id: mesh_id.to_string(),
        keys: KeyPair {
            public_hex: keys.public_hex.clone(),
            secret_hex: keys.secret_hex.clone(),
        },
    }
}

async fn joined_member_can_hello(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let mesh = mesh_with_secret(&node, "m").await;
    let mesh_id = mesh["id"].as_str().unwrap();
    let token = invite(&node, "m", json!({"role": "admin"})).await;
    let keys = KeyPair::generate();
    // The full link is accepted as the token; the key in upper case too.
    let mut b = body(&format!("ic://join/{token}"), &keys, "Newcomer");
    b["peer_pubkey"] = json!(keys.public_hex.to_uppercase());
    let id = assert_joined(&post(&node, b).await);

    let list = members(&node, "m").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["pubkey"], keys.public_hex, "stored lowercase");
    assert_eq!(list[0]["displayName"], "Newcomer");
    assert_eq!(list[0]["role"], "admin", "the invite's role");
    assert_eq!(list[0]["meshId"], mesh_id);

    let member = as_member(&id, mesh_id, &keys);
    let (_p, ack) = Peer::join(&node.ws_url(), &member, "s1").await;
    assert_eq!(ack["memberDisplayName"], "Newcomer");

    // The decoded payload may come along, as an object or a JSON string.
    for as_string in [false, true] {
        let token = invite(&node, "m", json!({})).await;
        let payload = serde_json::to_value(InvitePayload::from_token(&token).unwrap()).unwrap();
        let keys = KeyPair::generate();
        let mut b = body(&token, &keys, "with payload");
        b["invite_payload"] = if as_string {
            json!(payload.to_string())
        } else {
            payload
        };
        let id = assert_joined(&post(&node, b).await);
        let (_p, ack) = Peer::join(&node.ws_url(), &as_member(&id, mesh_id, &keys), "s").await;
        assert_eq!(ack["memberDisplayName"], "with payload");
    }
    assert_eq!(members(&node, "m").await.len(), 3);
}

async fn rejoining_does_not_use_the_invite(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    let token = invite(&node, "m", json!({"maxUses": 2})).await;
    let (got, a) = join_new(&node, &token).await;
    let a_id = assert_joined(&got);
    for _ in 0..3 {
        let got = post(&node, body(&token, &a, "again")).await;
        assert_already(&got, &a_id);
    }
    let (got, _) = join_new(&node, &token).await;
    assert_joined(&got);
    let (got, _) = join_new(&node, &token).await;
    assert_refused(&got, "invite_exhausted");
    // An enrolled key is still recognised on a used-up invite.
    assert_already(&post(&node, body(&token, &a, "again")).await, &a_id);
    assert_eq!(members(&node, "m").await.len(), 2);

    // A key enrolled by the admin API: no use taken from a one-use invite.
    let pre = node.add_member("m", "pre", &[]).await;
    let token = invite(&node, "m", json!({"maxUses": 1})).await;
    let got = post(&node, body(&token, &pre.keys, "pre")).await;
    assert_already(&got, &pre.id);
    let (got, _) = join_new(&node, &token).await;
    assert_joined(&got);
    let (got, _) = join_new(&node, &token).await;
    assert_refused(&got, "invite_exhausted");
    assert_eq!(members(&node, "m").await.len(), 4);

    // One key eight times at once on a two-use invite: one member, seven
    // answers naming it, and one use left afterwards.
    let token = invite(&node, "m", json!({"maxUses": 2})).await;
    let keys = KeyPair::generate();
    let b = body(&token, &keys, "eager");
    let results = futures_util::future::join_all((0..8).map(|_| post(&node, b.clone()))).await;
    let fresh: Vec<_> = results
        .iter()
        .filter(|r| r.1.get("alreadyMember").is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "{results:?}");
    let id = assert_joined(fresh[0]);
    for r in results
        .iter()
        .filter(|r| r.1.get("alreadyMember").is_some())
    {
        assert_already(r, &id);
    }
    assert_joined(&join_new(&node, &token).await.0);
    assert_refused(&join_new(&node, &token).await.0, "invite_exhausted");
    assert_eq!(members(&node, "m").await.len(), 6);
}

async fn revoked_member_is_not_restored_by_an_invite(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    let m = node.add_member("m", "gone", &[]).await;
    let path = format!("/meshes/m/members/{}", m.id);
    assert_eq!(node.admin(Method::DELETE, &path, None).await.0, 204);
    let token = invite(&node, "m", json!({})).await;
    let _ = post(&node, body(&token, &m.keys, "back again")).await;
    let mut p = Peer::connect(&node.ws_url()).await;
    p.send(hello_frame(&m, "s", json!({}))).await;
    p.expect_banned().await;
    let list = members(&node, "m").await;
    assert!(list.iter().all(|x| !x["revokedAt"].is_null()), "{list:?}");
}

async fn refusals_in_protocol_order(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let a = mesh_with_secret(&node, "a").await;
    let b = mesh_with_secret(&node, "b").await;
    let a_secret = a["ownerSecretKey"].as_str().unwrap();
    let token = invite(&node, "a", json!({"maxUses": 5})).await;
    let good = InvitePayload::from_token(&token).unwrap();
    let keys = KeyPair::generate();

    // invite_bad_signature: a field changed after signing, in the token or
    // in the payload sent beside a good token; or a signature of the wrong
    // shape.
    let mut p = good.clone();
    p.role = "admin".into();
    assert_refused(
        &post(&node, body(&p.to_token(), &keys, "x")).await,
        "invite_bad_signature",
    );
    let mut b_ = body(&token, &keys, "x");
    b_["invite_payload"] = serde_json::to_value(&p).unwrap();
    assert_refused(&post(&node, b_).await, "invite_bad_signature");
    let mut p = good.clone();
    p.signature = "00".repeat(64);
    assert_refused(
        &post(&node, body(&p.to_token(), &keys, "x")).await,
        "invite_bad_signature",
    );
    let mut p = good.clone();
    p.signature = "zz".into();
    p.mesh_id = "no-such-mesh".into();
    assert_refused(
        &post(&node, body(&p.to_token(), &keys, "x")).await,
        "invite_bad_signature",
    );

    // mesh_not_found: validly signed, by anyone, for a mesh that is not.
    let stranger = KeyPair::generate();
    let mut p = good.clone();
    p.mesh_id = "no-such-mesh".into();
    p.owner_pubkey = stranger.public_hex.clone();
    p.sign(&stranger.secret_hex).unwrap();
    assert_refused(
        &post(&node, body(&p.to_token(), &keys, "x")).await,
        "mesh_not_found",
    );

    // invite_owner_mismatch: the real mesh, signed by another key.
    let mut p = good.clone();
    p.owner_pubkey = stranger.public_hex.clone();
    p.sign(&stranger.secret_hex).unwrap();
    assert_refused(
        &post(&node, body(&p.to_token(), &keys, "x")).await,
        "invite_owner_mismatch",
    );
    // ... even with the stored token beside it.
    let mut b_ = body(&token, &keys, "x");
    b_["invite_payload"] = serde_json::to_value(&p).unwrap();
    assert_refused(&post(&node, b_).await, "invite_owner_mismatch");

    // invite_not_found: signed by the real owner, never stored.
    let mut p = good.clone();
    p.expires_at += 3600;
    p.sign(a_secret).unwrap();
    assert_refused(
        &post(&node, body(&p.to_token(), &keys, "x")).await,
        "invite_not_found",
    );

    // invite_mesh_mismatch: mesh a's stored token, with a payload that mesh
    // b's owner signed for mesh b.
    let mut p = good.clone();
    p.mesh_id = b["id"].as_str().unwrap().into();
    p.mesh_slug = "b".into();
    p.owner_pubkey = b["ownerPubkey"].as_str().unwrap().into();
    p.sign(b["ownerSecretKey"].as_str().unwrap()).unwrap();
    let mut b_ = body(&token, &keys, "x");
    b_["invite_payload"] = serde_json::to_value(&p).unwrap();
    assert_refused(&post(&node, b_).await, "invite_mesh_mismatch");
    assert!(
        members(&node, "a").await.is_empty(),
        "refusals enrol no one"
    );
    assert!(members(&node, "b").await.is_empty());

    // The untouched invite still works after all that.
    assert_joined(&post(&node, body(&token, &keys, "x")).await);

    // invite_revoked, invite_expired, invite_exhausted, and their order:
    // revoked before expired before exhausted.
    let revoked = invite(&node, "a", json!({"ttlSeconds": 1})).await;
    let expired = invite(&node, "a", json!({"ttlSeconds": 1, "maxUses": 1})).await;
    let exhausted = invite(&node, "a", json!({"maxUses": 1})).await;
    let (got, early) = join_new(&node, &expired).await;
    assert_joined(&got);
    assert_joined(&join_new(&node, &exhausted).await.0);
    assert_refused(&join_new(&node, &exhausted).await.0, "invite_exhausted");
    let path = format!("/invites/{revoked}");
    assert_eq!(node.admin(Method::DELETE, &path, None).await.0, 204);
    assert_refused(&join_new(&node, &revoked).await.0, "invite_revoked");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_refused(&join_new(&node, &revoked).await.0, "invite_revoked");
    assert_refused(&join_new(&node, &expired).await.0, "invite_expired");
    // Expiry is checked before the member lookup.
    assert_refused(
        &post(&node, body(&expired, &early, "x")).await,
        "invite_expired",
    );
    assert_eq!(members(&node, "a").await.len(), 3);
}

async fn the_libsodium_vector_names_no_mesh(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("acme").await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let inv = &v["invite"];
    let payload: InvitePayload = serde_json::from_value(inv["payload"].clone()).unwrap();
    assert!(payload.signature_valid(), "the vector is validly signed");
    let keys = KeyPair::generate();
    for token in [
        inv["token"].as_str().unwrap(),
        inv["link"].as_str().unwrap(),
    ] {
        assert_refused(
            &post(&node, body(token, &keys, "x")).await,
            "mesh_not_found",
        );
    }
    let mut b = body("anything", &keys, "x");
    b["invite_payload"] = inv["payload"].clone();
    assert_refused(&post(&node, b).await, "mesh_not_found");
}

async fn bad_bodies_are_bad_requests(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    let token = invite(&node, "m", json!({"maxUses": 100})).await;
    let keys = KeyPair::generate();
    let ok = body(&token, &keys, "x");
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases = vec![
        without("invite_token"),
        without("peer_pubkey"),
        without("display_name"),
        with("peer_pubkey", json!("abc")),
        with("peer_pubkey", json!("zz".repeat(32))),
        with("peer_pubkey", json!(format!("{}00", keys.public_hex))),
        with("peer_pubkey", json!(7)),
        with("display_name", json!("")),
        with("display_name", json!("n".repeat(129))),
        with("display_name", json!(null)),
        with("invite_token", json!("not base64 !!")),
        with("invite_token", json!("e30")),
        with("invite_token", json!(42)),
        with("invite_payload", json!({"v": 1})),
        with("invite_payload", json!("not json")),
        with("invite_payload", json!(5)),
        json!({"inviteToken": token, "peerPubkey": keys.public_hex, "displayName": "x"}),
        json!([]),
    ];
    for b in cases {
        let got = post(&node, b.clone()).await;
        assert_eq!(got.0, 400, "{b} -> {}", got.1);
        assert_refused(&got, "bad_request");
    }
    for raw in ["", "not json", "{\"invite_token\":", "null"] {
        assert_refused(&post_raw(&node, raw).await, "bad_request");
    }
    // Over max_message_bytes: 413 before any parsing; at the limit: parsed.
    let limit = node.engine.config.settings.max_message_bytes;
    let big = format!("{{\"pad\":\"{}\"}}", "p".repeat(limit));
    let got = post_raw(&node, big).await;
    assert_eq!(got, (413, json!({"ok": false, "error": "too_large"})));
    let mut padded = ok.clone();
    let room = limit - ok.to_string().len() - ",\"pad\":\"\"".len();
    padded["pad"] = json!("p".repeat(room));
    assert_eq!(padded.to_string().len(), limit);
    assert_joined(&post(&node, padded).await);
    assert_eq!(
        members(&node, "m").await.len(),
        1,
        "only the last body enrolled"
    );
}

async fn one_use_invite_under_contention(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    node.add_member("m", "pre", &[]).await;
    let token = invite(&node, "m", json!({"maxUses": 1})).await;
    let url = node.url("/join");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (http, url) = (node.http.clone(), url.clone());
            let b = body(&token, &KeyPair::generate(), &format!("racer {i}"));
            tokio::spawn(async move {
                let resp = http.post(url).json(&b).send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_joined(winners[0]);
    for r in results.iter().filter(|r| r.0 != 200) {
        assert_refused(r, "invite_exhausted");
    }
    assert_eq!(members(&node, "m").await.len(), 2, "exactly one enrolled");

    // One key racing itself on two one-use invites: one member, and the
    // invite that lost the race keeps its use.
    let t1 = invite(&node, "m", json!({"maxUses": 1})).await;
    let t2 = invite(&node, "m", json!({"maxUses": 1})).await;
    let keys = KeyPair::generate();
    let (r1, r2) = tokio::join!(
        post(&node, body(&t1, &keys, "twice")),
        post(&node, body(&t2, &keys, "twice"))
    );
    let (first, second) = if r1.1.get("alreadyMember").is_none() {
        ((r1, t1), (r2, t2))
    } else {
        ((r2, t2), (r1, t1))
    };
    let id = assert_joined(&first.0);
    assert_already(&second.0, &id);
    assert_refused(&join_new(&node, &first.1).await.0, "invite_exhausted");
    assert_joined(&join_new(&node, &second.1).await.0);
    assert_eq!(members(&node, "m").await.len(), 4);
}

both_stores!(
    joined_member_can_hello,
    rejoining_does_not_use_the_invite,
    revoked_member_is_not_restored_by_an_invite,
    refusals_in_protocol_order,
    the_libsodium_vector_names_no_mesh,
    bad_bodies_are_bad_requests,
    one_use_invite_under_contention,
);
