use super::*;

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
