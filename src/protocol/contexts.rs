//! Contexts (PROTOCOL-MESH.md §5): what a member learned, one per member,
//! replaced by each `share_context` (fire-and-forget, answered
//! `context_shared`).

use serde_json::Value;

use super::fields::{keys, non_empty, opt_string};
use super::wire::{Family, FrameSpec};

/// `get_context` answers at most this many.
pub const MAX_FOUND: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextFrame {
    Share {
        summary: String,
        files_read: Vec<String>,
        key_findings: Vec<String>,
        tags: Vec<String>,
    },
    Get {
        query: String,
    },
    List,
}

impl Family for ContextFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::fire_and_forget("share_context"),
        FrameSpec::request("get_context"),
        FrameSpec::request("list_contexts"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            // `summary` is bounded by max_message_bytes (the engine's).
            "share_context" => ContextFrame::Share {
                summary: non_empty(&v, "summary")?,
                files_read: keys(&v, "filesRead")?,
                key_findings: keys(&v, "keyFindings")?,
                tags: keys(&v, "tags")?,
            },
            "get_context" => ContextFrame::Get {
                query: opt_string(&v, "query", 1024)?.unwrap_or_default(),
            },
            "list_contexts" => ContextFrame::List,
            other => unreachable!("`{other}` is not a context frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            ContextFrame::Share { .. } => "share_context",
            ContextFrame::Get { .. } => "get_context",
            ContextFrame::List => "list_contexts",
        }
    }
}
