//! Streams (PROTOCOL-MESH.md §14): `create_stream` and `list_streams` are
//! requests; `subscribe`, `unsubscribe` and `publish` are fire-and-forget
//! (`subscribe` still answers `subscribed`).

use serde_json::Value;

use super::fields::key;
use super::wire::{Family, FrameSpec};

/// Registered streams per mesh.
pub const MAX_STREAMS_PER_MESH: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum StreamFrame {
    Create {
        name: String,
    },
    Subscribe {
        stream: String,
    },
    Unsubscribe {
        stream: String,
    },
    /// `data` is any JSON (absent: null), bounded by max_message_bytes in
    /// the engine.
    Publish {
        stream: String,
        data: Value,
    },
    List,
}

impl Family for StreamFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("create_stream"),
        FrameSpec::fire_and_forget("subscribe"),
        FrameSpec::fire_and_forget("unsubscribe"),
        FrameSpec::fire_and_forget("publish"),
        FrameSpec::request("list_streams"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "create_stream" => StreamFrame::Create {
                name: key(&v, "name")?,
            },
            "subscribe" => StreamFrame::Subscribe {
                stream: key(&v, "stream")?,
            },
            "unsubscribe" => StreamFrame::Unsubscribe {
                stream: key(&v, "stream")?,
            },
            "publish" => StreamFrame::Publish {
                stream: key(&v, "stream")?,
                data: v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
            },
            "list_streams" => StreamFrame::List,
            other => unreachable!("`{other}` is not a stream frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            StreamFrame::Create { .. } => "create_stream",
            StreamFrame::Subscribe { .. } => "subscribe",
            StreamFrame::Unsubscribe { .. } => "unsubscribe",
            StreamFrame::Publish { .. } => "publish",
            StreamFrame::List => "list_streams",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_key_like_and_data_is_any_json() {
        assert_eq!(
            StreamFrame::parse("publish", r#"{"stream":"builds","data":{"job":"api"}}"#).unwrap(),
            StreamFrame::Publish {
                stream: "builds".into(),
                data: serde_json::json!({"job": "api"})
            }
        );
        assert_eq!(
            StreamFrame::parse("publish", r#"{"stream":"b"}"#).unwrap(),
            StreamFrame::Publish {
                stream: "b".into(),
                data: Value::Null
            }
        );
        let long = "s".repeat(257);
        for (ty, bad, field) in [
            ("create_stream", "{}".to_string(), "`name`"),
            ("create_stream", r#"{"name":""}"#.to_string(), "`name`"),
            ("subscribe", format!(r#"{{"stream":"{long}"}}"#), "`stream`"),
            ("unsubscribe", r#"{"stream":7}"#.to_string(), "`stream`"),
            ("publish", r#"{"data":1}"#.to_string(), "`stream`"),
        ] {
            let e = StreamFrame::parse(ty, &bad).unwrap_err();
            assert!(e.contains(field), "{ty} {bad}: {e}");
        }
    }
}
