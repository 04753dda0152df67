//! `message_status` (PROTOCOL-MESH.md §6): what became of a message, by
//! its id or an 8–31 character prefix of it.

use serde_json::Value;

use super::wire::{Family, FrameSpec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatusFrame {
    /// As sent; `None` when not a string. Checked by the engine, whose
    /// refusal (`invalid_argument`) is not `bad_request`.
    pub message_id: Option<String>,
}

impl MessageStatusFrame {
    /// The id checked: 8–32 characters of `[A-Za-z0-9]`, else the
    /// refusal's sentence.
    pub fn checked(&self) -> Result<&str, String> {
        match self.message_id.as_deref() {
            Some(id)
                if (8..=32).contains(&id.len())
                    && id.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Ok(id)
            }
            other => Err(format!(
                "messageId must be 8-32 base62 chars (got {})",
                other.map_or(0, |s| s.chars().count())
            )),
        }
    }
}

impl Family for MessageStatusFrame {
    const FRAMES: &'static [FrameSpec] = &[FrameSpec::request("message_status")];

    fn parse(_ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(MessageStatusFrame {
            message_id: v
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    fn ty(&self) -> &'static str {
        "message_status"
    }
}
