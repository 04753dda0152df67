//! `session_hello` (PROTOCOL-SESSIONS.md §3): the 1.37 daemon's handshake
//! for one launched Claude Code session, signed by the session's own key
//! and vouched for by the member's key. The checks that need no database,
//! in the order of §3's table; the engine runs the capacity check between
//! the two halves, and membership and replay after them.

use serde::Deserialize;
use serde_json::Value;

use super::crypto;
use super::hello::{check_session_fields, HelloRefusal, SessionFields};
use super::limits::*;
use super::types::{de_groups, GroupRef};

pub const SESSION_HELLO: &str = "session_hello";

/// Longest an attestation may still be valid for (§3 check 5c).
pub const MAX_ATTESTATION_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionHello {
    pub mesh_id: String,
    #[serde(default)]
    pub parent_member_id: Option<String>,
    /// Checked by hand (its own refusal codes), so any JSON is accepted here.
    #[serde(default)]
    pub parent_member_pubkey: Value,
    #[serde(default)]
    pub session_pubkey: Value,
    #[serde(default)]
    pub parent_attestation: Value,
    #[serde(default)]
    pub display_name: Option<String>,
    pub session_id: String,
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub peer_type: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "de_groups")]
    pub groups: Option<Vec<GroupRef>>,
    pub timestamp: i64,
    pub signature: String,
}

/// Deserialises a `session_hello`: a missing or mistyped `meshId`,
/// `sessionId`, `timestamp` or `signature` is check 0, `malformed`.
pub fn parse_session_hello(text: &str) -> Result<SessionHello, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid session_hello: {e}"))
}

fn lower_hex_key(v: &Value) -> Option<&str> {
    let s = v.as_str()?;
    (s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(s)
}

fn hex_signature(s: &str) -> bool {
    s.len() == 128 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl SessionHello {
    /// The session key, once check 1 has passed.
    pub fn session_key(&self) -> &str {
        self.session_pubkey.as_str().unwrap_or("")
    }

    /// The member key, once check 2 has passed.
    pub fn parent_key(&self) -> &str {
        self.parent_member_pubkey.as_str().unwrap_or("")
    }
}

/// Checks 0 to 3: field shapes, both keys, the attestation's keys.
pub fn check_keys(h: &SessionHello) -> Result<(), HelloRefusal> {
    check_fields(h)?;
    let Some(session) = lower_hex_key(&h.session_pubkey) else {
        return Err(HelloRefusal::new(
            "bad_session_pubkey",
            "`sessionPubkey` must be 64 lowercase hex characters",
        ));
    };
    let Some(parent) = lower_hex_key(&h.parent_member_pubkey) else {
        return Err(HelloRefusal::new(
            "bad_parent_pubkey",
            "`parentMemberPubkey` must be 64 lowercase hex characters",
        ));
    };
    let a = &h.parent_attestation;
    let same = a.is_object()
        && a.get("sessionPubkey").and_then(Value::as_str) == Some(session)
        && a.get("parentMemberPubkey").and_then(Value::as_str) == Some(parent);
    if !same {
        return Err(HelloRefusal::new(
            "attestation_mismatch",
            "`parentAttestation` must name the same sessionPubkey and parentMemberPubkey",
        ));
    }
    Ok(())
}

/// The text the attestation signature covers.
pub fn attestation_text(parent: &str, session: &str, expires_at: i64) -> String {
    format!("claudemesh-session-attest|{parent}|{session}|{expires_at}")
}

/// The text the session's own signature covers.
pub fn signed_text(h: &SessionHello) -> String {
    format!(
        "claudemesh-session-hello|{}|{}|{}|{}",
        h.mesh_id,
        h.parent_key(),
        h.session_key(),
        h.timestamp
    )
}

fn verifies(key_hex: &str, text: &str, sig_hex: &str) -> bool {
    match (
        crypto::parse_pubkey(key_hex),
        crypto::parse_signature(sig_hex),
    ) {
        (Some(key), Some(sig)) => crypto::verify(&key, text.as_bytes(), &sig),
        _ => false,
    }
}

/// Checks 5 and 6: the attestation's lifetime and signature, then the
/// clock and the session's signature. Run after [`check_keys`].
pub fn check_signatures(h: &SessionHello, now_ms: i64) -> Result<(), HelloRefusal> {
    let a = &h.parent_attestation;
    let expires_at = match a.get("expiresAt") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        _ => None,
    }
    .ok_or_else(|| {
        HelloRefusal::new(
            "malformed",
            "`parentAttestation.expiresAt` must be a number",
        )
    })?;
    if expires_at <= now_ms {
        return Err(HelloRefusal::new(
            "expired",
            "the parent attestation has expired",
        ));
    }
    if expires_at > now_ms + MAX_ATTESTATION_MS {
        return Err(HelloRefusal::new(
            "ttl_too_long",
            "the parent attestation may be valid for 24 hours at most",
        ));
    }
    let sig = a.get("signature").and_then(Value::as_str).unwrap_or("");
    if !hex_signature(sig) {
        return Err(HelloRefusal::new(
            "malformed",
            "`parentAttestation.signature` must be 128 hex characters",
        ));
    }
    let text = attestation_text(h.parent_key(), h.session_key(), expires_at);
    if !verifies(h.parent_key(), &text, sig) {
        return Err(HelloRefusal::new(
            "bad_signature",
            "the parent attestation does not verify",
        ));
    }
    if (now_ms - h.timestamp).abs() > HELLO_SKEW_MS {
        return Err(HelloRefusal::new(
            "timestamp_skew",
            "session_hello timestamp is more than 60 s from the broker's clock",
        ));
    }
    if !hex_signature(&h.signature) {
        return Err(HelloRefusal::new(
            "malformed",
            "`signature` must be 128 hex characters",
        ));
    }
    if !verifies(h.session_key(), &signed_text(h), &h.signature) {
        return Err(HelloRefusal::new(
            "bad_signature",
            "session_hello signature does not verify",
        ));
    }
    Ok(())
}

/// Check 0 beyond what deserialising already refused: lengths and labels,
/// the same bounds as a `hello`'s.
fn check_fields(h: &SessionHello) -> Result<(), HelloRefusal> {
    let malformed = |m: String| HelloRefusal::new("malformed", m);
    for (name, value, max) in [
        ("meshId", &h.mesh_id, MAX_ID),
        ("sessionId", &h.session_id, MAX_SESSION_ID),
    ] {
        if value.is_empty() || !within(value, max) {
            return Err(malformed(format!("`{name}` must be 1 to {max} characters")));
        }
    }
    if h.parent_member_id
        .as_ref()
        .is_some_and(|v| !within(v, MAX_ID))
    {
        return Err(malformed("`parentMemberId` is too long".into()));
    }
    check_session_fields(&SessionFields {
        pid: h.pid,
        display_name: &h.display_name,
        cwd: &h.cwd,
        hostname: &h.hostname,
        peer_type: &h.peer_type,
        channel: &h.channel,
        model: &h.model,
        groups: &h.groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The clients' vector as a frame, with `edit` applied.
    fn vector_frame(edit: impl FnOnce(&mut Value)) -> SessionHello {
        let v = vectors();
        let s = &v["session_hello"];
        let mut f = json!({
            "type": "session_hello", "meshId": s["meshId"],
            "parentMemberPubkey": s["parentMemberPubkey"], "sessionPubkey": s["sessionPubkey"],
            "parentAttestation": {"sessionPubkey": s["sessionPubkey"],
                "parentMemberPubkey": s["parentMemberPubkey"],
                "expiresAt": s["attestation"]["expiresAt"],
                "signature": s["attestation"]["signature"]},
            "sessionId": "s1", "timestamp": s["timestamp"], "signature": s["signature"],
        });
        edit(&mut f);
        parse_session_hello(&f.to_string()).unwrap()
    }

    fn now_of_vector() -> i64 {
        vectors()["session_hello"]["timestamp"].as_i64().unwrap() + 1_000
    }

    #[test]
    fn the_clients_vector_verifies_and_signs_the_documented_texts() {
        let v = vectors();
        let s = &v["session_hello"];
        let h = vector_frame(|_| {});
        assert_eq!(signed_text(&h), s["signedText"].as_str().unwrap());
        assert_eq!(
            attestation_text(
                h.parent_key(),
                h.session_key(),
                s["attestation"]["expiresAt"].as_i64().unwrap()
            ),
            s["attestation"]["signedText"].as_str().unwrap()
        );
        assert_eq!(check_keys(&h), Ok(()));
        assert_eq!(check_signatures(&h, now_of_vector()), Ok(()));
    }

    #[test]
    fn each_check_has_its_code_in_order() {
        let code = |edit: &dyn Fn(&mut Value)| {
            let h = vector_frame(|f| edit(f));
            check_keys(&h)
                .and_then(|()| check_signatures(&h, now_of_vector()))
                .unwrap_err()
                .code
        };
        let upper = |k: &str| {
            vectors()["session_hello"][k]
                .as_str()
                .unwrap()
                .to_uppercase()
        };
        assert_eq!(
            code(&|f| f["sessionPubkey"] = json!(upper("sessionPubkey"))),
            "bad_session_pubkey"
        );
        assert_eq!(
            code(&|f| f["sessionPubkey"] = json!(7)),
            "bad_session_pubkey"
        );
        assert_eq!(
            code(&|f| f["parentMemberPubkey"] = json!("ab")),
            "bad_parent_pubkey"
        );
        assert_eq!(
            code(&|f| f["parentAttestation"] = json!("x")),
            "attestation_mismatch"
        );
        assert_eq!(
            code(&|f| f["parentAttestation"]["sessionPubkey"] = f["parentMemberPubkey"].clone()),
            "attestation_mismatch"
        );
        assert_eq!(
            code(&|f| f["parentAttestation"]["expiresAt"] = json!("soon")),
            "malformed"
        );
        assert_eq!(
            code(&|f| f["parentAttestation"]["expiresAt"] = json!(1)),
            "expired"
        );
        assert_eq!(
            code(&|f| f["parentAttestation"]["expiresAt"] =
                json!(now_of_vector() + MAX_ATTESTATION_MS + 1)),
            "ttl_too_long"
        );
        assert_eq!(
            code(&|f| f["parentAttestation"]["signature"] = json!("00")),
            "malformed"
        );
        assert_eq!(
            code(&|f| f["parentAttestation"]["signature"] = f["signature"].clone()),
            "bad_signature"
        );
        assert_eq!(
            code(&|f| f["timestamp"] = json!(now_of_vector() + 61_000)),
            "timestamp_skew"
        );
        assert_eq!(code(&|f| f["signature"] = json!("zz")), "malformed");
        assert_eq!(
            code(&|f| f["signature"] = f["parentAttestation"]["signature"].clone()),
            "bad_signature"
        );
        assert_eq!(
            code(&|f| f["displayName"] = json!("n".repeat(200))),
            "malformed"
        );
        for broken in [
            json!({"type": "session_hello"}),
            json!({"type": "session_hello", "meshId": "m",
            "sessionId": "s", "timestamp": "now", "signature": "x"}),
        ] {
            assert!(
                parse_session_hello(&broken.to_string()).is_err(),
                "check 0: {broken}"
            );
        }
    }
}
