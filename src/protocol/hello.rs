//! Hello checks that need no database: field shapes, clock skew, signature.
//! Membership and capacity are the engine's (they need the Store).

use serde::Deserialize;

use super::crypto;
use super::limits::*;
use super::presence::validate_group;
use super::types::{de_groups, GroupRef};

/// The first frame of a v1 session.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub mesh_id: String,
    pub member_id: String,
    pub pubkey: String,
    #[serde(default)]
    pub session_pubkey: Option<String>,
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
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    pub timestamp: i64,
    pub signature: String,
}

/// The frame types that open a session.
pub const HELLO: &str = "hello";

/// Deserialises a `hello` (its checks are [`verify`]'s).
pub fn parse_hello(text: &str) -> Result<Hello, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid hello: {e}"))
}

/// A refused hello: the code PROTOCOL.md names and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloRefusal {
    pub code: &'static str,
    pub message: String,
}

impl HelloRefusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn malformed(message: impl Into<String>) -> Self {
        Self::new("malformed", message)
    }
}

/// The text a hello signature covers: `meshId|memberId|pubkey|timestamp`.
pub fn signed_text(h: &Hello) -> String {
    format!("{}|{}|{}|{}", h.mesh_id, h.member_id, h.pubkey, h.timestamp)
}

/// Checks shape, then skew, then signature, in that order, so a client
/// learns the cheapest thing wrong first.
pub fn verify(h: &Hello, now_ms: i64) -> Result<(), HelloRefusal> {
    check_shape(h)?;
    if (now_ms - h.timestamp).abs() > HELLO_SKEW_MS {
        return Err(HelloRefusal::new(
            "timestamp_skew",
            "hello timestamp is more than 60 s from the broker's clock",
        ));
    }
    let key = crypto::parse_pubkey(&h.pubkey)
        .ok_or_else(|| HelloRefusal::malformed("`pubkey` is not a valid ed25519 key"))?;
    let sig = crypto::parse_signature(&h.signature)
        .ok_or_else(|| HelloRefusal::malformed("`signature` must be 128 hex characters"))?;
    if !crypto::verify(&key, signed_text(h).as_bytes(), &sig) {
        return Err(HelloRefusal::new(
            "bad_signature",
            "signature does not verify for this pubkey",
        ));
    }
    Ok(())
}

fn check_shape(h: &Hello) -> Result<(), HelloRefusal> {
    let ids = [
        ("meshId", &h.mesh_id, MAX_ID),
        ("memberId", &h.member_id, MAX_ID),
        ("sessionId", &h.session_id, MAX_SESSION_ID),
    ];
    for (name, value, max) in ids {
        if value.is_empty() || !within(value, max) {
            return Err(HelloRefusal::malformed(format!(
                "`{name}` must be 1 to {max} characters"
            )));
        }
    }
    if !crypto::is_pubkey_hex(&h.pubkey) {
        return Err(HelloRefusal::malformed(
            "`pubkey` must be 64 hex characters",
        ));
    }
    if let Some(sp) = &h.session_pubkey {
        if !crypto::is_pubkey_hex(sp) || crypto::parse_pubkey(sp).is_none() {
            return Err(HelloRefusal::malformed(
                "`sessionPubkey` must be 64 hex characters of an ed25519 key",
            ));
        }
    }
    if h.signature.len() != 128 || !h.signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HelloRefusal::malformed(
            "`signature` must be 128 hex characters",
        ));
    }
    if h.timestamp <= 0 {
        return Err(HelloRefusal::malformed(
            "`timestamp` must be positive milliseconds",
        ));
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
    })?;
    if let Some(caps) = &h.capabilities {
        if caps.len() > MAX_HELLO_CAPS || caps.iter().any(|c| !within(c, MAX_LABEL)) {
            return Err(HelloRefusal::malformed(
                "too many or too long `capabilities`",
            ));
        }
    }
    Ok(())
}

/// What both handshakes say about where a session runs.
pub(super) struct SessionFields<'a> {
    pub pid: Option<i64>,
    pub display_name: &'a Option<String>,
    pub cwd: &'a Option<String>,
    pub hostname: &'a Option<String>,
    pub peer_type: &'a Option<String>,
    pub channel: &'a Option<String>,
    pub model: &'a Option<String>,
    pub groups: &'a Option<Vec<GroupRef>>,
}

/// The bounds both handshakes put on those fields (`malformed` past them).
pub(super) fn check_session_fields(f: &SessionFields) -> Result<(), HelloRefusal> {
    if let Some(pid) = f.pid {
        if !(0..=i64::from(i32::MAX)).contains(&pid) {
            return Err(HelloRefusal::malformed("`pid` is out of range"));
        }
    }
    let optional = [
        ("displayName", f.display_name, MAX_DISPLAY_NAME),
        ("cwd", f.cwd, MAX_CWD),
        ("hostname", f.hostname, MAX_HOSTNAME),
        ("channel", f.channel, MAX_LABEL),
        ("model", f.model, MAX_LABEL),
    ];
    for (name, value, max) in optional {
        if value.as_ref().is_some_and(|v| !within(v, max)) {
            return Err(HelloRefusal::malformed(format!(
                "`{name}` is over {max} characters"
            )));
        }
    }
    if let Some(pt) = f.peer_type {
        if !matches!(pt.as_str(), "ai" | "human" | "connector") {
            return Err(HelloRefusal::malformed(
                "`peerType` must be ai, human or connector",
            ));
        }
    }
    if let Some(groups) = f.groups {
        if groups.len() > MAX_GROUPS {
            return Err(HelloRefusal::malformed(format!(
                "at most {MAX_GROUPS} groups"
            )));
        }
        for g in groups {
            validate_group(g).map_err(HelloRefusal::malformed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn hello_from(v: Value) -> Hello {
        parse_hello(&v.to_string()).unwrap()
    }

    #[test]
    fn hello_groups_accept_names_and_objects() {
        let text = r#"{"type":"hello","meshId":"m","memberId":"u","pubkey":"k","sessionId":"s",
            "timestamp":1,"signature":"x","groups":["a",{"name":"b","role":"lead"}]}"#;
        let groups = parse_hello(text).unwrap().groups.unwrap();
        assert_eq!(groups[0].name, "a");
        assert_eq!(groups[1].role.as_deref(), Some("lead"));
        assert!(parse_hello(r#"{"type":"hello","meshId":"m"}"#).is_err());
    }

    fn vector_hello(sig: &str) -> Hello {
        let v = vectors();
        let h = &v["hello"];
        hello_from(
            json!({"type":"hello","meshId":h["meshId"],"memberId":h["memberId"],
            "pubkey":h["pubkey"],"sessionId":"s1","timestamp":h["timestamp"],"signature":sig}),
        )
    }

    #[test]
    fn libsodium_hello_vector_verifies() {
        let v = vectors();
        let hello = vector_hello(v["hello"]["signature"].as_str().unwrap());
        assert_eq!(
            signed_text(&hello),
            v["hello"]["signedText"].as_str().unwrap()
        );
        let ts = hello.timestamp;
        assert_eq!(verify(&hello, ts + 1000), Ok(()));
        let bad = vector_hello(v["hello_bad_signature"].as_str().unwrap());
        assert_eq!(verify(&bad, ts).unwrap_err().code, "bad_signature");
    }

    #[test]
    fn skew_is_checked_both_ways() {
        let v = vectors();
        let hello = vector_hello(v["hello"]["signature"].as_str().unwrap());
        let ts = hello.timestamp;
        assert_eq!(
            verify(&hello, ts + 60_001).unwrap_err().code,
            "timestamp_skew"
        );
        assert_eq!(
            verify(&hello, ts - 60_001).unwrap_err().code,
            "timestamp_skew"
        );
        assert!(verify(&hello, ts + 60_000).is_ok());
    }

    #[test]
    fn every_malformed_field_is_named() {
        let v = vectors();
        let base = || {
            let h = &v["hello"];
            json!({"type":"hello","meshId":h["meshId"],"memberId":h["memberId"],
                "pubkey":h["pubkey"],"sessionId":"s1","timestamp":h["timestamp"],
                "signature":h["signature"]})
        };
        let cases: Vec<(&str, Value)> = vec![
            ("pubkey", json!("abc")),
            ("pubkey", json!("zz".repeat(32))),
            ("sessionPubkey", json!("12")),
            ("signature", json!("00")),
            ("meshId", json!("")),
            ("sessionId", json!("x".repeat(300))),
            ("displayName", json!("n".repeat(129))),
            ("cwd", json!("c".repeat(4097))),
            ("pid", json!(-1)),
            ("pid", json!(1i64 << 40)),
            ("peerType", json!("robot")),
            ("groups", json!([{"name":"bad name"}])),
            (
                "groups",
                json!((0..65).map(|i| format!("g{i}")).collect::<Vec<_>>()),
            ),
            ("timestamp", json!(-5)),
        ];
        for (field, value) in cases {
            let mut frame = base();
            frame[field] = value;
            let err = verify(
                &hello_from(frame),
                v["hello"]["timestamp"].as_i64().unwrap(),
            );
            assert_eq!(
                err.clone().unwrap_err().code,
                "malformed",
                "{field}: {err:?}"
            );
        }
    }
}
