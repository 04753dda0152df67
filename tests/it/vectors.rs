//! Vectors over the wire (PROTOCOL-MESH.md §11).

use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Peer};

async fn store_search_delete_list(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let r = a
        .request(
            json!({"type": "vector_store", "collection": "Notes", "text": "retry with jitter",
                        "metadata": {"source": "pr-42", "mesh_id": "forged"}, "_reqId": "v1"}),
        )
        .await;
    assert_eq!(r["type"], "vector_stored", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let found = b
        .request(json!({"type": "vector_search", "collection": "notes", "query": "JITTER", "limit": 5, "_reqId": "v2"}))
        .await;
    assert_eq!(found["_reqId"], "v2");
    let hit = &found["results"][0];
    assert_eq!(
        (&hit["id"], &hit["text"], &hit["score"]),
        (&json!(id), &json!("retry with jitter"), &json!(1.0))
    );
    let meta = &hit["metadata"];
    assert_eq!(
        (
            &meta["source"],
            &meta["text"],
            &meta["mesh_id"],
            &meta["stored_by"]
        ),
        (
            &json!("pr-42"),
            &json!("retry with jitter"),
            &json!(w.alice.mesh_id),
            &json!(w.alice.keys.public_hex)
        ),
        "ours override the caller's"
    );
    assert!(meta["stored_at"].as_str().unwrap().ends_with('Z'));
    let none = b
        .request(
            json!({"type": "vector_search", "collection": "unknown", "query": "x", "_reqId": "v"}),
        )
        .await;
    assert_eq!(none["results"], json!([]));
    let l = b
        .request(json!({"type": "list_collections", "_reqId": "v3"}))
        .await;
    assert_eq!(
        l,
        json!({"type": "collection_list", "collections": ["notes"], "_reqId": "v3"})
    );
    let info = b.request(json!({"type": "mesh_info", "_reqId": "i"})).await;
    assert_eq!(info["collections"], json!(["notes"]));
    // bob may not delete alice's point: silent without _reqId.
    b.send(json!({"type": "vector_delete", "collection": "notes", "id": id}))
        .await;
    assert!(b.quiet_for(Duration::from_millis(300)).await);
    let e = b
        .request(json!({"type": "vector_delete", "collection": "notes", "id": id, "_reqId": "d"}))
        .await;
    assert_error(&e, "forbidden", "d");
    let ack = a
        .request(json!({"type": "vector_delete", "collection": "NOTES", "id": id}))
        .await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": id, "messageId": id, "queued": false})
    );
    let l = b
        .request(json!({"type": "list_collections", "_reqId": "v3"}))
        .await;
    assert_eq!(l["collections"], json!([]));
    a.expect_bad_requests(&[
        (
            json!({"type": "vector_store", "text": "t", "_reqId": "r"}),
            "collection",
        ),
        (
            json!({"type": "vector_store", "collection": "c", "_reqId": "r"}),
            "text",
        ),
        (
            json!({"type": "vector_store", "collection": "c", "text": "t", "metadata": 3, "_reqId": "r"}),
            "metadata",
        ),
        (
            json!({"type": "vector_store", "collection": "c", "text": "t".repeat(70_000), "_reqId": "r"}),
            "text",
        ),
        (
            json!({"type": "vector_search", "collection": "c", "_reqId": "r"}),
            "query",
        ),
    ])
    .await;
    let l = a
        .request(json!({"type": "list_collections", "_reqId": "l"}))
        .await;
    assert_eq!(l["collections"], json!([]), "nothing half-written");
}

both_stores!(store_search_delete_list);
