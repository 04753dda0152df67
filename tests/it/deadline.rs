//! One database deadline per client request (`db_timeout_seconds`): on a
//! stalled link every request is answered `unavailable` within it,
//! counted from the request's arrival, however many wait behind each
//! other; HTTP routes that need the database too; and SIGTERM on a
//! stalled link exits within the drain period plus that deadline.

use std::sync::Arc;
use std::time::Duration;

use claudemesh_broker::store::postgres::PgStore;

use crate::harness::proxy::{Link, Proxy};
use crate::harness::{test_settings, BrokerProcess, Peer, TestDb, TestNode};
use crate::messaging::send_frame;

const DEADLINE: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_on_a_stalled_link_is_answered_within_the_deadline() {
    let db = TestDb::migrated().await;
    let proxy = Proxy::in_front_of(&db.url).await;
    let url = proxy.url(&db.url);
    let mut s = test_settings();
    s.database_url = Some(url.clone());
    s.send_burst = 100;
    let node = TestNode::start_on(Arc::new(PgStore::connect(&url, 8).unwrap()), s).await;
    node.create_mesh("m").await;
    let alice = node.add_member("m", "alice", &[]).await;
    let bob = node.add_member("m", "bob", &[]).await;
    let (mut a, _) = Peer::join(&node.ws_url(), &alice, "a").await;

    proxy.set(Link::Blackhole);
    let sent = tokio::time::Instant::now();
    // Acks keep the order of their sends: the fifth waits behind four.
    for i in 0..5 {
        a.send(send_frame(
            &format!("s{i}"),
            &bob.keys.public_hex,
            "now",
            "eA==",
        ))
        .await;
    }
    a.send(serde_json::json!({"type": "list_peers", "_reqId": "l"}))
        .await;
    let mut answered = 0;
    while answered < 6 {
        let r = a.recv_any_within(DEADLINE + SLACK * 3).await;
        if r["type"] == "push" {
            continue;
        }
        assert_eq!(r["code"], "unavailable", "{r}");
        answered += 1;
        assert!(
            sent.elapsed() <= DEADLINE + SLACK,
            "answer {answered} after {:?}",
            sent.elapsed()
        );
    }
    let started = tokio::time::Instant::now();
    let (status, v) = node
        .admin(reqwest::Method::GET, "/meshes/m/peers", None)
        .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"], "unavailable", "{v}");
    assert!(
        started.elapsed() <= DEADLINE + SLACK,
        "{:?}",
        started.elapsed()
    );
    proxy.set(Link::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_stalled_link_exits_within_drain_and_deadline() {
    let db = TestDb::migrated().await;
    let proxy = Proxy::in_front_of(&db.url).await;
    let url = proxy.url(&db.url);
    let mut node = BrokerProcess::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("BROKER_SHUTDOWN_DRAIN_SECONDS", "1"),
            ("BROKER_NODE_HEARTBEAT_SECONDS", "1"),
            ("BROKER_SWEEP_INTERVAL_SECONDS", "1"),
        ],
    );
    node.wait_healthy().await;
    proxy.set(Link::Blackhole);
    // Let the heartbeat, the sweeper and the bus get stuck on the link.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = tokio::time::Instant::now();
    node.sigterm();
    let status = node
        .wait_exit(Duration::from_secs(1) + DEADLINE + SLACK * 4)
        .await;
    let took = asked.elapsed();
    assert!(status.success(), "{status}\n{}", node.logs());
    assert!(
        took <= Duration::from_secs(1) + DEADLINE + SLACK,
        "exited after {took:?}\n{}",
        node.logs()
    );
    proxy.set(Link::Pass);
}
