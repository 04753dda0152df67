//! Several nodes on one database: cross-node delivery, events, presence
//! and limits, hooks to any node, revocation, replacement and re-attach.

use std::sync::Arc;
use std::time::Duration;

use claudemesh_broker::config::{HookAuth, Settings};
use claudemesh_broker::store::postgres::PgStore;
use serde_json::{json, Value};

use crate::harness::client::hello_frame;
use crate::harness::{test_settings, Member, Peer, TestDb, TestNode};
use crate::messaging::{expect_push, send};

pub struct Cluster {
    pub nodes: Vec<TestNode>,
    pub alice: Member,
    pub bob: Member,
    /// Kept alive for the nodes; dropped (and the database with it) last.
    pub _db: TestDb,
}

/// `n` in-process nodes with their own pools and buses on one database,
/// a mesh `m` with alice (group backend) and bob.
pub async fn cluster(n: usize, tweak: impl Fn(&mut Settings)) -> Cluster {
    let db = TestDb::migrated().await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        let mut s = test_settings();
        s.database_url = Some(db.url.clone());
        tweak(&mut s);
        let store = Arc::new(PgStore::connect(&db.url, 8).unwrap());
        nodes.push(TestNode::start_on(store, s).await);
    }
    // The bus needs its LISTEN in place before the first cross-node wake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[0].create_mesh("m").await;
    let alice = nodes[0].add_member("m", "alice", &["backend"]).await;
    let bob = nodes[1 % n].add_member("m", "bob", &[]).await;
    Cluster {
        nodes,
        alice,
        bob,
        _db: db,
    }
}

async fn messages_cross_nodes() {
    let c = cluster(3, |_| {}).await;
    let carol = c.nodes[2].add_member("m", "carol", &["backend/api"]).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let (mut k, _) = Peer::join(&c.nodes[2].ws_url(), &carol, "k1").await;
    let ack = send(&mut a, "d1", &c.bob.keys.public_hex, "now", "ZGlyZWN0").await;
    assert_eq!(ack["queued"], true, "bob lives on another node: {ack}");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "ZGlyZWN0");
    send(&mut a, "g1", "@backend", "now", "Z3JvdXA=").await;
    assert_eq!(expect_push(&mut k).await["ciphertext"], "Z3JvdXA=");
    send(&mut b, "all", "*", "now", "YWxs").await;
    assert_eq!(expect_push(&mut a).await["ciphertext"], "YWxs");
    assert_eq!(expect_push(&mut k).await["ciphertext"], "YWxs");
    // Events from other nodes.
    let e = a.next_event().await;
    assert_eq!(e["event"], "peer_joined");
    assert_eq!(e["eventData"]["name"], "bob");
    // Every node lists the same peers.
    let mut lists = Vec::new();
    for p in [&mut a, &mut b, &mut k] {
        let mut l: Vec<Value> = p.request(json!({"type": "list_peers"})).await["peers"]
            .as_array()
            .unwrap()
            .clone();
        l.sort_by_key(|x| x["sessionId"].as_str().unwrap().to_string());
        lists.push(l);
    }
    assert_eq!(lists[0].len(), 3);
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
}

async fn replace_and_reattach_across_nodes() {
    let c = cluster(2, |_| {}).await;
    let (mut old, ack1) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "s1").await;
    let (new, ack2) = Peer::join(&c.nodes[1].ws_url(), &c.alice, "s1").await;
    assert_eq!(ack1["presenceId"], ack2["presenceId"]);
    assert_eq!(
        old.expect_close().await,
        4000,
        "closed on the node that held it"
    );
    let peers = c.nodes[0].peers("m").await;
    assert_eq!(peers.len(), 1, "one live presence cluster-wide");
    assert_eq!(peers[0]["nodeId"], c.nodes[1].engine.node_id.to_string());
    // Leave node 1, message arrives meanwhile, come back on node 0.
    new.close().await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let ack = send(&mut b, "q", &c.alice.keys.public_hex, "now", "cXVldWVk").await;
    assert_eq!(ack["queued"], true);
    let (mut back, ack3) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "s1").await;
    assert_eq!(
        ack3["presenceId"], ack1["presenceId"],
        "silent re-attach on another node"
    );
    assert_eq!(expect_push(&mut back).await["ciphertext"], "cXVldWVk");
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "no peer_left/peer_joined for a re-attach"
    );
}

async fn limits_hold_cluster_wide() {
    let c = cluster(3, |s| {
        s.send_burst = 3;
        s.send_rate_per_min = 1;
        s.max_connections_per_mesh = 5;
    })
    .await;
    let (_b, _) = Peer::join(&c.nodes[0].ws_url(), &c.bob, "b1").await;
    let mut sessions = Vec::new();
    for i in 0..3 {
        sessions.push(
            Peer::join(&c.nodes[i].ws_url(), &c.alice, &format!("a{i}"))
                .await
                .0,
        );
    }
    let mut accepted = 0;
    for round in 0..2 {
        for (i, p) in sessions.iter_mut().enumerate() {
            let ack = send(
                p,
                &format!("r{round}{i}"),
                &c.bob.keys.public_hex,
                "now",
                "eA==",
            )
            .await;
            if ack["queued"] == true {
                accepted += 1;
            } else {
                assert_eq!(ack["code"], "rate_limit");
            }
        }
    }
    assert_eq!(accepted, 3, "one budget for the member across three nodes");
    // 4 presences exist; 8 concurrent hellos on 3 nodes for 1 free slot.
    let mut extra = Vec::new();
    for i in 0..8 {
        extra.push(c.nodes[0].add_member("m", &format!("x{i}"), &[]).await);
    }
    let urls: Vec<String> = c.nodes.iter().map(|n| n.ws_url()).collect();
    let tasks: Vec<_> = extra
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let url = urls[i % 3].clone();
            tokio::spawn(async move {
                let mut p = Peer::connect(&url).await;
                p.send(hello_frame(&m, "s", json!({}))).await;
                let r = p.recv().await;
                (r["type"] == "hello_ack", p)
            })
        })
        .collect();
    let mut ok = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (won, p) = t.await.unwrap();
        ok += won as usize;
        keep.push(p);
    }
    assert_eq!(
        ok, 1,
        "capacity is exact under concurrent hellos on different nodes"
    );
    assert_eq!(c.nodes[2].peers("m").await.len(), 5);
}

async fn hooks_and_admin_act_on_any_node() {
    let c = cluster(2, |s| s.hook_auth = Some(HookAuth::None)).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join_with(
        &c.nodes[1].ws_url(),
        &c.bob,
        "b1",
        json!({"pid": 77, "cwd": "/bob"}),
    )
    .await;
    let hook = |status: &str| json!({"cwd": "/bob", "pid": 77, "status": status});
    let post = |body: Value| {
        c.nodes[0]
            .http
            .post(c.nodes[0].url("/hook/set-status"))
            .json(&body)
            .send()
    };
    assert_eq!(post(hook("working")).await.unwrap().status(), 200);
    send(&mut a, "h", &c.bob.keys.public_hex, "next", "aGVsZA==").await;
    assert!(
        b.quiet_for(Duration::from_millis(500)).await,
        "held on node 1 by a hook to node 0"
    );
    assert_eq!(post(hook("idle")).await.unwrap().status(), 200);
    assert_eq!(expect_push(&mut b).await["ciphertext"], "aGVsZA==");
    let (status, _) = c.nodes[0]
        .admin(
            reqwest::Method::DELETE,
            &format!("/meshes/m/members/{}", c.bob.id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // Revoked on the node that holds the socket.
    b.expect_banned().await;
    let (status, nodes) = c.nodes[1].admin(reqwest::Method::GET, "/nodes", None).await;
    assert_eq!(status, 200);
    assert_eq!(nodes.as_array().unwrap().len(), 2);
}

async fn notifies_are_coalesced() {
    let c = cluster(2, |s| s.send_burst = 10_000).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let n = 100;
    for i in 0..n {
        a.send(crate::messaging::send_frame(
            &format!("c{i}"),
            &c.bob.keys.public_hex,
            "now",
            "eA==",
        ))
        .await;
    }
    for _ in 0..n {
        assert_eq!(a.recv().await["queued"], true);
    }
    for _ in 0..n {
        expect_push(&mut b).await;
    }
    let sent = c.nodes[0].engine.metrics.notify_sent.get();
    // One per send at most (the peer_joined events add one each).
    assert!(sent <= n + 5, "{sent} notifies for {n} messages");
}

/// A node routes sends from a cached view of the mesh's presences, which
/// every batch checks against the table: a session that joined on another
/// node since, or a status a hook changed there, counts at once.
async fn cached_routes_never_go_stale() {
    let c = cluster(2, |s| s.hook_auth = Some(HookAuth::None)).await;
    let carol = c.nodes[0].add_member("m", "carol", &[]).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join_with(
        &c.nodes[0].ws_url(),
        &c.bob,
        "b1",
        json!({"pid": 78, "cwd": "/bob"}),
    )
    .await;
    // Node 0 reads and caches the mesh for this send.
    send(&mut a, "s1", "*", "now", "b25l").await;
    assert_eq!(expect_push(&mut b).await["ciphertext"], "b25l");
    let (mut k, _) = Peer::join(&c.nodes[1].ws_url(), &carol, "k1").await;
    send(&mut a, "s2", "*", "now", "YWxs").await;
    assert_eq!(
        expect_push(&mut k).await["ciphertext"],
        "YWxs",
        "joined on node 1 after the cache"
    );
    assert_eq!(expect_push(&mut b).await["ciphertext"], "YWxs");
    let ack = send(&mut a, "s3", &carol.keys.public_hex, "now", "ZGlyZWN0").await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(expect_push(&mut k).await["ciphertext"], "ZGlyZWN0");
    // A key only a newer view knows is not `no_recipient`.
    let dave = c.nodes[0].add_member("m", "dave", &[]).await;
    let (mut d, _) = Peer::join(&c.nodes[1].ws_url(), &dave, "d1").await;
    let ack = send(&mut a, "s3d", &dave.keys.public_hex, "now", "ZGF2ZQ==").await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(expect_push(&mut d).await["ciphertext"], "ZGF2ZQ==");
    // Bob's session on node 0 settles (a handoff needs its status older
    // than its last full claim), then a hook to node 1 makes it working:
    // node 0 must not hand it a `next` message from its cached view.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&mut a, "s4", &c.bob.keys.public_hex, "next", "c2V0dGxlZA==").await;
    assert_eq!(expect_push(&mut b).await["ciphertext"], "c2V0dGxlZA==");
    let hook = json!({"cwd": "/bob", "pid": 78, "status": "working"});
    let r = c.nodes[1]
        .http
        .post(c.nodes[1].url("/hook/set-status"))
        .json(&hook)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    send(&mut a, "s5", &c.bob.keys.public_hex, "next", "aGVsZA==").await;
    assert!(
        b.quiet_for(Duration::from_millis(500)).await,
        "held: working since a hook to the other node"
    );
}

/// The wake-up NOTIFY after a send batch goes out only for what was
/// stored: a rate-limited cross-node send notifies no one.
async fn rate_limited_sends_notify_no_one() {
    let c = cluster(2, |s| {
        s.send_burst = 1;
        s.send_rate_per_min = 1;
    })
    .await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    let ack = send(&mut a, "s1", &c.bob.keys.public_hex, "now", "eA==").await;
    assert_eq!(ack["queued"], true);
    expect_push(&mut b).await;
    // The joins' events went out through the same counter: let them settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = c.nodes[0].engine.metrics.notify_sent.get();
    let ack = send(&mut a, "s2", &c.bob.keys.public_hex, "now", "eA==").await;
    assert_eq!(ack["code"], "rate_limit", "{ack}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.nodes[0].engine.metrics.notify_sent.get(), before);
    assert!(b.quiet_for(Duration::from_millis(300)).await);
}

/// Every node replaced one at a time (SIGTERM drain, then a new node):
/// peers see no leave or join, and nothing sent meanwhile is lost.
async fn rolling_restart() {
    let c = cluster(3, |s| s.shutdown_drain_seconds = 0).await;
    let db_url = c.nodes[0]
        .engine
        .config
        .settings
        .database_url
        .clone()
        .unwrap();
    let carol = c.nodes[2].add_member("m", "carol", &[]).await;
    let (mut k, _) = Peer::join(&c.nodes[2].ws_url(), &carol, "k1").await;
    let (mut a, ack_a) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut b, ack_b) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "b1").await;
    for _ in 0..2 {
        assert_eq!(k.next_event().await["event"], "peer_joined");
    }
    let mut nodes = c.nodes;
    let fresh = |url: String| async move {
        let mut s = test_settings();
        s.database_url = Some(url.clone());
        s.shutdown_drain_seconds = 0;
        TestNode::start_on(Arc::new(PgStore::connect(&url, 8).unwrap()), s).await
    };
    let mut sent = 0;
    let mut received = 0;
    // Replace node 0 (alice's), then node 1 (bob's).
    for victim in 0..2 {
        let old = nodes.remove(0);
        old.shutdown().await;
        nodes.push(fresh(db_url.clone()).await);
        let target = nodes.last().unwrap().ws_url();
        if victim == 0 {
            assert_eq!(a.expect_close().await, 1001);
            let (na, ack) = Peer::join(&target, &c.alice, "a1").await;
            assert_eq!(ack["presenceId"], ack_a["presenceId"]);
            a = na;
        } else {
            assert_eq!(b.expect_close().await, 1001);
            // Sent while bob is between nodes.
            send(&mut a, "gap", &c.bob.keys.public_hex, "now", "Z2Fw").await;
            sent += 1;
            let (nb, ack) = Peer::join(&target, &c.bob, "b1").await;
            assert_eq!(ack["presenceId"], ack_b["presenceId"]);
            b = nb;
        }
        send(
            &mut a,
            &format!("r{victim}"),
            &c.bob.keys.public_hex,
            "now",
            "cm9sbA==",
        )
        .await;
        sent += 1;
        while received < sent {
            expect_push(&mut b).await;
            received += 1;
        }
    }
    assert!(k.quiet_for(Duration::from_millis(500)).await);
    assert!(k.events.is_empty(), "no churn events: {:?}", k.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rolling_restart() {
    rolling_restart().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_messages_cross_nodes() {
    messages_cross_nodes().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_replace_and_reattach_across_nodes() {
    replace_and_reattach_across_nodes().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_limits_hold_cluster_wide() {
    limits_hold_cluster_wide().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_hooks_and_admin_act_on_any_node() {
    hooks_and_admin_act_on_any_node().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_cached_routes_never_go_stale() {
    cached_routes_never_go_stale().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rate_limited_sends_notify_no_one() {
    rate_limited_sends_notify_no_one().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_notifies_are_coalesced() {
    notifies_are_coalesced().await
}
