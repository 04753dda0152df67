//! Test harness: nodes on ephemeral ports over a real store, real
//! WebSocket clients, the admin API over real HTTP.

pub mod client;
pub mod db;
pub mod proxy;
pub mod s3;
pub mod tls_pg;

use std::sync::Arc;

use claudemesh_broker::app::Application;
use claudemesh_broker::config::{Config, Settings};
use claudemesh_broker::engine::clock::{Clock, SystemClock, TestClock};
use claudemesh_broker::engine::Engine;
use claudemesh_broker::protocol::crypto::KeyPair;
use claudemesh_broker::store::memory::MemoryStore;
use claudemesh_broker::store::postgres::PgStore;
use claudemesh_broker::store::Store;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::Peer;
pub use db::TestDb;

/// Admin token every test node uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Postgres,
}

/// Runs a test body once per store: `both_stores!(name1, name2)` expects
/// `async fn name(backend: Backend)` in the same module.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Memory).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Settings for tests: ephemeral port, loopback, admin on, token hooks.
pub fn test_settings() -> Settings {
    Settings {
        port: 0,
        bind: Some([127, 0, 0, 1].into()),
        admin_token: Some(ADMIN_TOKEN.to_string()),
        shutdown_drain_seconds: 0,
        ..Settings::default()
    }
}

/// A store for `backend`; the database (if any) lives as long as the
/// returned guard.
pub async fn store_for(backend: Backend) -> (Arc<dyn Store>, Option<TestDb>) {
    match backend {
        Backend::Memory => (Arc::new(MemoryStore::new()), None),
        Backend::Postgres => {
            let db = TestDb::migrated().await;
            let store = PgStore::connect(&db.url, 8).expect("pool builds");
            (Arc::new(store), Some(db))
        }
    }
}

pub struct TestNode {
    pub engine: Arc<Engine>,
    pub port: u16,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

impl TestNode {
    /// Starts a node on `store` with `settings`.
    pub async fn start_on(store: Arc<dyn Store>, settings: Settings) -> TestNode {
        Self::start_with_clock(store, settings, Arc::new(SystemClock)).await
    }

    /// Starts a node whose engine reads `clock`.
    pub async fn start_with_clock(
        store: Arc<dyn Store>,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> TestNode {
        let config: Config = settings.resolve(false);
        let app = Application::build_with_clock(config, store, None, clock)
            .await
            .expect("node starts");
        let engine = app.engine();
        let port = app.port();
        let stop = app.stop_token();
        let task = tokio::spawn(app.run());
        TestNode {
            engine,
            port,
            stop,
            task,
            http: reqwest::Client::new(),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// An admin call; returns (status, JSON body or Null).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(&format!("/admin{path}")))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn create_mesh(&self, slug: &str) -> Value {
        let (status, m) = self
            .admin(
                reqwest::Method::POST,
                "/meshes",
                Some(json!({"slug": slug})),
            )
            .await;
        assert_eq!(status, 201, "{m}");
        m
    }

    /// Enrols a fresh key pair; returns the member JSON and its keys.
    pub async fn add_member(&self, slug: &str, name: &str, groups: &[&str]) -> Member {
        let keys = KeyPair::generate();
        let (status, m) = self
            .admin(
                reqwest::Method::POST,
                &format!("/meshes/{slug}/members"),
                Some(json!({"pubkey": keys.public_hex, "displayName": name, "groups": groups})),
            )
            .await;
        assert_eq!(status, 201, "{m}");
        Member {
            id: m["id"].as_str().unwrap().to_string(),
            mesh_id: m["meshId"].as_str().unwrap().to_string(),
            keys,
        }
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// One unlabelled counter or gauge from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.trim().parse::<f64>().expect("a number") as u64)
            .unwrap_or(0)
    }

    /// Live presences of a mesh, through the admin API.
    pub async fn peers(&self, slug: &str) -> Vec<Value> {
        let (status, v) = self
            .admin(reqwest::Method::GET, &format!("/meshes/{slug}/peers"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v.as_array().unwrap().clone()
    }

    /// Graceful stop; waits for the node to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
    }
}

/// One enrolled member: ids and keys.
#[derive(Clone)]
pub struct Member {
    pub id: String,
    pub mesh_id: String,
    pub keys: KeyPair,
}

/// A node on `backend` with test settings changed by `tweak`.
pub async fn node_with(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> (TestNode, Option<TestDb>) {
    let (store, db) = store_for(backend).await;
    let mut settings = test_settings();
    // With a database URL the node runs the NOTIFY bus, as in production.
    settings.database_url = db.as_ref().map(|d| d.url.clone());
    tweak(&mut settings);
    (TestNode::start_on(store, settings).await, db)
}

/// A node with test settings and a mesh `m` holding members alice and bob.
pub struct World {
    pub node: TestNode,
    pub alice: Member,
    pub bob: Member,
    pub _db: Option<TestDb>,
}

pub async fn world(backend: Backend) -> World {
    world_with(backend, |_| {}).await
}

pub async fn world_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> World {
    let (node, db) = node_with(backend, tweak).await;
    populate(node, db).await
}

/// A world whose node reads a clock the test moves.
pub async fn world_with_clock(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> (World, Arc<TestClock>) {
    let (store, db) = store_for(backend).await;
    let mut settings = test_settings();
    settings.database_url = db.as_ref().map(|d| d.url.clone());
    tweak(&mut settings);
    let clock = Arc::new(TestClock::new());
    let node = TestNode::start_with_clock(store, settings, clock.clone()).await;
    (populate(node, db).await, clock)
}

async fn populate(node: TestNode, db: Option<TestDb>) -> World {
    node.create_mesh("m").await;
    let alice = node.add_member("m", "alice", &["backend"]).await;
    let bob = node.add_member("m", "bob", &[]).await;
    World {
        node,
        alice,
        bob,
        _db: db,
    }
}

// ---------------------------------------------------------------------------
// The real binary as a child process (process and migrate tests).
// ---------------------------------------------------------------------------

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment the child must not inherit from the test runner: the
/// runner's own `DATABASE_URL` (which points the harness at Postgres) or a
/// stray `RUST_LOG` would otherwise configure it behind the test's back.
const INHERITED_SETTINGS: &[&str] = &[
    "DATABASE_URL",
    "STATUS_TTL_SECONDS",
    "HOOK_FRESH_WINDOW_SECONDS",
    "MAX_CONNECTIONS_PER_MESH",
    "MAX_MESSAGE_BYTES",
    "HOOK_RATE_LIMIT_PER_MIN",
    "RUST_LOG",
];

/// How long a spawned broker may take to answer `GET /health`; generous
/// because three of them may be migrating one database at once.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A port free right now: bind to port 0, read it, let it go.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("bound address").port()
}

/// `claudemesh-broker` running as a child process, configured by
/// environment only, in a temp dir of its own (so the repository's
/// `config.toml` is not read), stdout and stderr captured to files there.
/// Dropping it kills the child, so a failing test leaves no broker behind.
pub struct BrokerProcess {
    child: Child,
    exit: Option<ExitStatus>,
    /// The `BROKER_PORT` given to the child (meaningless if `env` overrode it).
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl BrokerProcess {
    /// Starts `claudemesh-broker <args>` on a free loopback port; `env`
    /// is applied last, so it may override `BROKER_PORT` / `BROKER_BIND`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> BrokerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"));
        cmd.args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("BROKER_") || INHERITED_SETTINGS.contains(&k.as_ref()) {
                cmd.env_remove(&key);
            }
        }
        cmd.env("BROKER_PORT", port.to_string())
            .env("BROKER_BIND", "127.0.0.1")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the broker binary starts");
        BrokerProcess {
            child,
            exit: None,
            port,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Both streams, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Polls `GET /health` until it answers 200; panics (with the child's
    /// output) if the child exits first or `START_TIMEOUT` passes.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                panic!(
                    "broker exited with {status} before it was healthy\n{}",
                    self.logs()
                );
            }
            let probe = self
                .http
                .get(self.url("/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().as_u16() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker not healthy within {START_TIMEOUT:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (through `kill(1)`: no libc dependency).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the child with SIGKILL (a crash: no drain, no cleanup).
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }

    /// Waits for the child to exit; panics with its output after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker still running after {limit:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates mesh `m` and adds a member (new keys) for each of `names`.
    pub async fn mesh_with(&self, token: &str, names: &[&str]) -> Vec<Member> {
        let (status, body) = self
            .admin(
                token,
                reqwest::Method::POST,
                "/meshes",
                Some(json!({"slug": "m"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let mut members = Vec::new();
        for n in names {
            members.push(self.enrol(token, n).await);
        }
        members
    }

    /// Adds member `name` (new keys) to mesh `m` through the admin API.
    pub async fn enrol(&self, token: &str, name: &str) -> Member {
        let keys = KeyPair::generate();
        let (status, m) = self
            .admin(
                token,
                reqwest::Method::POST,
                "/meshes/m/members",
                Some(json!({"pubkey": keys.public_hex, "displayName": name})),
            )
            .await;
        assert_eq!(status, 201, "{m}");
        Member {
            id: m["id"].as_str().unwrap().into(),
            mesh_id: m["meshId"].as_str().unwrap().into(),
            keys,
        }
    }

    /// An admin call with `token`; returns (status, JSON body or Null).
    pub async fn admin(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(&format!("/admin{path}")))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A `serve` node of a cluster on `db` with admin `token`, answering
/// `/health`: heartbeats every second, a 3 s lease and a sweep every
/// second, so a node's death is seen within seconds.
pub async fn cluster_node(db: &TestDb, token: &str) -> BrokerProcess {
    let mut p = BrokerProcess::spawn(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("BROKER_ADMIN_TOKEN", token),
            ("BROKER_NODE_HEARTBEAT_SECONDS", "1"),
            ("BROKER_NODE_LEASE_SECONDS", "3"),
            ("BROKER_SWEEP_INTERVAL_SECONDS", "1"),
            ("BROKER_LOG_FORMAT", "json"),
        ],
    );
    p.wait_healthy().await;
    p
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
