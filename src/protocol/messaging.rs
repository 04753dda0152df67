//! The messaging family (PROTOCOL.md "Messages"): `send`, answered by
//! exactly one `ack`, and `client_ack` from a recipient.

use serde::Deserialize;

use super::wire::{body, Family, FrameSpec};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendFrame {
    pub id: String,
    pub target_spec: String,
    #[serde(default)]
    pub priority: Option<String>,
    pub nonce: String,
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MessagingFrame {
    Send(SendFrame),
    ClientAck(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AckBody {
    message_id: String,
}

impl Family for MessagingFrame {
    const FRAMES: &'static [FrameSpec] =
        &[FrameSpec::acked("send"), FrameSpec::request("client_ack")];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        Ok(match ty {
            "send" => MessagingFrame::Send(
                serde_json::from_str(text).map_err(|e| format!("invalid send: {e}"))?,
            ),
            "client_ack" => MessagingFrame::ClientAck(body::<AckBody>(text)?.message_id),
            other => unreachable!("`{other}` is not a messaging frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            MessagingFrame::Send(_) => "send",
            MessagingFrame::ClientAck(_) => "client_ack",
        }
    }
}
