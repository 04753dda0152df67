use super::hello_props::{keys, malleate};
use super::*;

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
