//! Tasks over the wire (PROTOCOL-MESH.md §3): create, list, claim and
//! complete with their replies and errors; claims raced from sessions on
//! three nodes have exactly one winner per task.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use claudemesh_broker::protocol::crypto::KeyPair;

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Member, Peer, TestNode};

async fn create(p: &mut Peer, title: &str, extra: Value) -> String {
    let mut f = json!({"type": "create_task", "title": title, "_reqId": "c"});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            f[k] = v;
        }
    }
    let r = p.request(f).await;
    assert_eq!(r["type"], "task_created", "{r}");
    assert_eq!(r["_reqId"], "c");
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    id
}

async fn enrol(node: &TestNode, name: &str) -> Member {
    let keys = KeyPair::generate();
    let (s, m) = node
        .admin(
            Method::POST,
            "/meshes/m/members",
            Some(json!({"pubkey": keys.public_hex, "displayName": name, "role": "member"})),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    Member {
        id: m["id"].as_str().unwrap().to_string(),
        mesh_id: m["meshId"].as_str().unwrap().to_string(),
        keys,
    }
}

async fn create_list_claim_complete(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let empty = a
        .request(json!({"type": "list_tasks", "_reqId": "l"}))
        .await;
    assert_eq!(
        empty,
        json!({"type": "task_list", "tasks": [], "_reqId": "l"})
    );

    let review = create(
        &mut a,
        "Review PR #42",
        json!({"assignee": "bob", "priority": "high", "tags": ["review"]}),
    )
    .await;
    let other = create(&mut a, "Write docs", json!({})).await;
    let l = b
        .request(json!({"type": "list_tasks", "assignee": "bob", "_reqId": "l1"}))
        .await;
    assert_eq!(l["tasks"].as_array().unwrap().len(), 1, "{l}");
    let t = &l["tasks"][0];
    assert_eq!(t["id"], review.as_str());
    assert_eq!(
        (
            &t["title"],
            &t["assignee"],
            &t["claimedBy"],
            &t["status"],
            &t["priority"],
            &t["createdBy"],
            &t["tags"],
            &t["result"]
        ),
        (
            &json!("Review PR #42"),
            &json!("bob"),
            &Value::Null,
            &json!("open"),
            &json!("high"),
            &json!("alice"),
            &json!(["review"]),
            &Value::Null
        )
    );
    assert!(t["createdAt"].as_str().unwrap().ends_with('Z'));
    let all = b
        .request(json!({"type": "list_tasks", "_reqId": "l2"}))
        .await;
    let ids: Vec<&str> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [other.as_str(), review.as_str()], "newest first");
    assert_eq!(t["priority"], "high");
    let defaulted = &all["tasks"][0];
    assert_eq!(
        (&defaulted["priority"], &defaulted["assignee"]),
        (&json!("normal"), &Value::Null)
    );

    // Claim as the clients send it: no _reqId; the reply is every task.
    let l = b
        .request(json!({"type": "claim_task", "taskId": review}))
        .await;
    assert_eq!(l["type"], "task_list", "{l}");
    assert!(l.get("_reqId").is_none());
    let claimed = l["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == review.as_str())
        .unwrap();
    assert_eq!(
        (&claimed["status"], &claimed["claimedBy"]),
        (&json!("claimed"), &json!("bob"))
    );
    // A lost race: nothing without _reqId, the error with it.
    a.send(json!({"type": "claim_task", "taskId": review}))
        .await;
    assert!(a.quiet_for(Duration::from_millis(300)).await);
    let e = a
        .request(json!({"type": "claim_task", "taskId": review, "_reqId": "k"}))
        .await;
    assert_error(&e, "task_not_claimable", "k");
    let e = a
        .request(json!({"type": "claim_task", "taskId": "nope", "_reqId": "k2"}))
        .await;
    assert_eq!(e["code"], "task_not_claimable", "{e}");

    // The creator completes bob's claimed task; then bob again.
    let l = a
        .request(json!({"type": "complete_task", "taskId": review, "result": "merged"}))
        .await;
    let done = l["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == review.as_str())
        .unwrap();
    assert_eq!(
        (&done["status"], &done["result"]),
        (&json!("done"), &json!("merged"))
    );
    let l = b
        .request(json!({"type": "complete_task", "taskId": review, "result": "merged twice"}))
        .await;
    assert_eq!(l["type"], "task_list", "{l}");
    let e = b
        .request(json!({"type": "complete_task", "taskId": "0357S7tR8aKksslUdH6nUq0000000000", "_reqId": "x"}))
        .await;
    assert_error(&e, "task_not_found", "x");

    // A third member may complete an open task, not a claimed one.
    let carol = enrol(&w.node, "carol").await;
    let (mut c, _) = Peer::join(&url, &carol, "c1").await;
    b.request(json!({"type": "claim_task", "taskId": other}))
        .await;
    c.send(json!({"type": "complete_task", "taskId": other}))
        .await;
    assert!(
        c.quiet_for(Duration::from_millis(300)).await,
        "refused without a word"
    );
    let e = c
        .request(json!({"type": "complete_task", "taskId": other, "_reqId": "f"}))
        .await;
    assert_error(&e, "forbidden", "f");
    let open = create(&mut a, "anyone", json!({})).await;
    let l = c
        .request(json!({"type": "complete_task", "taskId": open}))
        .await;
    assert_eq!(l["type"], "task_list", "{l}");
    let st = c
        .request(json!({"type": "list_tasks", "status": "claimed", "_reqId": "s"}))
        .await;
    let claimed: Vec<&str> = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(claimed, [other.as_str()], "{st}");
    let m = w.node.metrics().await;
    for line in [
        "broker_frames_total{family=\"tasks\",type=\"create_task\",result=\"ok\"} 3",
        "broker_frames_total{family=\"tasks\",type=\"claim_task\",result=\"task_not_claimable\"} 3",
        "broker_frames_total{family=\"tasks\",type=\"complete_task\",result=\"forbidden\"} 2",
    ] {
        assert!(m.contains(line), "{line} not in:\n{m}");
    }
}

async fn bad_task_frames_are_refused(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    a.expect_bad_requests(&[
        (json!({"type": "create_task", "_reqId": "r"}), "title"),
        (
            json!({"type": "create_task", "title": "t", "tags": [1], "_reqId": "r"}),
            "tags",
        ),
        (
            json!({"type": "create_task", "title": "t".repeat(1025), "_reqId": "r"}),
            "title",
        ),
        (json!({"type": "claim_task", "_reqId": "r"}), "taskId"),
        (
            json!({"type": "complete_task", "taskId": "x", "result": "r".repeat(70_000), "_reqId": "r"}),
            "result",
        ),
        (
            json!({"type": "list_tasks", "status": 1, "_reqId": "r"}),
            "status",
        ),
    ])
    .await;
    let l = a
        .request(json!({"type": "list_tasks", "_reqId": "l"}))
        .await;
    assert_eq!(l["tasks"], json!([]), "nothing half-written");
    let (_, entries) = w
        .node
        .engine
        .store
        .audit_chain(&w.alice.mesh_id)
        .await
        .unwrap();
    assert!(!entries.iter().any(|e| e.event_type.starts_with("task_")));
}

/// Thirty sessions on each of three nodes race to claim each of 100
/// tasks, all at once: every task has exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_claims_race_to_one_winner() {
    let c = cluster(3, |_| {}).await;
    let mut peers = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        for j in 0..30 {
            let who = if j % 2 == 0 { &c.alice } else { &c.bob };
            let (p, _) = Peer::join(&node.ws_url(), who, &format!("n{i}-{j}")).await;
            peers.push(p);
        }
    }
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(create(&mut peers[0], &format!("t{i}"), json!({})).await);
    }
    // Each session sends all its claims, each in its own order, then reads
    // the replies: every reply is a win (task_list) or task_not_claimable.
    let rounds = peers.iter_mut().enumerate().map(|(k, p)| {
        let mut order: Vec<(usize, &String)> = ids.iter().enumerate().collect();
        order.rotate_left(k * 7 % ids.len());
        async move {
            for (n, id) in &order {
                p.send(json!({"type": "claim_task", "taskId": id, "_reqId": format!("{n}")}))
                    .await;
            }
            let mut won = Vec::new();
            for _ in 0..order.len() {
                let r = p.recv().await;
                match r["type"].as_str() {
                    Some("task_list") => won.push(r["_reqId"].as_str().unwrap().to_string()),
                    Some("error") => assert_eq!(r["code"], "task_not_claimable", "{r}"),
                    _ => panic!("unexpected {r}"),
                }
            }
            won
        }
    });
    let mut winners: HashMap<String, usize> = HashMap::new();
    for won in futures_util::future::join_all(rounds).await {
        for n in won {
            *winners.entry(n).or_default() += 1;
        }
    }
    for n in 0..ids.len() {
        assert_eq!(
            winners.get(&n.to_string()),
            Some(&1),
            "task {n}: {winners:?}"
        );
    }
}

both_stores!(create_list_claim_complete, bad_task_frames_are_refused);
