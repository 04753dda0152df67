//! Property tests over the pure protocol functions: fuzzing on the stable
//! toolchain (cargo-fuzz needs nightly). Every property runs a fixed number
//! of random cases; a failing case is shrunk, written to
//! `proptest-regressions/fuzz.txt` and replayed first on every later run.
//!
//! What is checked: client frame decoding, hello verification, target
//! specs, group names, base64, invite tokens and the audit chain never
//! panic on hostile input, and each keeps the security property the broker
//! relies on (a failed `send` is always ackable, a hello or invite that
//! verifies was signed exactly as presented, a tampered audit chain is
//! always caught at or before the tampered entry).

use std::sync::OnceLock;

use base64::Engine;
use chrono::{DateTime, Utc};
use claudemesh_broker::audit::{self, canonical_json, entry_hash, Checkpoint, Entry, GENESIS};
use claudemesh_broker::engine::dispatch::{self, Parsed, Request};
use claudemesh_broker::protocol::crypto::{self, KeyPair};
use claudemesh_broker::protocol::hello::{verify, Hello};
use claudemesh_broker::protocol::invite::InvitePayload;
use claudemesh_broker::protocol::limits::valid_group_name;
use claudemesh_broker::protocol::messaging::MessagingFrame;
use claudemesh_broker::protocol::target::{is_base64, Target};
use claudemesh_broker::protocol::wire::Answer;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};

/// `cases` random cases (times `FUZZ_SCALE`, for longer bounded runs
/// outside CI); failures persisted where proptest's convention puts them
/// (`proptest-regressions/`, beside `src/`).
fn config(cases: u32) -> ProptestConfig {
    let scale: u32 = std::env::var("FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    ProptestConfig {
        cases: cases.saturating_mul(scale.max(1)),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz.txt",
        ))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const FRAME_TYPES: &[&str] = &[
    "hello",
    "session_hello",
    "kick",
    "disconnect",
    "ban",
    "unban",
    "list_bans",
    "list_peers",
    "set_status",
    "set_summary",
    "set_visible",
    "set_profile",
    "set_stats",
    "join_group",
    "leave_group",
    "send",
    "client_ack",
];

/// Every field name any client frame uses.
const FIELDS: &[&str] = &[
    "id",
    "_reqId",
    "targetSpec",
    "priority",
    "nonce",
    "ciphertext",
    "status",
    "summary",
    "visible",
    "avatar",
    "title",
    "bio",
    "capabilities",
    "stats",
    "name",
    "role",
    "messageId",
    "meshId",
    "memberId",
    "pubkey",
    "sessionPubkey",
    "displayName",
    "sessionId",
    "pid",
    "cwd",
    "hostname",
    "peerType",
    "channel",
    "model",
    "groups",
    "timestamp",
    "signature",
];

/// Strings that mean something to the broker, so random frames reach past
/// the first type check.
fn interesting_string() -> BoxedStrategy<String> {
    prop_oneof![
        "[0-9a-f]{64}",
        "[0-9a-fA-F]{128}",
        "@[a-z0-9/_.:-]{0,12}",
        "[a-z]{1,8}(/[a-z]{1,4}){0,2}",
        prop::sample::select(vec![
            "*",
            "@all",
            "now",
            "next",
            "low",
            "urgent",
            "idle",
            "working",
            "dnd",
            "hello",
            "send",
            "client_ack",
            "ai",
            "human",
            "connector",
            "",
            " ",
            "null",
            "|",
            "\u{0}",
        ])
        .prop_map(String::from),
        "[A-Za-z0-9+/_-]{0,40}={0,3}",
        "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        // Around the length caps (summary 1024, names 128, session ids 256).
        (120usize..140).prop_map(|n| "x".repeat(n)),
        (250usize..260).prop_map(|n| "é".repeat(n)),
        (1020usize..1030).prop_map(|n| "s".repeat(n)),
    ]
    .boxed()
}

fn json_number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        Just(Value::from(i64::from(i32::MAX) + 1)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        any::<String>().prop_map(Value::String),
        interesting_string().prop_map(Value::String),
    ]
    .boxed()
}

/// Any JSON value, a few levels deep.
fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        ".{0,6}",
                        prop::sample::select(FIELDS).prop_map(String::from)
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

fn group_name() -> BoxedStrategy<String> {
    prop::collection::vec("[a-zA-Z0-9_.:é-]{1,12}", 1..4)
        .prop_map(|segs| segs.join("/"))
        .prop_filter("at most 128 characters", |n| n.chars().count() <= 128)
        .boxed()
}

/// A value of roughly the right type for `field`.
fn typed_value(field: &'static str) -> BoxedStrategy<Value> {
    let s = |st: BoxedStrategy<String>| st.prop_map(Value::String).boxed();
    match field {
        "visible" => any::<bool>().prop_map(Value::Bool).boxed(),
        "pid" | "timestamp" => json_number(),
        "stats" => prop::collection::btree_map(".{0,8}", json_leaf(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed(),
        "capabilities" => prop::collection::vec(
            prop_oneof![Just("client_ack".to_string()), ".{0,10}"],
            0..20,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "groups" => prop::collection::vec(
            prop_oneof![
                group_name().prop_map(Value::String),
                (group_name(), prop::option::of(".{0,8}"))
                    .prop_map(|(n, r)| json!({"name": n, "role": r})),
                json_leaf(),
            ],
            0..5,
        )
        .prop_map(Value::Array)
        .boxed(),
        "name" => s(prop_oneof![group_name(), interesting_string()].boxed()),
        _ => s(prop_oneof![interesting_string(), ".{0,16}"].boxed()),
    }
}

/// A frame-shaped object: a `type` (usually a real one), some real fields
/// with plausible or arbitrary values, and a few unknown keys.
fn plausible_frame(types: &'static [&'static str]) -> BoxedStrategy<Map<String, Value>> {
    let ty = prop_oneof![
        12 => prop::sample::select(types).prop_map(|t| Some(Value::from(t))),
        1 => json_value().prop_map(Some),
        1 => Just(None),
    ];
    let fields: Vec<BoxedStrategy<Option<Value>>> = FIELDS
        .iter()
        .map(|f| {
            prop::option::weighted(0.35, prop_oneof![4 => typed_value(f), 1 => json_value()])
                .boxed()
        })
        .collect();
    let extra = prop::collection::vec((".{1,6}", json_value()), 0..3);
    (ty, fields, extra)
        .prop_map(|(ty, fields, extra)| {
            let mut m = Map::new();
            for (k, v) in extra {
                m.insert(k, v);
            }
            for (name, v) in FIELDS.iter().zip(fields) {
                if let Some(v) = v {
                    m.insert((*name).to_string(), v);
                }
            }
            match ty {
                Some(t) => {
                    m.insert("type".into(), t);
                }
                None => {
                    m.remove("type");
                }
            }
            m
        })
        .boxed()
}

/// Valid frames of every kind, to mutate character by character.
fn valid_frames() -> Vec<String> {
    let k = "ab".repeat(32);
    [
        json!({"type":"send","id":"c1","targetSpec":k,"priority":"now","nonce":"bm9uY2U=","ciphertext":"Y2lwaGVy"}),
        json!({"type":"send","id":"c2","targetSpec":"@backend/api","nonce":"","ciphertext":"eA==","_reqId":"r"}),
        json!({"type":"hello","meshId":"m","memberId":"u","pubkey":k,"sessionId":"s","pid":1,"cwd":"/a",
               "groups":["a",{"name":"b","role":"lead"}],"capabilities":["client_ack"],
               "timestamp":1717459200000i64,"signature":"cd".repeat(64)}),
        json!({"type":"list_peers","_reqId":"r1"}),
        json!({"type":"set_status","status":"working"}),
        json!({"type":"set_summary","summary":"refactoring"}),
        json!({"type":"set_visible","visible":false,"id":"v"}),
        json!({"type":"set_profile","avatar":"🦀","title":"t","bio":"b","capabilities":["x"]}),
        json!({"type":"set_stats","stats":{"a":1,"b":[true,null]}}),
        json!({"type":"join_group","name":"ops/eu","role":"lead"}),
        json!({"type":"leave_group","name":"ops"}),
        json!({"type":"client_ack","messageId":"0190a2f1-7c1e-7d3a-9b2e-5f0c1d2e3f40"}),
    ]
    .iter()
    .map(Value::to_string)
    .collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop_oneof![
        prop::sample::select(vec![
            '"', '{', '}', '[', ']', ',', ':', '\\', '0', 'e', '-', ' '
        ]),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), ch).prop_map(|(i, c)| Edit::Replace(i, c)),
    ]
}

fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i % n);
            }
            Edit::Replace(i, c) if !chars.is_empty() => chars[i % n] = c,
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// The contract `parse` keeps for an object `obj` sent as `text`: the
/// outcome follows the `type`, a `send` is always ackable (and its ack
/// echoes a string `id`), and `_reqId` is always echoed.
fn check_parse_contract(obj: &Map<String, Value>, text: &str) -> Result<(), TestCaseError> {
    let got = dispatch::parse(text);
    let req_id = obj.get("_reqId").and_then(Value::as_str);
    let id = obj.get("id").and_then(Value::as_str);
    let ty = obj.get("type").and_then(Value::as_str);
    match (&got, ty) {
        (
            Parsed::Frame {
                head,
                spec,
                request,
            },
            Some(t),
        ) => {
            prop_assert_eq!(spec.ty, t);
            prop_assert_eq!(head.req_id.as_deref(), req_id);
            prop_assert_eq!(head.id.as_deref(), id);
            if t == "send" {
                prop_assert_eq!(spec.answer, Answer::Ack, "a send is answered by an ack");
            }
            if let Ok(r) = request {
                prop_assert_eq!(r.ty(), t, "parsed as another frame");
                if let Request::Messaging(MessagingFrame::Send(s)) = r {
                    prop_assert_eq!(Some(s.id.as_str()), id);
                }
            }
        }
        (Parsed::Hello(head, _), Some("hello"))
        | (Parsed::SessionHello(head, _), Some("session_hello")) => {
            prop_assert_eq!(head.req_id.as_deref(), req_id);
        }
        (Parsed::Unknown(head), Some(t)) => {
            prop_assert!(
                !FRAME_TYPES.contains(&t),
                "a registered type went unknown: {}",
                t
            );
            prop_assert_eq!(head.ty.as_str(), t);
            prop_assert_eq!(head.req_id.as_deref(), req_id);
        }
        (
            Parsed::Unreadable {
                req_id: got_req, ..
            },
            None,
        ) => {
            prop_assert_eq!(got_req.as_deref(), req_id);
        }
        (_, t) => prop_assert!(false, "type {:?} gave an unexpected parse", t),
    }
    Ok(())
}

/// Renders `pairs` as a JSON object text, duplicate keys and all (what a
/// careless or hostile client may send; `serde_json::Map` cannot hold it).
fn object_text(pairs: &[(String, Value)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v))
        .collect();
    format!("{{{}}}", body.join(","))
}

mod chain_props;
mod frame_props;
mod hello_props;
mod invites;
mod targets;
