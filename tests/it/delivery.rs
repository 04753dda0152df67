//! Delivery guarantees: client_ack redelivery, grace queues, limits, bad
//! sends, system events, cleanup.

use std::time::Duration;

use serde_json::json;

use claudemesh_broker::protocol::target::Priority;
use claudemesh_broker::store::{Bucket, NewDelivery, NewMessage, Outgoing, SendResult};

use crate::both_stores;
use crate::harness::{world, world_with, Backend, Peer, World};
use crate::messaging::{expect_push, send, send_frame};

async fn client_ack_redelivers_until_acked(backend: Backend) {
    let w = world_with(backend, |s| {
        s.claim_lease_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"capabilities": ["client_ack"]})).await;
    let ack = send(&mut a, "c1", &w.bob.keys.public_hex, "now", "eA==").await;
    let id = ack["messageId"].as_str().unwrap().to_string();
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    // Not acked: the lease lapses and the same message comes again.
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    // Someone else acking it changes nothing.
    a.send(json!({"type": "client_ack", "messageId": id})).await;
    assert_eq!(expect_push(&mut b).await["messageId"], id);
    let metrics = w.node.metrics().await;
    assert!(
        !metrics.contains("broker_redeliveries_total 0"),
        "{metrics}"
    );
    assert!(metrics.contains("broker_redeliveries_total"), "{metrics}");
    b.send(json!({"type": "client_ack", "messageId": id})).await;
    b.send(json!({"type": "client_ack", "messageId": "not-a-uuid"}))
        .await;
    b.send(json!({"type": "client_ack", "messageId": uuid::Uuid::now_v7().to_string()}))
        .await;
    // A lease or two may have started before the ack landed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        if b.quiet_for(Duration::from_millis(2500)).await {
            return;
        }
    }
    panic!("acked message kept coming");
}

async fn without_client_ack_written_means_delivered(backend: Backend) {
    let w = world_with(backend, |s| {
        s.claim_lease_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    send(&mut a, "c1", &w.bob.keys.public_hex, "now", "eA==").await;
    expect_push(&mut b).await;
    assert!(
        b.quiet_for(Duration::from_millis(2500)).await,
        "no redelivery"
    );
}

async fn queued_for_a_session_in_grace(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let key = claudemesh_broker::protocol::crypto::KeyPair::generate();
    let (b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"sessionPubkey": key.public_hex})).await;
    b.close().await;
    let ack = send(&mut a, "c1", &w.bob.keys.public_hex, "now", "MQ==").await;
    assert_eq!(ack["queued"], true, "in grace is not no_recipient: {ack}");
    let ack = send(&mut a, "c2", &key.public_hex, "next", "Mg==").await;
    assert_eq!(ack["queued"], true);
    let (mut b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"sessionPubkey": key.public_hex})).await;
    assert_eq!(expect_push(&mut b).await["ciphertext"], "MQ==");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "Mg==");
}

async fn after_grace_the_member_keeps_its_queue(backend: Backend) {
    let w = world_with(backend, |s| {
        s.presence_grace_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (b, _) = Peer::join(&url, &w.bob, "b1").await;
    b.close().await;
    send(&mut a, "c1", &w.bob.keys.public_hex, "now", "MQ==").await;
    send(&mut a, "c2", "*", "now", "Mg==").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while w.node.peers("m").await.len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "grace never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut b, _) = Peer::join(&url, &w.bob, "b2").await;
    assert_eq!(expect_push(&mut b).await["ciphertext"], "MQ==");
    assert_eq!(expect_push(&mut b).await["ciphertext"], "Mg==");
}

/// A closing socket gives back what it held unacked at once, both rows
/// addressed to its session and rows addressed to its member: the lease is
/// a minute here, so only that release can bring them back quickly.
async fn unacked_rows_return_when_the_socket_closes(backend: Backend) {
    let w = world_with(backend, |s| {
        s.claim_lease_seconds = 60;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let ack = json!({"capabilities": ["client_ack"]});
    let (mut b, _) = Peer::join_with(&url, &w.bob, "b1", ack.clone()).await;
    send(&mut a, "c1", &w.bob.keys.public_hex, "now", "bWVtYmVy").await;
    send(&mut a, "c2", "*", "now", "c2Vzc2lvbg==").await;
    let mut got = vec![
        expect_push(&mut b).await["ciphertext"].clone(),
        expect_push(&mut b).await["ciphertext"].clone(),
    ];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, ["bWVtYmVy", "c2Vzc2lvbg=="]);
    b.close().await;
    // Same session back within grace: both rows again, long before the lease.
    let (mut b, _) = Peer::join_with(&url, &w.bob, "b1", ack).await;
    let mut again = vec![
        expect_push(&mut b).await["ciphertext"].clone(),
        expect_push(&mut b).await["ciphertext"].clone(),
    ];
    again.sort_by_key(|v| v.to_string());
    assert_eq!(again, got);
}

/// Revoking a member drops every row queued for it: those addressed to its
/// (in-grace) session and those addressed to the member.
async fn revoking_a_member_drops_its_queue(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (b, _) = Peer::join(&url, &w.bob, "b1").await;
    b.close().await;
    send(&mut a, "c1", &w.bob.keys.public_hex, "now", "MQ==").await;
    send(&mut a, "c2", "*", "now", "Mg==").await;
    let store = &w.node.engine.store;
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    let path = format!("/meshes/m/members/{}", w.bob.id);
    assert_eq!(
        w.node.admin(reqwest::Method::DELETE, &path, None).await.0,
        204
    );
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}

async fn send_budget_is_per_member(backend: Backend) {
    let w = world_with(backend, |s| {
        s.send_burst = 3;
        s.send_rate_per_min = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (_b, _) = Peer::join(&url, &w.bob, "b1").await;
    let bob = w.bob.keys.public_hex.clone();
    for i in 0..3 {
        assert_eq!(
            send(&mut a, &format!("r{i}"), &bob, "now", "eA==").await["queued"],
            true
        );
    }
    let ack = send(&mut a, "r3", &bob, "now", "eA==").await;
    assert_eq!(ack["code"], "rate_limit");
    assert!(ack["error"].as_str().unwrap().starts_with("rate_limit: "));
    // Another session of the same member shares the bucket.
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    assert_eq!(
        send(&mut a2, "r4", &bob, "now", "eA==").await["code"],
        "rate_limit"
    );
    let list = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["type"], "peers_list", "socket stays open");
}

async fn bad_sends_get_their_codes(backend: Backend) {
    let w = world_with(backend, |s| s.max_message_bytes = 200).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (_b, _) = Peer::join(&url, &w.bob, "b1").await;
    let bob = w.bob.keys.public_hex.clone();
    let cases = [
        (send_frame("t1", &bob, "now", &"A".repeat(300)), "too_large"),
        (send_frame("t2", &bob, "urgent", "eA=="), "bad_request"),
        (send_frame("t3", "", "now", "eA=="), "bad_request"),
        (send_frame("t4", "@bad group", "now", "eA=="), "bad_request"),
        (send_frame("t5", &bob, "now", "not base64!"), "bad_request"),
        (
            send_frame("t6", &"@x".repeat(100), "now", "eA=="),
            "too_large",
        ),
    ];
    for (frame, code) in cases {
        let ack = a.request(frame.clone()).await;
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["id"], frame["id"]);
        assert_eq!(ack["code"], code, "{frame} -> {ack}");
        assert_eq!(ack["queued"], false);
    }
    let metrics = w.node.metrics().await;
    assert!(
        metrics.contains("broker_messages_total{result=\"too_large\"} 2"),
        "{metrics}"
    );
}

async fn system_events_reach_other_members(backend: Backend) {
    let w = world_with(backend, |s| {
        s.presence_grace_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a1, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let e = a1.next_event().await;
    assert_eq!(e["event"], "peer_joined");
    assert_eq!(e["senderPubkey"], "system");
    let event_id = e["messageId"].as_str().unwrap();
    assert!(
        claudemesh_broker::protocol::ids::decode(event_id).is_some(),
        "system pushes carry base62 ids too: {event_id}"
    );
    assert_eq!(e["priority"], "low");
    assert_eq!(e["nonce"], "");
    assert_eq!(e["ciphertext"], "");
    assert_eq!(e["eventData"]["name"], "bob");
    assert_eq!(e["eventData"]["displayName"], "bob", "both spellings");
    assert_eq!(e["eventData"]["pubkey"], w.bob.keys.public_hex);
    assert_eq!(e["eventData"]["groups"], json!([]));
    for key in ["mesh", "event"] {
        assert!(
            e["eventData"].get(key).is_none(),
            "the 1.37 daemon spreads eventData: {e}"
        );
    }
    assert!(
        a1.events.is_empty(),
        "own sibling's join is not announced: {:?}",
        a1.events
    );
    assert_eq!(a2.next_event().await["event"], "peer_joined");
    a2.request(json!({"type": "set_visible", "visible": false}))
        .await;
    let e = b.next_event().await;
    assert_eq!(e["event"], "peer_hidden");
    assert_eq!(e["eventData"]["name"], "alice");
    assert!(
        e["eventData"].get("displayName").is_none(),
        "only joins, returns and leaves"
    );
    a2.request(json!({"type": "set_visible", "visible": true}))
        .await;
    assert_eq!(b.next_event().await["event"], "peer_visible");
    b.close().await;
    let e = a1.next_event().await;
    assert_eq!(e["event"], "peer_left", "after grace: {e}");
    assert_eq!(e["eventData"]["displayName"], "bob");
    let (_b, _) = Peer::join(&url, &w.bob, "b2").await;
    let e = a1.next_event().await;
    assert_eq!(e["event"], "peer_returned");
    assert_eq!(e["eventData"]["displayName"], "bob");
    assert!(e["eventData"]["lastSeenAt"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

async fn delivered_messages_are_cleaned_up(backend: Backend) {
    let w = world_with(backend, |s| s.sweep_interval_seconds = 1).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    for i in 0..5 {
        send(&mut a, &format!("c{i}"), "*", "now", "eA==").await;
        expect_push(&mut b).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = w.node.metrics().await;
        if metrics.contains("broker_queue_depth 0") && metrics.contains("broker_deliveries_total 5")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(db) = &w._db {
        let c = db.client().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n: i64 = c
                .query_one("SELECT count(*) FROM message", &[])
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{n} messages left");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A send from alice to bob's member key, stored straight through the
/// store (no engine, so no wake-up), rated at one token a second.
fn alice_to_bob(w: &World, at: chrono::DateTime<chrono::Utc>) -> Outgoing {
    Outgoing {
        message: NewMessage {
            id: uuid::Uuid::now_v7(),
            mesh_id: w.alice.mesh_id.clone(),
            sender_member_id: w.alice.id.clone(),
            sender_member_pubkey: w.alice.keys.public_hex.clone(),
            sender_session_pubkey: None,
            target_spec: w.bob.keys.public_hex.clone(),
            priority: Priority::Now,
            nonce: "bm9uY2U=".into(),
            ciphertext: "eA==".into(),
            created_at: at,
            expires_at: at + chrono::Duration::hours(1),
            echo: Default::default(),
        },
        deliveries: vec![NewDelivery {
            recipient_member_id: w.bob.id.clone(),
            recipient_session: None,
            exclude_session: None,
            claim: None,
        }],
        // 60/min: one token a second.
        bucket: Bucket {
            key: w.alice.id.clone(),
            rate_per_min: 60,
            burst: 3,
        },
    }
}

/// A row stored with no wake-up at all (a NOTIFY lost, say) reaches its
/// session by the session's own poll, within a sweep interval.
async fn a_missed_wake_up_costs_one_sweep_interval(backend: Backend) {
    let w = world_with(backend, |s| s.sweep_interval_seconds = 1).await;
    let (mut b, _) = Peer::join(&w.node.ws_url(), &w.bob, "b1").await;
    // Let the session's first claim come back empty and park.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = w
        .node
        .engine
        .store
        .insert_messages(&[alice_to_bob(&w, chrono::Utc::now())], &[], &[])
        .await
        .unwrap()
        .expect("unchecked batches are never refused");
    assert!(matches!(stored.results[..], [SendResult::Queued { .. }]));
    assert_eq!(expect_push(&mut b).await["ciphertext"], "eA==");
}

/// The group commit takes tokens for a whole batch at once: the first
/// `burst` sends of a member pass, later batches get what refilled (by the
/// messages' own timestamps), exactly as one token per send in order.
async fn a_batch_takes_tokens_in_send_order(backend: Backend) {
    use chrono::{Duration as Span, Utc};

    let w = world_with(backend, |_| {}).await;
    let store = w.node.engine.store.clone();
    let t0 = Utc::now();
    let batch = |at: chrono::DateTime<Utc>, n: usize| -> Vec<Outgoing> {
        (0..n).map(|_| alice_to_bob(&w, at)).collect()
    };
    let passed = |r: &[SendResult]| {
        r.iter()
            .map(|x| matches!(x, SendResult::Queued { .. }))
            .collect::<Vec<_>>()
    };
    let store_all = |b: Vec<Outgoing>| {
        let store = store.clone();
        async move {
            let stored = store.insert_messages(&b, &[], &[]).await.unwrap();
            stored.expect("unchecked batches are never refused").results
        }
    };
    let r = store_all(batch(t0, 5)).await;
    assert_eq!(
        passed(&r),
        [true, true, true, false, false],
        "a new bucket starts full"
    );
    // 1.5 s later: 1.5 tokens, so one send of three.
    let r = store_all(batch(t0 + Span::milliseconds(1500), 3)).await;
    assert_eq!(passed(&r), [true, false, false]);
    // 0.5 token left; an hour later the bucket is full again, not fuller.
    let r = store_all(batch(t0 + Span::hours(1), 4)).await;
    assert_eq!(passed(&r), [true, true, true, false]);
    // Stored: exactly the sends that passed (3 + 1 + 3).
    assert_eq!(store.queue_depth().await.unwrap(), 7);
}

both_stores!(
    client_ack_redelivers_until_acked,
    without_client_ack_written_means_delivered,
    queued_for_a_session_in_grace,
    after_grace_the_member_keeps_its_queue,
    unacked_rows_return_when_the_socket_closes,
    revoking_a_member_drops_its_queue,
    send_budget_is_per_member,
    bad_sends_get_their_codes,
    system_events_reach_other_members,
    delivered_messages_are_cleaned_up,
    a_batch_takes_tokens_in_send_order,
    a_missed_wake_up_costs_one_sweep_interval,
);
