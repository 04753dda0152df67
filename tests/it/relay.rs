//! Relays between peers over the wire (PROTOCOL-MESH.md §15–§16): the MCP
//! registry and its events, calls relayed to the host and answered with
//! the caller's `_reqId`, every failure as the contract words it, and file
//! and directory requests matched by the broker's relay id.

use std::time::Duration;

use claudemesh_broker::protocol::crypto::KeyPair;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::client::assert_error;
use crate::harness::{world_with, Backend, Peer};

fn register(name: &str, persistent: bool) -> Value {
    json!({"type": "mcp_register", "serverName": name, "description": format!("{name} bridge"),
        "tools": [{"name": "search", "description": "JQL search", "inputSchema": {"type": "object"}}],
        "persistent": persistent, "_reqId": "reg"})
}

pub async fn registered(p: &mut Peer, name: &str, persistent: bool) {
    let r = p.request(register(name, persistent)).await;
    assert_eq!(
        r,
        json!({"type": "mcp_register_ack", "serverName": name, "toolCount": 1, "_reqId": "reg"})
    );
}

/// The next system event named `event`, skipping others.
pub async fn event_named(p: &mut Peer, event: &str) -> Value {
    loop {
        let e = p.next_event().await;
        if e["event"] == event {
            return e;
        }
    }
}

async fn listed(p: &mut Peer) -> Vec<Value> {
    let r = p.request(json!({"type": "mcp_list", "_reqId": "l"})).await;
    assert_eq!(
        (r["type"].as_str(), r["_reqId"].as_str()),
        (Some("mcp_list_result"), Some("l")),
        "{r}"
    );
    r["servers"].as_array().unwrap().clone()
}

pub fn call(server: &str, req: &str) -> Value {
    json!({"type": "mcp_call", "serverName": server, "toolName": "search",
        "args": {"jql": "project = X"}, "_reqId": req})
}

/// The host's side: the next `mcp_call_forward`.
pub async fn forwarded(host: &mut Peer) -> Value {
    let f = host.recv().await;
    assert_eq!(f["type"], "mcp_call_forward", "{f}");
    assert!(f.get("_reqId").is_none(), "{f}");
    assert_eq!(f["callId"].as_str().unwrap().len(), 32, "{f}");
    f
}

async fn the_registry_and_its_events(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert!(listed(&mut b).await.is_empty());
    registered(&mut a, "jira", true).await;
    for p in [&mut a2, &mut b] {
        let e = event_named(p, "mcp_registered").await;
        assert_eq!(
            e["eventData"],
            json!({"serverName": "jira", "description": "jira bridge", "tools": ["search"],
                "hostedBy": "alice"})
        );
    }
    assert!(a.quiet_for(Duration::from_millis(300)).await);
    assert!(
        a.events.iter().all(|e| e["event"] != "mcp_registered"),
        "not to the registering presence"
    );
    assert_eq!(
        listed(&mut b).await,
        [
            json!({"name": "jira", "description": "jira bridge", "hostedBy": "alice",
            "tools": [{"name": "search", "description": "JQL search"}], "online": true})
        ]
    );
    // Another member's name: refused; the same member's other session
    // takes it over.
    let r = b.request(register("jira", false)).await;
    assert_error(&r, "forbidden", "reg");
    registered(&mut a2, "jira", true).await;
    // Unregistering: ignored from another member, then done by the host,
    // heard by all but the host.
    b.send(json!({"type": "mcp_unregister", "serverName": "jira"}))
        .await;
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "no reply, no error"
    );
    assert_eq!(listed(&mut b).await.len(), 1);
    a.send(json!({"type": "mcp_unregister", "serverName": "jira"}))
        .await;
    for p in [&mut b, &mut a] {
        let e = event_named(p, "mcp_unregistered").await;
        assert_eq!(
            e["eventData"],
            json!({"serverName": "jira", "hostedBy": "alice"})
        );
    }
    assert!(listed(&mut b).await.is_empty());
    assert!(a2.quiet_for(Duration::from_millis(300)).await);
    assert!(
        a2.events.iter().all(|e| e["event"] != "mcp_unregistered"),
        "not to the host"
    );
    b.expect_bad_requests(&[
        (
            json!({"type": "mcp_register", "_reqId": "r"}),
            "`serverName`",
        ),
        (
            json!({"type": "mcp_register", "serverName": "s", "tools": "x", "_reqId": "r"}),
            "`tools`",
        ),
        (
            json!({"type": "mcp_call", "serverName": "s", "_reqId": "r"}),
            "`toolName`",
        ),
        (
            json!({"type": "peer_file_request", "filePath": "a", "_reqId": "r"}),
            "`targetPubkey`",
        ),
    ])
    .await;
}

async fn a_call_goes_to_its_host_and_back(backend: Backend) {
    let w = world_with(backend, |s| s.mcp_call_timeout_seconds = 1).await;
    let url = w.node.ws_url();
    let (mut host, _) = Peer::join(&url, &w.alice, "host").await;
    let (mut caller, _) = Peer::join(&url, &w.bob, "caller").await;
    registered(&mut host, "jira", false).await;
    let r = caller.request(call("nope", "c0")).await;
    assert_eq!(
        r,
        json!({"type": "mcp_call_result", "error": "MCP server \"nope\" not found in mesh", "_reqId": "c0"})
    );
    caller.send(call("jira", "c1")).await;
    let f = forwarded(&mut host).await;
    assert_eq!(
        (
            &f["serverName"],
            &f["toolName"],
            &f["args"],
            &f["callerName"]
        ),
        (
            &json!("jira"),
            &json!("search"),
            &json!({"jql": "project = X"}),
            &json!("bob")
        )
    );
    // Only the host may answer: the caller itself knowing the id is dropped.
    caller
        .send(json!({"type": "mcp_call_response", "callId": f["callId"], "result": "forged"}))
        .await;
    host.send(
        json!({"type": "mcp_call_response", "callId": f["callId"], "result": {"issues": []}}),
    )
    .await;
    assert_eq!(
        caller.recv().await,
        json!({"type": "mcp_call_result", "result": {"issues": []}, "_reqId": "c1"})
    );
    // An error answer passes through; so does a call without `_reqId`.
    caller
        .send(json!({"type": "mcp_call", "serverName": "jira", "toolName": "t"}))
        .await;
    let f = forwarded(&mut host).await;
    host.send(json!({"type": "mcp_call_response", "callId": f["callId"], "error": "boom"}))
        .await;
    assert_eq!(
        caller.recv().await,
        json!({"type": "mcp_call_result", "error": "boom"})
    );
    // No answer: timed out, and a late answer goes nowhere.
    caller.send(call("jira", "c2")).await;
    let f = forwarded(&mut host).await;
    let r = caller.recv().await;
    assert_eq!(
        r,
        json!({"type": "mcp_call_result", "error": "MCP call timed out (1s)", "_reqId": "c2"})
    );
    host.send(json!({"type": "mcp_call_response", "callId": f["callId"], "result": 1}))
        .await;
    assert!(
        caller.quiet_for(Duration::from_millis(500)).await,
        "late answers are dropped"
    );
    assert!(w.node.metric("broker_relay_responses_dropped_total").await >= 2);
    // The host's socket closes mid-call: the caller hears it at once.
    caller.send(call("jira", "c3")).await;
    forwarded(&mut host).await;
    let started = std::time::Instant::now();
    host.close().await;
    let r = caller.recv().await;
    assert_eq!(
        r,
        json!({"type": "mcp_call_result", "error": "MCP server \"jira\" host disconnected", "_reqId": "c3"})
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "before the timeout"
    );
    // In grace (non-persistent, not yet ended): offline.
    let r = caller.request(call("jira", "c4")).await;
    let e = r["error"].as_str().unwrap();
    assert!(
        e.starts_with("Server 'jira' is offline — hosted by alice who disconnected ")
            && e.ends_with(" ago. It will restore when they reconnect."),
        "{r}"
    );
    assert_eq!(r["_reqId"], "c4");
}

async fn entries_end_or_wait_with_their_host(backend: Backend) {
    let w = world_with(backend, |s| {
        s.presence_grace_seconds = 1;
        s.sweep_interval_seconds = 1;
    })
    .await;
    let url = w.node.ws_url();
    let (mut host, _) = Peer::join(&url, &w.alice, "host").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    registered(&mut host, "keep", true).await;
    registered(&mut host, "temp", false).await;
    host.close().await;
    // The temporary entry ends with its presence, announced; the
    // persistent one stays, offline.
    let e = event_named(&mut b, "mcp_unregistered").await;
    assert_eq!(
        e["eventData"],
        json!({"serverName": "temp", "hostedBy": "alice"})
    );
    let l = listed(&mut b).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(
        (&l[0]["name"], &l[0]["online"]),
        (&json!("keep"), &json!(false))
    );
    assert!(l[0]["offlineSince"].as_str().unwrap().ends_with('Z'));
    // The member's next presence re-hosts it; everyone hears it, the new
    // host included.
    let (mut again, _) = Peer::join(&url, &w.alice, "host-2").await;
    for p in [&mut again, &mut b] {
        let e = event_named(p, "mcp_restored").await;
        assert_eq!(
            e["eventData"],
            json!({"serverName": "keep", "hostedBy": "alice"})
        );
    }
    let l = listed(&mut b).await;
    assert_eq!(l[0]["online"], true, "{l:?}");
    assert!(l[0].get("offlineSince").is_none());
    b.send(call("keep", "c")).await;
    let f = forwarded(&mut again).await;
    again
        .send(json!({"type": "mcp_call_response", "callId": f["callId"], "result": "ok"}))
        .await;
    assert_eq!(b.recv().await["result"], "ok");
}

async fn a_full_registry_refuses_new_names(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    for i in 0..100 {
        a.send(register(&format!("s{i}"), false)).await;
    }
    for _ in 0..100 {
        assert_eq!(a.recv().await["type"], "mcp_register_ack");
    }
    let r = a.request(register("one-more", false)).await;
    assert_error(&r, "limit", "reg");
    registered(&mut a, "s7", true).await;
}

fn file_request(target: &str, req: &str) -> Value {
    json!({"type": "peer_file_request", "targetPubkey": target, "filePath": "src/index.ts", "_reqId": req})
}

async fn file_and_directory_requests_are_matched_by_relay_id(backend: Backend) {
    let w = world_with(backend, |s| s.relay_timeout_seconds = 1).await;
    let url = w.node.ws_url();
    let (mut owner, _) = Peer::join(&url, &w.alice, "owner").await;
    let (mut asker, _) = Peer::join(&url, &w.bob, "asker").await;
    let alice_key = w.alice.keys.public_hex.clone();
    asker.send(file_request(&alice_key, "f1")).await;
    let f = owner.recv().await;
    assert_eq!(f["type"], "peer_file_request_forward", "{f}");
    assert_eq!(f["requesterPubkey"], w.bob.keys.public_hex);
    assert_eq!(f["filePath"], "src/index.ts");
    let relay = f["_reqId"].as_str().unwrap().to_string();
    assert_eq!(relay.len(), 32, "the broker's relay id, not the asker's");
    // A response naming the relay from another presence is dropped; the
    // target's passes through with the asker's own `_reqId`.
    let answer = |id: &str, content: &str| {
        json!({"type": "peer_file_response", "requesterPubkey": "anything", "filePath": "src/index.ts",
            "content": content, "_reqId": id})
    };
    asker.send(answer(&relay, "Zm9yZ2Vk")).await;
    owner.send(answer(&relay, "aGVsbG8=")).await;
    assert_eq!(
        asker.recv().await,
        json!({"type": "peer_file_response_forward", "filePath": "src/index.ts", "content": "aGVsbG8=",
            "_reqId": "f1"})
    );
    // A directory request, with its pattern; an error answer unchanged.
    asker
        .send(
            json!({"type": "peer_dir_request", "targetPubkey": alice_key, "dirPath": "src",
            "pattern": "*.ts", "_reqId": "d1"}),
        )
        .await;
    let f = owner.recv().await;
    assert_eq!(
        (&f["type"], &f["dirPath"], &f["pattern"]),
        (
            &json!("peer_dir_request_forward"),
            &json!("src"),
            &json!("*.ts")
        )
    );
    owner
        .send(
            json!({"type": "peer_dir_response", "dirPath": "src", "entries": ["src/index.ts"],
            "_reqId": f["_reqId"]}),
        )
        .await;
    assert_eq!(
        asker.recv().await,
        json!({"type": "peer_dir_response_forward", "dirPath": "src", "entries": ["src/index.ts"],
            "_reqId": "d1"})
    );
    asker.send(file_request(&alice_key, "f2")).await;
    let f = owner.recv().await;
    owner
        .send(
            json!({"type": "peer_file_response", "filePath": "src/index.ts", "error": "not shared",
            "_reqId": f["_reqId"]}),
        )
        .await;
    assert_eq!(
        asker.recv().await,
        json!({"type": "peer_file_response_forward", "filePath": "src/index.ts", "error": "not shared",
            "_reqId": "f2"})
    );
    // Nobody with that key.
    let r = asker.request(file_request(&"ab".repeat(32), "f3")).await;
    assert_error(&r, "peer_not_found", "f3");
    // No answer in time.
    asker.send(file_request(&alice_key, "f4")).await;
    let late = owner.recv().await;
    assert_eq!(
        asker.recv().await,
        json!({"type": "peer_file_response_forward", "filePath": "src/index.ts",
            "error": "timeout waiting for peer response", "_reqId": "f4"})
    );
    owner
        .send(answer(late["_reqId"].as_str().unwrap(), "bGF0ZQ=="))
        .await;
    assert!(asker.quiet_for(Duration::from_millis(400)).await);
    // The target leaves mid-request.
    asker.send(file_request(&alice_key, "f5")).await;
    owner.recv().await;
    owner.close().await;
    assert_eq!(
        asker.recv().await,
        json!({"type": "peer_file_response_forward", "filePath": "src/index.ts",
            "error": "peer disconnected", "_reqId": "f5"})
    );
}

async fn a_request_goes_to_the_session_key_first(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let url = w.node.ws_url();
    let (mut plain, _) = Peer::join(&url, &w.alice, "plain").await;
    let (mut asker, _) = Peer::join(&url, &w.bob, "asker").await;
    let key = KeyPair::generate();
    let (mut launched, _) = Peer::join_session(&url, &w.alice, &key, "launched").await;
    let session_key = key.public_hex.clone();
    // The member key reaches its session presence first.
    asker
        .send(file_request(&w.alice.keys.public_hex, "m"))
        .await;
    assert_eq!(launched.recv().await["type"], "peer_file_request_forward");
    // The session key reaches exactly that session.
    asker.send(file_request(&session_key, "s")).await;
    assert_eq!(launched.recv().await["type"], "peer_file_request_forward");
    assert!(plain.quiet_for(Duration::from_millis(300)).await);
}

/// An answer must fit in a frame: a larger one closes the host's socket
/// (1009), and its caller hears the host is gone.
async fn an_answer_over_the_frame_limit_closes_the_host(backend: Backend) {
    let w = world_with(backend, |s| {
        s.max_message_bytes = 1024;
        s.max_frame_bytes = 1024 + 16384;
    })
    .await;
    let url = w.node.ws_url();
    let (mut host, _) = Peer::join(&url, &w.alice, "host").await;
    let (mut caller, _) = Peer::join(&url, &w.bob, "caller").await;
    registered(&mut host, "jira", false).await;
    caller.send(call("jira", "c")).await;
    let f = forwarded(&mut host).await;
    host.send(
        json!({"type": "mcp_call_response", "callId": f["callId"], "result": "x".repeat(20_000)}),
    )
    .await;
    assert_eq!(host.expect_close().await, 1009);
    let r = caller.recv().await;
    assert_eq!(
        r,
        json!({"type": "mcp_call_result", "error": "MCP server \"jira\" host disconnected", "_reqId": "c"})
    );
}

both_stores!(
    an_answer_over_the_frame_limit_closes_the_host,
    the_registry_and_its_events,
    a_call_goes_to_its_host_and_back,
    entries_end_or_wait_with_their_host,
    a_full_registry_refuses_new_names,
    file_and_directory_requests_are_matched_by_relay_id,
    a_request_goes_to_the_session_key_first,
);
