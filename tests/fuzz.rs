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
use claudemesh_broker::protocol::crypto::{self, KeyPair};
use claudemesh_broker::protocol::frames::{self, ClientFrame, FrameError, Hello};
use claudemesh_broker::protocol::hello::verify;
use claudemesh_broker::protocol::invite::InvitePayload;
use claudemesh_broker::protocol::limits::valid_group_name;
use claudemesh_broker::protocol::target::{is_base64, Target};
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

/// The frame kind `parse` produced, spelled as its wire `type`.
fn kind(f: &ClientFrame) -> &'static str {
    match f {
        ClientFrame::Hello(_) => "hello",
        ClientFrame::ListPeers => "list_peers",
        ClientFrame::SetStatus(_) => "set_status",
        ClientFrame::SetSummary(_) => "set_summary",
        ClientFrame::SetVisible(_) => "set_visible",
        ClientFrame::SetProfile(_) => "set_profile",
        ClientFrame::SetStats(_) => "set_stats",
        ClientFrame::JoinGroup(_) => "join_group",
        ClientFrame::LeaveGroup(_) => "leave_group",
        ClientFrame::Send(_) => "send",
        ClientFrame::ClientAck(_) => "client_ack",
    }
}

/// The contract `parse` keeps for an object `obj` sent as `text`: the
/// outcome follows the `type`, a `send` is always ackable (and its ack
/// echoes a string `id`), and `_reqId` is always echoed.
fn check_parse_contract(obj: &Map<String, Value>, text: &str) -> Result<(), TestCaseError> {
    let got = frames::parse(text);
    let req_id = obj.get("_reqId").and_then(Value::as_str);
    let id = obj.get("id").and_then(Value::as_str);
    let ty = obj.get("type").and_then(Value::as_str);
    match (&got, ty) {
        (Ok(i), Some(t)) => {
            prop_assert_eq!(kind(&i.frame), t);
            prop_assert_eq!(i.req_id.as_deref(), req_id);
            prop_assert_eq!(i.id.as_deref(), id);
            if let ClientFrame::Send(s) = &i.frame {
                prop_assert_eq!(Some(s.id.as_str()), id);
            }
        }
        (Ok(i), None) => prop_assert!(false, "parsed without a string type: {:?}", i),
        (
            Err(FrameError::BadSend {
                id: got_id,
                req_id: got_req,
                ..
            }),
            Some("send"),
        ) => {
            prop_assert_eq!(got_id.as_deref(), id, "the ack echoes the send's id");
            prop_assert_eq!(got_req.as_deref(), req_id);
        }
        (Err(e), Some("send")) => prop_assert!(false, "a failed send must be BadSend: {:?}", e),
        (Err(FrameError::MalformedHello(_)), Some("hello")) => {}
        (
            Err(FrameError::BadRequest {
                req_id: got_req, ..
            }),
            t,
        ) if t != Some("hello") => {
            prop_assert_eq!(got_req.as_deref(), req_id);
        }
        (Err(e), t) => prop_assert!(false, "type {:?} gave {:?}", t, e),
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

// ---------------------------------------------------------------------------
// frames::parse
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(3000))]

    /// Arbitrary text never panics the decoder; non-objects are bad requests.
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in prop_oneof![any::<String>(), ".{0,64}"]) {
        let got = frames::parse(&text);
        if !text.trim_start().starts_with('{') {
            prop_assert!(matches!(got, Err(FrameError::BadRequest { .. })), "{:?}", got);
        }
    }

    /// Valid frames edited a few characters at a time: never a panic, and
    /// whatever still decodes as an object keeps the contract.
    #[test]
    fn parse_keeps_its_contract_on_edited_frames(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let frames = valid_frames();
        let base: &String = which.get(&frames);
        let text = apply_edits(base, &edits);
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&text) {
            check_parse_contract(&obj, &text)?;
        } else {
            let _ = frames::parse(&text);
        }
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// Frame-shaped objects with random field values of random JSON types.
    #[test]
    fn parse_keeps_its_contract_on_plausible_objects(obj in plausible_frame(FRAME_TYPES)) {
        let text = Value::Object(obj.clone()).to_string();
        check_parse_contract(&obj, &text)?;
    }

}

proptest! {
    #![proptest_config(config(1000))]

    /// Duplicate keys (which JavaScript's JSON.parse resolves to the last
    /// one): a frame whose effective `type` is `send` still gets an ack.
    #[test]
    fn a_send_with_duplicate_keys_is_still_ackable(
        obj in plausible_frame(&["send"]),
        dups in prop::collection::vec(
            (prop::sample::select(vec!["type", "id", "_reqId", "targetSpec", "nonce"]), json_leaf()),
            1..3,
        ),
    ) {
        // The duplicates go first: the object's own values are the last ones.
        let mut pairs: Vec<(String, Value)> =
            dups.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        pairs.extend(obj.clone());
        let text = object_text(&pairs);
        if obj.get("type").and_then(Value::as_str) == Some("send") {
            match frames::parse(&text) {
                Ok(i) => prop_assert_eq!(kind(&i.frame), "send"),
                Err(FrameError::BadSend { .. }) => {}
                Err(e) => prop_assert!(false, "{} -> {:?}", text, e),
            }
        } else {
            let _ = frames::parse(&text);
        }
    }
}

#[test]
fn deeply_nested_sends_are_still_ackable() {
    for depth in [10, 127, 128, 129, 200, 1000] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for field in ["junk", "nonce"] {
            let text = format!(r#"{{"type":"send","id":"c1","{field}":{nested},"x":1}}"#);
            match frames::parse(&text) {
                Err(FrameError::BadSend { id, .. }) => {
                    assert_eq!(id.as_deref(), Some("c1"), "depth {depth}")
                }
                other => panic!("depth {depth}, {field}: {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// hello::verify
// ---------------------------------------------------------------------------

/// A few keys, made once: key generation is not what is under test.
fn keys() -> &'static [KeyPair] {
    static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
    KEYS.get_or_init(|| (0..4).map(|_| KeyPair::generate()).collect())
}

/// A valid hello's inputs.
#[derive(Debug, Clone)]
struct HelloCase {
    key: usize,
    mesh_id: String,
    member_id: String,
    session_id: String,
    ts: i64,
    /// `now - ts`, within the allowed 60 s.
    skew: i64,
    /// Optional fields, all within their limits.
    optional: Map<String, Value>,
}

impl HelloCase {
    fn now(&self) -> i64 {
        self.ts + self.skew
    }

    fn frame(&self) -> Map<String, Value> {
        let kp = &keys()[self.key];
        let text = format!(
            "{}|{}|{}|{}",
            self.mesh_id, self.member_id, kp.public_hex, self.ts
        );
        let sig = crypto::sign_hex(&kp.secret_hex, text.as_bytes()).unwrap();
        let mut m = self.optional.clone();
        for (k, v) in [
            ("type", json!("hello")),
            ("meshId", json!(self.mesh_id)),
            ("memberId", json!(self.member_id)),
            ("pubkey", json!(kp.public_hex)),
            ("sessionId", json!(self.session_id)),
            ("timestamp", json!(self.ts)),
            ("signature", json!(sig)),
        ] {
            m.insert(k.into(), v);
        }
        m
    }
}

/// Valid values of the optional, unsigned hello fields (no NUL: the
/// broker refuses NUL anywhere, since Postgres cannot store it).
fn valid_optional(field: &'static str) -> BoxedStrategy<Value> {
    let s = |re: &'static str| re.prop_map(Value::String).boxed();
    match field {
        "displayName" => s("[^\\x00]{0,128}"),
        "pid" => (0..=i64::from(i32::MAX)).prop_map(Value::from).boxed(),
        "cwd" => prop_oneof![
            s("/[a-z/]{0,40}"),
            (4000usize..=4096).prop_map(|n| json!("c".repeat(n))),
        ]
        .boxed(),
        "hostname" => s("[a-z.-]{0,255}"),
        "peerType" => prop::sample::select(vec!["ai", "human", "connector"])
            .prop_map(Value::from)
            .boxed(),
        "channel" | "model" => s("[^\\x00]{0,128}"),
        "groups" => prop::collection::vec(
            prop_oneof![
                group_name().prop_map(Value::String),
                (group_name(), prop::option::of("[a-z]{1,64}"))
                    .prop_map(|(n, r)| json!({"name": n, "role": r})),
            ],
            0..64,
        )
        .prop_map(Value::Array)
        .boxed(),
        "capabilities" => prop::collection::vec("[^\\x00]{0,128}", 0..=16)
            .prop_map(|v| json!(v))
            .boxed(),
        "sessionPubkey" => (0..4usize)
            .prop_map(|i| json!(keys()[i].public_hex))
            .boxed(),
        _ => unreachable!("{field}"),
    }
}

/// Values of the optional hello fields that break a documented limit.
fn invalid_optional(field: &'static str) -> BoxedStrategy<Value> {
    match field {
        "displayName" => (129usize..300).prop_map(|n| json!("n".repeat(n))).boxed(),
        "pid" => prop_oneof![
            (i64::MIN..0).prop_map(Value::from),
            (i64::from(i32::MAX) + 1..=i64::MAX).prop_map(Value::from),
        ]
        .boxed(),
        "cwd" => (4097usize..4200).prop_map(|n| json!("é".repeat(n))).boxed(),
        "hostname" => (256usize..400).prop_map(|n| json!("h".repeat(n))).boxed(),
        "peerType" => ".{0,10}"
            .prop_filter("not a peer type", |s| {
                !matches!(s.as_str(), "ai" | "human" | "connector")
            })
            .prop_map(Value::String)
            .boxed(),
        "channel" | "model" => (129usize..200).prop_map(|n| json!("m".repeat(n))).boxed(),
        "groups" => prop_oneof![
            (65usize..80).prop_map(|n| json!((0..n).map(|i| format!("g{i}")).collect::<Vec<_>>())),
            prop::sample::select(vec!["", "a b", "@all", "*", "/a", "a/", "a//b", "x\ty"])
                .prop_map(|n| json!([n])),
            (0usize..1).prop_map(|_| json!([{"name": "ok", "role": ""}])),
            (65usize..90).prop_map(|n| json!([{"name": "ok", "role": "r".repeat(n)}])),
            (129usize..140).prop_map(|n| json!(["g".repeat(n)])),
        ]
        .boxed(),
        "capabilities" => prop_oneof![
            (17usize..30).prop_map(|n| json!(vec!["c"; n])),
            (129usize..200).prop_map(|n| json!(["c".repeat(n)])),
        ]
        .boxed(),
        "sessionPubkey" => prop_oneof![
            ".{0,63}".prop_map(Value::String),
            "[0-9a-f]{63}".prop_map(Value::String),
            "[g-z]{64}".prop_map(Value::String),
        ]
        .boxed(),
        _ => unreachable!("{field}"),
    }
}

const OPTIONAL: &[&str] = &[
    "displayName",
    "pid",
    "cwd",
    "hostname",
    "peerType",
    "channel",
    "model",
    "groups",
    "capabilities",
    "sessionPubkey",
];

fn hello_case() -> impl Strategy<Value = HelloCase> {
    let optional: Vec<BoxedStrategy<Option<Value>>> = OPTIONAL
        .iter()
        .map(|f| prop::option::weighted(0.4, valid_optional(f)).boxed())
        .collect();
    (
        0..4usize,
        prop_oneof!["[^\\x00]{1,40}", "[0-9a-f-]{36}"],
        prop_oneof![
            "[^\\x00]{1,40}",
            "[0-9a-f-]{36}",
            (120usize..=128).prop_map(|n| "u".repeat(n))
        ],
        prop_oneof![
            "[^\\x00]{1,40}",
            (250usize..=256).prop_map(|n| "s".repeat(n))
        ],
        1i64..4_102_444_800_000,
        -60_000i64..=60_000,
        optional,
    )
        .prop_map(
            |(key, mesh_id, member_id, session_id, ts, skew, optional)| HelloCase {
                key,
                mesh_id,
                member_id,
                session_id,
                ts,
                skew,
                optional: OPTIONAL
                    .iter()
                    .zip(optional)
                    .filter_map(|(k, v)| v.map(|v| ((*k).to_string(), v)))
                    .collect(),
            },
        )
}

/// The code a hello frame gets: parse failures are `malformed`, as the
/// session answers them.
fn hello_outcome(frame: &Map<String, Value>, now: i64) -> Result<Hello, &'static str> {
    match frames::parse(&Value::Object(frame.clone()).to_string()) {
        Ok(i) => match i.frame {
            ClientFrame::Hello(h) => verify(&h, now).map(|()| *h).map_err(|r| r.code),
            other => panic!("a hello parsed as {other:?}"),
        },
        Err(FrameError::MalformedHello(_)) => Err("malformed"),
        Err(e) => panic!("a hello frame gave {e:?}"),
    }
}

/// One change to a valid hello, and what it must lead to.
#[derive(Debug, Clone)]
enum HelloEdit {
    /// A signed string field (`meshId`, `memberId`) to a new value.
    SignedId(&'static str, String),
    /// Another of the test keys as `pubkey`.
    OtherKey(usize),
    PubkeyUppercase,
    PubkeyRandomHex(String),
    Timestamp(i64),
    TimestampNudge(i64),
    SignatureBitFlip(usize, u8),
    /// S + L: the same signature in a non-canonical (malleated) form.
    SignatureMalleated,
    SignatureUppercase,
    SignatureGarbage(String),
    SessionId(String),
    ValidOptional(&'static str, Value),
    InvalidOptional(&'static str, Value),
    Remove(&'static str),
    /// Anything at all in any field: the oracle is "if it verifies, the
    /// signed tuple is the original one".
    Arbitrary(String, Option<Value>),
}

fn hello_edit() -> BoxedStrategy<HelloEdit> {
    let optional_valid = prop::sample::select(OPTIONAL)
        .prop_flat_map(|f| valid_optional(f).prop_map(move |v| HelloEdit::ValidOptional(f, v)));
    let optional_invalid = prop::sample::select(OPTIONAL)
        .prop_flat_map(|f| invalid_optional(f).prop_map(move |v| HelloEdit::InvalidOptional(f, v)));
    prop_oneof![
        (
            prop::sample::select(vec!["meshId", "memberId"]),
            prop_oneof![".{0,40}", (125usize..135).prop_map(|n| "i".repeat(n))]
        )
            .prop_map(|(f, v)| HelloEdit::SignedId(f, v)),
        (0..4usize).prop_map(HelloEdit::OtherKey),
        Just(HelloEdit::PubkeyUppercase),
        "[0-9a-f]{64}".prop_map(HelloEdit::PubkeyRandomHex),
        prop_oneof![any::<i64>(), 1i64..4_102_444_800_000].prop_map(HelloEdit::Timestamp),
        (-2_000i64..2_000).prop_map(HelloEdit::TimestampNudge),
        (0..64usize, 0..8u8).prop_map(|(b, i)| HelloEdit::SignatureBitFlip(b, i)),
        Just(HelloEdit::SignatureMalleated),
        Just(HelloEdit::SignatureUppercase),
        prop_oneof![
            ".{0,130}",
            "[0-9a-f]{127}",
            "[0-9a-f]{129}",
            "[g-z0-9]{128}"
        ]
        .prop_map(HelloEdit::SignatureGarbage),
        prop_oneof![".{0,300}", Just(String::new())].prop_map(HelloEdit::SessionId),
        optional_valid,
        optional_invalid,
        prop::sample::select(vec![
            "meshId",
            "memberId",
            "pubkey",
            "sessionId",
            "timestamp",
            "signature",
            "displayName",
            "pid",
            "cwd",
            "groups",
            "capabilities",
        ])
        .prop_map(HelloEdit::Remove),
        (
            prop_oneof![
                prop::sample::select(FIELDS).prop_map(String::from),
                ".{1,8}"
            ],
            prop::option::weighted(0.9, json_value())
        )
            .prop_map(|(f, v)| HelloEdit::Arbitrary(f, v)),
    ]
    .boxed()
}

/// ed25519's group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The signature with `S + L` in place of `S`: verifies under a lax
/// verifier, must be refused by a strict one (as libsodium does).
fn malleate(sig_hex: &str) -> String {
    let mut sig = hex::decode(sig_hex).unwrap();
    let mut carry = 0u16;
    for (b, l) in sig[32..].iter_mut().zip(L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S < L, so S + L fits");
    hex::encode(sig)
}

/// Applies `edit`; returns the frame and the expected outcome (`Ok(())`,
/// `Err(Some(code))`, or `Err(None)` for "refused, any code"), or `None`
/// when the edit changes nothing.
#[allow(clippy::type_complexity)]
fn apply_hello_edit(
    case: &HelloCase,
    base: &Map<String, Value>,
    edit: &HelloEdit,
) -> Option<(Map<String, Value>, Result<(), Option<&'static str>>)> {
    let mut f = base.clone();
    let now = case.now();
    let sig = f["signature"].as_str().unwrap().to_string();
    let pubkey = keys()[case.key].public_hex.clone();
    // NUL anywhere is malformed (Postgres cannot store it).
    let shape_ok =
        |s: &str, max: usize| !s.is_empty() && s.chars().count() <= max && !s.contains('\0');
    let expect = match edit {
        HelloEdit::SignedId(field, v) => {
            if f[*field] == json!(v) {
                return None;
            }
            f.insert((*field).into(), json!(v));
            Err(Some(if shape_ok(v, 128) {
                "bad_signature"
            } else {
                "malformed"
            }))
        }
        HelloEdit::OtherKey(i) => {
            if *i == case.key {
                return None;
            }
            f.insert("pubkey".into(), json!(keys()[*i].public_hex));
            Err(Some("bad_signature"))
        }
        HelloEdit::PubkeyUppercase => {
            let up = pubkey.to_uppercase();
            if up == pubkey {
                return None;
            }
            // Same key bytes, but the signed text names the key as sent.
            f.insert("pubkey".into(), json!(up));
            Err(Some("bad_signature"))
        }
        HelloEdit::PubkeyRandomHex(k) => {
            if *k == pubkey {
                return None;
            }
            f.insert("pubkey".into(), json!(k));
            Err(None)
        }
        HelloEdit::Timestamp(t) | HelloEdit::TimestampNudge(t) => {
            let t = match edit {
                HelloEdit::TimestampNudge(d) => case.ts + d,
                _ => *t,
            };
            if t == case.ts {
                return None;
            }
            f.insert("timestamp".into(), json!(t));
            Err(Some(if t <= 0 {
                "malformed"
            } else if (i128::from(now) - i128::from(t)).abs() > 60_000 {
                "timestamp_skew"
            } else {
                "bad_signature"
            }))
        }
        HelloEdit::SignatureBitFlip(byte, bit) => {
            let mut b = hex::decode(&sig).unwrap();
            b[*byte] ^= 1 << bit;
            f.insert("signature".into(), json!(hex::encode(b)));
            Err(Some("bad_signature"))
        }
        HelloEdit::SignatureMalleated => {
            f.insert("signature".into(), json!(malleate(&sig)));
            Err(Some("bad_signature"))
        }
        HelloEdit::SignatureUppercase => {
            // Hex is case-insensitive: the same signature bytes.
            f.insert("signature".into(), json!(sig.to_uppercase()));
            Ok(())
        }
        HelloEdit::SignatureGarbage(s) => {
            if s.eq_ignore_ascii_case(&sig) {
                return None;
            }
            f.insert("signature".into(), json!(s));
            Err(None)
        }
        HelloEdit::SessionId(s) => {
            // Not signed (PROTOCOL.md signs meshId|memberId|pubkey|timestamp):
            // only its shape is checked here.
            f.insert("sessionId".into(), json!(s));
            if shape_ok(s, 256) {
                Ok(())
            } else {
                Err(Some("malformed"))
            }
        }
        HelloEdit::ValidOptional(field, v) => {
            f.insert((*field).into(), v.clone());
            Ok(())
        }
        HelloEdit::InvalidOptional(field, v) => {
            f.insert((*field).into(), v.clone());
            Err(Some("malformed"))
        }
        HelloEdit::Remove(field) => {
            f.remove(*field)?;
            if matches!(
                *field,
                "meshId" | "memberId" | "pubkey" | "sessionId" | "timestamp" | "signature"
            ) {
                Err(Some("malformed"))
            } else {
                Ok(())
            }
        }
        HelloEdit::Arbitrary(field, v) => {
            if field == "type" {
                return None;
            }
            match v {
                Some(v) => f.insert(field.clone(), v.clone()),
                None => f.remove(field),
            };
            // Checked by the caller's oracle instead.
            return Some((f, Err(None)));
        }
    };
    Some((f, expect))
}

proptest! {
    #![proptest_config(config(200))]

    /// A valid signed hello verifies; every single change to it gets
    /// exactly the documented outcome: changes to signed fields (and the
    /// signature itself) are refused, unsigned optional fields within their
    /// limits are accepted, beyond them `malformed`.
    #[test]
    fn hello_changes_get_the_documented_outcome(case in hello_case(), edit in hello_edit()) {
        let now = case.now();
        let base = case.frame();
        let original = hello_outcome(&base, now);
        prop_assert!(original.is_ok(), "unmodified hello refused: {:?}", original.err());
        let Some((frame, expect)) = apply_hello_edit(&case, &base, &edit) else {
            return Ok(());
        };
        let got = hello_outcome(&frame, now);
        if let HelloEdit::Arbitrary(..) = edit {
            // Whatever changed, a hello that passes was signed for exactly
            // the (meshId, memberId, pubkey, timestamp) it presents.
            if let Ok(h) = got {
                let kp = &keys()[case.key];
                prop_assert_eq!(&h.mesh_id, &case.mesh_id);
                prop_assert_eq!(&h.member_id, &case.member_id);
                prop_assert_eq!(&h.pubkey, &kp.public_hex);
                prop_assert_eq!(h.timestamp, case.ts);
            }
            return Ok(());
        }
        match (got, expect) {
            (Ok(_), Ok(())) => {}
            (Err(code), Err(Some(want))) => prop_assert_eq!(code, want, "{:?}", frame),
            (Err(_), Err(None)) => {}
            (got, want) => prop_assert!(
                false,
                "{:?}: got {:?}, want {:?}",
                edit,
                got.map(|_| ()),
                want
            ),
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Hello-shaped junk never panics the decoder or the verifier, at any
    /// clock reading the broker could have.
    #[test]
    fn hello_like_json_never_panics(
        obj in plausible_frame(&["hello"]),
        now in prop_oneof![0i64..=4_102_444_800_000, 0i64..=i64::MAX / 2],
    ) {
        let text = Value::Object(obj).to_string();
        if let Ok(frames::Incoming { frame: ClientFrame::Hello(h), .. }) = frames::parse(&text) {
            let _ = verify(&h, now);
        }
    }
}

// ---------------------------------------------------------------------------
// Target::parse, valid_group_name, is_base64
// ---------------------------------------------------------------------------

const WHITESPACE: &[char] = &[
    ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
    '\u{2003}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
];

fn with_whitespace() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            any::<String>(),
            "[0-9a-f]{63,64}",
            group_name().prop_map(|g| format!("@{g}")),
            Just("@all".to_string()),
            Just("*".to_string()),
        ],
        any::<prop::sample::Index>(),
        prop::sample::select(WHITESPACE),
    )
        .prop_map(|(s, at, ws)| {
            let mut chars: Vec<char> = s.chars().collect();
            let i = at.index(chars.len() + 1);
            chars.insert(i, ws);
            chars.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(config(3000))]

    /// Whatever `Target::parse` accepts is one of the three documented
    /// shapes, exactly as given.
    #[test]
    fn target_parse_accepts_only_documented_shapes(spec in prop_oneof![
        any::<String>(),
        interesting_string(),
        "@.{0,20}",
    ]) {
        match Target::parse(&spec) {
            None => {}
            Some(Target::All) => prop_assert!(spec == "*" || spec == "@all"),
            Some(Target::Group(name)) => {
                prop_assert_eq!(format!("@{name}"), spec);
                prop_assert!(valid_group_name(&name));
                prop_assert_ne!(name, "all");
            }
            Some(Target::Key(k)) => {
                prop_assert_eq!(k.len(), 64);
                prop_assert!(k.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                prop_assert_eq!(k, spec.to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn target_parse_accepts_every_hex_key(key in "[0-9a-fA-F]{64}") {
        prop_assert_eq!(Target::parse(&key), Some(Target::Key(key.to_ascii_lowercase())));
    }

    #[test]
    fn target_parse_accepts_every_valid_group(name in group_name()) {
        prop_assert!(valid_group_name(&name), "{}", name);
        let want = if name == "all" { Target::All } else { Target::Group(name.clone()) };
        prop_assert_eq!(Target::parse(&format!("@{name}")), Some(want));
    }

    #[test]
    fn nothing_with_whitespace_is_a_target_or_group(s in with_whitespace()) {
        prop_assert_eq!(Target::parse(&s), None);
        prop_assert!(!valid_group_name(&s));
        if let Some(rest) = s.strip_prefix('@') {
            prop_assert!(!valid_group_name(rest));
        }
    }

    /// Valid group names never collide with target syntax.
    #[test]
    fn valid_group_names_are_clean_paths(name in prop_oneof![
        any::<String>(),
        ".{0,20}",
        "[a-z/@*.:_-]{0,12}",
        (120usize..140).prop_map(|n| "a".repeat(n)),
    ]) {
        if valid_group_name(&name) {
            prop_assert!(!name.is_empty() && name.chars().count() <= 128);
            prop_assert!(!name.starts_with('/') && !name.ends_with('/') && !name.contains("//"));
            prop_assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()
                || matches!(c, '@' | '*' | '"' | '\'' | '\\' | ',')));
        }
    }

    #[test]
    fn is_base64_accepts_every_encoding_and_rejects_other_alphabets(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        junk in any::<String>(),
    ) {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            prop_assert!(is_base64(&engine.encode(&bytes)));
        }
        let alphabet = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_');
        if is_base64(&junk) {
            let body = junk.trim_end_matches('=');
            prop_assert!(junk.len() - body.len() <= 2);
            prop_assert!(body.chars().all(alphabet));
        } else {
            let body = junk.trim_end_matches('=');
            prop_assert!(junk.len() - body.len() > 2 || !body.chars().all(alphabet));
        }
    }
}

// ---------------------------------------------------------------------------
// Invites
// ---------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn invite_payload() -> impl Strategy<Value = InvitePayload> {
    (
        any::<u32>(),
        (any::<String>(), any::<String>(), any::<String>()),
        any::<i64>(),
        (
            any::<String>(),
            any::<String>(),
            "[0-9a-f]{64}|.{0,10}",
            "[0-9a-f]{128}|.{0,10}",
        ),
    )
        .prop_map(
            |(v, (mesh_id, mesh_slug, broker_url), expires_at, (root, role, owner, sig))| {
                InvitePayload {
                    v,
                    mesh_id,
                    mesh_slug,
                    broker_url,
                    expires_at,
                    mesh_root_key: root,
                    role,
                    owner_pubkey: owner,
                    signature: sig,
                }
            },
        )
}

/// Invite-shaped JSON: the real fields with values of the right type or of
/// any type, some missing, some extra.
fn invite_like_json() -> impl Strategy<Value = Value> {
    let fields = [
        "v",
        "mesh_id",
        "mesh_slug",
        "broker_url",
        "expires_at",
        "mesh_root_key",
        "role",
        "owner_pubkey",
        "signature",
    ];
    let values: Vec<BoxedStrategy<Option<Value>>> = fields
        .iter()
        .map(|f| {
            let typed = match *f {
                "v" => prop_oneof![Just(json!(1)), any::<u32>().prop_map(Value::from)].boxed(),
                "expires_at" => json_number(),
                _ => any::<String>().prop_map(Value::String).boxed(),
            };
            prop::option::weighted(0.95, prop_oneof![6 => typed, 1 => json_value()]).boxed()
        })
        .collect();
    (
        values,
        prop::collection::vec((".{1,8}", json_value()), 0..3),
    )
        .prop_map(move |(values, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (f, v) in fields.iter().zip(values) {
                if let Some(v) = v {
                    m.insert((*f).to_string(), v);
                }
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn invite_from_token_never_panics(token in prop_oneof![
        any::<String>(),
        "ic://join/.{0,40}",
        "[A-Za-z0-9_-]{0,80}={0,3}",
        "ic://join/[A-Za-z0-9+/_-]{0,80}",
    ]) {
        if let Some(p) = InvitePayload::from_token(&token) {
            let _ = p.signature_valid();
            prop_assert_eq!(InvitePayload::from_token(&p.to_token()), Some(p));
        }
    }

}

proptest! {
    #![proptest_config(config(1000))]

    /// base64url of any JSON: decodes or not, never panics, and whatever
    /// decodes re-encodes to a token that decodes to the same payload.
    #[test]
    fn decoded_invites_round_trip(
        v in prop_oneof![invite_like_json(), json_value()],
        link in any::<bool>(),
        pad in 0usize..3,
    ) {
        let token = format!(
            "{}{}{}",
            if link { "ic://join/" } else { "" },
            b64url(v.to_string().as_bytes()),
            "=".repeat(pad),
        );
        if let Some(p) = InvitePayload::from_token(&token) {
            let _ = p.signature_valid();
            let again = p.to_token();
            prop_assert_eq!(InvitePayload::from_token(&again), Some(p.clone()));
            prop_assert_eq!(InvitePayload::from_token(&format!("ic://join/{again}")), Some(p));
        }
    }

    #[test]
    fn every_payload_round_trips(p in invite_payload()) {
        prop_assert_eq!(InvitePayload::from_token(&p.to_token()), Some(p.clone()));
        let padded = base64::engine::general_purpose::URL_SAFE
            .encode(serde_json::to_vec(&p).unwrap());
        prop_assert_eq!(InvitePayload::from_token(&format!("ic://join/{padded}")), Some(p));
    }
}

/// One field of an invite changed.
#[derive(Debug, Clone)]
enum InviteEdit {
    V(u32),
    Str(usize, String),
    ExpiresAt(i64),
    OwnerKey(usize),
    SignatureBitFlip(usize, u8),
    SignatureMalleated,
}

proptest! {
    #![proptest_config(config(120))]

    /// A signed invite verifies; any change to any signed field, or to the
    /// signature's bytes, makes it fail.
    #[test]
    fn invite_signatures_cover_every_field(
        p in invite_payload(),
        key in 0..4usize,
        edit in prop_oneof![
            any::<u32>().prop_map(InviteEdit::V),
            (0..5usize, any::<String>()).prop_map(|(i, s)| InviteEdit::Str(i, s)),
            any::<i64>().prop_map(InviteEdit::ExpiresAt),
            (0..4usize).prop_map(InviteEdit::OwnerKey),
            (0..64usize, 0..8u8).prop_map(|(b, i)| InviteEdit::SignatureBitFlip(b, i)),
            Just(InviteEdit::SignatureMalleated),
        ],
    ) {
        let kp = &keys()[key];
        let mut p = p;
        p.owner_pubkey = kp.public_hex.clone();
        p.sign(&kp.secret_hex).unwrap();
        prop_assert!(p.signature_valid());
        let decoded = InvitePayload::from_token(&p.to_token()).unwrap();
        prop_assert!(decoded.signature_valid(), "valid after a token round trip");
        let mut q = p.clone();
        match &edit {
            InviteEdit::V(v) => q.v = *v,
            InviteEdit::Str(i, s) => {
                let field = match i {
                    0 => &mut q.mesh_id,
                    1 => &mut q.mesh_slug,
                    2 => &mut q.broker_url,
                    3 => &mut q.mesh_root_key,
                    _ => &mut q.role,
                };
                *field = s.clone();
            }
            InviteEdit::ExpiresAt(t) => q.expires_at = *t,
            InviteEdit::OwnerKey(i) => q.owner_pubkey = keys()[*i].public_hex.clone(),
            InviteEdit::SignatureBitFlip(b, i) => {
                let mut sig = hex::decode(&q.signature).unwrap();
                sig[*b] ^= 1 << i;
                q.signature = hex::encode(sig);
            }
            InviteEdit::SignatureMalleated => q.signature = malleate(&q.signature),
        }
        if q != p {
            prop_assert!(!q.signature_valid(), "{:?} still verifies", edit);
        }
    }
}

// ---------------------------------------------------------------------------
// Audit chain
// ---------------------------------------------------------------------------

/// One entry's content before hashing.
#[derive(Debug, Clone)]
struct EntrySpec {
    event_type: String,
    actor_member_id: Option<String>,
    actor_name: Option<String>,
    payload: Value,
    created_ms: i64,
}

fn entry_spec() -> impl Strategy<Value = EntrySpec> {
    (
        prop_oneof![
            prop::sample::select(vec!["peer_joined", "message_sent", "member_added"])
                .prop_map(String::from),
            ".{0,12}"
        ],
        prop::option::of(".{0,12}"),
        prop::option::of(".{0,12}"),
        json_value(),
        // Up to the year 9999.
        0i64..253_402_300_799_999,
    )
        .prop_map(
            |(event_type, actor_member_id, actor_name, payload, created_ms)| EntrySpec {
                event_type,
                actor_member_id,
                actor_name,
                payload,
                created_ms,
            },
        )
}

/// A valid chain of `specs` from `start` (genesis or a checkpoint).
fn build_chain(mesh_id: &str, start: Option<&Checkpoint>, specs: &[EntrySpec]) -> Vec<Entry> {
    let (mut seq, mut prev) = match start {
        Some(c) => (c.seq, c.hash.clone()),
        None => (0, GENESIS.to_string()),
    };
    specs
        .iter()
        .map(|s| {
            seq += 1;
            let created_at = DateTime::<Utc>::from_timestamp_millis(s.created_ms).unwrap();
            let hash = entry_hash(
                mesh_id,
                seq,
                &s.event_type,
                s.actor_member_id.as_deref(),
                s.actor_name.as_deref(),
                &s.payload,
                &prev,
                created_at,
            );
            let e = Entry {
                mesh_id: mesh_id.to_string(),
                seq,
                event_type: s.event_type.clone(),
                actor_member_id: s.actor_member_id.clone(),
                actor_name: s.actor_name.clone(),
                payload: s.payload.clone(),
                prev_hash: prev.clone(),
                hash: hash.clone(),
                created_at,
            };
            prev = hash;
            e
        })
        .collect()
}

/// One field of one entry changed.
#[derive(Debug, Clone)]
enum Tamper {
    MeshId(String),
    Seq(i64),
    EventType(String),
    Actor(Option<String>),
    ActorName(Option<String>),
    Payload(Value),
    PrevHash(String),
    Hash(String),
    HashCase,
    /// Moves `created_at` by this many nanoseconds (sub-millisecond too).
    CreatedAt(i64),
    Delete,
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        ".{0,12}".prop_map(Tamper::MeshId),
        prop_oneof![edgy_i64(), -3i64..10].prop_map(Tamper::Seq),
        ".{0,12}".prop_map(Tamper::EventType),
        prop::option::of(".{0,12}").prop_map(Tamper::Actor),
        prop::option::of(".{0,12}").prop_map(Tamper::ActorName),
        json_value().prop_map(Tamper::Payload),
        prop_oneof!["[0-9a-f]{64}", ".{0,8}", Just(GENESIS.to_string())].prop_map(Tamper::PrevHash),
        prop_oneof!["[0-9a-f]{64}", ".{0,8}"].prop_map(Tamper::Hash),
        Just(Tamper::HashCase),
        prop_oneof![
            -1_000_000_000_000i64..1_000_000_000_000,
            -999_999i64..999_999,
            (-5i64..5).prop_map(|ms| ms * 1_000_000),
        ]
        .prop_map(Tamper::CreatedAt),
        Just(Tamper::Delete),
    ]
}

/// Applies `t` to entry `i`; false when it changed nothing.
fn apply_tamper(chain: &mut Vec<Entry>, i: usize, t: &Tamper) -> bool {
    let before = chain.clone();
    let e = &mut chain[i];
    match t {
        Tamper::MeshId(s) => e.mesh_id = s.clone(),
        Tamper::Seq(s) => e.seq = *s,
        Tamper::EventType(s) => e.event_type = s.clone(),
        Tamper::Actor(a) => e.actor_member_id = a.clone(),
        Tamper::ActorName(a) => e.actor_name = a.clone(),
        Tamper::Payload(p) => e.payload = p.clone(),
        Tamper::PrevHash(h) => e.prev_hash = h.clone(),
        Tamper::Hash(h) => e.hash = h.clone(),
        Tamper::HashCase => e.hash = e.hash.to_uppercase(),
        Tamper::CreatedAt(ns) => {
            e.created_at += chrono::Duration::nanoseconds(*ns);
        }
        Tamper::Delete => {
            // Dropping the newest entry is a truncation, which a chain
            // cannot see by itself (there is no later entry to disagree).
            if i + 1 == chain.len() {
                return false;
            }
            chain.remove(i);
        }
    }
    *chain != before
}

fn checkpoint() -> impl Strategy<Value = Option<Checkpoint>> {
    prop::option::of(
        (
            prop_oneof![0i64..1_000_000, 0i64..i64::MAX / 2],
            "[0-9a-f]{64}",
        )
            .prop_map(|(seq, hash)| Checkpoint { seq, hash }),
    )
}

proptest! {
    #![proptest_config(config(1000))]

    /// A chain built by the rules verifies; changing any one field of any
    /// one entry (or removing an entry before the tail) is caught, at that
    /// entry or an earlier one.
    #[test]
    fn audit_tampering_is_always_located(
        mesh_id in ".{0,12}",
        start in checkpoint(),
        specs in prop::collection::vec(entry_spec(), 1..8),
        at in any::<prop::sample::Index>(),
        t in tamper(),
    ) {
        let mut chain = build_chain(&mesh_id, start.as_ref(), &specs);
        let verdict = audit::verify(start.as_ref(), &chain);
        prop_assert!(verdict.valid, "{:?}", verdict);
        prop_assert_eq!(verdict.entries, chain.len());
        prop_assert_eq!(verdict.broken_at, None);
        let i = at.index(chain.len());
        let seq = chain[i].seq;
        if !apply_tamper(&mut chain, i, &t) {
            return Ok(());
        }
        let verdict = audit::verify(start.as_ref(), &chain);
        prop_assert!(!verdict.valid, "{:?} on entry {} went unnoticed", t, seq);
        let broken = verdict.broken_at.expect("broken_at on an invalid chain");
        prop_assert!(broken <= seq, "{:?} on {} reported at {}", t, seq, broken);
        let first = start.as_ref().map_or(1, |c| c.seq + 1);
        prop_assert!(broken >= first, "broken_at {} before the chain starts", broken);
    }

    /// Arbitrary entries and checkpoints never panic the verifier.
    #[test]
    fn audit_verify_never_panics(
        start in prop::option::of((edgy_i64(), ".{0,64}")
            .prop_map(|(seq, hash)| Checkpoint { seq, hash })),
        entries in prop::collection::vec(
            (edgy_i64(), entry_spec(), ".{0,64}", ".{0,64}"),
            0..6,
        ),
    ) {
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|(seq, s, prev_hash, hash)| Entry {
                mesh_id: "m".into(),
                seq,
                event_type: s.event_type,
                actor_member_id: s.actor_member_id,
                actor_name: s.actor_name,
                payload: s.payload,
                prev_hash,
                hash,
                created_at: DateTime::<Utc>::from_timestamp_millis(s.created_ms).unwrap(),
            })
            .collect();
        let v = audit::verify(start.as_ref(), &entries);
        prop_assert_eq!(v.entries, entries.len());
        prop_assert_eq!(v.valid, v.broken_at.is_none());
    }

    /// The canonical form is serde_json's compact, sorted-key form (so any
    /// JSON library that sorts keys reproduces it) and parses back to the
    /// same value.
    #[test]
    fn canonical_json_is_compact_sorted_and_faithful(v in json_value()) {
        let mut out = String::new();
        canonical_json(&v, &mut out);
        prop_assert_eq!(&out, &serde_json::to_string(&v).unwrap());
        let back: Value = serde_json::from_str(&out).unwrap();
        let mut again = String::new();
        canonical_json(&back, &mut again);
        if !has_float(&v) {
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(again, out);
        }
    }
}

/// Any i64, often an extreme one (uniform draws never hit the edges).
fn edgy_i64() -> BoxedStrategy<i64> {
    prop_oneof![
        any::<i64>(),
        prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            i64::MAX - 1,
            i64::MAX
        ]),
    ]
    .boxed()
}

/// Floats may not survive serde_json's default (fast, not exact) parser.
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}
