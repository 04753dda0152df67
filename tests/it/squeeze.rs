//! The broker's database role squeezed to one connection for 15 s (a
//! managed database's connection cap, another tenant's leak), and
//! completions failing while claims go on: a plain session gets every
//! message acked meanwhile, each exactly once, and readiness does not flap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use claudemesh_broker::store::postgres::PgStore;

use crate::harness::{test_settings, Peer, TestDb, TestNode};
use crate::messaging::send;

const SQUEEZE: Duration = Duration::from_secs(15);
/// Short, so a push re-sent after a lapsed lease would show in the test.
const CLAIM_LEASE: u64 = 8;

/// A node on `url` whose plain sessions would show a repeated push.
async fn node(url: String) -> TestNode {
    let mut s = test_settings();
    s.database_url = Some(url.clone());
    s.send_burst = 1_000;
    s.send_rate_per_min = 60_000;
    s.claim_lease_seconds = CLAIM_LEASE;
    s.node_heartbeat_seconds = 1;
    s.sweep_interval_seconds = 1;
    TestNode::start_on(Arc::new(PgStore::connect(&url, 8).unwrap()), s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_squeezed_to_one_connection_loses_nothing_and_repeats_nothing() {
    let db = TestDb::migrated().await;
    let role = format!("cmb_sq_{}", uuid::Uuid::new_v4().simple());
    let admin = db.client().await;
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'squeezed'"))
        .await
        .unwrap();
    db.grant_dml(&role).await;
    let squeezed = node(db.url_as(&role, "squeezed")).await;
    let healthy = node(db.url.clone()).await;
    healthy.create_mesh("m").await;
    let alice = healthy.add_member("m", "alice", &[]).await;
    let bob = healthy.add_member("m", "bob", &[]).await;
    let (mut a, _) = Peer::join(&healthy.ws_url(), &alice, "a").await;
    // A plain (v1) session: no client_ack, a written push is delivered.
    let (mut b, _) = Peer::join(&squeezed.ws_url(), &bob, "b").await;
    let first = send(&mut a, "warm", &bob.keys.public_hex, "now", "d2FybQ==").await;
    let mut got: HashMap<String, u32> = HashMap::new();
    let p = b.recv().await;
    assert_eq!(p["messageId"], first["messageId"], "{p}");
    *got.entry(p["messageId"].as_str().unwrap().into())
        .or_default() += 1;

    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} CONNECTION LIMIT 1;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';"
        ))
        .await
        .unwrap();
    let mut acked = vec![first["messageId"].as_str().unwrap().to_string()];
    let mut readiness = Vec::new();
    let squeezed_at = tokio::time::Instant::now();
    let mut i = 0;
    let http = reqwest::Client::new();
    while squeezed_at.elapsed() < SQUEEZE {
        let ack = send(
            &mut a,
            &format!("m{i}"),
            &bob.keys.public_hex,
            "now",
            "eA==",
        )
        .await;
        assert_eq!(ack["queued"], true, "{ack}");
        acked.push(ack["messageId"].as_str().unwrap().to_string());
        i += 1;
        let r = http
            .get(squeezed.url("/health/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        readiness.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    admin
        .batch_execute(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .await
        .unwrap();

    while acked.iter().any(|id| !got.contains_key(id)) {
        let p = b.recv_any_within(Duration::from_secs(30)).await;
        if p["type"] == "push" && p.get("subtype").is_none() {
            *got.entry(p["messageId"].as_str().unwrap().into())
                .or_default() += 1;
        }
    }
    // Past another lease: a push whose completion was lost would come again.
    assert!(
        b.quiet_for(Duration::from_secs(CLAIM_LEASE + 3)).await,
        "a push came again"
    );
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "pushed twice to a plain session: {twice:?}"
    );
    assert_eq!(got.len(), acked.len(), "0 lost");
    let flips = readiness.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(flips <= 2, "readiness flapped: {readiness:?}");
    drop((a, b));
    squeezed.shutdown().await;
    let _ = admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';
             DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await;
}

/// Completions fail for longer than the claim lease while claims and
/// pushes go on (what a squeezed pool did under load: the claim got the
/// one connection, the completion timed out waiting). The failed
/// completions are retried, and the lapsed rows the session takes back
/// are not pushed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_completions_are_retried_and_never_re_pushed() {
    let db = TestDb::migrated().await;
    let node = node(db.url.clone()).await;
    node.create_mesh("m").await;
    let alice = node.add_member("m", "alice", &[]).await;
    let bob = node.add_member("m", "bob", &[]).await;
    let (mut a, _) = Peer::join(&node.ws_url(), &alice, "a").await;
    let (mut b, _) = Peer::join(&node.ws_url(), &bob, "b").await;

    // Every completion writes its record: hold that table and each one
    // waits out the database deadline and fails; claims never touch it.
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE delivery_record IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut acked = Vec::new();
    let mut got: HashMap<String, u32> = HashMap::new();
    for i in 0..20 {
        let ack = send(
            &mut a,
            &format!("m{i}"),
            &bob.keys.public_hex,
            "now",
            "eA==",
        )
        .await;
        acked.push(ack["messageId"].as_str().unwrap().to_string());
        let p = b.recv().await;
        *got.entry(p["messageId"].as_str().unwrap().into())
            .or_default() += 1;
    }
    // Past the lease: the rows lapse and bob's loop claims them back.
    let held = Duration::from_secs(CLAIM_LEASE * 2);
    assert!(b.quiet_for(held).await, "a written push came again");
    tx.rollback().await.unwrap();
    assert!(
        b.quiet_for(Duration::from_secs(CLAIM_LEASE + 3)).await,
        "a written push came again after the completions landed"
    );
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{twice:?}");
    assert_eq!(got.len(), acked.len());
    let left: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM delivery", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "every written push completed once the table was free"
    );
}
