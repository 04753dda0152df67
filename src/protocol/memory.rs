//! Memory (PROTOCOL-MESH.md §2): `remember` a note, `recall` by full-text
//! query, `forget` (a soft delete, fire-and-forget).

use serde_json::Value;

use super::fields::{keys, limited, non_empty};
use super::wire::{Family, FrameSpec};

/// At most this many memories per `recall`.
pub const MAX_RECALLED: usize = 20;
/// A query longer than this is not a search.
pub const MAX_QUERY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryFrame {
    Remember { content: String, tags: Vec<String> },
    Recall { query: String },
    Forget { memory_id: String },
}

impl Family for MemoryFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("remember"),
        FrameSpec::request("recall"),
        FrameSpec::fire_and_forget("forget"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            // `content` is bounded by max_message_bytes, which the engine
            // knows.
            "remember" => MemoryFrame::Remember {
                content: non_empty(&v, "content")?,
                tags: keys(&v, "tags")?,
            },
            "recall" => MemoryFrame::Recall {
                query: limited(&v, "query", MAX_QUERY)?,
            },
            "forget" => MemoryFrame::Forget {
                memory_id: limited(&v, "memoryId", 128)?,
            },
            other => unreachable!("`{other}` is not a memory frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            MemoryFrame::Remember { .. } => "remember",
            MemoryFrame::Recall { .. } => "recall",
            MemoryFrame::Forget { .. } => "forget",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked() {
        assert_eq!(
            MemoryFrame::parse("remember", r#"{"content":"x","tags":["a"]}"#).unwrap(),
            MemoryFrame::Remember {
                content: "x".into(),
                tags: vec!["a".into()]
            }
        );
        for (ty, bad, field) in [
            ("remember", r#"{}"#, "`content`"),
            ("remember", r#"{"content":""}"#, "`content`"),
            ("remember", r#"{"content":"x","tags":[3]}"#, "`tags`"),
            ("recall", r#"{}"#, "`query`"),
            ("recall", r#"{"query":7}"#, "`query`"),
            ("forget", r#"{"memoryId":null}"#, "`memoryId`"),
        ] {
            assert!(
                MemoryFrame::parse(ty, bad).unwrap_err().contains(field),
                "{bad}"
            );
        }
        let long = format!(r#"{{"query":"{}"}}"#, "q".repeat(MAX_QUERY + 1));
        assert!(MemoryFrame::parse("recall", &long).is_err());
    }
}
