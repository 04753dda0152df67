//! The mesh clock over the wire (PROTOCOL-MESH.md §13): `clock_status`
//! replies and `no_clock`, tick events to every live presence (the
//! caller's included) in order, pause and resume, auto-pause when nobody
//! is live; and on real processes, ticks that go on from another node when
//! the owner is SIGKILLed, never repeating a number or going back.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::client::assert_error;
use crate::harness::{cluster_node, world, Backend, Peer, TestDb};

async fn status(p: &mut Peer, frame: Value) -> Value {
    let r = p.request(frame).await;
    assert_eq!(
        (r["type"].as_str(), r["_reqId"].as_str()),
        (Some("clock_status"), Some("k")),
        "{r}"
    );
    r
}

async fn next_tick(p: &mut Peer) -> Value {
    loop {
        let e = p.next_event().await;
        if e["event"] == "tick" {
            return e;
        }
    }
}

async fn replies_ticks_pause_and_resume(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let zero = status(&mut a, json!({"type": "get_clock", "_reqId": "k"})).await;
    assert_eq!(
        (&zero["speed"], &zero["paused"], &zero["tick"]),
        (&json!(0), &json!(true), &json!(0)),
        "{zero}"
    );
    assert_eq!(zero["simTime"], zero["startedAt"]);
    for ty in ["pause_clock", "resume_clock"] {
        let r = a.request(json!({"type": ty, "_reqId": "x"})).await;
        assert_error(&r, "no_clock", "x");
        assert_eq!(r["message"], "No clock running for this mesh");
    }

    let set = status(
        &mut a,
        json!({"type": "set_clock", "speed": 100, "_reqId": "k"}),
    )
    .await;
    assert_eq!(
        (&set["speed"], &set["paused"], &set["tick"]),
        (&json!(100), &json!(false), &json!(0))
    );
    assert_eq!(set["simTime"], set["startedAt"]);
    // Every 600 ms, to every live presence, the caller's included.
    for n in 1..=2 {
        for p in [&mut a, &mut b] {
            let t = next_tick(p).await;
            assert_eq!(
                (&t["eventData"]["tick"], &t["eventData"]["speed"]),
                (&json!(n), &json!(100)),
                "{t}"
            );
            assert_eq!(
                (&t["subtype"], &t["senderPubkey"], &t["priority"]),
                (&json!("system"), &json!("system"), &json!("low"))
            );
            assert!(t["eventData"].get("mesh").is_none() && t["eventData"].get("event").is_none());
        }
    }
    let paused = status(&mut b, json!({"type": "pause_clock", "_reqId": "k"})).await;
    assert_eq!(paused["paused"], true);
    let at = paused["tick"].as_i64().unwrap();
    // Drain a tick that raced the pause, then silence.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(e) = tokio::time::timeout(Duration::from_millis(900), next_tick(&mut a)).await {
        assert!(
            e["eventData"]["tick"].as_i64().unwrap() <= at,
            "ticked while paused: {e}"
        );
    }
    let slower = status(
        &mut a,
        json!({"type": "set_clock", "speed": "fast", "_reqId": "k"}),
    )
    .await;
    assert_eq!(
        (&slower["speed"], &slower["paused"]),
        (&json!(1), &json!(true)),
        "a paused clock stays paused"
    );
    status(
        &mut a,
        json!({"type": "set_clock", "speed": 100, "_reqId": "k"}),
    )
    .await;
    let resumed = status(&mut a, json!({"type": "resume_clock", "_reqId": "k"})).await;
    assert_eq!(resumed["paused"], false);
    let t = next_tick(&mut b).await;
    assert_eq!(
        t["eventData"]["tick"],
        at + 1,
        "continues from the stored tick"
    );
    let sim = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let got = status(&mut a, json!({"type": "get_clock", "_reqId": "k"})).await;
    assert_eq!(
        (sim(&got["simTime"]) - sim(&got["startedAt"])).num_seconds(),
        got["tick"].as_i64().unwrap() * 60,
        "a simulated minute a tick"
    );
}

async fn a_mesh_with_nobody_live_pauses_its_clock(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    status(
        &mut a,
        json!({"type": "set_clock", "speed": 100, "_reqId": "k"}),
    )
    .await;
    next_tick(&mut a).await;
    a.close().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let s = status(&mut b, json!({"type": "get_clock", "_reqId": "k"})).await;
    assert_eq!(s["paused"], true, "{s}");
    let t = s["tick"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let again = status(&mut b, json!({"type": "get_clock", "_reqId": "k"})).await;
    assert_eq!(again["tick"], t, "stays paused until resume_clock");
}

both_stores!(
    replies_ticks_pause_and_resume,
    a_mesh_with_nobody_live_pauses_its_clock
);

const TOKEN: &str = "mesh-clock-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_go_on_from_another_node_when_the_owner_dies() {
    let db = TestDb::migrated().await;
    let mut owner = cluster_node(&db, TOKEN).await;
    let n2 = cluster_node(&db, TOKEN).await;
    let n3 = cluster_node(&db, TOKEN).await;
    let m = owner.mesh_with(TOKEN, &["alice", "bob"]).await;
    let (alice, bob) = (&m[0], &m[1]);
    let (mut a, _) = Peer::join(&owner.ws_url(), alice, "a").await;
    let (mut b, _) = Peer::join(&n2.ws_url(), bob, "b").await;
    status(
        &mut a,
        json!({"type": "set_clock", "speed": 100, "_reqId": "k"}),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(
            next_tick(&mut b).await["eventData"]["tick"]
                .as_i64()
                .unwrap(),
        );
    }
    owner.sigkill();
    drop(a);
    let killed = std::time::Instant::now();
    let mut gap = Duration::ZERO;
    for _ in 0..5 {
        let before = std::time::Instant::now();
        let t = tokio::time::timeout(Duration::from_secs(12), next_tick(&mut b))
            .await
            .expect("ticks resume after the owner's death");
        gap = gap.max(before.elapsed());
        seen.push(t["eventData"]["tick"].as_i64().unwrap());
    }
    let want: Vec<i64> = (seen[0]..seen[0] + 8).collect();
    assert_eq!(seen, want, "one by one: no repeat, no jump back");
    // Within one lease (3 s) of the reap, which itself follows a lease of
    // silence.
    assert!(gap < Duration::from_secs(8), "ticks stopped for {gap:?}");
    assert!(killed.elapsed() < Duration::from_secs(15));
    drop(n3);
}
