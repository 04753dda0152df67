//! Scheduled messages on a cluster of real processes (one database): each
//! entry fires exactly once whichever nodes live, one node SIGKILLed at the
//! due moment included, and a cron entry fires once per minute across a
//! node's restart.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::{cluster_node, Peer, TestDb};

const TOKEN: &str = "schedules-cluster-token";

fn text(push: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(push["ciphertext"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Reads pushes until `want` distinct texts arrived (or `limit` passed),
/// then a quiet second for stragglers; every text with its count.
async fn pushes(p: &mut Peer, want: usize, limit: Duration) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while seen.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(v) = tokio::time::timeout(left, p.recv_any_within(limit)).await else {
            break;
        };
        if v["type"] == "push" && v["subtype"] == "reminder" {
            *seen.entry(text(&v)).or_default() += 1;
        }
    }
    while let Ok(v) = tokio::time::timeout(Duration::from_secs(1), p.recv_any()).await {
        if v["type"] == "push" && v["subtype"] == "reminder" {
            *seen.entry(text(&v)).or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_due_at_once_fire_once_though_a_node_dies_at_the_due_moment() {
    let db = TestDb::migrated().await;
    let mut n1 = cluster_node(&db, TOKEN).await;
    let n2 = cluster_node(&db, TOKEN).await;
    let n3 = cluster_node(&db, TOKEN).await;
    let m = n1
        .mesh_with(TOKEN, &["bob", "carol", "alice", "dave", "erin"])
        .await;
    let (bob, carol) = (&m[0], &m[1]);
    let (mut pb, _) = Peer::join(&n2.ws_url(), bob, "b").await;
    let (mut pc, _) = Peer::join(&n3.ws_url(), carol, "c").await;

    // Made on the node about to die (100 by each of three members, the
    // cap), due within the same 5 s in a shuffled order.
    let due = chrono::Utc::now().timestamp_millis() + 8_000;
    let mut creators = Vec::new();
    for (k, member) in m[2..].iter().enumerate() {
        let (mut p, _) = Peer::join(&n1.ws_url(), member, "a").await;
        for j in 0..100i64 {
            let i = k as i64 * 100 + j;
            let at = due + (i * 7919 % 300) * 5_000 / 300;
            let f = json!({"type": "schedule", "to": "*", "message": format!("r{i}"),
                "deliverAt": at, "subtype": "reminder", "_reqId": "s"});
            p.send(f).await;
            // The other creators' reminders reach this one too ("*"), once
            // due: a slow machine may still be scheduling then.
            loop {
                let r = p.recv().await;
                if r["type"] == "scheduled_ack" {
                    break;
                }
                assert_eq!(r["type"], "push", "{r}");
            }
        }
        creators.push(p);
    }
    let wait = due + 1_500 - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    n1.sigkill();
    drop(creators);

    for (who, p) in [("bob", &mut pb), ("carol", &mut pc)] {
        let seen = pushes(p, 300, Duration::from_secs(30)).await;
        let missing: Vec<String> = (0..300)
            .map(|i| format!("r{i}"))
            .filter(|t| !seen.contains_key(t))
            .collect();
        let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(missing.is_empty(), "{who} never got {missing:?}");
        assert!(twice.is_empty(), "{who} got some twice: {twice:?}");
    }
    let (_, left) = n2.admin(TOKEN, reqwest::Method::GET, "/meshes", None).await;
    assert!(left.is_array(), "the survivors still answer: {left}");
    drop((n2, n3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_entry_fires_once_a_minute_across_a_node_restart() {
    let db = TestDb::migrated().await;
    let mut a = cluster_node(&db, TOKEN).await;
    let b = cluster_node(&db, TOKEN).await;
    let m = a.mesh_with(TOKEN, &["alice", "bob"]).await;
    let (alice, bob) = (&m[0], &m[1]);
    let (mut pb, _) = Peer::join(&b.ws_url(), bob, "b").await;
    let (mut pa, _) = Peer::join(&a.ws_url(), alice, "a").await;
    let r = pa
        .request(
            json!({"type": "schedule", "to": bob.keys.public_hex, "message": "minutely",
            "cron": "* * * * *", "subtype": "reminder", "_reqId": "s"}),
        )
        .await;
    assert_eq!(r["type"], "scheduled_ack", "{r}");
    drop(pa);

    let first = next_push(&mut pb).await;
    assert_eq!(text(&first), "minutely");
    let fired_at = std::time::Instant::now();
    // The node that made it restarts; both nodes race for every period.
    a.sigkill();
    let _a2 = cluster_node(&db, TOKEN).await;
    let second = next_push(&mut pb).await;
    let gap = fired_at.elapsed();
    assert_eq!(text(&second), "minutely");
    assert_ne!(first["messageId"], second["messageId"]);
    assert!(
        gap > Duration::from_secs(50),
        "the second fire is the next minute's, not a repeat: {gap:?}"
    );
    assert!(
        pb.quiet_for(Duration::from_secs(5)).await,
        "once for that minute"
    );
    drop(b);
}

async fn next_push(p: &mut Peer) -> Value {
    loop {
        let v = p.recv_any_within(Duration::from_secs(75)).await;
        if v["type"] == "push" && v["subtype"] == "reminder" {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_reminder_from_a_socket_that_closed_at_once_arrives_on_another_node() {
    let db = TestDb::migrated().await;
    let a = cluster_node(&db, TOKEN).await;
    let b = cluster_node(&db, TOKEN).await;
    let m = a.mesh_with(TOKEN, &["alice"]).await;
    let alice = &m[0];
    // The 1.37 CLI: one frame, then the socket closes.
    let (mut cli, _) = Peer::join(&a.ws_url(), alice, "cli").await;
    let due = chrono::Utc::now().timestamp_millis() + 1_500;
    cli.send(
        json!({"type": "schedule", "to": alice.keys.public_hex, "message": "stand up",
        "deliverAt": due, "subtype": "reminder"}),
    )
    .await;
    cli.close().await;
    let (mut later, _) = Peer::join(&b.ws_url(), alice, "desk").await;
    let push = next_push(&mut later).await;
    assert_eq!(text(&push), "stand up");
    assert!(push.get("senderMemberPubkey").is_none(), "{push}");
}
