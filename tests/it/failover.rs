//! Database failover as a cluster sees it: every node's link down at once
//! for longer than the node lease (a managed-Postgres failover), then one
//! node's link alone (a partition). No socket closes, no presence event is
//! announced, and messages flow again as soon as the database is back.

use std::sync::Arc;
use std::time::Duration;

use claudemesh_broker::config::Settings;
use claudemesh_broker::store::postgres::PgStore;

use crate::harness::proxy::{Link, Proxy};
use crate::harness::{test_settings, Member, Peer, TestDb, TestNode};
use crate::messaging::{expect_push, send};

/// Far past the lease below: without the rule that a node judges others
/// only after beating steadily for a lease, every node reaps the others
/// the moment the database is back.
const OUTAGE: Duration = Duration::from_secs(20);
const LEASE_SECONDS: u64 = 4;
/// Slower than the sweep, as by default: after the outage a node sweeps
/// before the others have beaten again, which is when a reaper judging
/// by stale heartbeats alone would declare them dead.
const HEARTBEAT_SECONDS: u64 = 2;

fn settings(url: &str) -> Settings {
    let mut s = test_settings();
    s.database_url = Some(url.to_string());
    s.send_burst = 100;
    s.sweep_interval_seconds = 1;
    s.node_heartbeat_seconds = HEARTBEAT_SECONDS;
    s.node_lease_seconds = LEASE_SECONDS;
    s
}

async fn node(url: &str) -> TestNode {
    TestNode::start_on(Arc::new(PgStore::connect(url, 8).unwrap()), settings(url)).await
}

async fn wait_ready(nodes: &[&TestNode], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    for n in nodes {
        loop {
            let ok = match reqwest::get(n.url("/health/ready")).await {
                Ok(r) => r.status() == 200,
                Err(_) => false,
            };
            if ok {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a node was not ready again within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Joins one peer per node and lets the join events settle.
async fn peers(nodes: &[&TestNode], members: &[Member]) -> Vec<Peer> {
    let mut out = Vec::new();
    for (i, (n, m)) in nodes.iter().zip(members).enumerate() {
        out.push(Peer::join(&n.ws_url(), m, &format!("s{i}")).await.0);
    }
    for p in &mut out {
        assert!(p.quiet_for(Duration::from_millis(500)).await);
        p.events.clear();
    }
    out
}

/// Each peer sends to the next one's member key; every push arrives on
/// the socket that was open before the outage.
async fn round(peers: &mut [Peer], members: &[Member], tag: &str) {
    let n = peers.len();
    for i in 0..n {
        let to = &members[(i + 1) % n].keys.public_hex;
        let body = format!("{tag}{i}");
        let ack = send(&mut peers[i], &format!("{tag}{i}"), to, "now", &body).await;
        assert_eq!(ack["queued"], true, "{ack}");
        let p = expect_push(&mut peers[(i + 1) % n]).await;
        assert_eq!(p["ciphertext"], body.as_str());
    }
}

fn no_presence_events(peers: &mut [Peer]) {
    for p in peers {
        let seen: Vec<_> = p
            .events
            .drain(..)
            .filter(|e| {
                let ev = e["event"].as_str().unwrap_or("");
                ev.starts_with("peer_")
            })
            .collect();
        assert!(seen.is_empty(), "no presence event: {seen:?}");
    }
}

/// When each node registered: a node whose row was reaped registers again.
async fn registrations(db: &TestDb) -> Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> {
    let c = db.client().await;
    c.query("SELECT id, started_at FROM broker_node ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn online(db: &TestDb) -> (i64, i64) {
    let c = db.client().await;
    let nodes: i64 = c
        .query_one("SELECT count(*) FROM broker_node", &[])
        .await
        .unwrap()
        .get(0);
    let live: i64 = c
        .query_one("SELECT count(*) FROM presence WHERE state = 'online'", &[])
        .await
        .unwrap()
        .get(0);
    (nodes, live)
}

async fn whole_cluster_outage(link: Link) {
    let db = TestDb::migrated().await;
    let proxy = Proxy::in_front_of(&db.url).await;
    let url = proxy.url(&db.url);
    let (n0, n1, n2) = (node(&url).await, node(&url).await, node(&url).await);
    n0.create_mesh("m").await;
    let members = vec![
        n0.add_member("m", "alice", &[]).await,
        n0.add_member("m", "bob", &[]).await,
        n0.add_member("m", "carol", &[]).await,
    ];
    let nodes = [&n0, &n1, &n2];
    let mut ps = peers(&nodes, &members).await;
    round(&mut ps, &members, "before").await;
    // Every node has beaten for a lease: each would reap a silent other.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
    let registered = registrations(&db).await;

    proxy.set(link);
    tokio::time::sleep(OUTAGE).await;
    proxy.set(Link::Pass);
    wait_ready(&nodes, Duration::from_secs(10)).await;
    round(&mut ps, &members, "after").await;
    // Past a lease after the outage, when any reaping would have happened.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 2)).await;
    round(&mut ps, &members, "later").await;
    for p in &mut ps {
        assert!(p.quiet_for(Duration::from_millis(300)).await);
    }
    no_presence_events(&mut ps);
    assert_eq!(online(&db).await, (3, 3), "no session moved");
    assert_eq!(registrations(&db).await, registered, "no node was reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_ride_out_a_twenty_second_blackhole() {
    whole_cluster_outage(Link::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_ride_out_twenty_seconds_of_refused_connections() {
    whole_cluster_outage(Link::Cut).await;
}

/// One node cut off past its lease is reaped by the others; when it is
/// back it registers again and takes its sessions back without closing
/// their sockets, but for one whose client re-attached elsewhere
/// meanwhile: that old socket is closed with 1012.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_node_takes_its_sessions_back() {
    let db = TestDb::migrated().await;
    let proxy = Proxy::in_front_of(&db.url).await;
    let cut = node(&proxy.url(&db.url)).await;
    let healthy = node(&db.url).await;
    healthy.create_mesh("m").await;
    let members = vec![
        healthy.add_member("m", "alice", &[]).await,
        healthy.add_member("m", "bob", &[]).await,
    ];
    let carol = healthy.add_member("m", "carol", &[]).await;
    let mut ps = peers(&[&healthy, &cut], &members).await;
    let (mut carol_old, _) = Peer::join(&cut.ws_url(), &carol, "c1").await;
    for p in &mut ps {
        assert!(p.quiet_for(Duration::from_millis(500)).await);
        p.events.clear();
    }
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;

    proxy.set(Link::Cut);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while online(&db).await.0 != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        online(&db).await,
        (1, 1),
        "bob's and carol's sessions went to grace"
    );
    // Carol's client gives up on the cut node and re-attaches elsewhere.
    let (_carol_new, ack) = Peer::join(&healthy.ws_url(), &carol, "c1").await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    proxy.set(Link::Pass);
    assert_eq!(
        carol_old.expect_close_within(Duration::from_secs(10)).await,
        1012,
        "the socket whose session moved is closed"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while online(&db).await != (2, 3) {
        assert!(tokio::time::Instant::now() < deadline, "never taken back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_ready(&[&cut], Duration::from_secs(10)).await;
    round(&mut ps, &members, "back").await;
    no_presence_events(&mut ps);
}
