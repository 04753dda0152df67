//! Hostile and broken clients: sockets that never say hello, connection
//! floods, frame floods, and a client that stops reading.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::both_stores;
use crate::harness::{node_with, world_with, Backend, Peer};
use crate::messaging::send_frame;

async fn silent_sockets_are_closed_after_the_hello_timeout(backend: Backend) {
    let (node, _db) = node_with(backend, |s| s.hello_timeout_seconds = 1).await;
    let mut p = Peer::connect(&node.ws_url()).await;
    let started = tokio::time::Instant::now();
    assert_eq!(p.recv().await["code"], "hello_timeout");
    assert_eq!(p.expect_close().await, 1008);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

async fn upgrades_past_the_caps_get_503(backend: Backend) {
    let (node, _db) = node_with(backend, |s| {
        s.max_connections_per_node = 2;
        s.max_new_connections_per_second = 1000;
    })
    .await;
    let _a = Peer::connect(&node.ws_url()).await;
    let _b = Peer::connect(&node.ws_url()).await;
    match tokio_tungstenite::connect_async(node.ws_url()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("third socket admitted: {:?}", other.map(|_| ())),
    }
    assert_eq!(node.metric("broker_refused_upgrades_total").await, 1);

    let (node, _db2) = node_with(backend, |s| s.max_new_connections_per_second = 3).await;
    let mut refused = 0;
    let mut kept = Vec::new();
    for _ in 0..8 {
        match tokio_tungstenite::connect_async(node.ws_url()).await {
            Ok((ws, _)) => kept.push(ws),
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 503);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 4, "a burst of 8 against 3/s: {refused} refused");
}

async fn frame_floods_are_throttled_per_socket(backend: Backend) {
    let w = world_with(backend, |s| s.max_frames_per_second = 5).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let (_b, _) = Peer::join(&w.node.ws_url(), &w.bob, "b1").await;
    for i in 0..10 {
        a.send(json!({"type": "list_peers", "_reqId": format!("q{i}")}))
            .await;
    }
    a.send(send_frame("s1", &w.bob.keys.public_hex, "now", "eA=="))
        .await;
    let mut limited = 0;
    let mut ack = None;
    for _ in 0..11 {
        let r = a.recv().await;
        if r["type"] == "ack" {
            ack = Some(r);
        } else if r["code"] == "rate_limit" {
            limited += 1;
        }
    }
    assert!(limited >= 4, "{limited} throttled of 10");
    let ack = ack.expect("the send was acked");
    assert_eq!(ack["id"], "s1");
    assert_eq!(ack["code"], "rate_limit", "{ack}");
    assert!(w.node.metric("broker_throttled_frames_total").await >= 5);
    // The budget refills: the socket works again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        a.request(json!({"type": "list_peers"})).await["type"],
        "peers_list"
    );
}

/// A client that stops reading is dropped as a slow consumer; what it did
/// not get stays queued, and other sessions keep their pace.
async fn slow_consumers_are_dropped_without_loss(backend: Backend) {
    let w = world_with(backend, |s| {
        s.ping_interval_seconds = 1;
        s.pong_timeout_seconds = 60;
        s.send_burst = 100_000;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let carol = w.node.add_member("m", "carol", &[]).await;
    let (mut c, _) = Peer::join(&url, &carol, "c1").await;
    let (stalled, _) = Peer::join(&url, &w.bob, "b1").await;
    // ~60 KB each: enough to fill the socket buffers and the queue.
    let body = "A".repeat(60_000);
    let n = 500;
    for i in 0..n {
        a.send(send_frame(
            &format!("f{i}"),
            &w.bob.keys.public_hex,
            "now",
            &body,
        ))
        .await;
    }
    let mut acked = 0;
    while acked < n {
        let r = a.recv_any_within(Duration::from_secs(30)).await;
        if r["type"] == "ack" {
            assert_eq!(r["queued"], true, "{r}");
            acked += 1;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while w
        .node
        .metric("broker_slow_consumer_disconnects_total")
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled reader never dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Another session is not held up by the stalled one.
    let started = tokio::time::Instant::now();
    a.send(send_frame("fast", &carol.keys.public_hex, "now", "eA=="))
        .await;
    let push = c.recv().await;
    assert_eq!(push["type"], "push");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let peers = w.node.peers("m").await;
    let bob = peers.iter().find(|p| p["sessionId"] == "b1").unwrap();
    assert_eq!(bob["state"], "grace", "released for re-attach");
    drop(stalled);
    // Re-attached and reading, bob gets what was never written to the
    // stalled socket (written frames count as delivered without client_ack).
    let (mut b2, _) = Peer::join(&url, &w.bob, "b1").await;
    let first = b2.recv_any_within(Duration::from_secs(10)).await;
    assert_eq!(first["type"], "push");
}

both_stores!(
    silent_sockets_are_closed_after_the_hello_timeout,
    upgrades_past_the_caps_get_503,
    frame_floods_are_throttled_per_socket,
    slow_consumers_are_dropped_without_loss,
);
