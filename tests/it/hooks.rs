//! `POST /hook/set-status`: targets, pending hooks, release of held
//! messages, authentication, limits and bad input.

use std::time::Duration;

use claudemesh_broker::config::HookAuth;
use claudemesh_broker::protocol::Status;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::{store_for, world_with, Backend, Peer, TestNode};
use crate::messaging::{expect_push, send};

async fn post(node: &TestNode, body: Value, token: Option<&str>) -> (u16, Value) {
    let mut req = node.http.post(node.url("/hook/set-status")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn hook(status: &str) -> Value {
    json!({"cwd": "/home/u/proj", "pid": 4242, "status": status, "session_id": "s"})
}

async fn status_of(node: &TestNode, session: &str) -> (String, String) {
    let peers = node.peers("m").await;
    let p = peers
        .iter()
        .find(|p| p["sessionId"] == session)
        .expect("session listed");
    (
        p["status"].as_str().unwrap().into(),
        p["statusSource"].as_str().unwrap().into(),
    )
}

fn open(s: &mut claudemesh_broker::config::Settings) {
    s.hook_auth = Some(HookAuth::None);
}

async fn v1_hooks_find_the_session_by_pid_and_cwd(backend: Backend) {
    let w = world_with(backend, open).await;
    let url = w.node.ws_url();
    let (_a, ack) = Peer::join(&url, &w.alice, "a1").await;
    let (_b, _) = Peer::join_with(&url, &w.bob, "b1", json!({"pid": 7, "cwd": "/srv"})).await;
    let (status, body) = post(&w.node, hook("working"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "presence_id": ack["presenceId"]}));
    assert_eq!(
        status_of(&w.node, "a1").await,
        ("working".into(), "hook".into())
    );
    assert_eq!(status_of(&w.node, "b1").await.0, "idle");
    // Unknown pid: the newest live session with that cwd.
    let (_a2, ack2) = Peer::join(&url, &w.alice, "a2").await;
    let (status, body) = post(
        &w.node,
        json!({"cwd": "/home/u/proj", "pid": 1, "status": "dnd"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["presence_id"], ack2["presenceId"]);
}

async fn pending_hooks_apply_at_hello(backend: Backend) {
    let w = world_with(backend, open).await;
    let (status, body) = post(
        &w.node,
        json!({"cwd": "/late", "pid": 99, "status": "working"}),
        None,
    )
    .await;
    assert_eq!((status, body), (200, json!({"ok": true, "pending": true})));
    let (_a, _) = Peer::join_with(
        &w.node.ws_url(),
        &w.alice,
        "a1",
        json!({"pid": 99, "cwd": "/late"}),
    )
    .await;
    assert_eq!(
        status_of(&w.node, "a1").await,
        ("working".into(), "hook".into())
    );
}

async fn idle_hook_releases_held_messages(backend: Backend) {
    let w = world_with(backend, open).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join_with(&url, &w.alice, "a1", json!({"pid": 1, "cwd": "/a"})).await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert_eq!(post(&w.node, hook("working"), None).await.0, 200);
    send(&mut a, "c1", &w.bob.keys.public_hex, "next", "aGVsZA==").await;
    assert!(
        b.quiet_for(Duration::from_millis(400)).await,
        "held while working"
    );
    assert_eq!(post(&w.node, hook("idle"), None).await.0, 200);
    assert_eq!(expect_push(&mut b).await["ciphertext"], "aGVsZA==");
}

async fn hooks_never_clear_dnd(backend: Backend) {
    let w = world_with(backend, open).await;
    let (mut b, _) = Peer::join(&w.node.ws_url(), &w.bob, "b1").await;
    b.send(json!({"type": "set_status", "status": "dnd"})).await;
    b.request(json!({"type": "list_peers"})).await;
    assert_eq!(post(&w.node, hook("idle"), None).await.0, 200);
    assert_eq!(status_of(&w.node, "b1").await.0, "dnd");
    b.send(json!({"type": "set_status", "status": "idle"}))
        .await;
    b.request(json!({"type": "list_peers"})).await;
    assert_eq!(
        status_of(&w.node, "b1").await,
        ("idle".into(), "manual".into())
    );
}

async fn stuck_working_flips_to_idle(backend: Backend) {
    let w = world_with(backend, |s| {
        open(s);
        s.status_ttl_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join_with(&url, &w.alice, "a1", json!({"pid": 1, "cwd": "/a"})).await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert_eq!(post(&w.node, hook("working"), None).await.0, 200);
    send(&mut a, "c1", &w.bob.keys.public_hex, "low", "bGF0ZQ==").await;
    assert_eq!(
        expect_push(&mut b).await["ciphertext"],
        "bGF0ZQ==",
        "released by the TTL sweep"
    );
    assert_eq!(
        status_of(&w.node, "b1").await,
        ("idle".into(), "jsonl".into())
    );
}

async fn token_auth_scopes_hooks_to_one_presence(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let url = w.node.ws_url();
    let (_a, ack_a) = Peer::join(&url, &w.alice, "a1").await;
    let (_b, ack_b) = Peer::join(&url, &w.bob, "b1").await;
    let token_a = ack_a["hookToken"].as_str().unwrap();
    assert_eq!(post(&w.node, hook("working"), None).await.0, 401);
    assert_eq!(
        post(&w.node, hook("working"), Some("not-a-token")).await.0,
        401
    );
    assert_eq!(status_of(&w.node, "a1").await.0, "idle");
    assert_eq!(status_of(&w.node, "b1").await.0, "idle");
    // Alice's token names alice, whatever pid and cwd the body claims.
    let (status, body) = post(
        &w.node,
        json!({"cwd": "/elsewhere", "pid": 5, "status": "working"}),
        Some(token_a),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["presence_id"], ack_a["presenceId"]);
    assert_eq!(status_of(&w.node, "a1").await.0, "working");
    assert_eq!(status_of(&w.node, "b1").await.0, "idle");
    assert_ne!(ack_a["hookToken"], ack_b["hookToken"]);
}

/// With tokens, the hook bucket is the session the token names: another
/// session's posts, whatever `(pid, cwd)` their bodies claim, cannot
/// spend it (they could lock any session's hooks at 429 before).
async fn token_hook_buckets_are_per_session(backend: Backend) {
    let w = world_with(backend, |s| s.hook_rate_limit_per_min = 2).await;
    let url = w.node.ws_url();
    let (_a, ack_a) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"pid": 4242, "cwd": "/home/u/proj"}),
    )
    .await;
    let (_b, ack_b) = Peer::join(&url, &w.bob, "b1").await;
    let (ta, tb) = (
        ack_a["hookToken"].as_str().unwrap(),
        ack_b["hookToken"].as_str().unwrap(),
    );
    // Bob's token, alice's (pid, cwd) in the body: bob's own bucket runs dry.
    assert_eq!(post(&w.node, hook("working"), Some(tb)).await.0, 200);
    assert_eq!(post(&w.node, hook("idle"), Some(tb)).await.0, 200);
    assert_eq!(post(&w.node, hook("working"), Some(tb)).await.0, 429);
    assert_eq!(
        status_of(&w.node, "a1").await.0,
        "idle",
        "bob's posts set bob's status"
    );
    // Alice's hooks still go through, twice.
    assert_eq!(post(&w.node, hook("working"), Some(ta)).await.0, 200);
    assert_eq!(post(&w.node, hook("idle"), Some(ta)).await.0, 200);
    assert_eq!(post(&w.node, hook("working"), Some(ta)).await.0, 429);
}

async fn hook_limits_and_bad_input(backend: Backend) {
    let w = world_with(backend, |s| {
        open(s);
        s.hook_rate_limit_per_min = 2;
    })
    .await;
    let (_a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let http = &w.node.http;
    let url = w.node.url("/hook/set-status");
    let raw = |body: String, ctype: &'static str| {
        http.post(&url)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let cases: Vec<(String, &str, u16)> = vec![
        (
            json!({"pid": 1, "status": "idle"}).to_string(),
            "application/json",
            400,
        ),
        (
            json!({"cwd": "/a", "pid": 1}).to_string(),
            "application/json",
            400,
        ),
        (
            json!({"cwd": "/a", "pid": 1, "status": "sleepy"}).to_string(),
            "application/json",
            400,
        ),
        (
            json!({"cwd": "", "pid": 1, "status": "idle"}).to_string(),
            "application/json",
            400,
        ),
        (
            json!({"cwd": "/a", "pid": -1, "status": "idle"}).to_string(),
            "application/json",
            400,
        ),
        (
            json!({"cwd": "/a", "pid": 1u64 << 40, "status": "idle"}).to_string(),
            "application/json",
            400,
        ),
        (
            json!({"cwd": "/a", "pid": "1", "status": "idle"}).to_string(),
            "application/json",
            400,
        ),
        ("not json".to_string(), "application/json", 400),
        (hook("working").to_string(), "text/plain", 415),
        (
            // Over max_message_bytes, under the listener's body limit:
            // the hook's own 413 (the listener's is tested with HTTP).
            format!("{{\"cwd\":\"{}\"}}", "x".repeat(100_000)),
            "application/json",
            413,
        ),
    ];
    for (body, ctype, want) in cases {
        let resp = raw(body.clone(), ctype).await.unwrap();
        assert_eq!(
            resp.status().as_u16(),
            want,
            "{}",
            &body[..body.len().min(80)]
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["ok"], false);
    }
    assert_eq!(
        status_of(&w.node, "a1").await,
        ("idle".into(), "jsonl".into()),
        "nothing changed"
    );
    assert_eq!(post(&w.node, hook("working"), None).await.0, 200);
    assert_eq!(post(&w.node, hook("idle"), None).await.0, 200);
    assert_eq!(post(&w.node, hook("working"), None).await.0, 429);
    // Another (pid, cwd) has its own budget.
    let other = json!({"cwd": "/other", "pid": 4242, "status": "working"});
    assert_eq!(post(&w.node, other, None).await.0, 200);
    let metrics = w.node.metrics().await;
    for needle in [
        "broker_hook_requests_total{result=\"rate_limit\"} 1",
        "broker_hook_requests_total{result=\"too_large\"} 1",
        "broker_hook_requests_total{result=\"bad_request\"} 8",
        "broker_hook_requests_total{result=\"ok\"} 2",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
}

/// Pending hooks live 10 s: an older one is not applied.
async fn stale_pending_hooks_are_ignored(backend: Backend) {
    let (store, _db) = store_for(backend).await;
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::seconds(11);
    store
        .insert_pending_status(5, "/p", Status::Working, old)
        .await
        .unwrap();
    let since = now - chrono::Duration::seconds(10);
    assert_eq!(
        store.take_pending_status(5, "/p", since).await.unwrap(),
        None
    );
    store
        .insert_pending_status(6, "/p", Status::Dnd, now)
        .await
        .unwrap();
    assert_eq!(
        store.take_pending_status(6, "/p", since).await.unwrap(),
        Some(Status::Dnd)
    );
    assert_eq!(
        store.take_pending_status(6, "/p", since).await.unwrap(),
        None,
        "taken once"
    );
    store
        .insert_pending_status(7, "/p", Status::Idle, old)
        .await
        .unwrap();
    assert_eq!(store.sweep_pending_status(since).await.unwrap(), 1);
    // Idle rate buckets expire too (a missing bucket is a full one).
    let bucket = claudemesh_broker::store::Bucket {
        key: "k".into(),
        rate_per_min: 60,
        burst: 2,
    };
    assert!(store.take_token("hook", &bucket, old).await.unwrap());
    assert!(store.take_token("hook", &bucket, now).await.unwrap());
    assert_eq!(store.sweep_rate_buckets(old).await.unwrap(), 0);
    let later = now + chrono::Duration::seconds(1);
    assert_eq!(store.sweep_rate_buckets(later).await.unwrap(), 1);
}

both_stores!(
    token_hook_buckets_are_per_session,
    v1_hooks_find_the_session_by_pid_and_cwd,
    pending_hooks_apply_at_hello,
    idle_hook_releases_held_messages,
    hooks_never_clear_dnd,
    stuck_working_flips_to_idle,
    token_auth_scopes_hooks_to_one_presence,
    hook_limits_and_bad_input,
    stale_pending_hooks_are_ignored,
);
