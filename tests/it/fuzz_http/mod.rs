//! Random and near-miss input over the network, against a memory-store
//! node: a few hundred bodies each to `POST /hook/set-status` and
//! `POST /join`, and a few hundred text frames over one live WebSocket.
//! Every HTTP answer is a 2xx or 4xx within a timeout, every `send` gets
//! exactly one ack, the socket stays open, and the node still serves.
//!
//! The inputs come from a seeded RNG; the seed is printed, and
//! `FUZZ_SEED=<n>` replays a run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use claudemesh_broker::config::HookAuth;
use claudemesh_broker::protocol::crypto::KeyPair;
use claudemesh_broker::protocol::invite::InvitePayload;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{node_with, world_with, Backend, Peer, TestNode};

/// No single answer may take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_CASES: usize = 300;
const WS_FRAMES: usize = 400;

fn seed() -> u64 {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("fuzz seed: {seed} (replay with FUZZ_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------
// Random values
// ---------------------------------------------------------------------------

fn random_string(rng: &mut StdRng) -> String {
    let n = match rng.gen_range(0..10) {
        0 => 0,
        1 => rng.gen_range(120..300),
        2 => rng.gen_range(1000..5000),
        _ => rng.gen_range(1..16),
    };
    let pool: &[char] = &[
        'a', 'Z', '0', '9', '/', '@', '*', ' ', '-', '_', '.', ':', '"', '\\', '{', '}', '\n',
        '\t', '\0', '\u{7f}', 'é', '🦀', '\u{2028}', '\u{feff}', '\u{ffff}', '|', '=',
    ];
    (0..n)
        .map(|_| {
            if rng.gen_bool(0.8) {
                *pool.choose(rng).unwrap()
            } else {
                rng.gen::<char>()
            }
        })
        .collect()
}

fn random_number(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..7) {
        0 => json!(rng.gen::<i64>()),
        1 => json!(rng.gen::<u64>()),
        2 => json!(rng.gen_range(-3i64..5)),
        3 => json!(i64::from(i32::MAX) + 1),
        4 => json!(rng.gen::<f64>() * 1e300),
        5 => json!(-0.5),
        _ => json!(4242),
    }
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    let pick = if depth == 0 {
        rng.gen_range(0..4)
    } else {
        rng.gen_range(0..6)
    };
    match pick {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 => random_number(rng),
        3 => Value::String(random_string(rng)),
        4 => Value::Array(
            (0..rng.gen_range(0..5))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.gen_range(0..5))
                .map(|_| (random_string(rng), random_json(rng, depth - 1)))
                .collect(),
        ),
    }
}

fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    let n = if rng.gen_bool(0.05) {
        70_000 // over max_message_bytes: 413
    } else {
        rng.gen_range(0..600)
    };
    (0..n).map(|_| rng.gen()).collect()
}

/// Up to three random character edits (insert, delete, replace).
fn edit_chars(rng: &mut StdRng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..rng.gen_range(1..4) {
        let c = *['"', '{', '}', ',', ':', '\\', '0', 'x', ' ', '\0', 'é']
            .choose(rng)
            .unwrap();
        match rng.gen_range(0..3) {
            0 => {
                let i = rng.gen_range(0..=chars.len());
                chars.insert(i, c);
            }
            1 if !chars.is_empty() => {
                let i = rng.gen_range(0..chars.len());
                chars.remove(i);
            }
            _ if !chars.is_empty() => {
                let i = rng.gen_range(0..chars.len());
                chars[i] = c;
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// `base` with one field changed, removed, or one field added.
fn near_miss(rng: &mut StdRng, base: &Value, extra_fields: &[&str]) -> Value {
    let mut obj = base.as_object().cloned().unwrap_or_default();
    let keys: Vec<String> = obj.keys().cloned().collect();
    match rng.gen_range(0..4) {
        0 if !keys.is_empty() => {
            obj.remove(keys.choose(rng).unwrap());
        }
        1 => {
            let k = extra_fields.choose(rng).unwrap().to_string();
            obj.insert(k, random_json(rng, 2));
        }
        _ if !keys.is_empty() => {
            let k = keys.choose(rng).unwrap().clone();
            let v = match rng.gen_range(0..3) {
                0 => random_json(rng, 2),
                1 => Value::String(random_string(rng)),
                _ => random_number(rng),
            };
            obj.insert(k, v);
        }
        _ => {}
    }
    Value::Object(obj)
}

/// A body: raw bytes, raw text, any JSON, a near miss of `valid`, or
/// `valid` itself; with a content type (usually JSON).
fn random_body(rng: &mut StdRng, valid: &Value, fields: &[&str]) -> (Vec<u8>, &'static str) {
    let body = match rng.gen_range(0..10) {
        0 => random_bytes(rng),
        1 => random_string(rng).into_bytes(),
        2 => random_json(rng, 3).to_string().into_bytes(),
        3 => edit_chars(rng, &valid.to_string()).into_bytes(),
        4 => valid.to_string().into_bytes(),
        _ => near_miss(rng, valid, fields).to_string().into_bytes(),
    };
    let ctype = *[
        "application/json",
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
    ]
    .choose(rng)
    .unwrap();
    (body, ctype)
}

/// POSTs `body`; panics on a 5xx, a transport error or a timeout.
async fn post(
    node: &TestNode,
    path: &str,
    body: Vec<u8>,
    ctype: &str,
    bearer: Option<&str>,
    seed: u64,
) -> u16 {
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
    let mut req = node
        .http
        .post(node.url(path))
        .timeout(REQUEST_TIMEOUT)
        .body(body);
    if !ctype.is_empty() {
        req = req.header("content-type", ctype);
    }
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {path} {shown:?}: no answer: {e}"));
    let status = resp.status().as_u16();
    let text = tokio::time::timeout(REQUEST_TIMEOUT, resp.text())
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: {path} {shown:?}: body never finished"))
        .unwrap_or_default();
    assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "seed {seed}: {path} {shown:?} -> {status} {text}"
    );
    status
}

async fn assert_healthy(node: &TestNode) {
    let resp = node
        .http
        .get(node.url("/health"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .expect("/health answers");
    assert_eq!(resp.status().as_u16(), 200);
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

const HOOK_FIELDS: &[&str] = &["cwd", "pid", "status", "session_id", "extra"];
const JOIN_FIELDS: &[&str] = &[
    "invite_token",
    "invite_payload",
    "peer_pubkey",
    "display_name",
    "extra",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_http_bodies_never_get_a_5xx() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    // Token auth (the default) on the world's node; v1 open hooks on a
    // second node, so bodies also reach the (pid, cwd) lookup.
    let w = world_with(Backend::Memory, |_| {}).await;
    let (open, _db) = node_with(Backend::Memory, |s| {
        s.hook_auth = Some(HookAuth::None);
    })
    .await;
    let (_alice, ack) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let hook_token = ack["hookToken"].as_str().unwrap().to_string();

    let (s, inv) = w
        .node
        .admin(
            reqwest::Method::POST,
            "/meshes/m/invites",
            Some(json!({"maxUses": 1000})),
        )
        .await;
    assert_eq!(s, 201, "{inv}");
    let token = inv["token"].as_str().unwrap().to_string();
    let payload = serde_json::to_value(InvitePayload::from_token(&token).unwrap()).unwrap();

    let mut statuses = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for i in 0..HTTP_CASES {
        // /hook/set-status
        let statuses_seen = ["idle", "working", "dnd"];
        let valid = json!({
            "cwd": if rng.gen_bool(0.5) { "/home/u/proj".to_string() } else { random_string(&mut rng) },
            "pid": if rng.gen_bool(0.5) { json!(4242) } else { random_number(&mut rng) },
            "status": statuses_seen.choose(&mut rng).unwrap(),
            "session_id": "s",
        });
        let (body, ctype) = random_body(&mut rng, &valid, HOOK_FIELDS);
        let (node, bearer) = if i % 2 == 0 {
            let bearer = match rng.gen_range(0..4) {
                0 => None,
                // Header values must be visible ASCII.
                1 => Some(
                    random_string(&mut rng)
                        .chars()
                        .filter(|c| c.is_ascii_graphic())
                        .collect(),
                ),
                _ => Some(hook_token.clone()),
            };
            (&w.node, bearer)
        } else {
            (&open, None)
        };
        let st = post(
            node,
            "/hook/set-status",
            body,
            ctype,
            bearer.as_deref(),
            seed,
        )
        .await;
        *statuses.entry(("hook", st)).or_default() += 1;

        // /join
        let keys = KeyPair::generate();
        let mut valid = json!({
            "invite_token": token,
            "peer_pubkey": keys.public_hex,
            "display_name": "fuzzed",
        });
        match rng.gen_range(0..4) {
            0 => valid["invite_payload"] = payload.clone(),
            1 => valid["invite_payload"] = json!(payload.to_string()),
            2 => {
                let mut p = payload.clone();
                let field = *[
                    "v",
                    "mesh_id",
                    "mesh_slug",
                    "expires_at",
                    "role",
                    "owner_pubkey",
                    "signature",
                ]
                .choose(&mut rng)
                .unwrap();
                p[field] = random_json(&mut rng, 1);
                valid["invite_payload"] = p;
            }
            _ => {}
        }
        if rng.gen_bool(0.2) {
            // A token for another payload: base64url of random JSON.
            valid["invite_token"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(random_json(&mut rng, 2).to_string()));
        }
        let (body, ctype) = random_body(&mut rng, &valid, JOIN_FIELDS);
        let st = post(&w.node, "/join", body, ctype, None, seed).await;
        *statuses.entry(("join", st)).or_default() += 1;
    }
    println!("answers: {statuses:?}");
    assert!(
        statuses.keys().any(|(r, s)| *r == "join" && *s == 200),
        "some near misses are valid joins: {statuses:?}"
    );
    assert!(
        statuses.keys().any(|(r, s)| *r == "hook" && *s == 200),
        "some near misses are valid hooks: {statuses:?}"
    );
    assert_healthy(&w.node).await;
    assert_healthy(&open).await;
    // The node still does real work.
    let (_bob, ack) = Peer::join(&w.node.ws_url(), &w.bob, "b1").await;
    assert_eq!(ack["type"], "hello_ack");
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

mod socket;
