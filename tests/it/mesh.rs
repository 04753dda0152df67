//! `mesh_info` and the audit log over WebSocket (PROTOCOL-MESH.md §7,
//! §8), answered from the shared store on any node.

use serde_json::json;

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Peer};

async fn mesh_info_sums_up_the_mesh(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"displayName": "alice-api", "groups": [{"name": "backend", "role": "lead"}, "backend/api"]}),
    )
    .await;
    let (mut b, _) = Peer::join_with(&url, &w.bob, "b1", json!({"visible": false})).await;
    let empty = b
        .request(json!({"type": "mesh_info", "_reqId": "i0"}))
        .await;
    assert_eq!(empty["stateKeys"], json!([]));
    assert_eq!(empty["tasks"], json!({"open": 0, "claimed": 0, "done": 0}));
    a.send(json!({"type": "set_state", "key": "z", "value": 1, "_reqId": "s"}))
        .await;
    a.send(json!({"type": "set_state", "key": "deploy.frozen", "value": true, "_reqId": "s"}))
        .await;
    a.request(json!({"type": "remember", "content": "note", "_reqId": "m"}))
        .await;
    let t = a
        .request(json!({"type": "create_task", "title": "t", "_reqId": "t"}))
        .await;
    a.request(json!({"type": "create_task", "title": "u", "_reqId": "t"}))
        .await;
    a.request(json!({"type": "claim_task", "taskId": t["id"]}))
        .await;
    let i = a
        .request(json!({"type": "mesh_info", "_reqId": "i1"}))
        .await;
    assert_eq!(
        i,
        json!({"type": "mesh_info_result", "mesh": w.alice.mesh_id, "peers": 2,
               "groups": ["@backend", "@backend/api"], "stateKeys": ["deploy.frozen", "z"],
               "memoryCount": 1, "fileCount": 0, "tasks": {"open": 1, "claimed": 1, "done": 0},
               "streams": [], "tables": [], "collections": [], "yourName": "alice-api",
               "yourGroups": [{"name": "backend", "role": "lead"}, {"name": "backend/api"}],
               "_reqId": "i1"})
    );
}

async fn the_audit_log_over_websocket(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    for k in ["k1", "k2", "k3"] {
        a.send(json!({"type": "set_state", "key": k, "value": "secret-value", "_reqId": "s"}))
            .await;
    }
    // The appender writes asynchronously: wait for the three entries.
    let page = loop {
        let r = a
            .request(
                json!({"type": "audit_query", "eventType": "state_set", "limit": 2, "_reqId": "q"}),
            )
            .await;
        if r["total"] == 3 {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(page["type"], "audit_result");
    assert_eq!(page["_reqId"], "q");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["payload"]["key"], "k3", "newest first");
    assert_eq!(entries[0]["actor"], "alice");
    assert_eq!(entries[0]["eventType"], "state_set");
    assert_eq!(entries[0]["hash"].as_str().unwrap().len(), 64);
    assert!(entries[0]["id"].as_i64().unwrap() > entries[1]["id"].as_i64().unwrap());
    assert!(!page.to_string().contains("secret-value"));
    let next = a
        .request(json!({"type": "audit_query", "eventType": "state_set", "limit": 2, "offset": 2, "_reqId": "q"}))
        .await;
    assert_eq!(next["entries"][0]["payload"]["key"], "k1");
    let all = a
        .request(json!({"type": "audit_query", "_reqId": "q"}))
        .await;
    assert!(
        all["total"].as_u64().unwrap() >= 5,
        "member_added ×2, peer_joined, state_set ×3: {all}"
    );
    let v = a
        .request(json!({"type": "audit_verify", "_reqId": "v"}))
        .await;
    assert_eq!(v["type"], "audit_verify_result");
    assert_eq!(v["valid"], true);
    assert!(v["entries"].as_u64().unwrap() >= 5);
    assert!(v.get("brokenAt").is_none());
    let e = a
        .request(json!({"type": "audit_query", "limit": "ten", "_reqId": "b"}))
        .await;
    assert_error(&e, "bad_request", "b");
}

/// Counts written through node 0 are read the same on node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mesh_info_counts_every_node() {
    let c = cluster(2, |_| {}).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    a.request(json!({"type": "remember", "content": "n", "_reqId": "m"}))
        .await;
    let i = b.request(json!({"type": "mesh_info", "_reqId": "i"})).await;
    assert_eq!(
        (i["peers"].as_u64(), i["memoryCount"].as_u64()),
        (Some(2), Some(1)),
        "{i}"
    );
}

both_stores!(mesh_info_sums_up_the_mesh, the_audit_log_over_websocket);
