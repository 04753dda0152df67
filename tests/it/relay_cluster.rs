//! Relays across nodes: a caller on one node, a host on another, the
//! registry and its events seen from a third; answers over the NOTIFY
//! limit; and a host whose node is SIGKILLed mid-call.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::cluster;
use crate::harness::{cluster_node, Peer, TestDb};
use crate::relay::{call, event_named, forwarded, registered};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_file_requests_cross_nodes() {
    let c = cluster(3, |_| {}).await;
    let (mut host, _) = Peer::join(&c.nodes[2].ws_url(), &c.alice, "host").await;
    let (mut caller, _) = Peer::join(&c.nodes[0].ws_url(), &c.bob, "caller").await;
    let (mut watcher, _) = Peer::join(&c.nodes[1].ws_url(), &c.bob, "watcher").await;
    registered(&mut host, "jira", false).await;
    for p in [&mut caller, &mut watcher] {
        assert_eq!(
            event_named(p, "mcp_registered").await["eventData"]["serverName"],
            "jira"
        );
    }
    let r = watcher
        .request(json!({"type": "mcp_list", "_reqId": "l"}))
        .await;
    assert_eq!(r["servers"][0]["online"], true, "{r}");

    // Round trips, one with an answer far over NOTIFY's 8000 bytes.
    let big = "x".repeat(40_000);
    for (req, result) in [("c1", json!({"issues": [1, 2]})), ("c2", json!(big))] {
        caller.send(call("jira", req)).await;
        let f = forwarded(&mut host).await;
        assert_eq!(f["callerName"], "bob");
        host.send(json!({"type": "mcp_call_response", "callId": f["callId"], "result": result}))
            .await;
        let r = caller.recv().await;
        assert_eq!(
            r,
            json!({"type": "mcp_call_result", "result": result, "_reqId": req}),
            "across nodes"
        );
    }

    // A file request from node 0 to a target on node 2, and a directory
    // listing over the NOTIFY limit.
    let target = c.alice.keys.public_hex.clone();
    caller
        .send(json!({"type": "peer_file_request", "targetPubkey": target, "filePath": "a.ts", "_reqId": "f"}))
        .await;
    let f = host.recv().await;
    assert_eq!(f["type"], "peer_file_request_forward", "{f}");
    host.send(
        json!({"type": "peer_file_response", "filePath": "a.ts", "content": "aGk=",
        "_reqId": f["_reqId"]}),
    )
    .await;
    assert_eq!(
        caller.recv().await,
        json!({"type": "peer_file_response_forward", "filePath": "a.ts", "content": "aGk=", "_reqId": "f"})
    );
    let entries: Vec<String> = (0..2000).map(|i| format!("src/file-{i}.ts")).collect();
    caller
        .send(json!({"type": "peer_dir_request", "targetPubkey": target, "dirPath": "src", "_reqId": "d"}))
        .await;
    let f = host.recv().await;
    host.send(
        json!({"type": "peer_dir_response", "dirPath": "src", "entries": entries,
        "_reqId": f["_reqId"]}),
    )
    .await;
    let r = caller.recv().await;
    assert_eq!(r["entries"], json!(entries));
    assert_eq!(r["_reqId"], "d");

    // Registry events reach the other nodes: an entry unregistered on
    // node 2 is heard on node 1.
    registered(&mut host, "tmp", false).await;
    registered(&mut host, "keep", true).await;
    host.send(json!({"type": "mcp_unregister", "serverName": "tmp"}))
        .await;
    let e = event_named(&mut watcher, "mcp_unregistered").await;
    assert_eq!(
        e["eventData"],
        json!({"serverName": "tmp", "hostedBy": "alice"})
    );

    // The host's socket closes on node 2 mid-call: node 0's caller hears
    // it from there, before any timeout.
    caller.send(call("jira", "c3")).await;
    forwarded(&mut host).await;
    let started = Instant::now();
    host.close().await;
    let r = caller.recv().await;
    assert_eq!(r["error"], "MCP server \"jira\" host disconnected", "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

const TOKEN: &str = "relay-cluster-admin-token";

/// The host's whole node dies (SIGKILL) while a call waits on it: the
/// caller's node sees its heartbeat stop and answers long before the
/// call's own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_host_whose_node_dies_ends_within_the_timeout() {
    let db = TestDb::migrated().await;
    let n1 = cluster_node(&db, TOKEN).await;
    let mut n2 = cluster_node(&db, TOKEN).await;
    let members = n1.mesh_with(TOKEN, &["alice", "bob"]).await;
    let (mut host, _) = Peer::join(&n2.ws_url(), &members[0], "host").await;
    let (mut caller, _) = Peer::join(&n1.ws_url(), &members[1], "caller").await;
    registered(&mut host, "jira", true).await;
    caller.send(call("jira", "c1")).await;
    forwarded(&mut host).await;
    let killed = Instant::now();
    n2.sigkill();
    let r = loop {
        let v = caller.recv_any_within(Duration::from_secs(25)).await;
        if v["subtype"] != "system" {
            break v;
        }
    };
    assert_eq!(
        r,
        json!({"type": "mcp_call_result", "error": "MCP server \"jira\" host disconnected", "_reqId": "c1"})
    );
    let took = killed.elapsed();
    // Heartbeats every second: three seconds of silence, then the next
    // check (the 25 s timeout is far off).
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Offline now (reaped to grace): a new call says so at once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = caller.request(call("jira", "c2")).await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("Server 'jira' is offline"),
        "{r}"
    );
}
