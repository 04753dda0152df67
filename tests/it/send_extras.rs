//! `send` extras and `push` extras (PROTOCOL-SESSIONS.md §6, §7, §8): the
//! 1.37 client's fields checked, stored and echoed on every push; who the
//! sender is; `senderMemberPubkey` left out for the sender's own member;
//! ack texts the 1.37 daemon reads right; a send to an ended session key.

use std::time::Duration;

use serde_json::{json, Value};

use claudemesh_broker::protocol::crypto::KeyPair;

use crate::both_stores;
use crate::harness::{world_with, Backend, Peer};
use crate::messaging::{expect_push, send_frame};

fn with_extras(id: &str, target: &str) -> Value {
    let mut f = send_frame(id, target, "now", "eA==");
    f["client_message_id"] = json!(format!("cm-{id}"));
    f["request_fingerprint"] = json!("f".repeat(64));
    f["replyToId"] = json!("r-7");
    f["mentions"] = json!(["bob", 3]);
    f["bodyVersion"] = json!(2);
    f
}

async fn extras_are_echoed_on_every_push(backend: Backend) {
    let w = world_with(backend, |s| {
        s.claim_lease_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) =
        Peer::join_with(&url, &w.alice, "a1", json!({"displayName": "alice-api"})).await;
    let (mut b, _) =
        Peer::join_with(&url, &w.bob, "b1", json!({"capabilities": ["client_ack"]})).await;
    let (mut c, _) = Peer::join(&url, &w.bob, "b2").await;
    let ack = a.request(with_extras("c1", "*")).await;
    assert_eq!(ack["queued"], true, "{ack}");
    for (peer, leased) in [(&mut b, true), (&mut c, false)] {
        let p = expect_push(peer).await;
        assert_eq!(p["messageId"], ack["messageId"]);
        assert_eq!(p["client_message_id"], "cm-c1", "{p}");
        assert_eq!(p["request_fingerprint"], "f".repeat(64));
        assert_eq!(p["replyToId"], "r-7");
        assert_eq!(p["senderMemberId"], w.alice.id);
        assert_eq!(p["senderName"], "alice-api");
        assert_eq!(
            p["senderMemberPubkey"], w.alice.keys.public_hex,
            "another member's push"
        );
        if leased {
            // The redelivery carries them too.
            let again = expect_push(peer).await;
            assert_eq!(again["client_message_id"], "cm-c1");
            assert_eq!(again["replyToId"], "r-7");
            peer.send(json!({"type": "client_ack", "brokerMessageId": ack["messageId"]}))
                .await;
        }
    }
    // A push without extras has none of their keys.
    a.request(send_frame("c2", "*", "now", "eQ==")).await;
    let p = loop {
        let p = expect_push(&mut c).await;
        if p["messageId"] != ack["messageId"] {
            break p;
        }
    };
    for key in ["client_message_id", "request_fingerprint", "replyToId"] {
        assert!(p.get(key).is_none(), "{key}: {p}");
    }
}

/// A sibling session's message to the member key reaches the member's
/// other session without `senderMemberPubkey`.
async fn own_member_pushes_leave_out_the_member_key(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let url = w.node.ws_url();
    let (mut s1, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut s2, _) = Peer::join(&url, &w.alice, "a2").await;
    let ack = s1
        .request(send_frame("c1", &w.alice.keys.public_hex, "now", "eA=="))
        .await;
    assert_eq!(ack["queued"], true, "{ack}");
    let p = expect_push(&mut s2).await;
    assert!(p.get("senderMemberPubkey").is_none(), "{p}");
    assert_eq!(p["senderMemberId"], w.alice.id);
    assert_eq!(p["senderPubkey"], w.alice.keys.public_hex);
}

async fn bad_extras_and_topics_are_invalid(backend: Backend) {
    let w = world_with(backend, |s| s.max_message_bytes = 300).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (_b, _) = Peer::join(&url, &w.bob, "b1").await;
    let bob = w.bob.keys.public_hex.clone();
    let mut cases = Vec::new();
    let mut f = send_frame("t1", &bob, "now", "eA==");
    f["client_message_id"] = json!(12);
    cases.push((f, "bad_request"));
    let mut f = send_frame("t2", &bob, "now", "eA==");
    f["client_message_id"] = json!("x".repeat(129));
    cases.push((f, "bad_request"));
    let mut f = send_frame("t3", &bob, "now", "eA==");
    f["request_fingerprint"] = json!({"a": 1});
    cases.push((f, "bad_request"));
    cases.push((send_frame("t4", "#builds", "now", "eA=="), "bad_request"));
    cases.push((send_frame("t5", &bob, "now", &"A".repeat(400)), "too_large"));
    for (frame, code) in cases {
        let ack = a.request(frame.clone()).await;
        assert_eq!(
            (ack["type"].as_str(), ack["code"].as_str()),
            (Some("ack"), Some(code)),
            "{frame} -> {ack}"
        );
        assert!(ack["error"].as_str().unwrap().contains("invalid"), "{ack}");
    }
    // Retryable refusals must not read as permanent to the 1.37 daemon.
    let gone = KeyPair::generate().public_hex;
    let ack = a.request(send_frame("t6", &gone, "now", "eA==")).await;
    assert_eq!(ack["code"], "no_recipient");
    let permanent = regex_words(&[
        "payload_too_large",
        "forbidden",
        "not_found",
        "invalid",
        "schema",
        "auth",
        "signature",
        "unknown",
        "not_authorized",
        "target_not_found",
    ]);
    assert!(!permanent(ack["error"].as_str().unwrap()), "{ack}");
}

fn regex_words(words: &'static [&'static str]) -> impl Fn(&str) -> bool {
    move |text: &str| {
        let t = text.to_ascii_lowercase();
        words.iter().any(|w| t.contains(w))
    }
}

/// §8: a session key whose presence ended is `no_recipient`, even while
/// the member has other sessions (the envelope is sealed to that key).
async fn an_ended_session_key_has_no_recipient(backend: Backend) {
    let w = world_with(backend, |s| {
        s.presence_grace_seconds = 0;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let key = KeyPair::generate();
    let (s, _) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"sessionPubkey": key.public_hex}),
    )
    .await;
    let (_other, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    s.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w
        .node
        .peers("m")
        .await
        .iter()
        .any(|p| p["pubkey"] == key.public_hex)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ack = b
        .request(send_frame("c1", &key.public_hex, "now", "eA=="))
        .await;
    assert_eq!(ack["code"], "no_recipient", "{ack}");
}

both_stores!(
    extras_are_echoed_on_every_push,
    own_member_pushes_leave_out_the_member_key,
    bad_extras_and_topics_are_invalid,
    an_ended_session_key_has_no_recipient,
);
