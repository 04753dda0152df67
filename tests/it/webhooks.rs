//! Inbound webhooks (PROTOCOL-MESH.md §9): managed over WebSocket, posted
//! to over HTTP, pushed to every live presence on every node.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world_with, Backend, Peer, TestNode};

async fn post(node: &TestNode, path: &str, body: &str) -> (u16, Value) {
    let r = node
        .http
        .post(node.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The path part of a webhook URL.
fn path_of(url: &str) -> String {
    url[url.find("/hook/").unwrap()..].to_string()
}

async fn create_post_list_delete(backend: Backend) {
    let w = world_with(backend, |s| s.webhook_rate_limit_per_min = 3).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let created = a
        .request(json!({"type": "create_webhook", "name": "ci", "_reqId": "w1"}))
        .await;
    assert_eq!(
        (created["type"].as_str(), created["_reqId"].as_str()),
        (Some("webhook_ack"), Some("w1")),
        "{created}"
    );
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(
        secret.len() == 64
            && secret
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let hook_url = created["url"].as_str().unwrap().to_string();
    assert!(
        hook_url.starts_with("http://")
            && hook_url.ends_with(&format!("/hook/{}/{secret}", w.alice.mesh_id)),
        "{hook_url}"
    );

    let body = r#"{"build":"1234","status":"failed"}"#;
    let (status, reply) = post(&w.node, &path_of(&hook_url), body).await;
    assert_eq!(
        (status, &reply),
        (200, &json!({"ok": true, "delivered": 2}))
    );
    for p in [&mut a, &mut b] {
        let push = p.recv().await;
        assert_eq!(
            (
                &push["type"],
                &push["subtype"],
                &push["event"],
                &push["senderPubkey"],
                &push["priority"]
            ),
            (
                &json!("push"),
                &json!("webhook"),
                &json!("ci"),
                &json!("webhook:ci"),
                &json!("next")
            ),
            "{push}"
        );
        assert_eq!(
            push["eventData"],
            json!({"build": "1234", "status": "failed"})
        );
        assert_eq!(
            push["ciphertext"],
            base64::engine::general_purpose::STANDARD.encode(body)
        );
        assert_eq!(push["messageId"].as_str().unwrap().len(), 32);
    }

    let bad_secret = format!("/hook/{}/{}", w.alice.mesh_id, "0".repeat(64));
    assert_eq!(
        post(&w.node, &bad_secret, body).await,
        (401, json!({"ok": false, "error": "unauthorized"}))
    );
    let unknown_mesh = format!("/hook/nope/{secret}");
    assert_eq!(post(&w.node, &unknown_mesh, body).await.0, 401);
    let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(70_000));
    assert_eq!(
        post(&w.node, &path_of(&hook_url), &big).await,
        (413, json!({"ok": false, "error": "payload too large"}))
    );
    for bad in ["[1,2]", "not json"] {
        assert_eq!(
            post(&w.node, &path_of(&hook_url), bad).await,
            (400, json!({"ok": false, "error": "invalid JSON body"}))
        );
    }
    // Three a minute: one was spent, two more pass, the fourth is refused.
    assert_eq!(post(&w.node, &path_of(&hook_url), "{}").await.0, 200);
    assert_eq!(post(&w.node, &path_of(&hook_url), "{}").await.0, 200);
    assert_eq!(
        post(&w.node, &path_of(&hook_url), "{}").await,
        (429, json!({"ok": false, "error": "rate_limit"}))
    );

    for p in [&mut a, &mut b] {
        for _ in 0..2 {
            assert_eq!(p.recv().await["eventData"], json!({}));
        }
    }
    let l = b
        .request(json!({"type": "list_webhooks", "_reqId": "w2"}))
        .await;
    let listed = &l["webhooks"][0];
    assert_eq!(
        (&listed["name"], &listed["active"]),
        (&json!("ci"), &json!(true))
    );
    let masked = listed["url"].as_str().unwrap();
    assert!(
        masked.ends_with(&format!("/{}…", &secret[..8])) && !masked.contains(&secret),
        "{masked}"
    );

    let e = b
        .request(json!({"type": "create_webhook", "name": "ci", "_reqId": "w"}))
        .await;
    assert_eq!(e["code"], "webhook_exists", "{e}");
    for name in [
        json!(""),
        json!("a\u{7}b"),
        json!(5),
        json!("n".repeat(257)),
    ] {
        let e = b
            .request(json!({"type": "create_webhook", "name": name, "_reqId": "w"}))
            .await;
        assert_error(&e, "invalid_webhook", "w");
    }
    let e = b
        .request(json!({"type": "delete_webhook", "name": "ci", "_reqId": "w3"}))
        .await;
    assert_eq!(e["code"], "forbidden");
    let d = a
        .request(json!({"type": "delete_webhook", "name": "ci", "_reqId": "w3"}))
        .await;
    assert_eq!(
        d,
        json!({"type": "webhook_ack", "name": "ci", "url": "", "secret": "", "_reqId": "w3"})
    );
    assert_eq!(
        post(&w.node, &path_of(&hook_url), body).await.0,
        401,
        "deleted: the secret is dead"
    );
    let again = a
        .request(json!({"type": "delete_webhook", "name": "ci", "_reqId": "w4"}))
        .await;
    assert_eq!(again["secret"], "", "an unknown name gets the same ack");
    let l = b
        .request(json!({"type": "list_webhooks", "_reqId": "w5"}))
        .await;
    assert_eq!(l["webhooks"], json!([]));

    // Audited by name; the secret is nowhere in the log.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, entries) = w
        .node
        .engine
        .store
        .audit_chain(&w.alice.mesh_id)
        .await
        .unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.event_type.as_str()).collect();
    assert!(
        names.contains(&"webhook_created") && names.contains(&"webhook_deleted"),
        "{names:?}"
    );
    assert!(!entries
        .iter()
        .any(|e| e.payload.to_string().contains(&secret)));
}

/// Posted to node 0, pushed to sessions on all three nodes, a body too
/// large for NOTIFY included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_webhook_reaches_every_node() {
    let c = cluster(3, |_| {}).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b1, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let (mut b2, _) = Peer::join(&c.nodes[2].ws_url(), &c.bob, "b2").await;
    let created = b1
        .request(json!({"type": "create_webhook", "name": "ci", "_reqId": "w"}))
        .await;
    let path = path_of(created["url"].as_str().unwrap());
    let big = format!(r#"{{"log":"{}"}}"#, "l".repeat(20_000));
    for body in [r#"{"n":1}"#.to_string(), big] {
        let (status, reply) = post(&c.nodes[0], &path, &body).await;
        assert_eq!((status, &reply["delivered"]), (200, &json!(3)), "{reply}");
        for p in [&mut a, &mut b1, &mut b2] {
            let push = p.recv().await;
            assert_eq!(push["subtype"], "webhook", "{push}");
            assert_eq!(
                push["eventData"],
                serde_json::from_str::<Value>(&body).unwrap()
            );
        }
    }
}

both_stores!(create_post_list_delete);
