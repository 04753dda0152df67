//! The sending side of one socket: the writer task that owns the sink
//! (and drops clients that stop reading), and the task that writes send
//! acks in submission order.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::messaging::{SendOutcome, SendRefusal};
use crate::engine::outbound::{OutboundRx, OutboundTx};
use crate::engine::sessions::{close, Outbound};
use crate::engine::{Node, DB_TIMEOUT};
use crate::protocol::frames::{self, error_ack};

/// Owns the sink. A frame that cannot be written within `stall` means the
/// client stopped reading (its TCP window stayed shut): the socket is
/// dropped as a slow consumer, and its unwritten pushes stay claimable.
pub(super) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: OutboundRx,
    node: Arc<Node>,
    closer: watch::Sender<Option<(u16, &'static str)>>,
) {
    let stall = Duration::from_secs(node.config.settings.ping_interval_seconds);
    while let Some(out) = rx.recv().await {
        let write = match out {
            Outbound::Text(t) => sink.send(Message::Text(t)),
            Outbound::Ping => sink.send(Message::Ping(Default::default())),
            Outbound::Marker(done) => {
                let _ = done.send(());
                continue;
            }
            Outbound::Close(code, reason) => {
                let frame = Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                }));
                let _ = tokio::time::timeout(stall, sink.send(frame)).await;
                break;
            }
        };
        match tokio::time::timeout(stall, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                node.metrics.slow_consumers.inc();
                closer.send_replace(Some((close::TRY_AGAIN_LATER, "slow consumer")));
                // The sink is stuck: no close frame can get through.
                return;
            }
        }
    }
    let _ = tokio::time::timeout(stall, sink.close()).await;
}

/// A submitted send whose ack is not written yet.
pub(super) struct PendingAck {
    pub rx: oneshot::Receiver<SendOutcome>,
    pub id: String,
    pub req_id: Option<String>,
}

/// Writes send acks in submission order as their outcomes arrive.
pub(super) async fn forward_acks(mut pending: mpsc::Receiver<PendingAck>, tx: OutboundTx) {
    while let Some(p) = pending.recv().await {
        let outcome = match tokio::time::timeout(DB_TIMEOUT, p.rx).await {
            Ok(Ok(o)) => o,
            _ => Err(SendRefusal {
                code: "unavailable",
                sentence: "the broker cannot reach its database; retry".into(),
            }),
        };
        let req_id = p.req_id.as_deref();
        let frame = match outcome {
            Ok(message_id) => frames::queued_ack(&p.id, &message_id.to_string(), req_id),
            Err(r) => error_ack(Some(&p.id), r.code, &r.sentence, req_id),
        };
        if tx.send(Outbound::Text(frame.into())).await.is_err() {
            return;
        }
    }
}
