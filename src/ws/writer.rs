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

/// Frames written with one flush at most: what is queued when the
/// writer wakes goes out in one write (a fan-out of many small frames cost
/// a syscall each), bounded so a long queue still flushes regularly.
const COALESCED: usize = 64;

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
    let stalled = || {
        node.metrics.slow_consumers.inc();
        closer.send_replace(Some((close::TRY_AGAIN_LATER, "slow consumer")));
    };
    // Frames fed to the sink since its last flush.
    let mut unflushed = 0usize;
    loop {
        let next = if unflushed == 0 {
            rx.recv().await
        } else if unflushed < COALESCED {
            rx.try_recv()
        } else {
            None
        };
        let out = match next {
            Some(out) => out,
            None if unflushed > 0 => {
                match tokio::time::timeout(stall, sink.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    // The sink is stuck: no close frame can get through.
                    Err(_) => return stalled(),
                }
                unflushed = 0;
                continue;
            }
            None => break,
        };
        let msg = match out {
            Outbound::Text(t) => Message::Text(t),
            Outbound::Ping => Message::Ping(Default::default()),
            Outbound::Marker(done) => {
                // "Written" means flushed: what came before it is out.
                if unflushed > 0 {
                    match tokio::time::timeout(stall, sink.flush()).await {
                        Ok(Ok(())) => unflushed = 0,
                        Ok(Err(_)) => break,
                        Err(_) => return stalled(),
                    }
                }
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
        match tokio::time::timeout(stall, sink.feed(msg)).await {
            Ok(Ok(())) => unflushed += 1,
            Ok(Err(_)) => break,
            Err(_) => return stalled(),
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
