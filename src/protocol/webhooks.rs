//! Inbound webhooks (PROTOCOL-MESH.md §9): named secrets anything outside
//! may POST to; every live presence of the mesh gets the body as a push.

use serde_json::Value;

use super::fields::limited;
use super::wire::{Family, FrameSpec};

pub const MAX_NAME: usize = 256;
pub const MAX_ACTIVE_PER_MESH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookFrame {
    /// `None`: not a usable name (`invalid_webhook`, not `bad_request`).
    Create {
        name: Option<String>,
    },
    List,
    Delete {
        name: String,
    },
}

/// A name of 1–256 characters without control characters.
pub fn valid_name(v: &Value) -> Option<String> {
    match v.get("name") {
        Some(Value::String(n))
            if !n.is_empty()
                && n.chars().count() <= MAX_NAME
                && !n.chars().any(char::is_control) =>
        {
            Some(n.clone())
        }
        _ => None,
    }
}

impl Family for WebhookFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("create_webhook"),
        FrameSpec::request("list_webhooks"),
        FrameSpec::request("delete_webhook"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "create_webhook" => WebhookFrame::Create {
                name: valid_name(&v),
            },
            "list_webhooks" => WebhookFrame::List,
            "delete_webhook" => WebhookFrame::Delete {
                name: limited(&v, "name", MAX_NAME)?,
            },
            other => unreachable!("`{other}` is not a webhook frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            WebhookFrame::Create { .. } => "create_webhook",
            WebhookFrame::List => "list_webhooks",
            WebhookFrame::Delete { .. } => "delete_webhook",
        }
    }
}
