//! The sending side of one socket: the writer task that owns the sink
//! (and drops clients that stop reading), and the task that writes the
//! replies that come later (send acks) in submission order.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::{mpsc, watch};

use crate::engine::dispatch::Pending;
use crate::engine::outbound::{OutboundRx, OutboundTx};
use crate::engine::sessions::{close, Outbound};
use crate::engine::Engine;

/// Owns the sink. A frame that cannot be written within `stall` means the
/// client stopped reading (its TCP window stayed shut): the socket is
/// dropped as a slow consumer, and its unwritten pushes stay claimable.
pub(super) async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: OutboundRx,
    node: Arc<Engine>,
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

/// Writes later replies in submission order as their outcomes arrive.
pub(super) async fn forward_ordered(mut pending: mpsc::Receiver<Pending>, tx: OutboundTx) {
    while let Some(p) = pending.recv().await {
        let frame = p.resolve().await;
        if tx.send(Outbound::Text(frame.into())).await.is_err() {
            return;
        }
    }
}
