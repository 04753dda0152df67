//! Memory over the wire (PROTOCOL-MESH.md §2): `remember` →
//! `memory_stored` (with the 1.37 alias `memoryId`), `recall` →
//! `memory_results` (and `memory_recall_result` with `_reqId`), `forget`
//! → `ack`, the author's or a privileged member's only.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Peer};

async fn remember(p: &mut Peer, content: &str) -> String {
    let r = p
        .request(
            json!({"type": "remember", "content": content, "tags": ["ops", "db"], "_reqId": "m"}),
        )
        .await;
    assert_eq!(r["type"], "memory_stored", "{r}");
    assert_eq!(r["_reqId"], "m");
    assert_eq!(r["id"], r["memoryId"]);
    r["id"].as_str().unwrap().to_string()
}

/// `recall` with `_reqId`: both replies, the same memories.
async fn recall(p: &mut Peer, query: &str) -> Vec<Value> {
    p.send(json!({"type": "recall", "query": query, "_reqId": "q"}))
        .await;
    let results = p.recv().await;
    assert_eq!(results["type"], "memory_results", "{results}");
    let alias = p.recv().await;
    assert_eq!(alias["type"], "memory_recall_result", "{alias}");
    assert_eq!(
        (&results["_reqId"], &alias["_reqId"]),
        (&json!("q"), &json!("q"))
    );
    assert_eq!(results["memories"], alias["matches"]);
    results["memories"].as_array().unwrap().clone()
}

async fn remember_recall_forget(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let id = remember(&mut a, "Staging DB is reset every Sunday 02:00 UTC").await;
    assert_eq!(id.len(), 32);
    remember(&mut a, "Production deploys need two reviewers").await;

    let found = recall(&mut b, "staging reset").await;
    assert_eq!(found.len(), 1);
    let m = &found[0];
    assert_eq!(
        (&m["id"], &m["content"], &m["tags"], &m["rememberedBy"]),
        (
            &json!(id),
            &json!("Staging DB is reset every Sunday 02:00 UTC"),
            &json!(["ops", "db"]),
            &json!("alice")
        )
    );
    assert!(m["rememberedAt"].as_str().unwrap().ends_with('Z'));
    assert!(recall(&mut b, "the of").await.is_empty());
    assert!(recall(&mut b, "kubernetes").await.is_empty());
    // Without `_reqId` only the plain reply.
    let plain = b
        .request(json!({"type": "recall", "query": "reviewers"}))
        .await;
    assert_eq!(plain["memories"].as_array().unwrap().len(), 1, "{plain}");
    assert!(b.quiet_for(Duration::from_millis(300)).await);

    // bob may not forget alice's memory: silent without `_reqId`.
    b.send(json!({"type": "forget", "memoryId": id})).await;
    assert!(b.quiet_for(Duration::from_millis(300)).await);
    let e = b
        .request(json!({"type": "forget", "memoryId": id, "_reqId": "f"}))
        .await;
    assert_error(&e, "forbidden", "f");
    assert_eq!(recall(&mut b, "staging").await.len(), 1);
    let ack = a.request(json!({"type": "forget", "memoryId": id})).await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": id, "messageId": id, "queued": false})
    );
    assert!(recall(&mut b, "staging").await.is_empty());
    let again = a.request(json!({"type": "forget", "memoryId": id})).await;
    assert_eq!(again["type"], "ack", "unknown or forgotten: the same ack");
    let unknown = a
        .request(json!({"type": "forget", "memoryId": "nope"}))
        .await;
    assert_eq!(unknown["id"], "nope");
}

async fn bad_memory_frames_are_refused(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    a.expect_bad_requests(&[
        (json!({"type": "remember", "_reqId": "r"}), "content"),
        (
            json!({"type": "remember", "content": "", "_reqId": "r"}),
            "content",
        ),
        (
            json!({"type": "remember", "content": "x".repeat(70_000), "_reqId": "r"}),
            "content",
        ),
        (
            json!({"type": "remember", "content": "x", "tags": "ops", "_reqId": "r"}),
            "tags",
        ),
        (json!({"type": "recall", "_reqId": "r"}), "query"),
        (
            json!({"type": "forget", "memoryId": 3, "_reqId": "r"}),
            "memoryId",
        ),
    ])
    .await;
    assert!(recall(&mut a, "x").await.is_empty(), "nothing half-written");
    remember(&mut a, "the secret is hunter2").await;
    let mesh = &w.alice.mesh_id;
    let stored = loop {
        let (_, entries) = w.node.engine.store.audit_chain(mesh).await.unwrap();
        if let Some(e) = entries
            .into_iter()
            .find(|e| e.event_type == "memory_stored")
        {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !stored.payload.to_string().contains("hunter2"),
        "{}",
        stored.payload
    );
    assert_eq!(stored.payload["size_bytes"], 21);
}

/// Stored on one node, recalled and forgotten on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_memory_is_the_same_from_every_node() {
    let c = cluster(2, |_| {}).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut a2, _) = Peer::join(&c.nodes[1].ws_url(), &c.alice, "a2").await;
    let id = remember(&mut a, "rotate the signing key quarterly").await;
    assert_eq!(recall(&mut a2, "signing keys").await[0]["id"], id.as_str());
    a2.request(json!({"type": "forget", "memoryId": id})).await;
    assert!(recall(&mut a, "signing").await.is_empty());
}

both_stores!(remember_recall_forget, bad_memory_frames_are_refused);
