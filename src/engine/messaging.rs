//! The messaging family: `send` goes to the batcher (its ack follows once
//! the batch is stored, in submission order), `client_ack` settles a
//! delivery of this presence's and switches it to at-least-once mode.

use std::sync::atomic::Ordering;

use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use crate::protocol::ids;
use crate::protocol::messaging::{ClientAck, MessagingFrame};
use crate::protocol::wire::{queued_ack, Head};

pub async fn handle(s: &mut Session, frame: MessagingFrame, _head: &Head) -> Handled {
    match frame {
        MessagingFrame::Send(send) => {
            let id = send.id.clone();
            let outcome = s
                .engine
                .sends
                .submit(&s.engine, s.presence.clone(), *send)
                .await;
            Ok(Reply::Later(Box::pin(async move {
                match outcome.await {
                    Ok(Ok(message_id)) => Ok(queued_ack(&id, &ids::encode(message_id))),
                    Ok(Err(refusal)) => Err(refusal),
                    Err(_) => Err(Refusal::new(
                        "unavailable",
                        "the broker cannot reach its database; retry",
                    )),
                }
            })))
        }
        MessagingFrame::ClientAck(ack) => {
            settle(s, ack).await;
            Ok(Reply::None)
        }
    }
}

/// A `client_ack`: never answered, whatever it names (PROTOCOL-SESSIONS.md
/// §5). Every one puts the presence in at-least-once mode; a match settles
/// a delivery of this presence's, on whatever node it is.
async fn settle(s: &Session, ack: ClientAck) {
    let presence = s.presence.id;
    if !s.at_least_once.swap(true, Ordering::Relaxed) {
        if let Err(e) = bounded(s.engine.store.enter_at_least_once(presence)).await {
            // The mode holds for this socket anyway; a re-attach without
            // it loses only the lease on pushes until the next ack.
            tracing::warn!(presence_id = %presence, error = %e, "could not record at-least-once mode");
        }
    }
    // `brokerMessageId` first; then `clientMessageId` against the
    // messages' own client ids, then read as one of our ids (what the
    // 1.37 daemon sends when a push had no client id).
    let store = &s.engine.store;
    let r = s.engine.retention();
    let by_broker = ack.broker_message_id.as_deref().and_then(ids::decode);
    let client = ack.client_message_id.as_deref();
    let settled = async {
        if let Some(id) = by_broker {
            if bounded(store.ack_delivery(presence, id, r)).await? {
                return Ok(());
            }
        }
        if let Some(cid) = client {
            let mesh = &s.presence.mesh_id;
            if bounded(store.ack_client_message(presence, mesh, cid, r)).await? {
                return Ok(());
            }
            if let Some(id) = ids::decode(cid) {
                bounded(store.ack_delivery(presence, id, r)).await?;
            }
        }
        Ok::<(), crate::store::StoreError>(())
    };
    if let Err(e) = settled.await {
        tracing::warn!(presence_id = %presence, error = %e, "client_ack failed; the push returns after its lease");
    }
}
