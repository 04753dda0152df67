//! Single-use hello signatures (PROTOCOL-SESSIONS.md §11): a signature is
//! accepted once cluster-wide, a refused hello does not spend it, and
//! spent ones are forgotten once their window has passed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::hello_frame;
use crate::harness::{world_with, Backend, Peer};

/// Sends `frame` on a new socket; returns its first answer.
async fn answer_to(url: &str, frame: &Value) -> (Peer, Value) {
    let mut p = Peer::connect(url).await;
    p.send(frame.clone()).await;
    let r = p.recv().await;
    (p, r)
}

/// Accepted on node 1, replayed on node 2: refused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_is_spent_on_every_node() {
    let c = cluster(2, |_| {}).await;
    let captured = hello_frame(&c.alice, "s1", json!({}));
    let (_first, ack) = answer_to(&c.nodes[0].ws_url(), &captured).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    let mut replay = captured.clone();
    replay["sessionId"] = json!("elsewhere");
    let (mut p, r) = answer_to(&c.nodes[1].ws_url(), &replay).await;
    assert_eq!(r["code"], "replayed", "{r}");
    assert_eq!(p.expect_close().await, 1008);
}

/// Two identical hellos racing on two nodes: exactly one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replays_on_two_nodes_admit_one() {
    let c = cluster(2, |_| {}).await;
    let captured = hello_frame(&c.alice, "s1", json!({}));
    let (u0, u1) = (c.nodes[0].ws_url(), c.nodes[1].ws_url());
    let (a, b) = tokio::join!(answer_to(&u0, &captured), answer_to(&u1, &captured));
    let types = [a.1["type"].clone(), b.1["type"].clone()];
    let accepted = types.iter().filter(|t| **t == "hello_ack").count();
    assert_eq!(accepted, 1, "{} / {}", a.1, b.1);
    let refused = if a.1["type"] == "error" { &a.1 } else { &b.1 };
    assert_eq!(refused["code"], "replayed");
}

/// A hello refused at capacity gives its signature back: the same frame
/// is accepted once there is room.
async fn a_refused_hello_does_not_spend_its_signature(backend: Backend) {
    let w = world_with(backend, |s| {
        s.max_connections_per_mesh = 1;
        s.presence_grace_seconds = 0;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (b, _) = Peer::join(&url, &w.bob, "b1").await;
    let frame = hello_frame(&w.alice, "a1", json!({}));
    let (mut p, r) = answer_to(&url, &frame).await;
    assert_eq!(r["code"], "capacity", "{r}");
    assert_eq!(p.expect_close().await, 1008);
    b.close().await;
    // Grace 0: bob's presence ends at the next sweep.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !w.node.peers("m").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "bob never left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_p, r) = answer_to(&url, &frame).await;
    assert_eq!(
        r["type"], "hello_ack",
        "the same signature, now accepted: {r}"
    );
}

both_stores!(a_refused_hello_does_not_spend_its_signature);
