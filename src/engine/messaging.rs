//! The messaging family: `send` goes to the batcher (its ack follows once
//! the batch is stored, in submission order), `client_ack` completes a
//! delivery of this session's.

use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use crate::protocol::ids;
use crate::protocol::messaging::MessagingFrame;
use crate::protocol::wire::{queued_ack, Head};

pub async fn handle(s: &mut Session, frame: MessagingFrame, _head: &Head) -> Handled {
    match frame {
        MessagingFrame::Send(send) => {
            let id = send.id.clone();
            let outcome = s
                .engine
                .sends
                .submit(&s.engine, s.presence.clone(), send)
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
        MessagingFrame::ClientAck(message_id) => {
            // Only sessions that opted in ack; an unknown or foreign id
            // matches no row of this session and changes nothing.
            if let (Some(id), true) = (ids::decode(&message_id), s.client_ack) {
                bounded(s.engine.store.ack_delivery(s.presence.id, id)).await?;
            }
            Ok(Reply::None)
        }
    }
}
