//! One delivery loop per attached session: claim what is deliverable for
//! it (oldest first, gated by its status, in batches), write the pushes,
//! and complete the rows once written (sessions without `client_ack`,
//! through the node's completer) or when the client acks them. Rows the
//! batcher stored pre-claimed for it arrive in its mailbox and are pushed
//! without a claim. It wakes on its mailbox and also polls every
//! `sweep_interval_seconds`, so a lost wake-up only delays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::outbound::OutboundTx;
use super::sessions::{Mailbox, Outbound};
use super::Engine;
use crate::protocol::ids;
use crate::store::{ClaimRequest, Claimed, StoredMessage};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_member_pubkey: Option<&'a str>,
    sender_member_id: &'a str,
    sender_name: &'a str,
    priority: &'static str,
    nonce: &'a str,
    ciphertext: &'a str,
    created_at: String,
    #[serde(rename = "client_message_id", skip_serializing_if = "Option::is_none")]
    client_message_id: Option<&'a str>,
    #[serde(
        rename = "request_fingerprint",
        skip_serializing_if = "Option::is_none"
    )]
    request_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtype: Option<&'a str>,
}

/// The `push` frame of a message, serialised once and shared by every
/// recipient of one kind: a recipient of the sender's own member gets no
/// `senderMemberPubkey` (PROTOCOL-SESSIONS.md §7: the 1.37 daemon drops,
/// unacked, what carries its own member key, taking it for an echo).
pub fn push_frame(m: &StoredMessage, to_own_member: bool) -> Utf8Bytes {
    let frame = PushFrame {
        ty: "push",
        message_id: ids::encode(m.id),
        mesh_id: &m.mesh_id,
        sender_pubkey: m
            .sender_session_pubkey
            .as_deref()
            .unwrap_or(&m.sender_member_pubkey),
        sender_member_pubkey: (!to_own_member).then_some(m.sender_member_pubkey.as_str()),
        sender_member_id: &m.sender_member_id,
        sender_name: &m.echo.sender_name,
        priority: m.priority.as_str(),
        nonce: &m.nonce,
        ciphertext: &m.ciphertext,
        created_at: iso(m.created_at),
        client_message_id: m.echo.client_message_id.as_deref(),
        request_fingerprint: m.echo.request_fingerprint.as_deref(),
        reply_to_id: m.echo.reply_to_id.as_deref(),
        subtype: m.echo.subtype.as_deref(),
    };
    serde_json::to_string(&frame)
        .expect("push serialises")
        .into()
}

/// Bytes of push frames kept for sharing between recipients. A multicast
/// is claimed by all its local recipients within moments, so a small,
/// short-lived cache catches nearly every repeat.
const PUSH_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Idle time after which a cached push frame is dropped: local recipients
/// claim within milliseconds, so seconds are plenty.
const PUSH_CACHE_IDLE: Duration = Duration::from_secs(5);

/// Serialised `push` frames by message id, so every local recipient of a
/// multicast shares one allocation.
pub struct Pushes {
    /// By (message, whether the recipient is the sender's own member).
    cache: moka::sync::Cache<(Uuid, bool), Utf8Bytes>,
}

impl Pushes {
    pub fn new() -> Pushes {
        Pushes {
            cache: moka::sync::Cache::builder()
                .max_capacity(PUSH_CACHE_BYTES)
                .weigher(|_, v: &Utf8Bytes| v.len().try_into().unwrap_or(u32::MAX))
                .time_to_idle(PUSH_CACHE_IDLE)
                .build(),
        }
    }

    /// The serialised push of `m` for a recipient of `member_id`,
    /// shared across recipients.
    pub fn bytes(&self, m: &StoredMessage, member_id: &str) -> Utf8Bytes {
        let own = m.sender_member_id == member_id;
        self.cache.get_with((m.id, own), || push_frame(m, own))
    }
}

impl Default for Pushes {
    fn default() -> Self {
        Self::new()
    }
}

/// A session's running delivery loop.
pub struct Deliverer {
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl Deliverer {
    pub fn start(
        engine: Arc<Engine>,
        who: Recipient,
        tx: OutboundTx,
        mailbox: Arc<Mailbox>,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(engine, who, tx, mailbox, stop.clone()));
        Deliverer { task, stop }
    }

    /// Stops the loop once its in-flight completions are done, so written
    /// pushes are not delivered twice when the presence is released.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// What a delivery loop needs to know about its session.
pub struct Recipient {
    pub presence: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    /// At-least-once mode, shared with the session: a `client_ack` turns
    /// it on for every push written after it.
    pub at_least_once: Arc<AtomicBool>,
}

async fn run(
    engine: Arc<Engine>,
    who: Recipient,
    tx: OutboundTx,
    mailbox: Arc<Mailbox>,
    stop: CancellationToken,
) {
    let poll = Duration::from_secs(engine.config.settings.sweep_interval_seconds);
    let lease = chrono::Duration::seconds(engine.config.settings.claim_lease_seconds as i64);
    let mut must_claim = true;
    let mut unsure = false;
    // Claims and pushes are boxed: the loop spends its life waiting, and
    // inline they would size every idle session's task.
    loop {
        // Rows the batcher stored already claimed for us: push them
        // without a claim round trip.
        let handed = mailbox.take_handed();
        if !handed.is_empty() && !Box::pin(push(&engine, &who, &tx, handed)).await {
            return;
        }
        if must_claim || mailbox.take_claim_wanted() {
            let now = engine.now();
            let req = ClaimRequest {
                presence: who.presence,
                mesh_id: who.mesh_id.clone(),
                member_id: who.member_id.clone(),
                node_id: engine.node_id,
                now,
                lease_until: now + lease,
                limit: CLAIM_BATCH,
                reclaim_own: unsure,
            };
            let claimed = tokio::select! {
                _ = stop.cancelled() => {
                    engine.completions.flush().await;
                    return;
                }
                r = Box::pin(super::bounded(engine.claims.claim(req))) => r,
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
                    tokio::select! {
                        _ = stop.cancelled() => {
                            engine.completions.flush().await;
                            return;
                        }
                        _ = tokio::time::sleep(RETRY_AFTER_ERROR) => {
                            must_claim = true;
                            continue;
                        }
                    }
                }
            };
            let full = claimed.len() == CLAIM_BATCH;
            if !claimed.is_empty() && !Box::pin(push(&engine, &who, &tx, claimed)).await {
                return;
            }
            if full {
                // A backlog: keep claiming, and take no handoffs (they
                // would overtake older rows).
                must_claim = true;
                continue;
            }
            mailbox.claimed_all_at(now);
        }
        must_claim = false;
        // Caught up: whatever arrives later wakes us (the permit is kept).
        mailbox.set_caught_up(true);
        tokio::select! {
            _ = stop.cancelled() => {
                mailbox.set_caught_up(false);
                engine.completions.flush().await;
                return;
            }
            _ = mailbox.notified() => {}
            _ = tokio::time::sleep(poll) => must_claim = true,
        }
        mailbox.set_caught_up(false);
    }
}

/// Writes claimed rows as pushes; without `client_ack` they are completed
/// once the writer has put them on the socket. `false`: the socket is
/// gone (the rows lapse or are released with the presence: no loss).
async fn push(engine: &Engine, who: &Recipient, tx: &OutboundTx, rows: Vec<Claimed>) -> bool {
    let mut ids = Vec::with_capacity(rows.len());
    let plain = !who.at_least_once.load(Ordering::Relaxed);
    for c in &rows {
        if plain && c.redelivery && engine.completions.written(who.presence, c.delivery_id) {
            // Written already; its completion failed and is retried. This
            // claim renewed its lease: complete it, do not push it again.
            ids.push(c.delivery_id);
            continue;
        }
        let frame = engine.pushes.bytes(&c.message, &who.member_id);
        if tx.send(Outbound::Text(frame)).await.is_err() {
            return false;
        }
        ids.push(c.delivery_id);
        if c.redelivery {
            engine.metrics.redeliveries.inc();
        }
        let age = (engine.now() - c.message.created_at)
            .num_microseconds()
            .unwrap_or(0);
        engine.metrics.delivered(age as f64 / 1e6);
    }
    if !who.at_least_once.load(Ordering::Relaxed) {
        // Complete only once the writer has put every push on the
        // socket; a socket that died first completes nothing.
        let (done, on_socket) = oneshot::channel();
        if tx.send(Outbound::Marker(done)).await.is_err() || on_socket.await.is_err() {
            return false;
        }
        engine.completions.later(who.presence, ids).await;
    }
    true
}
