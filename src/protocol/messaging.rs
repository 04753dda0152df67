//! The messaging family (PROTOCOL.md "Messages"): `send`, answered by
//! exactly one `ack`, and `client_ack` from a recipient.

use serde::Deserialize;

use super::wire::{Family, FrameSpec};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendFrame {
    pub id: String,
    pub target_spec: String,
    #[serde(default)]
    pub priority: Option<String>,
    pub nonce: String,
    pub ciphertext: String,
    /// The 1.37 client's extras (PROTOCOL-SESSIONS.md §6), checked by the
    /// engine: any JSON here, so a wrong type is its `bad_request`, not a
    /// failed parse.
    #[serde(default, rename = "client_message_id")]
    pub client_message_id: Option<serde_json::Value>,
    #[serde(default, rename = "request_fingerprint")]
    pub request_fingerprint: Option<serde_json::Value>,
    #[serde(default, rename = "replyToId")]
    pub reply_to_id: Option<serde_json::Value>,
}

/// A recipient's acknowledgement (PROTOCOL-SESSIONS.md §5). Every field is
/// optional, and one of the wrong type counts as absent: this frame is
/// never refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientAck {
    /// `brokerMessageId`, else its older alias `messageId`.
    pub broker_message_id: Option<String>,
    pub client_message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MessagingFrame {
    /// Boxed: with its extras it is much the largest request of any family.
    Send(Box<SendFrame>),
    ClientAck(ClientAck),
}

fn client_ack(text: &str) -> ClientAck {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let string = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    ClientAck {
        broker_message_id: string("brokerMessageId").or_else(|| string("messageId")),
        client_message_id: string("clientMessageId"),
    }
}

impl Family for MessagingFrame {
    const FRAMES: &'static [FrameSpec] =
        &[FrameSpec::acked("send"), FrameSpec::silent("client_ack")];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        Ok(match ty {
            "send" => MessagingFrame::Send(Box::new(
                serde_json::from_str(text).map_err(|e| format!("invalid send: {e}"))?,
            )),
            "client_ack" => MessagingFrame::ClientAck(client_ack(text)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(text: &str) -> ClientAck {
        match MessagingFrame::parse("client_ack", text).unwrap() {
            MessagingFrame::ClientAck(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_acks_take_every_form_and_refuse_none() {
        let a = ack(
            r#"{"type":"client_ack","clientMessageId":"c","brokerMessageId":"b","messageId":"m"}"#,
        );
        assert_eq!(
            a.broker_message_id.as_deref(),
            Some("b"),
            "brokerMessageId first"
        );
        assert_eq!(a.client_message_id.as_deref(), Some("c"));
        assert_eq!(
            ack(r#"{"type":"client_ack","messageId":"m"}"#)
                .broker_message_id
                .as_deref(),
            Some("m")
        );
        let wrong = ack(
            r#"{"type":"client_ack","brokerMessageId":7,"messageId":"m","clientMessageId":[1]}"#,
        );
        assert_eq!(
            wrong.broker_message_id.as_deref(),
            Some("m"),
            "a wrong type is absent"
        );
        assert_eq!(wrong.client_message_id, None);
        assert_eq!(ack(r#"{"type":"client_ack"}"#), ClientAck::default());
    }
}
