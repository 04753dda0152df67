//! The HTTP listener's own limits: connections that never send a request
//! head are closed, every TCP connection (WebSocket or not) holds a slot
//! of a fixed number, bodies and paths are bounded, and every metric
//! family is on `/metrics` from the first scrape.

use std::sync::Arc;
use std::time::Duration;

use claudemesh_broker::store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{test_settings, Peer, TestNode, ADMIN_TOKEN};

async fn node(tweak: impl FnOnce(&mut claudemesh_broker::config::Settings)) -> TestNode {
    let mut s = test_settings();
    tweak(&mut s);
    TestNode::start_on(Arc::new(MemoryStore::new()), s).await
}

/// Reads until the server closes; `true` if it did within `limit`.
async fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(limit, async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await,
        Ok(())
    )
}

async fn health(n: &TestNode) -> Result<u16, String> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    c.get(n.url("/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_while_health_answers() {
    let n = node(|s| s.http_header_timeout_seconds = 2).await;
    let addr = format!("127.0.0.1:{}", n.port);
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Half a request head is no better than none.
    idle[0]
        .write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert_eq!(
        health(&n).await,
        Ok(200),
        "500 idle connections take no slot of it"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut closed = 0;
    for c in &mut idle {
        if closed_within(c, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 500,
        "every idle connection closed by the header timeout"
    );
    // A kept-alive connection that goes quiet after a request is closed too.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let got = kept.read(&mut buf).await.unwrap();
    assert!(buf[..got].starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut kept, Duration::from_secs(4)).await);
    assert_eq!(health(&n).await, Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tcp_connection_counts_toward_the_cap() {
    let n = node(|s| {
        s.max_connections_per_node = 2;
        s.max_http_connections = 1;
        s.http_header_timeout_seconds = 3;
    })
    .await;
    n.create_mesh("m").await;
    let alice = n.add_member("m", "alice", &[]).await;
    // The admin client's kept-alive connection goes idle and is closed.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let addr = format!("127.0.0.1:{}", n.port);
    // One socket and two plain connections fill the three slots.
    let (mut ws, _) = Peer::join(&n.ws_url(), &alice, "a1").await;
    let mut plain = vec![
        TcpStream::connect(&addr).await.unwrap(),
        TcpStream::connect(&addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "past the cap a connection is closed at once"
    );
    assert!(health(&n).await.is_err(), "no slot for a probe either");
    plain.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health(&n).await, Ok(200), "a freed slot is taken again");
    let r = ws.request(serde_json::json!({"type": "list_peers"})).await;
    assert_eq!(
        r["type"], "peers_list",
        "the socket was never affected: {r}"
    );
    drop(plain);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(n.metric("broker_http_refused_connections_total").await >= 2);
}

#[tokio::test]
async fn bodies_and_paths_are_bounded() {
    let n = node(|_| {}).await;
    n.create_mesh("m").await;
    let http = reqwest::Client::new();
    let big = vec![b'x'; 2 << 20];
    let r = http
        .post(n.url("/admin/meshes"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "a body over max_frame_bytes");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["error"].as_str()),
        (Some(false), Some("too_large")),
        "{v}"
    );
    for path in [
        "/admin/meshes/%00/peers",
        "/admin/meshes/m%ff/peers",
        "/hook/%00/x",
    ] {
        let r = http
            .get(n.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "bad_request", "{path}: {v}");
    }
    let (status, _) = n.admin(reqwest::Method::GET, "/meshes/m/peers", None).await;
    assert_eq!(status, 200);
}

/// The dashboard's queries find every family before anything happened.
#[tokio::test]
async fn every_metric_family_is_there_from_the_first_scrape() {
    let n = node(|_| {}).await;
    let m = n.metrics().await;
    for series in [
        "broker_hook_requests_total{result=\"ok\"} 0",
        "broker_hellos_total{result=\"ok\"} 0",
        "broker_messages_total{result=\"queued\"} 0",
        "broker_db_pool_connections{state=\"in_use\"} 0",
        "broker_frames_total{family=\"state\",type=\"set_state\",result=\"ok\"} 0",
        "broker_frames_total{family=\"messaging\",type=\"send\",result=\"ok\"} 0",
        "broker_http_connections ",
        "broker_http_refused_connections_total 0",
    ] {
        assert!(m.contains(series), "missing `{series}` in:\n{m}");
    }
}
