//! Admin API invites: signed v1 payloads, option validation, distinct
//! tokens, revocation.

use claudemesh_broker::protocol::crypto;
use claudemesh_broker::protocol::invite::InvitePayload;
use reqwest::Method;
use serde_json::{json, Value};

use crate::admin::{assert_error, bearer, is_iso, raw};
use crate::both_stores;
use crate::harness::{node_with, Backend};

async fn invites_are_signed_by_the_owner(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let mesh = node.create_mesh("m").await;
    let before = chrono::Utc::now().timestamp();
    let (s, inv) = node.admin(Method::POST, "/meshes/m/invites", None).await;
    assert_eq!(s, 201, "{inv}");
    let token = inv["token"].as_str().unwrap();
    assert_eq!(inv["link"], format!("ic://join/{token}"));
    assert_eq!(inv["meshId"], mesh["id"]);
    assert_eq!(inv["maxUses"], 1, "default one use");
    assert_eq!(inv["role"], "member");
    assert!(is_iso(&inv["expiresAt"]));
    let expires = chrono::DateTime::parse_from_rfc3339(inv["expiresAt"].as_str().unwrap()).unwrap();
    let week = 7 * 24 * 3600;
    assert!(
        (expires.timestamp() - before - week).abs() <= 2,
        "default ttl 7 days: {inv}"
    );

    let p = InvitePayload::from_token(token).expect("token decodes");
    assert_eq!(
        InvitePayload::from_token(inv["link"].as_str().unwrap()),
        Some(p.clone())
    );
    assert!(p.signature_valid(), "{p:?}");
    assert_eq!(p.v, 1);
    assert_eq!(p.owner_pubkey, mesh["ownerPubkey"].as_str().unwrap());
    assert_eq!(p.mesh_id, mesh["id"].as_str().unwrap());
    assert_eq!(p.mesh_slug, "m");
    assert_eq!(p.mesh_root_key, mesh["rootKey"].as_str().unwrap());
    assert_eq!(p.role, "member");
    assert_eq!(p.expires_at, expires.timestamp());
    assert_eq!(p.broker_url, node.engine.node.public_url);
    assert_eq!(p.broker_url, node.ws_url(), "public URL of the bound port");

    // Every option.
    let body = json!({"maxUses": 3, "ttlSeconds": 7200, "role": "admin", "brokerUrl": "wss://mesh.example/ws"});
    let (s, inv2) = node
        .admin(Method::POST, "/meshes/m/invites", Some(body))
        .await;
    assert_eq!(s, 201, "{inv2}");
    assert_eq!(inv2["maxUses"], 3);
    assert_eq!(inv2["role"], "admin");
    assert_ne!(inv2["token"], inv["token"]);
    let p2 = InvitePayload::from_token(inv2["token"].as_str().unwrap()).unwrap();
    assert!(p2.signature_valid());
    assert_eq!(
        (p2.role.as_str(), p2.broker_url.as_str()),
        ("admin", "wss://mesh.example/ws")
    );
    assert!((p2.expires_at - before - 7200).abs() <= 2, "{p2:?}");
    assert_error(
        node.admin(Method::POST, "/meshes/nope/invites", Some(json!({})))
            .await,
        404,
        "not_found",
    );
}

async fn invites_refuse_bad_input(backend: Backend) {
    let (node, db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    let cases = [
        json!({"maxUses": 0}),
        json!({"maxUses": -1}),
        json!({"maxUses": 10_001}),
        json!({"maxUses": 1e12}),
        json!({"maxUses": "3"}),
        json!({"ttlSeconds": 0}),
        json!({"ttlSeconds": -5}),
        json!({"ttlSeconds": 365 * 24 * 3600 + 1}),
        json!({"role": "owner"}),
        json!({"role": null, "brokerUrl": "http://x.example/ws"}),
        json!({"brokerUrl": "https://x.example/ws"}),
        json!({"brokerUrl": "x.example"}),
        json!({"uses": 2}),
    ];
    for body in cases {
        let got = node
            .admin(Method::POST, "/meshes/m/invites", Some(body.clone()))
            .await;
        assert_eq!(got.0, 400, "{body} -> {}", got.1);
        assert_error(got, 400, "bad_request");
    }
    let got = raw(
        &node,
        Method::POST,
        "/meshes/m/invites",
        Some(&bearer()),
        "{bad",
    )
    .await;
    assert_error(got, 400, "bad_request");
    if let Some(db) = &db {
        let c = db.client().await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM invite", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "refused invites leave no row");
    }
    // Limits themselves are fine.
    let body =
        json!({"maxUses": 10_000, "ttlSeconds": 365 * 24 * 3600, "brokerUrl": "ws://h:1/ws"});
    let got = node
        .admin(Method::POST, "/meshes/m/invites", Some(body))
        .await;
    assert_eq!(got.0, 201, "{}", got.1);
    // The longest brokerUrl, of characters that do not compress, fits the
    // token column; longer, or swollen by JSON escapes, is refused.
    let long = format!("ws://{}", crypto::random_token(1024))[..1024].to_string();
    let got = node
        .admin(
            Method::POST,
            "/meshes/m/invites",
            Some(json!({"brokerUrl": long})),
        )
        .await;
    assert_eq!(got.0, 201, "{}", got.1);
    let quotes = format!("ws://{}", "\"".repeat(1019));
    for url in [format!("{long}x"), quotes] {
        let got = node
            .admin(
                Method::POST,
                "/meshes/m/invites",
                Some(json!({"brokerUrl": url})),
            )
            .await;
        assert_error(got, 400, "bad_request");
    }
}

async fn identical_invites_get_distinct_tokens(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..5 {
        let (s, inv) = node
            .admin(
                Method::POST,
                "/meshes/m/invites",
                Some(json!({"ttlSeconds": 600})),
            )
            .await;
        assert_eq!(s, 201, "same second, same fields: {inv}");
        let token = inv["token"].as_str().unwrap().to_string();
        let p = InvitePayload::from_token(&token).unwrap();
        assert!(p.signature_valid());
        let expires = chrono::DateTime::parse_from_rfc3339(inv["expiresAt"].as_str().unwrap());
        assert_eq!(
            p.expires_at,
            expires.unwrap().timestamp(),
            "row and payload agree"
        );
        assert!(tokens.insert(token), "distinct tokens");
    }
    // Each is its own invite: revoking one leaves the others.
    let first = tokens.iter().next().unwrap();
    assert_eq!(
        node.admin(Method::DELETE, &format!("/invites/{first}"), None)
            .await
            .0,
        204
    );
    for t in tokens.iter().skip(1) {
        assert_eq!(
            node.admin(Method::DELETE, &format!("/invites/{t}"), None)
                .await
                .0,
            204
        );
    }
}

async fn invite_revoke_then_404(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    node.create_mesh("m").await;
    let (_, inv) = node
        .admin(Method::POST, "/meshes/m/invites", Some(json!({})))
        .await;
    let token = inv["token"].as_str().unwrap();
    let path = format!("/invites/{token}");
    let (s, body) = node.admin(Method::DELETE, &path, None).await;
    assert_eq!((s, body), (204, Value::Null));
    assert_error(
        node.admin(Method::DELETE, &path, None).await,
        404,
        "not_found",
    );
    assert_error(
        node.admin(Method::DELETE, "/invites/never-made", None)
            .await,
        404,
        "not_found",
    );

    // The full link works too, percent-encoded as one path segment.
    let (_, inv) = node
        .admin(Method::POST, "/meshes/m/invites", Some(json!({})))
        .await;
    let link = inv["link"]
        .as_str()
        .unwrap()
        .replace(':', "%3A")
        .replace('/', "%2F");
    let (s, _) = node
        .admin(Method::DELETE, &format!("/invites/{link}"), None)
        .await;
    assert_eq!(s, 204);
    let path = format!("/invites/{}", inv["token"].as_str().unwrap());
    assert_error(
        node.admin(Method::DELETE, &path, None).await,
        404,
        "not_found",
    );
}

both_stores!(
    invites_are_signed_by_the_owner,
    invites_refuse_bad_input,
    identical_invites_get_distinct_tokens,
    invite_revoke_then_404,
);
