//! The admin subcommands of the built binary, run as subprocesses against a
//! live node: `--json` output is exactly one document, tables have a
//! header, errors go to stderr with a non-zero exit.

use std::time::Duration;

use claudemesh_broker::protocol::crypto::{self, KeyPair};
use claudemesh_broker::protocol::invite::InvitePayload;
use serde_json::Value;

use crate::both_stores;
use crate::harness::{node_with, Backend, Member, Peer, TestNode, ADMIN_TOKEN};

/// Environment variables for one run.
type Env<'a> = &'a [(&'a str, &'a str)];

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Exit 0, nothing on stderr beyond notes, and stdout exactly one JSON
    /// document.
    #[track_caller]
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        let mut docs = serde_json::Deserializer::from_str(&self.stdout).into_iter::<Value>();
        let first = docs
            .next()
            .unwrap_or_else(|| panic!("a JSON document on stdout: {:?}", self.stdout))
            .unwrap_or_else(|e| panic!("valid JSON ({e}): {:?}", self.stdout));
        assert!(docs.next().is_none(), "one document: {:?}", self.stdout);
        first
    }

    /// A table: exit 0; returns the lines, header first.
    #[track_caller]
    fn table(&self, header: &[&str]) -> Vec<String> {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        let lines: Vec<String> = self.stdout.lines().map(String::from).collect();
        let words: Vec<&str> = lines[0].split_whitespace().collect();
        let want: Vec<&str> = header.iter().flat_map(|h| h.split_whitespace()).collect();
        assert_eq!(words, want, "header row: {:?}", self.stdout);
        lines
    }

    /// A failure: non-zero exit, nothing on stdout, `needle` on stderr.
    #[track_caller]
    fn failed(&self, needle: &str) {
        assert_ne!(self.code, 0, "should fail; stdout: {}", self.stdout);
        assert_eq!(self.stdout, "", "nothing on stdout");
        assert!(
            self.stderr.contains(needle),
            "stderr has {needle:?}: {}",
            self.stderr
        );
    }
}

/// Runs the binary with `args` and `env`; BROKER_* from the test's own
/// environment never leak in.
async fn run(args: &[&str], env: Env<'_>) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"));
    cmd.args(args)
        .env_remove("BROKER_URL")
        .env_remove("BROKER_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the CLI finishes")
        .expect("the CLI runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs an admin subcommand against `node`, `--url` and `--token` first
/// (after the subcommand, `invite revoke` reads `--token` as the invite).
async fn admin(node: &TestNode, args: &[&str]) -> Out {
    let url = node.url("");
    let mut all = vec!["--url", &url, "--token", ADMIN_TOKEN];
    all.extend(args);
    run(&all, &[]).await
}

#[tokio::test]
async fn keygen_prints_one_key_pair() {
    let out = run(&["keygen", "--json"], &[]);
    let v = out.await.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{v}");
    let public = v["publicKey"].as_str().unwrap();
    let secret = v["secretKey"].as_str().unwrap();
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(public.len() == 64 && lower_hex(public), "{public}");
    assert!(secret.len() == 128 && lower_hex(secret), "{secret}");
    assert!(secret.ends_with(public), "seed || public");
    let sig = crypto::sign_hex(secret, b"m").unwrap();
    let key = crypto::parse_pubkey(public).unwrap();
    assert!(crypto::verify(
        &key,
        b"m",
        &crypto::parse_signature(&sig).unwrap()
    ));
    let again = run(&["keygen", "--json"], &[]).await.json();
    assert_ne!(again["publicKey"], v["publicKey"], "fresh every time");

    let plain = run(&["keygen"], &[]).await;
    assert_eq!(plain.code, 0);
    assert!(plain.stdout.contains("public key: ") && plain.stdout.contains("secret key: "));
}

async fn admin_commands_round_trip(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let m = admin(&node, &["mesh", "create", "--slug", "s", "--json"])
        .await
        .json();
    for k in ["id", "slug", "name", "ownerPubkey", "rootKey", "createdAt"] {
        assert!(m.get(k).is_some(), "{k}: {m}");
    }
    assert_eq!(
        (&m["slug"], &m["name"]),
        (&Value::from("s"), &Value::from("s"))
    );
    assert!(m.get("ownerSecretKey").is_none(), "{m}");
    let args = [
        "mesh",
        "create",
        "--slug",
        "s2",
        "--name",
        "Second",
        "--show-owner-secret",
        "--json",
    ];
    let m2 = admin(&node, &args).await.json();
    let secret = m2["ownerSecretKey"].as_str().expect("asked for");
    assert!(secret.ends_with(m2["ownerPubkey"].as_str().unwrap()));

    let list = admin(&node, &["mesh", "list", "--json"]).await.json();
    let slugs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["s", "s2"]);
    let lines = admin(&node, &["mesh", "list"])
        .await
        .table(&["SLUG", "NAME", "ID", "CREATED"]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[2].starts_with("s2") && lines[2].contains("Second"),
        "{lines:?}"
    );

    // Members.
    let keys = KeyPair::generate();
    let pk = keys.public_hex.as_str();
    let args = [
        "member", "add", "--mesh", "s", "--pubkey", pk, "--name", "N", "--groups", "a,b/c",
        "--json",
    ];
    let mem = admin(&node, &args).await.json();
    assert_eq!(mem["groups"], serde_json::json!(["a", "b/c"]));
    assert_eq!(
        (&mem["role"], &mem["displayName"]),
        (&Value::from("member"), &Value::from("N"))
    );
    assert_eq!(mem["meshId"], m["id"]);
    assert_eq!(mem["pubkey"], pk);
    let other = KeyPair::generate();
    let args = [
        "member",
        "add",
        "--mesh",
        "s",
        "--pubkey",
        &other.public_hex,
        "--name",
        "Boss",
        "--role",
        "admin",
    ];
    let lines = admin(&node, &args)
        .await
        .table(&["ID", "NAME", "ROLE", "PUBKEY"]);
    assert!(
        lines[1].contains("Boss") && lines[1].contains("admin"),
        "{lines:?}"
    );
    let members = admin(&node, &["member", "list", "--mesh", "s", "--json"])
        .await
        .json();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    let header = ["ID", "NAME", "ROLE", "PUBKEY", "GROUPS", "STATE"];
    let lines = admin(&node, &["member", "list", "--mesh", "s"])
        .await
        .table(&header);
    assert_eq!(lines.len(), 3);
    assert!(
        lines[1].contains("a,b/c") && lines[1].ends_with("active"),
        "{lines:?}"
    );

    // A live session shows in peers and nodes.
    let member = Member {
        id: mem["id"].as_str().unwrap().into(),
        mesh_id: mem["meshId"].as_str().unwrap().into(),
        keys,
    };
    let (mut peer, _) = Peer::join(&node.ws_url(), &member, "sess-1").await;
    let peers = admin(&node, &["peers", "--mesh", "s", "--json"])
        .await
        .json();
    let peers = peers.as_array().unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(
        (&peers[0]["state"], &peers[0]["sessionId"]),
        (&Value::from("online"), &Value::from("sess-1"))
    );
    let header = [
        "NAME", "STATUS", "STATE", "SESSION", "PUBKEY", "NODE", "CWD",
    ];
    let lines = admin(&node, &["peers", "--mesh", "s"]).await.table(&header);
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].starts_with("N ") && lines[1].contains("online"),
        "{lines:?}"
    );
    let nodes = admin(&node, &["nodes", "--json"]).await.json();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["id"], node.engine.node_id.to_string());
    assert_eq!(nodes[0]["sockets"], 1);
    let header = [
        "ID",
        "ADDR",
        "HEARTBEAT AGE",
        "SOCKETS",
        "DRAINING",
        "VERSION",
    ];
    let lines = admin(&node, &["nodes"]).await.table(&header);
    assert!(
        lines[1].starts_with(&node.engine.node_id.to_string()),
        "{lines:?}"
    );

    // Revoking closes the session; the command prints nothing on stdout.
    let out = admin(
        &node,
        &["member", "revoke", "--mesh", "s", "--member", &member.id],
    )
    .await;
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    peer.expect_banned().await;
    let members = admin(&node, &["member", "list", "--mesh", "s", "--json"])
        .await
        .json();
    let revoked = members
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == member.id.as_str())
        .unwrap();
    assert!(revoked["revokedAt"].is_string(), "{revoked}");
    admin(
        &node,
        &["member", "revoke", "--mesh", "s", "--member", &member.id],
    )
    .await
    .failed("404");

    // Invites.
    let before = chrono::Utc::now().timestamp();
    let args = [
        "invite", "create", "--mesh", "s", "--uses", "3", "--ttl", "2h", "--json",
    ];
    let inv = admin(&node, &args).await.json();
    assert_eq!(inv["maxUses"], 3);
    assert_eq!(inv["role"], "member");
    assert_eq!(inv["meshId"], m["id"]);
    let expires = chrono::DateTime::parse_from_rfc3339(inv["expiresAt"].as_str().unwrap()).unwrap();
    assert!(
        (expires.timestamp() - before - 7200).abs() <= 5,
        "about 2 h ahead: {inv}"
    );
    let token = inv["token"].as_str().unwrap();
    assert_eq!(inv["link"], format!("ic://join/{token}"));
    let payload = InvitePayload::from_token(token).unwrap();
    assert!(payload.signature_valid());
    assert_eq!(payload.owner_pubkey, m["ownerPubkey"].as_str().unwrap());
    let out = admin(&node, &["invite", "revoke", "--token", token]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    admin(&node, &["invite", "revoke", "--token", token])
        .await
        .failed("404");

    // Without --json: the link alone on stdout; revocable by link.
    let out = admin(
        &node,
        &["invite", "create", "--mesh", "s", "--role", "admin"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let link = out.stdout.trim_end();
    assert!(
        link.starts_with("ic://join/") && !link.contains('\n'),
        "{:?}",
        out.stdout
    );
    assert_eq!(InvitePayload::from_token(link).unwrap().role, "admin");
    let out = admin(&node, &["invite", "revoke", "--token", link]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

async fn env_and_flag_positions(backend: Backend) {
    let (node, _db) = node_with(backend, |_| {}).await;
    let url = node.url("");
    let env = [
        ("BROKER_URL", url.as_str()),
        ("BROKER_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let m = run(&["mesh", "create", "--slug", "by-env", "--json"], &env)
        .await
        .json();
    assert_eq!(m["slug"], "by-env");
    // Flags after the subcommand work too, and beat the environment.
    let bad_env = [
        ("BROKER_URL", "http://127.0.0.1:9"),
        ("BROKER_ADMIN_TOKEN", "nope"),
    ];
    let args = [
        "mesh",
        "list",
        "--json",
        "--url",
        &url,
        "--token",
        ADMIN_TOKEN,
    ];
    let list = run(&args, &bad_env).await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    run(&["mesh", "list", "--json"], &bad_env)
        .await
        .failed("cannot reach");

    // `invite revoke --token T`: T is the invite; the admin token comes from
    // the environment, `--admin-token`, or `--token` before the subcommand.
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let args = ["invite", "create", "--mesh", "by-env", "--json"];
        let inv = run(&args, &env).await.json();
        tokens.push(inv["token"].as_str().unwrap().to_string());
    }
    let url_only = [("BROKER_URL", url.as_str())];
    let (t0, t1, t2) = (tokens[0].as_str(), tokens[1].as_str(), tokens[2].as_str());
    let cases: [(Vec<&str>, Env); 3] = [
        (vec!["invite", "revoke", "--token", t0], &env),
        (
            vec![
                "invite",
                "revoke",
                "--token",
                t1,
                "--admin-token",
                ADMIN_TOKEN,
            ],
            &url_only,
        ),
        (
            vec!["--token", ADMIN_TOKEN, "invite", "revoke", "--token", t2],
            &url_only,
        ),
    ];
    for (args, env) in cases {
        let out = run(&args, env).await;
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, ""),
            "{args:?}: {}",
            out.stderr
        );
    }
    for t in &tokens {
        let (s, _) = node
            .admin(reqwest::Method::DELETE, &format!("/invites/{t}"), None)
            .await;
        assert_eq!(s, 404, "already revoked by the CLI");
    }
    // No admin token anywhere: the invite token is not sent as one.
    let no_admin = ["invite", "revoke", "--token", t0];
    run(&no_admin, &url_only).await.failed("401");
}

#[tokio::test]
async fn errors_go_to_stderr_with_non_zero_exit() {
    let (node, _db) = node_with(Backend::Memory, |_| {}).await;
    let url = node.url("");
    admin(&node, &["mesh", "create", "--slug", "s", "--json"])
        .await
        .json();

    let wrong = ["mesh", "list", "--json", "--url", &url, "--token", "wrong"];
    run(&wrong, &[]).await.failed("401 unauthorized");
    run(&["mesh", "list", "--url", &url], &[])
        .await
        .failed("401");
    run(&["mesh", "create", "--slug", "t", "--url", &url], &[])
        .await
        .failed("401");

    admin(&node, &["member", "list", "--mesh", "nope", "--json"])
        .await
        .failed("404 not_found");
    admin(&node, &["peers", "--mesh", "nope", "--json"])
        .await
        .failed("404");
    admin(&node, &["invite", "create", "--mesh", "nope", "--json"])
        .await
        .failed("404");
    admin(&node, &["mesh", "create", "--slug", "s", "--json"])
        .await
        .failed("409 conflict");
    admin(&node, &["mesh", "create", "--slug", "Bad", "--json"])
        .await
        .failed("400 bad_request");
    let bad_key = [
        "member", "add", "--mesh", "s", "--pubkey", "abc", "--name", "x", "--json",
    ];
    admin(&node, &bad_key).await.failed("400");
    admin(&node, &["invite", "create", "--mesh", "s", "--ttl", "7w"])
        .await
        .failed("ttl");
    admin(&node, &["invite", "create", "--mesh", "s", "--uses", "0"])
        .await
        .failed("maxUses");
    admin(&node, &["member", "list", "--mesh", "s", "--role", "x"])
        .await
        .failed("--role");

    // Nothing listens on a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let args = ["nodes", "--json", "--url", &dead, "--token", ADMIN_TOKEN];
    run(&args, &[]).await.failed("cannot reach the broker");

    let list = admin(&node, &["mesh", "list", "--json"]).await.json();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "failures created nothing"
    );
}

both_stores!(admin_commands_round_trip, env_and_flag_positions);
