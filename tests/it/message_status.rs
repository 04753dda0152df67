//! `message_status` over the wire (PROTOCOL-MESH.md §6): by id or prefix,
//! delivered or held, and each of its errors.

use std::time::Duration;

use serde_json::{json, Value};

use claudemesh_broker::protocol::ids;
use claudemesh_broker::protocol::target::Priority;
use claudemesh_broker::store::{Bucket, NewDelivery, NewMessage, Outgoing};

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Peer, World};
use crate::messaging::{expect_push, send};

async fn status(p: &mut Peer, id: &str) -> Value {
    p.request(json!({"type": "message_status", "messageId": id, "_reqId": "ms"}))
        .await
}

/// Polls until the status says delivered (completion is batched).
async fn until_delivered(p: &mut Peer, id: &str) -> Value {
    for _ in 0..100 {
        let r = status(p, id).await;
        if r["delivered"] == true {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("{id} never delivered");
}

async fn delivered_held_and_errors(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let bob = w.bob.keys.public_hex.clone();
    let ack = send(&mut a, "c1", &bob, "now", "eA==").await;
    let id = ack["messageId"].as_str().unwrap().to_string();
    expect_push(&mut b).await;
    let r = until_delivered(&mut a, &id).await;
    assert_eq!(r["type"], "message_status_result");
    assert_eq!(
        (&r["messageId"], &r["targetSpec"], &r["_reqId"]),
        (&json!(id), &json!(bob), &json!("ms"))
    );
    assert!(r["deliveredAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        r["recipients"],
        json!([{"name": "bob", "pubkey": bob, "status": "delivered"}])
    );
    // A prefix finds it too, and echoes what was asked.
    let by_prefix = status(&mut b, &id[..20]).await;
    assert_eq!(
        (&by_prefix["messageId"], &by_prefix["delivered"]),
        (&json!(&id[..20]), &json!(true))
    );

    // bob is busy: a `next` message waits, held.
    b.send(json!({"type": "set_status", "status": "working"}))
        .await;
    b.request(json!({"type": "list_peers", "_reqId": "sync"}))
        .await;
    let held = send(&mut a, "c2", &bob, "next", "eQ==").await;
    let r = status(&mut a, held["messageId"].as_str().unwrap()).await;
    assert_eq!(
        (&r["delivered"], &r["deliveredAt"]),
        (&json!(false), &Value::Null),
        "{r}"
    );
    assert_eq!(r["recipients"][0]["status"], "held");

    for bad in ["short", "0357S7tR-8aKks", &"x".repeat(33)] {
        let e = status(&mut a, bad).await;
        assert_error(&e, "invalid_argument", "ms");
        assert_eq!(
            e["message"],
            format!("messageId must be 8-32 base62 chars (got {})", bad.len())
        );
    }
    let e = a
        .request(json!({"type": "message_status", "messageId": 5, "_reqId": "ms"}))
        .await;
    assert_eq!(e["message"], "messageId must be 8-32 base62 chars (got 0)");
    let e = status(&mut a, "0357S7tR8aKksslUdH6nUq0000000000").await;
    assert_eq!(e["code"], "not_found", "{e}");
    let e = status(&mut a, "zzzzzzzzzzzz").await;
    assert_eq!(e["code"], "not_found", "{e}");
}

/// Two messages whose ids share a prefix: the prefix is ambiguous, the
/// full ids are not. Stored through the store so their ids can be chosen.
async fn an_ambiguous_prefix_is_refused(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let first = claudemesh_broker::store::new_message_id(chrono::Utc::now());
    let second = uuid::Uuid::from_u128(first.as_u128() ^ 1);
    let batch: Vec<Outgoing> = [first, second].iter().map(|id| stored(&w, *id)).collect();
    w.node
        .engine
        .store
        .insert_messages(&batch, &[], &[])
        .await
        .unwrap();
    let (e1, e2) = (ids::encode(first), ids::encode(second));
    assert_eq!(e1[..20], e2[..20]);
    let e = status(&mut a, &e1[..20]).await;
    assert_error(&e, "ambiguous_prefix", "ms");
    for id in [&e1, &e2] {
        let r = status(&mut a, id).await;
        assert_eq!(
            r["recipients"][0]["status"], "disconnected",
            "bob is not here: {r}"
        );
    }
}

fn stored(w: &World, id: uuid::Uuid) -> Outgoing {
    let now = chrono::Utc::now();
    Outgoing {
        message: NewMessage {
            id,
            mesh_id: w.alice.mesh_id.clone(),
            sender_member_id: w.alice.id.clone(),
            sender_member_pubkey: w.alice.keys.public_hex.clone(),
            sender_session_pubkey: None,
            target_spec: w.bob.keys.public_hex.clone(),
            priority: Priority::Now,
            nonce: "bm9uY2U=".into(),
            ciphertext: "eA==".into(),
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            echo: Default::default(),
        },
        deliveries: vec![NewDelivery {
            recipient_member_id: w.bob.id.clone(),
            recipient_session: None,
            exclude_session: None,
            claim: None,
        }],
        bucket: Bucket {
            key: w.alice.id.clone(),
            rate_per_min: 60,
            burst: 10,
        },
    }
}

/// Sent on node 0, delivered on node 1, asked about on node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_is_the_same_from_every_node() {
    let c = cluster(2, |_| {}).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let ack = send(&mut a, "c1", &c.bob.keys.public_hex, "now", "eA==").await;
    expect_push(&mut b).await;
    let r = until_delivered(&mut b, ack["messageId"].as_str().unwrap()).await;
    assert_eq!(r["recipients"][0]["status"], "delivered");
}

both_stores!(delivered_held_and_errors, an_ambiguous_prefix_is_refused);
