//! Contexts over the wire (PROTOCOL-MESH.md §5).

use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::{world, Backend, Peer};

async fn share_get_and_list(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let share = json!({"type": "share_context", "summary": "Mapped the auth flow",
        "filesRead": ["src/auth.ts"], "keyFindings": ["tokens never expire"], "tags": ["auth"]});
    let r = a.request(share.clone()).await;
    assert_eq!(
        r["type"], "context_shared",
        "answered without _reqId too: {r}"
    );
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let e = b.recv().await;
    assert_eq!(
        e,
        json!({"type": "state_change", "key": "_context:alice", "value": "Mapped the auth flow",
               "updatedBy": "alice"})
    );
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "not to the sharer"
    );
    let again = a.request(share).await;
    assert_eq!(again["id"], id.as_str(), "one context per member");
    b.recv().await;

    let found = b
        .request(json!({"type": "get_context", "query": "AUTH", "_reqId": "g"}))
        .await;
    assert_eq!(found["_reqId"], "g");
    let c = &found["contexts"][0];
    assert_eq!(
        (
            &c["peerName"],
            &c["summary"],
            &c["filesRead"],
            &c["keyFindings"],
            &c["tags"]
        ),
        (
            &json!("alice"),
            &json!("Mapped the auth flow"),
            &json!(["src/auth.ts"]),
            &json!(["tokens never expire"]),
            &json!(["auth"])
        )
    );
    assert!(c["updatedAt"].as_str().unwrap().ends_with('Z'));
    let none = b
        .request(json!({"type": "get_context", "query": "billing", "_reqId": "g2"}))
        .await;
    assert_eq!(none["contexts"], json!([]));
    let l = b
        .request(json!({"type": "list_contexts", "_reqId": "l"}))
        .await;
    assert_eq!(l["type"], "context_list");
    assert_eq!(l["contexts"].as_array().unwrap().len(), 1);
    assert!(l["contexts"][0].get("filesRead").is_none(), "{l}");
    // No state entry is made.
    let st = b
        .request(json!({"type": "list_state", "_reqId": "s"}))
        .await;
    assert_eq!(st["entries"], json!([]));

    a.expect_bad_requests(&[
        (json!({"type": "share_context", "_reqId": "r"}), "summary"),
        (
            json!({"type": "share_context", "summary": "x".repeat(70_000), "_reqId": "r"}),
            "summary",
        ),
        (
            json!({"type": "share_context", "summary": "s", "filesRead": [1], "_reqId": "r"}),
            "filesRead",
        ),
        (
            json!({"type": "get_context", "query": 5, "_reqId": "r"}),
            "query",
        ),
    ])
    .await;
    a.send(json!({"type": "share_context"})).await;
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "no error without _reqId"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_shared_context_reaches_every_node() {
    let c = cluster(2, |_| {}).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    a.request(json!({"type": "share_context", "summary": "found the leak"}))
        .await;
    assert_eq!(b.recv().await["key"], "_context:alice");
    let l = b
        .request(json!({"type": "list_contexts", "_reqId": "l"}))
        .await;
    assert_eq!(l["contexts"][0]["summary"], "found the leak");
}

both_stores!(share_get_and_list);
