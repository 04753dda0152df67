//! Bad input on an open session: each gets its documented answer and the
//! socket stays usable; oversized frames close with 1009; pings.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::both_stores;
use crate::harness::{world, world_with, Backend, Peer};

async fn junk_frames_get_bad_request_and_keep_the_socket(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let cases = vec![
        "not json at all".to_string(),
        "[1,2,3]".to_string(),
        json!({"no": "type"}).to_string(),
        json!({"type": 42}).to_string(),
        json!({"type": "set_status", "status": "asleep"}).to_string(),
        json!({"type": "set_status"}).to_string(),
        json!({"type": "set_visible", "visible": "yes"}).to_string(),
        json!({"type": "set_summary", "summary": "s".repeat(1025)}).to_string(),
        json!({"type": "set_summary", "summary": 7}).to_string(),
        json!({"type": "join_group", "name": "@all"}).to_string(),
        json!({"type": "join_group", "name": "a//b"}).to_string(),
        json!({"type": "join_group", "name": "x".repeat(200)}).to_string(),
        json!({"type": "leave_group"}).to_string(),
        json!({"type": "set_profile", "bio": "b".repeat(2000)}).to_string(),
        json!({"type": "set_stats", "stats": {"blob": "x".repeat(5000)}}).to_string(),
        json!({"type": "set_stats", "stats": [1]}).to_string(),
        json!({"type": "hello"}).to_string(),
    ];
    for text in cases {
        a.send_text(&text).await;
        let r = a.recv().await;
        assert_eq!(r["type"], "error", "{text} -> {r}");
        assert_eq!(r["code"], "bad_request", "{text} -> {r}");
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // PROTOCOL-SESSIONS.md §10: an unknown type has its own code, and the
    // 1.37 client's handshake never gets it.
    for (text, code) in [
        (
            json!({"type": "teleport", "_reqId": "r9"}),
            "unknown_message_type",
        ),
        (json!({"type": "teleport"}), "unknown_message_type"),
        (
            json!({"type": "session_hello", "_reqId": "r9"}),
            "bad_request",
        ),
    ] {
        a.send(text.clone()).await;
        let r = a.recv().await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some(code)),
            "{text} -> {r}"
        );
        assert_eq!(r["_reqId"], text["_reqId"], "{r}");
    }
    let r = a.request(json!({"type": "teleport", "_reqId": "r8"})).await;
    assert_eq!(r["message"], "unknown message type: teleport");
    a.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(a.recv().await["code"], "bad_request");
    let list = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(list["type"], "peers_list", "socket still works");
    let peers = w.node.peers("m").await;
    assert_eq!(
        peers[0]["summary"],
        json!(null),
        "refused frames changed nothing"
    );
    assert_eq!(peers[0]["groups"], json!([{"name": "backend"}]));
}

async fn bad_sends_are_acked_with_their_id(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let r = a
        .request(json!({"type": "send", "id": "c7", "targetSpec": 12}))
        .await;
    assert_eq!(r["type"], "ack");
    assert_eq!(r["id"], "c7");
    assert_eq!(r["queued"], false);
    assert_eq!(r["messageId"], "");
    assert_eq!(r["code"], "bad_request");
    assert!(r["error"].as_str().unwrap().starts_with("bad_request: "));
    let r = a.request(json!({"type": "send", "targetSpec": "*"})).await;
    assert_eq!(r["type"], "ack");
    assert_eq!(r["id"], "", "no string id to echo");
}

async fn oversized_frames_close_1009(backend: Backend) {
    let w = world_with(backend, |s| {
        s.max_message_bytes = 1024;
        s.max_frame_bytes = 64 * 1024;
    })
    .await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    // Over max_frame_bytes: the frame is not read at all.
    let big = json!({"type": "set_summary", "summary": "x".repeat(70 * 1024)}).to_string();
    a.send_text(&big).await;
    assert_eq!(a.expect_close().await, 1009);

    let (mut b, _) = Peer::join(&w.node.ws_url(), &w.bob, "b1").await;
    let huge = "y".repeat(10 * 1024 * 1024);
    let _ = b.ws.send(Message::Text(huge.into())).await;
    assert_eq!(b.expect_close().await, 1009);
}

/// A `send` over `max_message_bytes` but under the frame limit (the
/// default 1 MiB) is answered with its `too_large` ack, the way the
/// reference broker answers, and the socket stays open.
async fn an_oversized_send_gets_its_too_large_ack(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let body = "QUFB".repeat(70 * 1024 / 4);
    let ack = a
        .request(crate::messaging::send_frame(
            "big",
            &w.bob.keys.public_hex,
            "now",
            &body,
        ))
        .await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["id"].as_str(),
            ack["queued"].as_bool()
        ),
        (Some("ack"), Some("big"), Some(false)),
        "{ack}"
    );
    assert!(
        ack["error"].as_str().unwrap().starts_with("too_large"),
        "{ack}"
    );
    let r = a.request(json!({"type": "list_peers"})).await;
    assert_eq!(r["type"], "peers_list", "still open: {r}");
}

async fn frames_under_the_limit_pass(backend: Backend) {
    let w = world_with(backend, |s| s.max_message_bytes = 1024).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    // Over max_message_bytes but under the frame limit: the summary cap,
    // not the frame limit, answers.
    let r = a
        .request(json!({"type": "set_summary", "summary": "x".repeat(4000)}))
        .await;
    assert_eq!(r["code"], "bad_request");
}

async fn silent_clients_are_closed_when_pongs_stop(backend: Backend) {
    let w = world_with(backend, |s| {
        s.ping_interval_seconds = 1;
        s.pong_timeout_seconds = 2;
    })
    .await;
    let url = w.node.ws_url();
    let (mut live, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut dead, _) = Peer::join(&url, &w.bob, "b1").await;
    // `live` keeps reading (tungstenite answers pings while reading);
    // `dead` reads nothing, so it never answers.
    assert!(live.quiet_for(Duration::from_millis(3500)).await);
    // `dead` now reads: queued pings, then the close. Answering those pings
    // may hit the already-closed TCP stream first, so a reset counts too;
    // the metric below says why it ended.
    loop {
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut dead.ws),
        )
        .await
        .expect("the silent socket is ended");
        match next {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1001);
                break;
            }
            Some(Ok(Message::Ping(_))) => continue,
            // peer_joined of `live`, queued before the socket went quiet.
            Some(Ok(Message::Text(t))) if t.contains("\"subtype\":\"system\"") => continue,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    let r = live.request(json!({"type": "list_peers"})).await;
    assert_eq!(r["type"], "peers_list", "a client that answers pings stays");
    let metrics = w.node.metrics().await;
    assert!(
        metrics.contains("broker_pong_timeouts_total 1"),
        "{metrics}"
    );
}

async fn client_pings_are_answered(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    a.ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut a.ws),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(next, Message::Pong(b"hi".to_vec().into()));
}

/// Postgres cannot store NUL: refused up front on every surface, never a
/// database error.
async fn nul_characters_are_refused_everywhere(backend: Backend) {
    let w = world_with(backend, |s| {
        s.hook_auth = Some(claudemesh_broker::config::HookAuth::None)
    })
    .await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let r = a
        .request(json!({"type": "set_summary", "summary": "a\u{0}b"}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    let r = a
        .request(json!({"type": "send", "id": "n1", "targetSpec": "@x\u{0}", "nonce": "", "ciphertext": ""}))
        .await;
    assert_eq!(
        (r["type"].clone(), r["code"].clone()),
        (json!("ack"), json!("bad_request"))
    );
    let hook = w
        .node
        .http
        .post(w.node.url("/hook/set-status"))
        .json(&json!({"cwd": "/a\u{0}b", "pid": 1, "status": "idle"}))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status().as_u16(), 400);
    let join = w
        .node
        .http
        .post(w.node.url("/join"))
        .json(&json!({"invite_token": "x", "peer_pubkey": w.bob.keys.public_hex, "display_name": "b\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status().as_u16(), 400);
    let (status, _) = w
        .node
        .admin(
            reqwest::Method::POST,
            "/meshes",
            Some(json!({"slug": "n", "name": "x\u{0}"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        a.request(json!({"type": "list_peers"})).await["type"],
        "peers_list"
    );
}

both_stores!(
    nul_characters_are_refused_everywhere,
    junk_frames_get_bad_request_and_keep_the_socket,
    bad_sends_are_acked_with_their_id,
    oversized_frames_close_1009,
    an_oversized_send_gets_its_too_large_ack,
    frames_under_the_limit_pass,
    silent_clients_are_closed_when_pongs_stop,
    client_pings_are_answered,
);
