//! The audit chain: what is recorded, verification, tampering, retention,
//! appends from several nodes, and that no envelope ever reaches it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::{world, Backend, Peer, TestNode};
use crate::messaging::{expect_push, send};

const SECRET_CIPHERTEXT: &str = "U0VDUkVUQ0lQSEVSVEVYVA==";
const SECRET_NONCE: &str = "U0VDUkVUTk9OQ0VWQUxVRQ==";

async fn verify(node: &TestNode, slug: &str) -> Value {
    let (status, v) = node
        .admin(
            reqwest::Method::GET,
            &format!("/meshes/{slug}/audit/verify"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the appender has written at least `n` entries.
async fn wait_entries(node: &TestNode, slug: &str, n: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = verify(node, slug).await;
        if v["entries"].as_u64().unwrap() >= n {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn activity_is_chained_and_verifies(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let frame = json!({"type": "send", "id": "c1", "targetSpec": w.bob.keys.public_hex,
                       "priority": "now", "nonce": SECRET_NONCE, "ciphertext": SECRET_CIPHERTEXT});
    assert_eq!(a.request(frame).await["queued"], true);
    expect_push(&mut b).await;
    let stranger = claudemesh_broker::protocol::crypto::KeyPair::generate();
    send(&mut a, "c2", &stranger.public_hex, "now", "eA==").await;
    let (_, inv) = w
        .node
        .admin(reqwest::Method::POST, "/meshes/m/invites", Some(json!({})))
        .await;
    let token = inv["token"].as_str().unwrap();
    w.node
        .admin(reqwest::Method::DELETE, &format!("/invites/{token}"), None)
        .await;
    w.node
        .admin(
            reqwest::Method::DELETE,
            &format!("/meshes/m/members/{}", w.bob.id),
            None,
        )
        .await;
    // member_added ×2, peer_joined ×2, message_sent, message_rejected,
    // invite_created, invite_revoked, member_revoked.
    let v = wait_entries(&w.node, "m", 9).await;
    assert_eq!(v["valid"], true, "{v}");
    assert!(v.get("brokenAt").is_none());
    let mesh_id = &w.alice.mesh_id;
    let (_, entries) = w.node.engine.store.audit_chain(mesh_id).await.unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.event_type.as_str()).collect();
    for k in [
        "member_added",
        "peer_joined",
        "message_sent",
        "message_rejected",
        "invite_created",
        "invite_revoked",
        "member_revoked",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let sent = entries
        .iter()
        .find(|e| e.event_type == "message_sent")
        .unwrap();
    assert_eq!(sent.payload["target_kind"], "direct");
    assert_eq!(sent.payload["priority"], "now");
    assert_eq!(sent.actor_name.as_deref(), Some("alice"));
    let rejected = entries
        .iter()
        .find(|e| e.event_type == "message_rejected")
        .unwrap();
    assert_eq!(rejected.payload["code"], "no_recipient");
    let all =
        serde_json::to_string(&entries.iter().map(|e| &e.payload).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains(SECRET_CIPHERTEXT) && !all.contains(SECRET_NONCE));
    assert!(!all.contains(token), "invite tokens are credentials");
    // Seqs run 1..=n with no gap.
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
    }
}

async fn pruned_chains_still_verify(backend: Backend) {
    let w = world(backend).await;
    wait_entries(&w.node, "m", 2).await;
    let store = &w.node.engine.store;
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(store.prune_audit(later).await.unwrap(), 2);
    let v = verify(&w.node, "m").await;
    assert_eq!(
        (v["valid"].clone(), v["entries"].clone()),
        (json!(true), json!(0))
    );
    w.node.add_member("m", "carol", &[]).await;
    let v = wait_entries(&w.node, "m", 1).await;
    assert_eq!(v["valid"], true, "continues from the checkpoint: {v}");
    let (cp, entries) = store.audit_chain(&w.alice.mesh_id).await.unwrap();
    assert_eq!(cp.unwrap().seq, 2);
    assert_eq!(entries[0].seq, 3);
}

both_stores!(activity_is_chained_and_verifies, pruned_chains_still_verify);

/// Editing, deleting or reordering rows in the database is detected, and
/// the CLI exits 1 on a broken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected() {
    let w = world(Backend::Postgres).await;
    for i in 0..4 {
        w.node.add_member("m", &format!("x{i}"), &[]).await;
    }
    assert_eq!(wait_entries(&w.node, "m", 6).await["valid"], true);
    let db = w._db.as_ref().unwrap().client().await;
    let cli = |want: i32| {
        let port = w.node.port;
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"))
                .args(["--url", &format!("http://127.0.0.1:{port}"), "--token"])
                .arg(crate::harness::ADMIN_TOKEN)
                .args(["audit", "verify", "--mesh", "m", "--json"])
                .output()
                .await
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(want),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        }
    };
    assert_eq!(cli(0).await["valid"], true);

    db.execute(
        "UPDATE audit_log SET payload = '{\"forged\":true}' WHERE seq = 3",
        &[],
    )
    .await
    .unwrap();
    let v = cli(1).await;
    assert_eq!(
        (v["valid"].clone(), v["brokenAt"].clone()),
        (json!(false), json!(3))
    );
    // Restore by recomputing nothing: delete instead, a gap at 3.
    db.execute("DELETE FROM audit_log WHERE seq = 3", &[])
        .await
        .unwrap();
    assert_eq!(verify(&w.node, "m").await["brokenAt"], 3);
    // Reorder two later rows.
    db.batch_execute(
        "UPDATE audit_log SET seq = -5 WHERE seq = 5;
         UPDATE audit_log SET seq = 5 WHERE seq = 4;
         UPDATE audit_log SET seq = 4 WHERE seq = -5;",
    )
    .await
    .unwrap();
    let v = verify(&w.node, "m").await;
    assert_eq!(v["valid"], false);
}

/// Three nodes, concurrent senders in one mesh: one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_three_nodes_keep_one_chain() {
    let c = cluster(3, |s| s.send_burst = 1000).await;
    let mut members = vec![c.alice.clone(), c.bob.clone()];
    members.push(c.nodes[2].add_member("m", "carol", &[]).await);
    let mut peers = Vec::new();
    for (i, m) in members.iter().enumerate() {
        peers.push(Peer::join(&c.nodes[i].ws_url(), m, "s").await.0);
    }
    let n = 20;
    let tasks: Vec<_> = peers
        .into_iter()
        .map(|mut p| {
            tokio::spawn(async move {
                for i in 0..n {
                    p.send(crate::messaging::send_frame(
                        &format!("c{i}"),
                        "*",
                        "now",
                        "eA==",
                    ))
                    .await;
                }
                let mut acks = 0;
                while acks < n {
                    let f = p.recv().await;
                    if f["type"] == "ack" {
                        assert_eq!(f["queued"], true, "{f}");
                        acks += 1;
                    }
                }
                p
            })
        })
        .collect();
    let mut keep = Vec::new();
    for t in tasks {
        keep.push(t.await.unwrap());
    }
    // 3 member_added + 3 peer_joined + 60 message_sent.
    let v = wait_entries(&c.nodes[0], "m", 66).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["entries"], 66);
}
