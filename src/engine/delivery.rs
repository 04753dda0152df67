//! One delivery loop per attached session: claim what is deliverable for
//! it (oldest first, gated by its status, in batches), write the pushes,
//! and complete the rows once written (sessions without `client_ack`) or
//! when the client acks them. It wakes on a local notify and also polls
//! every `sweep_interval_seconds`, so a lost wake-up only delays.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sessions::Outbound;
use super::Node;
use crate::store::{ClaimRequest, StoredMessage};
use crate::time::iso;

/// Rows claimed per round trip: large enough to amortise the query under
/// load, small enough that one session cannot hog a pooled connection.
const CLAIM_BATCH: usize = 256;
/// Pause after a failed claim (database trouble) before trying again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushFrame<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    message_id: String,
    mesh_id: &'a str,
    sender_pubkey: &'a str,
    sender_member_pubkey: &'a str,
    priority: &'static str,
    nonce: &'a str,
    ciphertext: &'a str,
    created_at: String,
}

/// The `push` frame of a message: identical for every recipient, so it is
/// serialised once and shared.
pub fn push_frame(m: &StoredMessage) -> Utf8Bytes {
    let frame = PushFrame {
        ty: "push",
        message_id: m.id.to_string(),
        mesh_id: &m.mesh_id,
        sender_pubkey: m
            .sender_session_pubkey
            .as_deref()
            .unwrap_or(&m.sender_member_pubkey),
        sender_member_pubkey: &m.sender_member_pubkey,
        priority: m.priority.as_str(),
        nonce: &m.nonce,
        ciphertext: &m.ciphertext,
        created_at: iso(m.created_at),
    };
    serde_json::to_string(&frame)
        .expect("push serialises")
        .into()
}

/// What a delivery loop needs to know about its session.
pub struct Recipient {
    pub presence: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    pub client_ack: bool,
}

pub async fn run(
    node: Arc<Node>,
    who: Recipient,
    tx: mpsc::Sender<Outbound>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let poll = Duration::from_secs(node.config.settings.sweep_interval_seconds);
    let lease = chrono::Duration::seconds(node.config.settings.claim_lease_seconds as i64);
    // Written pushes not yet completed: the next claim completes them in
    // the same statement, halving round trips under load.
    let mut written: Vec<i64> = Vec::new();
    let mut unsure = false;
    loop {
        let now = node.now();
        let req = ClaimRequest {
            presence: who.presence,
            mesh_id: who.mesh_id.clone(),
            member_id: who.member_id.clone(),
            node_id: node.id,
            now,
            lease_until: now + lease,
            limit: CLAIM_BATCH,
            complete: std::mem::take(&mut written),
            reclaim_own: unsure,
        };
        let claimed = tokio::select! {
            _ = stop.cancelled() => {
                finish(&node, &who, req.complete).await;
                return;
            }
            r = super::bounded(node.claim(req.clone())) => r,
        };
        let claimed = match claimed {
            Ok(c) => {
                unsure = false;
                c
            }
            Err(e) => {
                // A timed-out claim may still run on the server once the
                // link recovers; the next claim takes those rows back.
                unsure = true;
                tracing::warn!(presence_id = %who.presence, error = %e, "claim failed");
                // Still ours (claimed); retried with the next claim.
                written = req.complete;
                tokio::select! {
                    _ = stop.cancelled() => {
                        finish(&node, &who, written).await;
                        return;
                    }
                    _ = tokio::time::sleep(RETRY_AFTER_ERROR) => continue,
                }
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        let mut ids = Vec::with_capacity(claimed.len());
        for c in &claimed {
            let frame = node.push_bytes(&c.message);
            if tx.send(Outbound::Text(frame)).await.is_err() {
                // The socket is gone: the claims lapse or are released
                // with the presence, so nothing is lost.
                return;
            }
            ids.push(c.delivery_id);
            if c.redelivery {
                node.metrics.redeliveries.inc();
            }
            let age = (node.now() - c.message.created_at)
                .num_microseconds()
                .unwrap_or(0);
            node.metrics.delivered(age as f64 / 1e6);
        }
        if !who.client_ack {
            // Complete only once the writer has put every push on the
            // socket; a socket that died first completes nothing.
            let (done, on_socket) = oneshot::channel();
            if tx.send(Outbound::Marker(done)).await.is_err() || on_socket.await.is_err() {
                return;
            }
            written = ids;
        }
    }
}

/// Completes written pushes when the loop ends, so the next socket of
/// this session does not get them again.
async fn finish(node: &Node, who: &Recipient, written: Vec<i64>) {
    if written.is_empty() {
        return;
    }
    if let Err(e) = super::bounded(node.store.complete_deliveries(who.presence, &written)).await {
        tracing::warn!(presence_id = %who.presence, error = %e, "could not complete deliveries");
    }
}
