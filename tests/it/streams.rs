//! Streams over the wire (PROTOCOL-MESH.md §14): the registry, subscribe
//! and its reply, publishes to every other subscriber (in order, at most
//! once, within a budget), subscriptions that survive a re-attach and end
//! with the presence, and subscribers on three nodes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world, world_with, Backend, Peer};

async fn subscribe(p: &mut Peer, stream: &str) {
    let r = p
        .request(json!({"type": "subscribe", "stream": stream}))
        .await;
    assert_eq!(r, json!({"type": "subscribed", "stream": stream}));
}

fn publish(stream: &str, data: Value) -> Value {
    json!({"type": "publish", "stream": stream, "data": data})
}

async fn stream_data(p: &mut Peer) -> Value {
    let v = p.recv().await;
    assert_eq!(v["type"], "stream_data", "{v}");
    v
}

async fn counts(p: &mut Peer) -> Vec<(String, u64)> {
    let r = p
        .request(json!({"type": "list_streams", "_reqId": "ls"}))
        .await;
    assert_eq!(
        (r["type"].as_str(), r["_reqId"].as_str()),
        (Some("stream_list"), Some("ls")),
        "{r}"
    );
    r["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["subscriberCount"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn registry_subscribe_publish(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert!(counts(&mut a).await.is_empty());
    let made = a
        .request(json!({"type": "create_stream", "name": "builds", "_reqId": "c"}))
        .await;
    assert_eq!(
        (
            made["type"].as_str(),
            made["name"].as_str(),
            made["_reqId"].as_str()
        ),
        (Some("stream_created"), Some("builds"), Some("c")),
        "{made}"
    );
    assert_eq!(made["id"].as_str().unwrap().len(), 32);
    let again = b
        .request(json!({"type": "create_stream", "name": "builds", "_reqId": "c2"}))
        .await;
    assert_eq!(again["id"], made["id"], "idempotent");
    a.request(json!({"type": "create_stream", "name": "logs", "_reqId": "c3"}))
        .await;

    subscribe(&mut b, "builds").await;
    let echoed = b
        .request(json!({"type": "subscribe", "stream": "builds", "_reqId": "s"}))
        .await;
    assert_eq!(
        echoed,
        json!({"type": "subscribed", "stream": "builds", "_reqId": "s"})
    );
    a.send(publish("builds", json!({"job": "api", "status": "green"})))
        .await;
    assert_eq!(
        stream_data(&mut b).await,
        json!({"type": "stream_data", "stream": "builds", "data": {"job": "api", "status": "green"},
            "publishedBy": "alice"})
    );
    // The publisher never hears itself; its sibling session does.
    subscribe(&mut a, "builds").await;
    subscribe(&mut a2, "builds").await;
    a.send(publish("builds", json!(1))).await;
    assert_eq!(stream_data(&mut b).await["data"], 1);
    assert_eq!(stream_data(&mut a2).await["data"], 1);
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "not to the publisher"
    );

    // In publish order, and any name works.
    subscribe(&mut b, "adhoc").await;
    for i in 0..20 {
        a.send(publish("adhoc", json!(i))).await;
    }
    for i in 0..20 {
        assert_eq!(stream_data(&mut b).await["data"], i);
    }
    let listed = a
        .request(json!({"type": "list_streams", "_reqId": "l"}))
        .await;
    let first = &listed["streams"][0];
    assert_eq!(
        (&first["name"], &first["createdBy"], &first["id"]),
        (&json!("builds"), &json!("alice"), &made["id"])
    );
    assert!(
        first["createdAt"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );
    assert_eq!(
        counts(&mut a).await,
        [("builds".into(), 3), ("logs".into(), 0)],
        "registered only"
    );

    b.send(json!({"type": "unsubscribe", "stream": "builds"}))
        .await;
    assert!(
        b.quiet_for(Duration::from_millis(200)).await,
        "no reply to unsubscribe"
    );
    a.send(publish("builds", json!("after"))).await;
    assert_eq!(stream_data(&mut a2).await["data"], "after");
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "unsubscribed"
    );
    assert_eq!(counts(&mut a).await[0], ("builds".into(), 2));

    let big = "x".repeat(70_000);
    a.expect_bad_requests(&[
        (json!({"type": "create_stream", "_reqId": "r"}), "`name`"),
        (
            json!({"type": "create_stream", "name": "n".repeat(257), "_reqId": "r"}),
            "`name`",
        ),
        (json!({"type": "subscribe", "_reqId": "r"}), "`stream`"),
        (
            json!({"type": "publish", "stream": "builds", "data": big, "_reqId": "r"}),
            "max_message_bytes",
        ),
    ])
    .await;
    // Without `_reqId` a refused fire-and-forget frame gets no error.
    a.send(publish("builds", json!("x".repeat(70_000)))).await;
    a.send(json!({"type": "subscribe"})).await;
    assert!(a.quiet_for(Duration::from_millis(300)).await);
    assert!(
        a2.quiet_for(Duration::from_millis(100)).await,
        "nothing was published"
    );
}

async fn publishes_over_the_budget_are_dropped(backend: Backend) {
    let w = world_with(backend, |s| s.stream_rate_per_min = 5).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    subscribe(&mut b, "s").await;
    for i in 0..7 {
        a.send(publish("s", json!(i))).await;
    }
    for i in 0..5 {
        assert_eq!(stream_data(&mut b).await["data"], i);
    }
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "the rest dropped"
    );
    assert!(
        a.quiet_for(Duration::from_millis(50)).await,
        "and not answered"
    );
    let r = a
        .request(json!({"type": "publish", "stream": "s", "data": 0, "_reqId": "p"}))
        .await;
    assert_error(&r, "rate_limit", "p");
    let m = w.node.metrics().await;
    assert!(
        m.contains("broker_stream_publishes_total{result=\"rate_limit\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("broker_stream_publishes_total{result=\"ok\"} 5"),
        "{m}"
    );
}

async fn a_subscription_survives_a_reattach_and_ends_with_the_presence(backend: Backend) {
    let w = world_with(backend, |s| {
        s.presence_grace_seconds = 2;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    a.request(json!({"type": "create_stream", "name": "s", "_reqId": "c"}))
        .await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    subscribe(&mut b, "s").await;
    b.close().await;
    assert_eq!(
        counts(&mut a).await,
        [("s".into(), 1)],
        "in grace: still counted"
    );
    a.send(publish("s", json!("missed"))).await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    a.send(publish("s", json!("back"))).await;
    assert_eq!(
        stream_data(&mut b).await["data"],
        "back",
        "no history, no re-subscribe"
    );
    b.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while counts(&mut a).await[0].1 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription outlived its presence"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    a.send(publish("s", json!("new presence"))).await;
    assert!(
        b.quiet_for(Duration::from_millis(400)).await,
        "a new presence starts unsubscribed"
    );
}

both_stores!(
    registry_subscribe_publish,
    publishes_over_the_budget_are_dropped,
    a_subscription_survives_a_reattach_and_ends_with_the_presence,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_three_nodes_each_get_every_other_publish_once() {
    let c = cluster(3, |s| {
        s.presence_grace_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let mut subs = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        for (j, who) in [&c.alice, &c.bob].into_iter().enumerate() {
            let (mut p, _) = Peer::join(&node.ws_url(), who, &format!("n{i}-{j}")).await;
            subscribe(&mut p, "builds").await;
            subs.push(p);
        }
    }
    assert_eq!(counts(&mut subs[0]).await, [], "unregistered: not listed");
    subs[5]
        .request(json!({"type": "create_stream", "name": "builds", "_reqId": "c"}))
        .await;
    assert_eq!(
        counts(&mut subs[0]).await,
        [("builds".into(), 6)],
        "cluster-wide"
    );
    // Each subscriber publishes; everyone else hears each once, in order.
    for (k, p) in subs.iter_mut().enumerate() {
        for n in 0..3 {
            p.send(publish("builds", json!({"from": k, "n": n}))).await;
        }
    }
    for (k, p) in subs.iter_mut().enumerate() {
        let mut got: Vec<(u64, u64)> = Vec::new();
        for _ in 0..15 {
            let d = stream_data(p).await;
            got.push((
                d["data"]["from"].as_u64().unwrap(),
                d["data"]["n"].as_u64().unwrap(),
            ));
        }
        assert!(
            p.quiet_for(Duration::from_millis(300)).await,
            "at most once"
        );
        for from in (0..6).filter(|f| *f != k as u64) {
            let theirs: Vec<u64> = got.iter().filter(|g| g.0 == from).map(|g| g.1).collect();
            assert_eq!(theirs, [0, 1, 2], "subscriber {k} from {from}: {got:?}");
        }
        assert!(got.iter().all(|g| g.0 != k as u64), "never its own");
    }
    // Re-attached on another node within grace: still subscribed there.
    subs.remove(0).close().await;
    let (mut moved, _) = Peer::join(&c.nodes[1].ws_url(), &c.alice, "n0-0").await;
    subs[0].send(publish("builds", json!("moved"))).await;
    assert_eq!(
        stream_data(&mut moved).await["data"],
        "moved",
        "restored on the new node"
    );
    for p in subs.iter_mut().skip(1) {
        assert_eq!(stream_data(p).await["data"], "moved");
    }
    subs.insert(0, moved);
    // A subscriber whose presence ends stops receiving and leaves the count.
    // (Its grace is a second, swept on another node.)
    subs.remove(3).close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while counts(&mut subs[0]).await[0].1 != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended presence is still counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    subs[0].send(publish("builds", json!("last"))).await;
    for p in subs.iter_mut().skip(1) {
        assert_eq!(stream_data(p).await["data"], "last");
    }
}
