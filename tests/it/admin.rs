//! The admin HTTP API of ADMIN.md over real HTTP: meshes, members, peers,
//! nodes, auth, and the error shape of every refusal (invites are in
//! `admin_invites`).

use claudemesh_broker::protocol::crypto::{self, KeyPair};
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::{node_with, world, Backend, Peer, TestNode, ADMIN_TOKEN};

/// Asserts `{"error": code, "message": "…"}` and nothing else.
#[track_caller]
pub(crate) fn assert_error(got: (u16, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("JSON error body: {body}"));
    assert_eq!(obj.len(), 2, "only error and message: {body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A raw admin call: any body bytes, any Authorization header.
pub(crate) async fn raw(
    node: &TestNode,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = node
        .http
        .request(method, node.url(&format!("/admin{path}")));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if !body.is_empty() {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.expect("admin request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

pub(crate) fn is_iso(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

pub(crate) async fn list(node: &TestNode, path: &str) -> Vec<Value> {
    let (s, v) = node.admin(Method::GET, path, None).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().expect("a JSON array").clone()
}

async fn meshes_create_and_list(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let (s, m) = node
        .admin(
            Method::POST,
            "/meshes",
            Some(json!({"slug": "alpha", "name": "Alpha Team"})),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    for k in ["id", "slug", "name", "ownerPubkey", "rootKey", "createdAt"] {
        assert!(keys.contains(&k), "{k} missing: {m}");
    }
    assert!(
        m.get("ownerSecretKey").is_none(),
        "secret only on request: {m}"
    );
    assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(m["slug"], "alpha");
    assert_eq!(m["name"], "Alpha Team");
    assert!(crypto::parse_pubkey(m["ownerPubkey"].as_str().unwrap()).is_some());
    assert_eq!(
        m["rootKey"].as_str().unwrap().len(),
        43,
        "32 bytes base64url"
    );
    assert!(is_iso(&m["createdAt"]), "{m}");

    // Name defaults to the slug; the owner secret can be asked for once.
    let (s, b) = node
        .admin(
            Method::POST,
            "/meshes",
            Some(json!({"slug": "b-2", "showOwnerSecret": true})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["name"], "b-2");
    let secret = b["ownerSecretKey"].as_str().expect("secret shown");
    let owner = b["ownerPubkey"].as_str().unwrap();
    assert_eq!(secret.len(), 128);
    assert!(secret.ends_with(owner), "seed || public");
    let sig = crypto::sign_hex(secret, b"x").unwrap();
    let (key, sig) = (
        crypto::parse_pubkey(owner).unwrap(),
        crypto::parse_signature(&sig).unwrap(),
    );
    assert!(
        crypto::verify(&key, b"x", &sig),
        "the secret is the owner's"
    );

    // Duplicate slug: 409, and the original is untouched.
    assert_error(
        node.admin(Method::POST, "/meshes", Some(json!({"slug": "alpha"})))
            .await,
        409,
        "conflict",
    );

    let all = list(&node, "/meshes").await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0], m, "list shows the created mesh as created");
    assert_eq!(all[1]["slug"], "b-2");
    assert!(
        all.iter().all(|x| x.get("ownerSecretKey").is_none()),
        "never listed"
    );
}

async fn meshes_refuse_bad_input(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let auth = bearer();
    let bad = [
        r#"{"slug": "Upper"}"#,
        r#"{"slug": "-lead"}"#,
        r#"{"slug": ""}"#,
        r#"{"slug": "has space"}"#,
        r#"{"slug": "under_score"}"#,
        &format!(r#"{{"slug": "{}"}}"#, "a".repeat(64)),
        r#"{"slug": "ok", "name": ""}"#,
        &format!(r#"{{"slug": "ok", "name": "{}"}}"#, "n".repeat(129)),
        r#"{"slug": "ok", "extra": 1}"#,
        r#"{"slug": 5}"#,
        r#"{"slug": "ok", "name": 7}"#,
        r#"{"slug": "ok", "showOwnerSecret": "yes"}"#,
        r#"{"name": "no slug"}"#,
        r#"{"slug": "ok""#,
        "not json",
        "",
        "[]",
    ];
    for body in bad {
        let got = raw(&node, Method::POST, "/meshes", Some(&auth), body).await;
        assert_error(got, 400, "bad_request");
    }
    assert!(
        list(&node, "/meshes").await.is_empty(),
        "refusals leave nothing"
    );
    // The longest valid slug and name are accepted.
    let slug = format!("a{}", "-".repeat(62));
    let got = node
        .admin(
            Method::POST,
            "/meshes",
            Some(json!({"slug": slug, "name": "é".repeat(128)})),
        )
        .await;
    assert_eq!(got.0, 201, "{}", got.1);
}

async fn members_add_and_list(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let mesh = node.create_mesh("m").await;
    let keys = KeyPair::generate();
    let body = json!({"pubkey": keys.public_hex.to_uppercase(), "displayName": "Ada",
        "role": "admin", "groups": ["a", "b/c", {"name": "ops", "role": "lead"}]});
    let (s, m) = node
        .admin(Method::POST, "/meshes/m/members", Some(body))
        .await;
    assert_eq!(s, 201, "{m}");
    assert!(m["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(m["meshId"], mesh["id"]);
    assert_eq!(m["pubkey"], keys.public_hex, "stored lowercase");
    assert_eq!(m["displayName"], "Ada");
    assert_eq!(m["role"], "admin");
    assert_eq!(m["groups"], json!(["a", "b/c", "ops"]));

    // Defaults: role member, no groups.
    let other = KeyPair::generate();
    let (s, d) = node
        .admin(
            Method::POST,
            "/meshes/m/members",
            Some(json!({"pubkey": other.public_hex, "displayName": "Bob"})),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["role"], "member");
    assert_eq!(d["groups"], json!([]));

    // Same key again (any case): 409.
    for pk in [keys.public_hex.clone(), keys.public_hex.to_uppercase()] {
        let got = node
            .admin(
                Method::POST,
                "/meshes/m/members",
                Some(json!({"pubkey": pk, "displayName": "Again"})),
            )
            .await;
        assert_error(got, 409, "conflict");
    }
    // The same key may join another mesh.
    node.create_mesh("other").await;
    let (s, _) = node
        .admin(
            Method::POST,
            "/meshes/other/members",
            Some(json!({"pubkey": keys.public_hex, "displayName": "Ada"})),
        )
        .await;
    assert_eq!(s, 201);

    let members = list(&node, "/meshes/m/members").await;
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(members[0]["id"], m["id"]);
    assert_eq!(members[0]["groups"], m["groups"]);
    assert_eq!(members[1]["id"], d["id"]);
    assert!(members.iter().all(|x| x["revokedAt"].is_null()));
    assert_eq!(list(&node, "/meshes/other/members").await.len(), 1);
}

async fn members_refuse_bad_input(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    let pk = KeyPair::generate().public_hex;
    let cases = vec![
        json!({"pubkey": "abc", "displayName": "x"}),
        json!({"pubkey": "zz".repeat(32), "displayName": "x"}),
        json!({"pubkey": format!("{pk}00"), "displayName": "x"}),
        json!({"pubkey": pk, "displayName": ""}),
        json!({"pubkey": pk, "displayName": "n".repeat(129)}),
        json!({"pubkey": pk, "displayName": "x", "role": "owner"}),
        json!({"pubkey": pk, "displayName": "x", "role": ""}),
        json!({"pubkey": pk, "displayName": "x", "groups": ["has space"]}),
        json!({"pubkey": pk, "displayName": "x", "groups": ["a//b"]}),
        json!({"pubkey": pk, "displayName": "x", "groups": ["@all"]}),
        json!({"pubkey": pk, "displayName": "x", "groups": [""]}),
        json!({"pubkey": pk, "displayName": "x", "groups": [{"name": "ok", "role": ""}]}),
        json!({"pubkey": pk, "displayName": "x", "groups": (0..65).map(|i| format!("g{i}")).collect::<Vec<_>>()}),
        json!({"pubkey": pk, "displayName": "x", "groups": "a,b"}),
        json!({"pubkey": pk, "displayName": "x", "groups": [1]}),
        json!({"pubkey": pk, "displayName": 3}),
        json!({"pubkey": pk}),
        json!({"displayName": "x"}),
        json!({"pubkey": pk, "displayName": "x", "extra": true}),
        json!({"pubkey": pk, "display_name": "x"}),
    ];
    for body in cases {
        let got = node
            .admin(Method::POST, "/meshes/m/members", Some(body.clone()))
            .await;
        assert_eq!(got.0, 400, "{body} -> {}", got.1);
        assert_error(got, 400, "bad_request");
    }
    let got = raw(
        &node,
        Method::POST,
        "/meshes/m/members",
        Some(&bearer()),
        "{nope",
    )
    .await;
    assert_error(got, 400, "bad_request");
    assert!(
        list(&node, "/meshes/m/members").await.is_empty(),
        "refusals leave no member"
    );

    // Unknown mesh: 404 for every member route.
    let ok = json!({"pubkey": pk, "displayName": "x"});
    assert_error(
        node.admin(Method::POST, "/meshes/nope/members", Some(ok.clone()))
            .await,
        404,
        "not_found",
    );
    assert_error(
        node.admin(Method::GET, "/meshes/nope/members", None).await,
        404,
        "not_found",
    );
    assert_error(
        node.admin(Method::DELETE, "/meshes/nope/members/x", None)
            .await,
        404,
        "not_found",
    );
    // The valid body still works on the real mesh.
    assert_eq!(
        node.admin(Method::POST, "/meshes/m/members", Some(ok))
            .await
            .0,
        201
    );
}

async fn member_revoke_closes_sessions_with_4002(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut b1, _) = Peer::join(&url, &w.bob, "b1").await;
    let (mut b2, _) = Peer::join(&url, &w.bob, "b2").await;
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    assert_eq!(w.node.peers("m").await.len(), 3);

    // A member id of another mesh is not found through this mesh.
    w.node.create_mesh("other").await;
    let path = format!("/meshes/other/members/{}", w.bob.id);
    assert_error(
        w.node.admin(Method::DELETE, &path, None).await,
        404,
        "not_found",
    );
    assert_error(
        w.node
            .admin(Method::DELETE, "/meshes/m/members/no-such-id", None)
            .await,
        404,
        "not_found",
    );

    let path = format!("/meshes/m/members/{}", w.bob.id);
    let (s, body) = w.node.admin(Method::DELETE, &path, None).await;
    assert_eq!((s, body), (204, Value::Null));
    b1.expect_banned().await;
    b2.expect_banned().await;
    let left = a.next_event().await;
    assert_eq!(left["event"], "peer_left", "{left}");

    // Alice's session is untouched and sees only herself.
    let r = a
        .request(json!({"type": "list_peers", "_reqId": "l"}))
        .await;
    let peers = r["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{r}");
    assert_eq!(peers[0]["displayName"], "alice");
    let live = w.node.peers("m").await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["memberId"], w.alice.id.as_str());

    assert_error(
        w.node.admin(Method::DELETE, &path, None).await,
        404,
        "not_found",
    );
    let members = list(&w.node, "/meshes/m/members").await;
    let bob = members
        .iter()
        .find(|m| m["id"] == w.bob.id.as_str())
        .unwrap();
    assert!(is_iso(&bob["revokedAt"]), "{bob}");
    let alice = members
        .iter()
        .find(|m| m["id"] == w.alice.id.as_str())
        .unwrap();
    assert!(alice["revokedAt"].is_null());
}

async fn peers_and_nodes_show_live_sessions(backend: Backend) {
    let w = world(backend).await;
    let node = &w.node;
    assert!(node.peers("m").await.is_empty());
    assert_error(
        node.admin(Method::GET, "/meshes/nope/peers", None).await,
        404,
        "not_found",
    );
    let sockets = |nodes: &[Value]| {
        let me = nodes
            .iter()
            .find(|n| n["id"] == node.engine.node_id.to_string());
        me.unwrap_or_else(|| panic!("this node is listed: {nodes:?}"))["sockets"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(sockets(&list(node, "/nodes").await), 0);

    let url = node.ws_url();
    let (a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (_b, _) = Peer::join(&url, &w.bob, "b1").await;
    let peers = node.peers("m").await;
    assert_eq!(peers.len(), 2, "{peers:?}");
    let alice = peers
        .iter()
        .find(|p| p["memberId"] == w.alice.id.as_str())
        .unwrap();
    assert_eq!(alice["state"], "online");
    assert_eq!(alice["status"], "idle");
    assert_eq!(alice["statusSource"], "jsonl");
    assert_eq!(alice["displayName"], "alice");
    assert_eq!(alice["sessionId"], "a1");
    assert_eq!(alice["pubkey"], w.alice.keys.public_hex);
    assert_eq!(alice["nodeId"], node.engine.node_id.to_string());
    assert!(alice["presenceId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(is_iso(&alice["statusUpdatedAt"]) && is_iso(&alice["connectedAt"]));

    let nodes = list(node, "/nodes").await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let me = &nodes[0];
    assert_eq!(sockets(&nodes), 2);
    assert_eq!(me["draining"], false);
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(me["addr"], format!("127.0.0.1:{}", node.port));
    assert!(is_iso(&me["startedAt"]) && is_iso(&me["heartbeatAt"]));
    let age = me["heartbeatAgeSeconds"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&age), "{me}");

    // A closed socket leaves a presence in grace, which holds no socket.
    a.close().await;
    let peers = node.peers("m").await;
    let alice = peers
        .iter()
        .find(|p| p["memberId"] == w.alice.id.as_str())
        .unwrap();
    assert_eq!(alice["state"], "grace");
    assert_eq!(sockets(&list(node, "/nodes").await), 1);
}

/// Every admin route with a method and a body that would otherwise succeed.
fn routes() -> Vec<(Method, &'static str, &'static str)> {
    vec![
        (Method::POST, "/meshes", r#"{"slug":"made"}"#),
        (Method::GET, "/meshes", ""),
        (
            Method::POST,
            "/meshes/m/members",
            r#"{"pubkey":"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c","displayName":"x"}"#,
        ),
        (Method::GET, "/meshes/m/members", ""),
        (Method::DELETE, "/meshes/m/members/x", ""),
        (Method::POST, "/meshes/m/invites", "{}"),
        (Method::DELETE, "/invites/x", ""),
        (Method::GET, "/meshes/m/peers", ""),
        (Method::GET, "/nodes", ""),
    ]
}

async fn admin_requires_the_token(backend: Backend) {
    let w = world(backend).await;
    let node = &w.node;
    let wrong = [
        None,
        Some("Bearer wrong".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("bearer {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_string()),
        Some(format!("Basic {ADMIN_TOKEN}")),
    ];
    for (method, path, body) in routes() {
        for auth in &wrong {
            let got = raw(node, method.clone(), path, auth.as_deref(), body).await;
            assert_eq!(got.0, 401, "{method} {path} {auth:?}");
            assert_error(got, 401, "unauthorized");
        }
    }
    let meshes = list(node, "/meshes").await;
    assert_eq!(
        meshes.len(),
        1,
        "unauthorized POST made nothing: {meshes:?}"
    );
    assert_eq!(list(node, "/meshes/m/members").await.len(), 2);
}

async fn admin_is_404_without_a_token(backend: Backend) {
    let (node, _db) = node_with(backend, |s| s.admin_token = None).await;
    for (method, path, body) in routes() {
        for auth in [None, Some(bearer()), Some("Bearer ".to_string())] {
            let got = raw(&node, method.clone(), path, auth.as_deref(), body).await;
            assert_eq!(got.0, 404, "{method} {path}");
            assert_error(got, 404, "not_found");
        }
    }
    let meshes = node.engine.store.list_meshes().await.unwrap();
    assert!(meshes.is_empty(), "nothing was created");
}

both_stores!(
    meshes_create_and_list,
    meshes_refuse_bad_input,
    members_add_and_list,
    members_refuse_bad_input,
    member_revoke_closes_sessions_with_4002,
    peers_and_nodes_show_live_sessions,
    admin_requires_the_token,
    admin_is_404_without_a_token,
);
