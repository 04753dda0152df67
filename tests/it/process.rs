//! The real binary as operators run it: graceful SIGTERM on both stores,
//! `serve --dev`, configuration errors at start, and what reaches the logs.

use std::time::{Duration, Instant};

use claudemesh_broker::protocol::crypto::KeyPair;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::client::signed_hello;
use crate::harness::{BrokerProcess, Member, Peer, TestDb, ADMIN_TOKEN};

/// Drain period for the SIGTERM tests: long enough to probe the node while
/// it drains, short enough to keep the suite fast.
const DRAIN_SECONDS: u64 = 2;

/// After the drain, closing sockets and exiting may take this much more.
const EXIT_SLACK: Duration = Duration::from_secs(5);

/// A one-shot run (refused configuration) exits within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker with the test admin token; `extra` env on top.
async fn start(extra: &[(&str, &str)]) -> BrokerProcess {
    let mut env = vec![("BROKER_ADMIN_TOKEN", ADMIN_TOKEN)];
    env.extend_from_slice(extra);
    let mut p = BrokerProcess::spawn(&["serve"], &env);
    p.wait_healthy().await;
    p
}

/// Creates mesh `slug`; returns its JSON (with the owner secret if asked).
async fn create_mesh(p: &BrokerProcess, slug: &str, show_secret: bool) -> Value {
    let (status, m) = p
        .admin(
            ADMIN_TOKEN,
            Method::POST,
            "/meshes",
            Some(json!({"slug": slug, "showOwnerSecret": show_secret})),
        )
        .await;
    assert_eq!(status, 201, "{m}\n{}", p.logs());
    m
}

async fn add_member(p: &BrokerProcess, slug: &str, name: &str) -> Member {
    let keys = KeyPair::generate();
    let (status, m) = p
        .admin(
            ADMIN_TOKEN,
            Method::POST,
            &format!("/meshes/{slug}/members"),
            Some(json!({"pubkey": keys.public_hex, "displayName": name})),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    Member {
        id: m["id"].as_str().unwrap().to_string(),
        mesh_id: m["meshId"].as_str().unwrap().to_string(),
        keys,
    }
}

async fn status_of(p: &BrokerProcess, path: &str) -> (u16, Value) {
    let r = p.http.get(p.url(path)).send().await.expect("HTTP answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The SIGTERM sequence of DESIGN.md, observed from outside. Returns the
/// presence id of the session that was open.
async fn sigterm_drains_then_exits(database_url: Option<&str>) -> String {
    let drain = DRAIN_SECONDS.to_string();
    let mut env = vec![("BROKER_SHUTDOWN_DRAIN_SECONDS", drain.as_str())];
    if let Some(url) = database_url {
        env.push(("DATABASE_URL", url));
    }
    let mut p = start(&env).await;
    create_mesh(&p, "m", false).await;
    let alice = add_member(&p, "m", "alice").await;
    let (mut peer, ack) = Peer::join(&p.ws_url(), &alice, "s1").await;
    let presence_id = ack["presenceId"].as_str().unwrap().to_string();
    assert_eq!(status_of(&p, "/health/ready").await.0, 200, "{}", p.logs());
    let store = if database_url.is_some() {
        "postgres"
    } else {
        "memory"
    };
    assert_eq!(status_of(&p, "/health").await.1["store"], store);

    let term_at = Instant::now();
    p.sigterm();

    // Readiness goes 503 at once; liveness stays 200 and says why.
    loop {
        let (status, body) = status_of(&p, "/health/ready").await;
        if status == 503 {
            assert_eq!(body["draining"], true, "{body}");
            break;
        }
        assert!(
            term_at.elapsed() < Duration::from_secs(1),
            "readiness still {status} after SIGTERM\n{}",
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = status_of(&p, "/health").await;
    assert_eq!(status, 200, "liveness stays 200 while draining: {body}");
    assert_eq!(body["draining"], true, "{body}");

    // No new sockets while draining.
    match tokio_tungstenite::connect_async(p.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503, "upgrade refused with 503");
        }
        Err(e) => panic!("expected an HTTP refusal of the upgrade, got {e}"),
        Ok(_) => panic!("a WebSocket upgrade was accepted while draining"),
    }
    assert!(
        term_at.elapsed() < Duration::from_secs(DRAIN_SECONDS),
        "the drain checks must finish inside the drain period"
    );

    // The open socket is told to go elsewhere, after the drain period.
    assert_eq!(peer.expect_close().await, 1001, "{}", p.logs());
    assert!(
        term_at.elapsed() >= Duration::from_millis(DRAIN_SECONDS * 1000 - 100),
        "sockets closed before the drain period ended ({:?})",
        term_at.elapsed()
    );

    let budget =
        (Duration::from_secs(DRAIN_SECONDS) + EXIT_SLACK).saturating_sub(term_at.elapsed());
    let status = p.wait_exit(budget).await;
    assert!(
        status.success(),
        "SIGTERM exits 0, got {status}\n{}",
        p.logs()
    );
    let err = p.stderr();
    assert!(
        err.contains("draining") && err.contains("stopped"),
        "{}",
        p.logs()
    );
    presence_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_memory_node() {
    sigterm_drains_then_exits(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_postgres_node() {
    let db = TestDb::migrated().await;
    let presence_id = sigterm_drains_then_exits(Some(&db.url)).await;
    let c = db.client().await;
    let nodes: i64 = c
        .query_one("SELECT count(*) FROM broker_node", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nodes, 0, "the node row is removed at exit");
    let rows = c
        .query(
            "SELECT state, grace_until IS NOT NULL FROM presence WHERE id::text = $1",
            &[&presence_id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the presence row survives the shutdown");
    let state: String = rows[0].get(0);
    let has_deadline: bool = rows[0].get(1);
    assert_eq!(state, "grace", "the session may re-attach elsewhere");
    assert!(has_deadline, "a grace presence has a deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_prints_a_working_setup() {
    let mut p = BrokerProcess::spawn(&["serve", "--dev"], &[]);
    p.wait_healthy().await;
    let out = p.stdout();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("admin token: "))
        .unwrap_or_else(|| panic!("no admin token line\n{}", p.logs()))
        .trim()
        .to_string();
    assert!(token.len() >= 16, "{token}");
    let clients: Vec<Value> = out
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a client config is JSON"))
        .collect();
    assert_eq!(clients.len(), 2, "two client configs\n{out}");
    for c in &clients {
        for key in [
            "meshId",
            "memberId",
            "slug",
            "pubkey",
            "secretKey",
            "brokerUrl",
        ] {
            assert!(
                c[key].as_str().is_some_and(|s| !s.is_empty()),
                "{key} in {c}"
            );
        }
        assert_eq!(c["slug"], "demo");
        assert_eq!(c["brokerUrl"], p.ws_url());
    }
    assert_ne!(clients[0]["memberId"], clients[1]["memberId"]);

    // A client holding only the printed config completes a hello.
    let c = &clients[0];
    let keys = KeyPair {
        public_hex: c["pubkey"].as_str().unwrap().to_string(),
        secret_hex: c["secretKey"].as_str().unwrap().to_string(),
    };
    let hello = signed_hello(
        c["meshId"].as_str().unwrap(),
        c["memberId"].as_str().unwrap(),
        &keys,
        "dev-session",
        chrono::Utc::now().timestamp_millis(),
        json!({}),
    );
    let mut peer = Peer::connect(c["brokerUrl"].as_str().unwrap()).await;
    let ack = peer.request(hello).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");

    // The printed admin token opens the admin API.
    let (status, meshes) = p.admin(&token, Method::GET, "/meshes", None).await;
    assert_eq!(status, 200, "{meshes}");
    assert!(
        meshes
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["slug"] == "demo"),
        "{meshes}"
    );
    let (status, _) = p
        .admin("wrong-token-0123456789", Method::GET, "/meshes", None)
        .await;
    assert_eq!(status, 401);
    peer.close().await;
}

/// Runs `serve` expecting a refusal; returns stderr.
async fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut p = BrokerProcess::spawn(args, env);
    let status = p.wait_exit(COMMAND_TIMEOUT).await;
    assert!(
        !status.success(),
        "{args:?} {env:?} must fail\n{}",
        p.logs()
    );
    p.stderr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "prot = 8000\n").unwrap();
    let err = refused(&["serve", "--config", file.to_str().unwrap()], &[]).await;
    assert!(err.contains("prot"), "unknown key named: {err}");

    // figment names an environment key in upper case ("PORT" in the
    // `BROKER_` variables), a file key as written.
    let err = refused(&["serve"], &[("BROKER_PORT", "abc")]).await;
    assert!(
        err.to_lowercase().contains("port") && err.contains("abc"),
        "bad port named: {err}"
    );

    let err = refused(&["serve"], &[("BROKER_HOOK_AUTH", "maybe")]).await;
    assert!(
        err.to_lowercase().contains("hook_auth"),
        "bad hook_auth named: {err}"
    );
}

/// Distinctive envelope values to look for in the output.
const SECRET_CIPHERTEXT: &str = "TE9HU0VDUkVUQ0lQSEVS";
const SECRET_NONCE: &str = "TE9HU0VDUkVUTk9OQ0U=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_and_keep_secrets_out() {
    let mut p = start(&[
        ("BROKER_LOG_FORMAT", "json"),
        ("BROKER_SHUTDOWN_DRAIN_SECONDS", "0"),
    ])
    .await;
    let mesh = create_mesh(&p, "m", true).await;
    let owner_secret = mesh["ownerSecretKey"]
        .as_str()
        .unwrap_or_else(|| panic!("showOwnerSecret answers the secret: {mesh}"))
        .to_string();
    let alice = add_member(&p, "m", "alice").await;
    let (status, invite) = p
        .admin(
            ADMIN_TOKEN,
            Method::POST,
            "/meshes/m/invites",
            Some(json!({"maxUses": 2})),
        )
        .await;
    assert_eq!(status, 201, "{invite}");
    let invite_token = invite["token"].as_str().unwrap().to_string();
    // Revoking by path must not put the token in the logs either.
    let (status, _) = p
        .admin(
            ADMIN_TOKEN,
            Method::DELETE,
            &format!("/invites/{invite_token}"),
            None,
        )
        .await;
    assert_eq!(status, 204);

    let (mut peer, ack) = Peer::join(&p.ws_url(), &alice, "s1").await;
    let hook_token = ack["hookToken"].as_str().unwrap().to_string();
    peer.send(json!({"type": "set_summary", "summary": "writing tests"}))
        .await;
    peer.send_text("{not json at all").await;
    let err = peer.recv().await;
    assert_eq!(err["type"], "error", "{err}");
    // A message to a sibling session: stored, pushed, audited.
    let (mut sibling, _) = Peer::join(&p.ws_url(), &alice, "s2").await;
    let ack = peer
        .request(
            json!({"type": "send", "id": "c1", "targetSpec": alice.keys.public_hex,
                        "priority": "now", "nonce": SECRET_NONCE, "ciphertext": SECRET_CIPHERTEXT}),
        )
        .await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(sibling.recv().await["ciphertext"], SECRET_CIPHERTEXT);
    sibling.close().await;
    peer.close().await;

    p.sigterm();
    let status = p.wait_exit(EXIT_SLACK).await;
    assert!(status.success(), "{}", p.logs());

    let out = p.stdout();
    let err = p.stderr();
    let all = format!("{out}\n{err}");
    for (what, secret) in [
        ("hook token", hook_token.as_str()),
        ("admin token", ADMIN_TOKEN),
        ("member secret key", alice.keys.secret_hex.as_str()),
        ("mesh owner secret", owner_secret.as_str()),
        ("invite token", invite_token.as_str()),
        ("member public key in full", alice.keys.public_hex.as_str()),
        ("ciphertext", SECRET_CIPHERTEXT),
        ("nonce", SECRET_NONCE),
    ] {
        assert!(
            !all.contains(secret),
            "the {what} reached the output:\n{all}"
        );
    }

    assert!(
        out.trim().is_empty(),
        "serve prints nothing on stdout: {out}"
    );
    let lines: Vec<Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| panic!("not a JSON log line: {l}"))
        })
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string()), "{err}");
    let closed = lines
        .iter()
        .find(|l| l["message"] == "connection closed" && l["presence_id"].is_string())
        .unwrap_or_else(|| panic!("no `connection closed` line for the session:\n{err}"));
    assert_eq!(closed["reason"], "client closed", "{closed}");
    assert!(closed["duration_ms"].is_u64(), "{closed}");
    assert_eq!(closed["mesh_id"], alice.mesh_id.as_str(), "{closed}");
    assert!(closed["node_id"].is_string(), "{closed}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "connection opened" && l["conn_id"].is_string()),
        "{err}"
    );
    let http = lines
        .iter()
        .find(|l| l["message"] == "http request" && l["route"] == "/admin/invites/{token}")
        .unwrap_or_else(|| panic!("no http request line:\n{err}"));
    assert!(
        http["request_id"].as_str().is_some_and(|r| r.len() >= 32),
        "{http}"
    );
    assert_eq!(http["status"], 204, "{http}");
}
