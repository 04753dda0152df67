use super::*;

// ---------------------------------------------------------------------------
// hello::verify
// ---------------------------------------------------------------------------

/// A few keys, made once: key generation is not what is under test.
pub(crate) fn keys() -> &'static [KeyPair] {
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
    match dispatch::parse(&Value::Object(frame.clone()).to_string()) {
        Parsed::Hello(_, Ok(h)) => verify(&h, now).map(|()| *h).map_err(|r| r.code),
        Parsed::Hello(_, Err(_)) => Err("malformed"),
        _ => panic!("a hello frame did not parse as a hello"),
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
pub(crate) fn malleate(sig_hex: &str) -> String {
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
        if let Parsed::Hello(_, Ok(h)) = dispatch::parse(&text) {
            let _ = verify(&h, now);
        }
    }
}
