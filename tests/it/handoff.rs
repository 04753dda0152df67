//! Pre-claimed delivery: a message for a caught-up session on the sending
//! node is stored already claimed and pushed without a claim. It must keep
//! the order a claim would give, complete what it wrote, and never
//! overtake rows waiting for the session.

use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::harness::{world_with, Backend, Peer};
use crate::messaging::{expect_push, send, send_frame};

async fn local_pushes_are_handed_over_and_completed(backend: Backend) {
    let w = world_with(backend, |s| s.send_burst = 500).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    // Handoffs start once bob's status (set at hello) is older than his
    // last full claim by the skew margin (1 s).
    b.request(json!({"type": "list_peers"})).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let n = 20;
    for i in 0..n {
        send(
            &mut a,
            &format!("h{i}"),
            &w.bob.keys.public_hex,
            "next",
            &format!("{i}"),
        )
        .await;
        assert_eq!(expect_push(&mut b).await["ciphertext"], format!("{i}"));
    }
    let handed = w.node.metric("broker_handoffs_total").await;
    assert!(
        handed >= n / 2,
        "most pushes skip the claim: {handed} of {n}"
    );
    // Written pushes are completed: the queue empties, and bob's next
    // socket gets none of them again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !w.node.metrics().await.contains("broker_queue_depth 0") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue never emptied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(b);
    let (mut b2, _) = Peer::join(&url, &w.bob, "b1").await;
    assert!(
        b2.quiet_for(Duration::from_millis(800)).await,
        "nothing written is delivered twice"
    );
}

async fn held_rows_are_not_overtaken(backend: Backend) {
    let w = world_with(backend, |s| s.send_burst = 500).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    b.send(json!({"type": "set_status", "status": "working"}))
        .await;
    b.request(json!({"type": "list_peers"})).await;
    let bob = w.bob.keys.public_hex.clone();
    for i in 0..5 {
        send(&mut a, &format!("w{i}"), &bob, "next", &format!("{i}")).await;
    }
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "held while working"
    );
    // Idle, then at once more sends, pipelined: the new ones must queue
    // behind the held ones, not be handed over first.
    b.send(json!({"type": "set_status", "status": "idle"}))
        .await;
    for i in 5..15 {
        a.send(send_frame(&format!("w{i}"), &bob, "next", &format!("{i}")))
            .await;
    }
    for i in 0..15 {
        assert_eq!(
            expect_push(&mut b).await["ciphertext"],
            format!("{i}"),
            "oldest first"
        );
    }
}

async fn a_backlog_is_claimed_before_new_sends(backend: Backend) {
    // More rows than one claim takes: the loop is not caught up until the
    // backlog is gone, so nothing new may be handed over meanwhile.
    let w = world_with(backend, |s| s.send_burst = 2_000).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    b.send(json!({"type": "set_status", "status": "dnd"})).await;
    b.request(json!({"type": "list_peers"})).await;
    let bob = w.bob.keys.public_hex.clone();
    let held = 600;
    for i in 0..held {
        a.send(send_frame(&format!("k{i}"), &bob, "low", &format!("{i}")))
            .await;
    }
    let mut acks = 0;
    while acks < held {
        let f = a.recv().await;
        if f["type"] == "ack" {
            assert_eq!(f["queued"], true, "{f}");
            acks += 1;
        }
    }
    b.send(json!({"type": "set_status", "status": "idle"}))
        .await;
    for i in held..held + 50 {
        a.send(send_frame(&format!("k{i}"), &bob, "low", &format!("{i}")))
            .await;
    }
    for i in 0..held + 50 {
        assert_eq!(
            expect_push(&mut b).await["ciphertext"],
            format!("{i}"),
            "oldest first"
        );
    }
}

both_stores!(
    local_pushes_are_handed_over_and_completed,
    held_rows_are_not_overtaken,
    a_backlog_is_claimed_before_new_sends,
);
