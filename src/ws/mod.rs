//! `GET /ws`: the upgrade and one task per socket (see `session`).

mod session;
mod writer;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::engine::{node, transfers, Engine};

/// Per-socket read buffer. tungstenite's default (128 KiB) dominated idle
/// memory per connection; frames are small and the buffer grows on demand.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes batched before a write is flushed; pushes are flushed one by one
/// anyway, so a small buffer costs nothing.
const WRITE_BUFFER: usize = 4 * 1024;

pub async fn upgrade(
    State(engine): State<Arc<Engine>>,
    remote: Option<axum::Extension<std::net::SocketAddr>>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if engine.node.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node is draining").into_response();
    }
    let Some(slot) = node::admit(&engine.ctx) else {
        engine.metrics.refused_upgrades.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "node is at its connection limit; retry",
        )
            .into_response();
    };
    // Recorded only where uploads are matched to sessions by address.
    let remote = transfers::records_addresses(&engine.config)
        .then(|| transfers::client_addr(&engine.config, remote.map(|r| r.0), &headers))
        .flatten();
    let limit = engine.config.max_frame_bytes();
    let tracker = engine.node.tracker.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                let _slot = slot;
                session::run(engine, socket, remote).await
            })
        })
}
