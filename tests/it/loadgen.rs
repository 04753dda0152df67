//! `claudemesh-loadgen` against a real node: small runs whose counts are
//! known exactly, so the generator's bookkeeping (and the broker's
//! delivery) can be checked end to end.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{node_with, Backend, TestNode, ADMIN_TOKEN};

/// A small run finishes in well under this.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The load generator is its own crate of the workspace, so this package
/// has no `CARGO_BIN_EXE_` for it: its binary sits beside this test
/// binary's `deps/` folder, built by the same `cargo test --workspace`
/// (tests/run.sh) that builds this test.
fn loadgen_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("claudemesh-loadgen");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (tests/run.sh)",
        bin.display()
    );
    bin
}

/// Runs the load generator against `node` with `args` (split on
/// whitespace); returns its JSON.
async fn loadgen(node: &TestNode, args: &str) -> Value {
    loadgen_on(&[node], args).await
}

/// The same against several nodes (peer i on `nodes[i % len]`).
async fn loadgen_on(nodes: &[&TestNode], args: &str) -> Value {
    let mut cmd = tokio::process::Command::new(loadgen_binary());
    for node in nodes {
        cmd.arg("--url").arg(node.url(""));
    }
    cmd.args(["--admin-token", ADMIN_TOKEN, "--json"])
        .args(args.split_whitespace())
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

    let r = loadgen(&node, "--workload dm --peers 5 --messages 20").await;
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
    assert_eq!(r["meshes"], 1, "{r}");
    assert!(r["spread_ms"].is_null(), "spread only for broadcast: {r}");
    assert_eq!(r["stalled"], 0, "{r}");
    assert_eq!(r["sent_to_stalled"], 0, "{r}");
    assert_eq!(r["stalled_closed"], 0, "{r}");

    let r = loadgen(
        &node,
        "--workload broadcast --peers 4 --messages 10 --payload-bytes 100",
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
    assert_spread_is_sane(&r);
    node.shutdown().await;
}

/// `spread_ms` is present with ordered, finite, non-negative quantiles.
fn assert_spread_is_sane(r: &Value) {
    let s = &r["spread_ms"];
    assert!(s.is_object(), "broadcast reports spread_ms: {r}");
    let q: Vec<f64> = ["p50", "p95", "p99", "max"]
        .iter()
        .map(|q| s[q].as_f64().unwrap_or_else(|| panic!("spread {q} in {r}")))
        .collect();
    assert!(q[0] >= 0.0, "{r}");
    assert!(q.windows(2).all(|w| w[0] <= w[1]), "ordered quantiles: {r}");
    assert!(q[3] < 10_000.0, "spread under the run's length: {r}");
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
    let args = format!(
        "--workload idle --peers 3 --hold 0.2 --broker-pid {}",
        std::process::id()
    );
    let r = loadgen(&node, &args).await;
    assert_eq!(r["sent"], 0, "{r}");
    assert!(r["broker_rss_kb_before"].as_u64().unwrap() > 0, "{r}");
    assert!(r["broker_rss_kb_after"].as_u64().unwrap() > 0, "{r}");
    assert!(r["rss_kib_per_connection"].as_f64().is_some(), "{r}");
    assert!(r["hello_per_s"].as_f64().unwrap() > 0.0, "{r}");
    node.shutdown().await;
}

/// Peers split over meshes: dms stay in each peer's mesh (any that left it
/// would be lost), and the meshes are provisioned with their peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshes_split_the_peers() {
    let (node, _db) = fast_node(Backend::Memory).await;
    let r = loadgen(&node, "--workload dm --peers 7 --meshes 3 --messages 10").await;
    for (field, want) in [
        ("peers", 7),
        ("meshes", 3),
        ("sent", 70),
        ("acked", 70),
        ("delivered", 70),
        ("duplicates", 0),
        ("lost", 0),
    ] {
        assert_eq!(r[field], want, "{field} in {r}");
    }
    let (status, meshes) = node.admin(reqwest::Method::GET, "/meshes", None).await;
    assert_eq!(status, 200, "{meshes}");
    let mut sizes = Vec::new();
    for m in meshes.as_array().unwrap() {
        let slug = m["slug"].as_str().unwrap();
        assert!(slug.starts_with("load-"), "{slug}");
        let (_, members) = node
            .admin(
                reqwest::Method::GET,
                &format!("/meshes/{slug}/members"),
                None,
            )
            .await;
        sizes.push(members.as_array().unwrap().len());
    }
    sizes.sort();
    assert_eq!(sizes, vec![2, 2, 3], "peer i in mesh i % 3");
    node.shutdown().await;
}

/// Broadcast from peer 0 of every mesh: each message reaches the rest of
/// its mesh, and every message's first-to-last spread is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reports_spread() {
    let (node, _db) = fast_node(Backend::Memory).await;
    let r = loadgen(
        &node,
        "--workload broadcast --peers 8 --meshes 2 --messages 20",
    )
    .await;
    assert_eq!(r["sent"], 40, "peer 0 of each mesh sends: {r}");
    assert_eq!(r["delivered"], 120, "each reaches the 3 others: {r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["meshes"], 2, "{r}");
    assert_spread_is_sane(&r);
    assert!(
        r["spread_ms"]["p50"].as_f64() <= r["latency_ms"]["max"].as_f64(),
        "a spread is within one message's latency: {r}"
    );
    // Paced: 10 broadcasts at 20/s take about half a second.
    let started = std::time::Instant::now();
    let r = loadgen(
        &node,
        "--workload broadcast --peers 4 --messages 10 --rate 20",
    )
    .await;
    assert_eq!(r["sent"], 10, "{r}");
    assert_eq!(r["delivered"], 30, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_spread_is_sane(&r);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "paced, not a burst: {:?}",
        started.elapsed()
    );
    node.shutdown().await;
}

/// Stalled members take a peer's share of dms but expect no delivery; the
/// broker (pinging every second here) drops them once they miss pongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_members_are_not_counted_as_lost() {
    let (node, _db) = node_with(Backend::Memory, |s| {
        s.send_rate_per_min = 1_000_000;
        s.send_burst = 1_000_000;
        s.ping_interval_seconds = 1;
        s.pong_timeout_seconds = 2;
    })
    .await;
    let r = loadgen(&node, "--workload dm --peers 4 --stalled 2 --messages 50").await;
    assert_eq!(r["sent"], 200, "{r}");
    assert_eq!(r["acked"], 200, "{r}");
    assert_eq!(r["stalled"], 2, "{r}");
    let to_stalled = r["sent_to_stalled"].as_u64().unwrap();
    // Each pick is stalled with probability 2/5.
    assert!(to_stalled > 0 && to_stalled < 200, "{r}");
    assert_eq!(r["delivered"].as_u64().unwrap(), 200 - to_stalled, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert!(r["stalled_closed"].as_u64().unwrap() <= 2, "{r}");

    // Long enough for the broker's pong timeout (3 s after hello here):
    // the end-of-run probe sees the socket closed.
    let r = loadgen(
        &node,
        "--workload rate --peers 3 --stalled 1 --rate 100 --duration 4",
    )
    .await;
    assert_eq!(r["lost"], 0, "{r}");
    assert!(r["sent_to_stalled"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["stalled_closed"], 1, "{r}");

    // Broadcast reaches stalled members too, without expecting them.
    let r = loadgen(
        &node,
        "--workload broadcast --peers 3 --stalled 1 --messages 5",
    )
    .await;
    assert_eq!(r["delivered"], 10, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["sent_to_stalled"], 0, "{r}");
    node.shutdown().await;
}

/// `recall` seeds the memories through `remember`, then every recall is
/// answered and finds something: the JSON fields every workload shares.
async fn recall_counts_every_answer(backend: Backend) {
    let (node, _db) = fast_node(backend).await;
    let r = loadgen(
        &node,
        "--workload recall --peers 2 --messages 10 --memories 400",
    )
    .await;
    assert_eq!(
        (
            r["sent"].as_u64(),
            r["delivered"].as_u64(),
            r["lost"].as_u64()
        ),
        (Some(20), Some(20), Some(0)),
        "{r}"
    );
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["throughput_msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let mesh = first_mesh(&node).await;
    let seeded = node.engine.store.count_memories(&mesh).await.unwrap();
    assert_eq!(seeded, 400, "every memory seeded before the recalls");
}

async fn first_mesh(node: &TestNode) -> String {
    let (_, v) = node.admin(reqwest::Method::GET, "/meshes", None).await;
    v.as_array().unwrap()[0]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_recall() {
    recall_counts_every_answer(Backend::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_recall() {
    recall_counts_every_answer(Backend::Postgres).await
}

/// `schedule`: every reminder fires once and is counted once; lateness is
/// measured.
async fn schedule_counts_every_reminder(backend: Backend) {
    let (node, _db) = fast_node(backend).await;
    let r = loadgen(
        &node,
        "--workload schedule --peers 3 --messages 10 --duration 2 --lead 1",
    )
    .await;
    assert_eq!(
        (
            r["sent"].as_u64(),
            r["delivered"].as_u64(),
            r["lost"].as_u64(),
            r["duplicates"].as_u64()
        ),
        (Some(30), Some(30), Some(0), Some(0)),
        "{r}"
    );
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
}

/// `stream`: each publish reaches every other peer once.
async fn stream_counts_every_delivery(backend: Backend) {
    let (node, _db) = node_with(backend, |s| s.stream_rate_per_min = 1_000_000).await;
    let r = loadgen(&node, "--workload stream --peers 4 --rate 40 --duration 1").await;
    assert_eq!(
        (
            r["sent"].as_u64(),
            r["delivered"].as_u64(),
            r["lost"].as_u64(),
            r["duplicates"].as_u64()
        ),
        (Some(40), Some(120), Some(0), Some(0)),
        "{r}"
    );
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_schedule_and_stream() {
    schedule_counts_every_reminder(Backend::Memory).await;
    stream_counts_every_delivery(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schedule_and_stream() {
    schedule_counts_every_reminder(Backend::Postgres).await;
    stream_counts_every_delivery(Backend::Postgres).await;
}

/// `relay`: every call is answered by its host, once.
async fn relay_counts_every_call(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let r = loadgen(&node, "--workload relay --peers 4 --rate 40 --duration 1").await;
    assert_eq!(
        (
            r["sent"].as_u64(),
            r["delivered"].as_u64(),
            r["lost"].as_u64(),
            r["duplicates"].as_u64()
        ),
        (Some(40), Some(40), Some(0), Some(0)),
        "{r}"
    );
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
}

/// `upload`: every file goes up and comes back whole.
async fn upload_counts_every_file(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let r = loadgen(
        &node,
        "--workload upload --peers 2 --messages 3 --payload-bytes 1500000",
    )
    .await;
    assert_eq!(
        (
            r["sent"].as_u64(),
            r["delivered"].as_u64(),
            r["lost"].as_u64()
        ),
        (Some(6), Some(6), Some(0)),
        "{r}"
    );
    assert!(r["upload_mb_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["download_mb_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_relay_and_upload() {
    relay_counts_every_call(Backend::Memory).await;
    upload_counts_every_file(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_and_upload() {
    relay_counts_every_call(Backend::Postgres).await;
    upload_counts_every_file(Backend::Postgres).await;
}

/// `state`: each set reaches every other peer once as `state_change`.
async fn state_counts_every_change(nodes: &[&TestNode]) {
    let r = loadgen_on(nodes, "--workload state --peers 6 --rate 60 --duration 1").await;
    assert_eq!(
        (
            r["sent"].as_u64(),
            r["delivered"].as_u64(),
            r["lost"].as_u64(),
            r["duplicates"].as_u64()
        ),
        (Some(60), Some(300), Some(0), Some(0)),
        "{r}"
    );
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r}");
}

/// `tasks`: every task is claimed exactly once; the losers of each race
/// are refused, never double-claimed.
async fn tasks_claimed_once(nodes: &[&TestNode]) {
    let r = loadgen_on(nodes, "--workload tasks --peers 6 --messages 10").await;
    let racers = nodes.len().max(2) as u64;
    assert_eq!(
        (
            r["delivered"].as_u64(),
            r["lost"].as_u64(),
            r["duplicates"].as_u64(),
            r["rejected"].as_u64(),
            r["sent"].as_u64(),
            r["claims_refused"].as_u64(),
        ),
        (
            Some(60),
            Some(0),
            Some(0),
            Some(0),
            Some(60 * racers),
            Some(60 * (racers - 1))
        ),
        "{r}"
    );
    assert!(r["throughput_msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_state_and_tasks() {
    let (node, _db) = node_with(Backend::Memory, |_| {}).await;
    state_counts_every_change(&[&node]).await;
    tasks_claimed_once(&[&node]).await;
}

/// Three nodes on one database: the changes cross nodes, and the claim
/// races are between nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_state_and_tasks_across_nodes() {
    let c = crate::cluster::cluster(3, |_| {}).await;
    let nodes: Vec<&TestNode> = c.nodes.iter().collect();
    state_counts_every_change(&nodes).await;
    tasks_claimed_once(&nodes).await;
}
