//! `claudemesh-loadgen` against a real node: small runs whose counts are
//! known exactly, so the generator's bookkeeping (and the broker's
//! delivery) can be checked end to end.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{node_with, Backend, TestNode, ADMIN_TOKEN};

/// A small run finishes in well under this.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the load generator against `node` with `args`; returns its JSON.
async fn loadgen(node: &TestNode, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_claudemesh-loadgen"));
    cmd.arg("--url")
        .arg(node.url(""))
        .args(["--admin-token", ADMIN_TOKEN, "--json"])
        .args(args)
        .env_remove("BROKER_ADMIN_TOKEN")
        .env_remove("MAX_MESSAGE_BYTES")
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .expect("loadgen finishes in time")
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed: {stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {stdout:?}\n{stderr}"))
}

async fn fast_node(backend: Backend) -> (TestNode, Option<crate::harness::TestDb>) {
    node_with(backend, |s| {
        s.send_rate_per_min = 1_000_000;
        s.send_burst = 1_000_000;
    })
    .await
}

async fn dm_and_broadcast_counts_are_exact(backend: Backend) {
    let (node, _db) = fast_node(backend).await;

    let r = loadgen(
        &node,
        &["--workload", "dm", "--peers", "5", "--messages", "20"],
    )
    .await;
    for (field, want) in [
        ("peers", 5),
        ("messages_per_peer", 20),
        ("payload_bytes", 256),
        ("sent", 100),
        ("acked", 100),
        ("rejected", 0),
        ("delivered", 100),
        ("duplicates", 0),
        ("lost", 0),
    ] {
        assert_eq!(r[field], want, "{field} in {r}");
    }
    for field in ["duration_s", "throughput_msgs_per_s", "hello_per_s"] {
        assert!(r[field].as_f64().unwrap() > 0.0, "{field} in {r}");
    }
    let lat = &r["latency_ms"];
    for q in ["p50", "p95", "p99", "max"] {
        assert!(lat[q].as_f64().is_some(), "latency {q} in {r}");
    }
    assert!(lat["p50"].as_f64() <= lat["max"].as_f64(), "{r}");
    assert!(
        r.get("broker_rss_kb_before").is_none(),
        "idle fields only for idle: {r}"
    );

    let r = loadgen(
        &node,
        &[
            "--workload",
            "broadcast",
            "--peers",
            "4",
            "--messages",
            "10",
            "--payload-bytes",
            "100",
        ],
    )
    .await;
    assert_eq!(r["sent"], 10, "{r}");
    assert_eq!(r["acked"], 10, "{r}");
    assert_eq!(
        r["delivered"], 30,
        "each broadcast reaches the 3 others: {r}"
    );
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["payload_bytes"], 100, "{r}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_dm_and_broadcast() {
    dm_and_broadcast_counts_are_exact(Backend::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dm_and_broadcast() {
    dm_and_broadcast_counts_are_exact(Backend::Postgres).await
}

/// Idle reports the RSS of the process it is pointed at (here the test
/// process itself, which hosts the node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_rss() {
    let (node, _db) = fast_node(Backend::Memory).await;
    let pid = std::process::id().to_string();
    let r = loadgen(
        &node,
        &[
            "--workload",
            "idle",
            "--peers",
            "3",
            "--hold",
            "0.2",
            "--broker-pid",
            &pid,
        ],
    )
    .await;
    assert_eq!(r["sent"], 0, "{r}");
    assert!(r["broker_rss_kb_before"].as_u64().unwrap() > 0, "{r}");
    assert!(r["broker_rss_kb_after"].as_u64().unwrap() > 0, "{r}");
    assert!(r["rss_kib_per_connection"].as_f64().is_some(), "{r}");
    assert!(r["hello_per_s"].as_f64().unwrap() > 0.0, "{r}");
    node.shutdown().await;
}
