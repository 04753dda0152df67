//! Idempotent sends (PROTOCOL-SESSIONS.md §6): a `send` repeating a
//! remembered (mesh, sender member, `client_message_id`) is answered with
//! the first send's message, stores and delivers nothing and takes no
//! token; racing repeats on two nodes store one message.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::{world_with, Backend, Peer};
use crate::messaging::{expect_push, send_frame};

fn keyed(id: &str, cm: &str, target: &str, body: &str) -> Value {
    let mut f = send_frame(id, target, "now", body);
    f["client_message_id"] = json!(cm);
    f
}

async fn a_repeat_is_answered_with_the_first_message(backend: Backend) {
    // One token a second, three at most: the repeats below would run
    // out a bucket this small if they took tokens.
    let w = world_with(backend, |s| {
        s.send_burst = 3;
        s.send_rate_per_min = 60;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a1, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let bob = w.bob.keys.public_hex.clone();
    let first = a1.request(keyed("s1", "cm-x", &bob, "Zmlyc3Q=")).await;
    assert_eq!(first["queued"], true, "{first}");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "Zmlyc3Q=");
    // From the member's other session, with another body, many times.
    for i in 0..6 {
        let id = format!("r{i}");
        let again = a2.request(keyed(&id, "cm-x", &bob, "c2Vjb25k")).await;
        assert_eq!(again["type"], "ack", "{again}");
        assert_eq!(again["id"], id.as_str(), "the ack names this send");
        assert_eq!(again["messageId"], first["messageId"], "{again}");
        assert_eq!(again["queued"], true);
    }
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "no second push"
    );
    // The bucket still has its two tokens, and then none.
    for cm in ["cm-y", "cm-z"] {
        let ack = a1.request(keyed(cm, cm, &bob, "eQ==")).await;
        assert_eq!(ack["queued"], true, "{ack}");
        assert_ne!(ack["messageId"], first["messageId"]);
        expect_push(&mut b).await;
    }
    let refused = a1.request(keyed("s4", "cm-w", &bob, "dw==")).await;
    assert_eq!(
        refused["error"].as_str().map(|e| &e[..10]),
        Some("rate_limit"),
        "{refused}"
    );
    // A refused send left nothing: once a token is back, the same client
    // id is a new message.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let anew = a1.request(keyed("s5", "cm-w", &bob, "dw==")).await;
    assert_eq!(anew["queued"], true, "{anew}");
    assert_eq!(expect_push(&mut b).await["messageId"], anew["messageId"]);
    // Keys are per sender member: bob may use alice's.
    let (mut a, _) = Peer::join(&url, &w.bob, "b2").await;
    let own = a
        .request(keyed("b-1", "cm-x", &w.alice.keys.public_hex, "Ym9i"))
        .await;
    assert_eq!(own["queued"], true, "{own}");
    assert_ne!(own["messageId"], first["messageId"]);
    assert!(w.node.metrics().await.contains("result=\"duplicate\""));
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "no other push"
    );
}

/// Each round, alice's sessions on two nodes send the same client id at
/// the same moment: one message is stored, both acks name it, bob gets it
/// once.
async fn racing_repeats_on_two_nodes_store_one_message() {
    let c = cluster(2, |s| {
        s.send_burst = 1_000;
        s.send_rate_per_min = 60_000;
    })
    .await;
    let (mut a1, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut a2, _) = Peer::join(&c.nodes[1].ws_url(), &c.alice, "a2").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let bob = c.bob.keys.public_hex.clone();
    let rounds = 25;
    let mut stored = HashSet::new();
    for i in 0..rounds {
        let cm = format!("race-{i}");
        let (f1, f2) = (
            keyed(&format!("x{i}"), &cm, &bob, "eA=="),
            keyed(&format!("y{i}"), &cm, &bob, "eQ=="),
        );
        tokio::join!(a1.send(f1), a2.send(f2));
        let (r1, r2) = tokio::join!(a1.recv(), a2.recv());
        assert_eq!(r1["queued"], true, "{r1}");
        assert_eq!(r2["queued"], true, "{r2}");
        assert_eq!(r1["messageId"], r2["messageId"], "round {i}: {r1} {r2}");
        stored.insert(r1["messageId"].as_str().unwrap().to_string());
    }
    assert_eq!(stored.len(), rounds);
    let mut pushed = HashSet::new();
    for _ in 0..rounds {
        let p = expect_push(&mut b).await;
        assert!(
            pushed.insert(p["messageId"].as_str().unwrap().to_string()),
            "pushed twice: {p}"
        );
    }
    assert_eq!(pushed, stored);
    assert!(b.quiet_for(Duration::from_millis(500)).await, "no copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_racing_repeats_on_two_nodes_store_one_message() {
    racing_repeats_on_two_nodes_store_one_message().await
}

both_stores!(a_repeat_is_answered_with_the_first_message);
