//! What every frame shares: the head (`type`, `_reqId`, `id`) read before
//! anything else, what each frame type is ([`FrameSpec`]), the trait a
//! family of frames implements to be parsed ([`Family`]), and the reply
//! builders. Parsing is two-step: the cheap head picks the frame, then only
//! that frame's struct is deserialised, so an unknown or broken frame costs
//! one pass and yields a precise error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::has_nul;

/// How a frame type is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    pub ty: &'static str,
    pub shape: Shape,
    pub answer: Answer,
}

impl FrameSpec {
    /// A request: success replies where the family says, errors always.
    pub const fn request(ty: &'static str) -> FrameSpec {
        FrameSpec {
            ty,
            shape: Shape::Request,
            answer: Answer::Error,
        }
    }

    /// Fire and forget: clients send these without `_reqId` and wait for
    /// nothing, so a refusal is answered only to a frame that has one
    /// (PROTOCOL-MESH.md §0); otherwise it is counted and logged.
    pub const fn fire_and_forget(ty: &'static str) -> FrameSpec {
        FrameSpec {
            ty,
            shape: Shape::FireAndForget,
            answer: Answer::Error,
        }
    }

    /// Never answered, not even with an error (`client_ack`,
    /// PROTOCOL-SESSIONS.md §5): its refusals are counted and logged.
    pub const fn silent(ty: &'static str) -> FrameSpec {
        FrameSpec {
            ty,
            shape: Shape::FireAndForget,
            answer: Answer::Never,
        }
    }

    /// A request answered only by `ack` (`send`): clients wait for exactly
    /// one, so even a refusal is an `ack`, in submission order.
    pub const fn acked(ty: &'static str) -> FrameSpec {
        FrameSpec {
            ty,
            shape: Shape::Request,
            answer: Answer::Ack,
        }
    }
}

/// The two handler shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Request,
    FireAndForget,
}

/// The frame a refusal takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `{"type":"error","code","message"}`.
    Error,
    /// `{"type":"ack","id","messageId":"","queued":false,"error","code"}`.
    Ack,
    /// Nothing, ever.
    Never,
}

/// A family of frames: its frame types, and how one of them is parsed
/// into the family's typed request.
pub trait Family: Sized {
    /// Every frame type of the family, each answered as its spec says.
    const FRAMES: &'static [FrameSpec];

    /// Parses a frame whose `type` is one of [`FRAMES`](Family::FRAMES)'.
    /// `Err` is the `bad_request` sentence.
    fn parse(ty: &str, text: &str) -> Result<Self, String>;

    /// The wire `type` this request was parsed from.
    fn ty(&self) -> &'static str;
}

/// The correlation fields every reply echoes, and the frame's `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub ty: String,
    pub req_id: Option<String>,
    /// `id` when the frame carried a string one (echoed by `ack`s).
    pub id: Option<String>,
    /// The frame holds a NUL character somewhere (refused everywhere).
    pub nul: bool,
}

/// A frame without a usable head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    /// `_reqId`, when it could be read.
    pub req_id: Option<String>,
    pub message: &'static str,
}

/// The head as read, before the string checks. Read by hand rather than
/// derived so that a repeated key takes its last value (as JavaScript's
/// `JSON.parse` does) instead of failing the whole frame: a `send` with a
/// duplicate key must still be recognised, and acked.
#[derive(Default)]
struct RawHead {
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

impl<'de> Deserialize<'de> for RawHead {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadVisitor;
        impl<'de> serde::de::Visitor<'de> for HeadVisitor {
            type Value = RawHead;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawHead, A::Error> {
                let mut head = RawHead::default();
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

/// Reads the head of one text frame.
pub fn head(text: &str) -> Result<Head, HeadError> {
    let raw: RawHead = serde_json::from_str(text).map_err(|_| HeadError {
        req_id: None,
        message: "frame is not a JSON object",
    })?;
    let req_id = string_of(raw.req_id);
    let Some(Value::String(ty)) = raw.ty else {
        return Err(HeadError {
            req_id,
            message: "frame has no string `type`",
        });
    };
    Ok(Head {
        ty,
        req_id,
        id: string_of(raw.id),
        nul: has_nul(text.as_bytes()),
    })
}

/// Deserialises a frame body, naming what is wrong.
pub fn body<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid fields: {e}"))
}

/// The refusal for a frame holding a NUL character.
pub const NUL_REFUSED: &str = "NUL characters are not allowed";

// ---- broker → client ----

/// Appends `"_reqId"` to a serialised reply object: the one place every
/// reply and error gets its echo.
pub fn with_req_id(mut frame: String, req_id: Option<&str>) -> String {
    if let Some(r) = req_id {
        debug_assert!(frame.ends_with('}') && frame.len() > 2, "{frame}");
        frame.pop();
        frame.push_str(",\"_reqId\":");
        frame.push_str(&serde_json::to_string(r).expect("a string serialises"));
        frame.push('}');
    }
    frame
}

#[derive(Debug, Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    code: &'a str,
    message: &'a str,
}

pub fn error_frame(code: &str, message: &str) -> String {
    serde_json::to_string(&ErrorFrame {
        ty: "error",
        code,
        message,
    })
    .expect("error frame serialises")
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AckFrame<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    id: &'a str,
    message_id: &'a str,
    queued: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

/// A successful non-message ack (`set_visible`, `set_profile`).
pub fn ok_ack(id: Option<&str>) -> String {
    serde_json::to_string(&AckFrame {
        ty: "ack",
        id: id.unwrap_or(""),
        message_id: "",
        queued: false,
        error: None,
        code: None,
    })
    .expect("ack serialises")
}

/// A stored `send`: durable from here on.
pub fn queued_ack(id: &str, message_id: &str) -> String {
    serde_json::to_string(&AckFrame {
        ty: "ack",
        id,
        message_id,
        queued: true,
        error: None,
        code: None,
    })
    .expect("ack serialises")
}

/// A refused `send`: `error` is `code: sentence`, `code` repeats the code.
pub fn error_ack(id: Option<&str>, code: &str, sentence: &str) -> String {
    serde_json::to_string(&AckFrame {
        ty: "ack",
        id: id.unwrap_or(""),
        message_id: "",
        queued: false,
        error: Some(format!("{code}: {sentence}")),
        code: Some(code),
    })
    .expect("ack serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_has_no_head_and_keeps_a_readable_req_id() {
        assert_eq!(head("not json").unwrap_err().req_id, None);
        assert!(head("[1,2]").is_err());
        let e = head(r#"{"type":7,"_reqId":"r"}"#).unwrap_err();
        assert_eq!(e.req_id.as_deref(), Some("r"));
    }

    #[test]
    fn repeated_keys_take_the_last_value() {
        // Found by tests/fuzz: a duplicate `type` used to fail the head,
        // so a send got an `error` frame and its client waited for an ack.
        let h = head(r#"{"type":null,"id":"c0","type":"send","id":"c1","x":"\u0000"}"#).unwrap();
        assert_eq!(
            (h.ty.as_str(), h.id.as_deref(), h.nul),
            ("send", Some("c1"), true)
        );
        let h = head(r#"{"type":"dance","_reqId":"a","type":"list_peers","_reqId":"b"}"#).unwrap();
        assert_eq!(
            (h.ty.as_str(), h.req_id.as_deref()),
            ("list_peers", Some("b"))
        );
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let v: Value = serde_json::from_str(&with_req_id(
            error_ack(Some("c"), "rate_limit", "slow down"),
            None,
        ))
        .unwrap();
        assert_eq!(v["error"], "rate_limit: slow down");
        assert_eq!(v["code"], "rate_limit");
        assert_eq!(v["queued"], false);
        assert_eq!(v["messageId"], "");
        assert!(v.get("_reqId").is_none());
        let v: Value = serde_json::from_str(&with_req_id(ok_ack(None), Some("r\"1"))).unwrap();
        assert_eq!(v["_reqId"], "r\"1", "escaped as JSON");
        assert!(v.get("error").is_none());
        let v: Value =
            serde_json::from_str(&with_req_id(error_frame("bad_request", "no"), Some("x")))
                .unwrap();
        assert_eq!(
            (v["type"].as_str(), v["_reqId"].as_str()),
            (Some("error"), Some("x"))
        );
    }
}
