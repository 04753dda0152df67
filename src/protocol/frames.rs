//! Client frames as parsed from the wire and the broker's replies. Parsing
//! is two-step: a cheap head (`type`, `_reqId`, `id`) picks the frame, then
//! only that frame's struct is deserialised, so an unknown or broken frame
//! costs one pass and yields a precise error.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::limits::*;

/// Presence status as the wire spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Idle,
    Working,
    Dnd,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Working => "working",
            Status::Dnd => "dnd",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "idle" => Some(Status::Idle),
            "working" => Some(Status::Working),
            "dnd" => Some(Status::Dnd),
            _ => None,
        }
    }
}

/// A group membership as carried in hello, presence and member state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Hello groups may be `{"name","role"}` objects or bare names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GroupEntry {
    Name(String),
    Ref(GroupRef),
}

/// Deserialises a group list given as names, `{"name","role"}` objects or both.
pub fn de_groups<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<GroupRef>>, D::Error> {
    let entries: Option<Vec<GroupEntry>> = Option::deserialize(d)?;
    Ok(entries.map(|v| {
        v.into_iter()
            .map(|e| match e {
                GroupEntry::Name(name) => GroupRef { name, role: None },
                GroupEntry::Ref(r) => r,
            })
            .collect()
    }))
}

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

/// Public profile fields of `set_profile`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendFrame {
    pub id: String,
    pub target_spec: String,
    #[serde(default)]
    pub priority: Option<String>,
    pub nonce: String,
    pub ciphertext: String,
}

#[derive(Debug, Clone)]
pub enum ClientFrame {
    Hello(Box<Hello>),
    ListPeers,
    SetStatus(Status),
    SetSummary(String),
    SetVisible(bool),
    SetProfile(Profile),
    SetStats(Map<String, Value>),
    JoinGroup(GroupRef),
    LeaveGroup(String),
    Send(SendFrame),
    ClientAck(String),
}

/// One parsed frame plus the correlation fields every reply echoes.
#[derive(Debug)]
pub struct Incoming {
    pub frame: ClientFrame,
    pub req_id: Option<String>,
    /// `id` when the frame carried a string one (echoed by `ack`s).
    pub id: Option<String>,
}

/// Why a frame could not be used. `Send` errors are answered with an
/// `ack` (clients wait for one); the rest with an `error` frame.
#[derive(Debug, PartialEq)]
pub enum FrameError {
    BadRequest {
        req_id: Option<String>,
        message: String,
    },
    BadSend {
        req_id: Option<String>,
        id: Option<String>,
        message: String,
    },
    /// A hello whose fields are missing or of the wrong type.
    MalformedHello(String),
}

/// The fields every frame may carry. Read by hand rather than derived so
/// that a repeated key takes its last value (as JavaScript's `JSON.parse`
/// does) instead of failing the whole frame: a `send` with a duplicate key
/// must still be recognised, and acked.
#[derive(Default)]
struct Head {
    ty: Option<Value>,
    req_id: Option<Value>,
    id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum HeadKey {
    #[serde(rename = "type")]
    Type,
    #[serde(rename = "_reqId")]
    ReqId,
    #[serde(rename = "id")]
    Id,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadVisitor;
        impl<'de> serde::de::Visitor<'de> for HeadVisitor {
            type Value = Head;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut head = Head::default();
                while let Some(key) = map.next_key::<HeadKey>()? {
                    let slot = match key {
                        HeadKey::Type => &mut head.ty,
                        HeadKey::ReqId => &mut head.req_id,
                        HeadKey::Id => &mut head.id,
                        HeadKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(head)
            }
        }
        d.deserialize_map(HeadVisitor)
    }
}

fn string_of(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}
#[derive(Deserialize)]
struct SummaryBody {
    summary: String,
}
#[derive(Deserialize)]
struct VisibleBody {
    visible: bool,
}
#[derive(Deserialize)]
struct StatsBody {
    stats: Map<String, Value>,
}
#[derive(Deserialize)]
struct GroupBody {
    name: String,
    #[serde(default)]
    role: Option<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AckBody {
    message_id: String,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Incoming, FrameError> {
    let head: Head = serde_json::from_str(text).map_err(|_| FrameError::BadRequest {
        req_id: None,
        message: "frame is not a JSON object".into(),
    })?;
    let req_id = string_of(head.req_id);
    let id = string_of(head.id);
    let Some(Value::String(ty)) = head.ty else {
        return Err(FrameError::BadRequest {
            req_id,
            message: "frame has no string `type`".into(),
        });
    };
    let bad = |message: String| FrameError::BadRequest {
        req_id: req_id.clone(),
        message,
    };
    if has_nul(text.as_bytes()) {
        const NUL: &str = "NUL characters are not allowed";
        return Err(match ty.as_str() {
            "hello" => FrameError::MalformedHello(NUL.into()),
            "send" => FrameError::BadSend {
                req_id: req_id.clone(),
                id,
                message: NUL.into(),
            },
            _ => bad(NUL.into()),
        });
    }
    let frame = match ty.as_str() {
        "hello" => {
            let hello: Hello = serde_json::from_str(text)
                .map_err(|e| FrameError::MalformedHello(format!("invalid hello: {e}")))?;
            ClientFrame::Hello(Box::new(hello))
        }
        "list_peers" => ClientFrame::ListPeers,
        "set_status" => {
            let b: StatusBody = from(text, &bad)?;
            let status = Status::parse(&b.status)
                .ok_or_else(|| bad("`status` must be idle, working or dnd".into()))?;
            ClientFrame::SetStatus(status)
        }
        "set_summary" => {
            let b: SummaryBody = from(text, &bad)?;
            if !within(&b.summary, MAX_SUMMARY) {
                return Err(bad(format!("`summary` is over {MAX_SUMMARY} characters")));
            }
            ClientFrame::SetSummary(b.summary)
        }
        "set_visible" => ClientFrame::SetVisible(from::<VisibleBody>(text, &bad)?.visible),
        "set_profile" => {
            let p: Profile = from(text, &bad)?;
            validate_profile(&p).map_err(bad)?;
            ClientFrame::SetProfile(p)
        }
        "set_stats" => {
            let b: StatsBody = from(text, &bad)?;
            let size = serde_json::to_vec(&b.stats)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_STATS_BYTES {
                return Err(bad(format!("`stats` is over {MAX_STATS_BYTES} bytes")));
            }
            ClientFrame::SetStats(b.stats)
        }
        "join_group" => {
            let b: GroupBody = from(text, &bad)?;
            let g = GroupRef {
                name: b.name,
                role: b.role,
            };
            validate_group(&g).map_err(bad)?;
            ClientFrame::JoinGroup(g)
        }
        "leave_group" => {
            let b: GroupBody = from(text, &bad)?;
            if !valid_group_name(&b.name) {
                return Err(bad("invalid group name".into()));
            }
            ClientFrame::LeaveGroup(b.name)
        }
        "send" => {
            let s: SendFrame = serde_json::from_str(text).map_err(|e| FrameError::BadSend {
                req_id: req_id.clone(),
                id: id.clone(),
                message: format!("invalid send: {e}"),
            })?;
            ClientFrame::Send(s)
        }
        "client_ack" => ClientFrame::ClientAck(from::<AckBody>(text, &bad)?.message_id),
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(format!("unknown frame type `{shown}`")));
        }
    };
    Ok(Incoming { frame, req_id, id })
}

fn from<T: serde::de::DeserializeOwned>(
    text: &str,
    bad: &impl Fn(String) -> FrameError,
) -> Result<T, FrameError> {
    serde_json::from_str(text).map_err(|e| bad(format!("invalid fields: {e}")))
}

pub fn validate_group(g: &GroupRef) -> Result<(), String> {
    if !valid_group_name(&g.name) {
        return Err(format!(
            "invalid group name (letters, digits, - _ . : in /-separated parts, at most {MAX_GROUP_NAME} characters)"
        ));
    }
    if let Some(role) = &g.role {
        if role.is_empty() || !within(role, MAX_GROUP_ROLE) {
            return Err(format!(
                "group role must be 1 to {MAX_GROUP_ROLE} characters"
            ));
        }
    }
    Ok(())
}

fn validate_profile(p: &Profile) -> Result<(), String> {
    let fields = [
        ("avatar", &p.avatar, MAX_AVATAR),
        ("title", &p.title, MAX_TITLE),
        ("bio", &p.bio, MAX_BIO),
    ];
    for (name, value, max) in fields {
        if let Some(v) = value {
            if !within(v, max) {
                return Err(format!("`{name}` is over {max} characters"));
            }
        }
    }
    if let Some(caps) = &p.capabilities {
        if caps.len() > MAX_PROFILE_CAPS || caps.iter().any(|c| !within(c, MAX_PROFILE_CAP_LEN)) {
            return Err(format!(
                "`capabilities`: at most {MAX_PROFILE_CAPS} entries of {MAX_PROFILE_CAP_LEN} characters"
            ));
        }
    }
    Ok(())
}

// ---- broker → client ----

#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub code: &'a str,
    pub message: &'a str,
    #[serde(rename = "_reqId", skip_serializing_if = "Option::is_none")]
    pub req_id: Option<&'a str>,
}

pub fn error_frame(code: &str, message: &str, req_id: Option<&str>) -> String {
    serde_json::to_string(&ErrorFrame {
        ty: "error",
        code,
        message,
        req_id,
    })
    .expect("error frame serialises")
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AckFrame<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub id: &'a str,
    pub message_id: &'a str,
    pub queued: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(rename = "_reqId", skip_serializing_if = "Option::is_none")]
    pub req_id: Option<&'a str>,
}

/// A successful non-message ack (`set_visible`, `set_profile`).
pub fn ok_ack(id: Option<&str>, req_id: Option<&str>) -> String {
    serde_json::to_string(&AckFrame {
        ty: "ack",
        id: id.unwrap_or(""),
        message_id: "",
        queued: false,
        error: None,
        code: None,
        req_id,
    })
    .expect("ack serialises")
}

/// A stored `send`: durable from here on.
pub fn queued_ack(id: &str, message_id: &str, req_id: Option<&str>) -> String {
    serde_json::to_string(&AckFrame {
        ty: "ack",
        id,
        message_id,
        queued: true,
        error: None,
        code: None,
        req_id,
    })
    .expect("ack serialises")
}

/// A refused `send`: `error` is `code: sentence`, `code` repeats the code.
pub fn error_ack(id: Option<&str>, code: &str, sentence: &str, req_id: Option<&str>) -> String {
    serde_json::to_string(&AckFrame {
        ty: "ack",
        id: id.unwrap_or(""),
        message_id: "",
        queued: false,
        error: Some(format!("{code}: {sentence}")),
        code: Some(code),
        req_id,
    })
    .expect("ack serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_and_unknown_frames_are_bad_requests() {
        assert!(matches!(
            parse("not json"),
            Err(FrameError::BadRequest { .. })
        ));
        assert!(matches!(parse("[1,2]"), Err(FrameError::BadRequest { .. })));
        assert!(matches!(
            parse(r#"{"type":7}"#),
            Err(FrameError::BadRequest { .. })
        ));
        match parse(r#"{"type":"dance","_reqId":"r1"}"#) {
            Err(FrameError::BadRequest { req_id, message }) => {
                assert_eq!(req_id.as_deref(), Some("r1"));
                assert!(message.contains("dance"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_send_keeps_its_id() {
        match parse(r#"{"type":"send","id":"c1","targetSpec":5}"#) {
            Err(FrameError::BadSend { id, .. }) => assert_eq!(id.as_deref(), Some("c1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeated_keys_take_the_last_value_and_sends_stay_ackable() {
        // Found by tests/fuzz.rs: a duplicate `type` used to fail the head,
        // so a send got an `error` frame and its client waited for an ack.
        match parse(r#"{"type":null,"id":"c0","type":"send","id":"c1","targetSpec":"*"}"#) {
            Err(FrameError::BadSend { id, .. }) => assert_eq!(id.as_deref(), Some("c1")),
            other => panic!("{other:?}"),
        }
        let ok =
            parse(r#"{"type":"dance","_reqId":"a","type":"list_peers","_reqId":"b"}"#).unwrap();
        assert!(matches!(ok.frame, ClientFrame::ListPeers));
        assert_eq!(ok.req_id.as_deref(), Some("b"));
    }

    #[test]
    fn status_summary_groups_are_checked() {
        assert!(matches!(
            parse(r#"{"type":"set_status","status":"sleepy"}"#),
            Err(FrameError::BadRequest { .. })
        ));
        let long = format!(
            r#"{{"type":"set_summary","summary":"{}"}}"#,
            "x".repeat(1025)
        );
        assert!(matches!(parse(&long), Err(FrameError::BadRequest { .. })));
        assert!(matches!(
            parse(r#"{"type":"join_group","name":"@all"}"#),
            Err(FrameError::BadRequest { .. })
        ));
        let ok = parse(r#"{"type":"join_group","name":"a/b","role":"lead","_reqId":"x"}"#).unwrap();
        assert!(matches!(ok.frame, ClientFrame::JoinGroup(ref g) if g.name == "a/b"));
        assert_eq!(ok.req_id.as_deref(), Some("x"));
    }

    #[test]
    fn hello_groups_accept_names_and_objects() {
        let text = r#"{"type":"hello","meshId":"m","memberId":"u","pubkey":"k","sessionId":"s",
            "timestamp":1,"signature":"x","groups":["a",{"name":"b","role":"lead"}]}"#;
        let Ok(Incoming {
            frame: ClientFrame::Hello(h),
            ..
        }) = parse(text)
        else {
            panic!("hello parses")
        };
        let groups = h.groups.unwrap();
        assert_eq!(groups[0].name, "a");
        assert_eq!(groups[1].role.as_deref(), Some("lead"));
        assert!(matches!(
            parse(r#"{"type":"hello","meshId":"m"}"#),
            Err(FrameError::MalformedHello(_))
        ));
    }

    #[test]
    fn acks_have_the_documented_shape() {
        let v: Value =
            serde_json::from_str(&error_ack(Some("c"), "rate_limit", "slow down", None)).unwrap();
        assert_eq!(v["error"], "rate_limit: slow down");
        assert_eq!(v["code"], "rate_limit");
        assert_eq!(v["queued"], false);
        assert_eq!(v["messageId"], "");
        let v: Value = serde_json::from_str(&ok_ack(None, Some("r"))).unwrap();
        assert_eq!(v["_reqId"], "r");
        assert!(v.get("error").is_none());
    }
}
