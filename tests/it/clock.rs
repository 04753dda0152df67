//! The engine's time is its clock: moving a test clock makes grace and the
//! stuck-`working` TTL run out (on either store) without waiting them out.

use chrono::Duration as Span;
use serde_json::json;

use crate::both_stores;
use crate::harness::{world_with_clock, Backend, Peer};

async fn grace_runs_out_when_the_clock_moves(backend: Backend) {
    let (w, clock) = world_with_clock(backend, |s| {
        s.sweep_interval_seconds = 1;
        s.presence_grace_seconds = 3600;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert_eq!(a.next_event().await["event"], "peer_joined");
    b.close().await;
    // An hour of grace: still listed a sweep later.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let list = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["peers"].as_array().unwrap().len(), 2, "{list}");
    clock.advance(Span::seconds(3601));
    let left = a.next_event().await;
    assert_eq!(left["event"], "peer_left", "{left}");
    assert_eq!(left["eventData"]["name"], "bob");
    let list = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["peers"].as_array().unwrap().len(), 1, "{list}");
}

async fn a_stuck_working_status_expires_when_the_clock_moves(backend: Backend) {
    let (w, clock) = world_with_clock(backend, |s| {
        s.sweep_interval_seconds = 1;
        s.status_ttl_seconds = 600;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    a.send(json!({"type": "set_status", "status": "working"}))
        .await;
    let status = |list: serde_json::Value| list["peers"][0]["status"].clone();
    let list = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(status(list), "working");
    clock.advance(Span::seconds(601));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = a.request(json!({"type": "list_peers"})).await;
        if status(list.clone()) == "idle" {
            assert_eq!(list["peers"][0]["status"], "idle");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still working: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

both_stores!(
    grace_runs_out_when_the_clock_moves,
    a_stuck_working_status_expires_when_the_clock_moves,
);
