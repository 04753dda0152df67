//! `message_status` (PROTOCOL-MESH.md §6): any member, any message of its
//! mesh, from the live rows and the compact records kept for
//! `delivered_retention_seconds`.

use serde_json::{json, Value};

use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::caller;
use crate::protocol::ids;
use crate::protocol::message_status::MessageStatusFrame;
use crate::protocol::wire::Head;
use crate::store::Outcome;
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: MessageStatusFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    let id = frame
        .checked()
        .map_err(|m| Refusal::new("invalid_argument", m))?
        .to_string();
    caller(ctx, me).await?;
    let range = if id.len() == 32 {
        ids::decode(&id).map(|u| (u, u))
    } else {
        ids::prefix_range(&id)
    };
    let not_found = || Refusal::new("not_found", format!("no message {id} in this mesh"));
    let (lo, hi) = range.ok_or_else(not_found)?;
    let mut found = bounded(ctx.store.message_status(&me.mesh_id, lo, hi, 2)).await?;
    if found.len() > 1 {
        return Err(Refusal::new(
            "ambiguous_prefix",
            format!("{id} names more than one message; give more of it"),
        ));
    }
    let st = found.pop().ok_or_else(not_found)?;
    let delivered_at = st
        .recipients
        .iter()
        .map(|r| match r.outcome {
            Outcome::Delivered(at) => Some(at),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .and_then(|times| times.into_iter().max());
    let recipients: Vec<Value> = st
        .recipients
        .iter()
        .map(|r| {
            let status = match r.outcome {
                Outcome::Delivered(_) => "delivered",
                Outcome::Held => "held",
                Outcome::Disconnected => "disconnected",
            };
            json!({"name": r.name, "pubkey": r.pubkey, "status": status})
        })
        .collect();
    let delivered = st
        .recipients
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Delivered(_)));
    Ok(Reply::Frame(
        json!({
            "type": "message_status_result",
            "messageId": id,
            "targetSpec": st.target_spec,
            "delivered": delivered,
            "deliveredAt": delivered_at.filter(|_| delivered).map(iso),
            "recipients": recipients,
        })
        .to_string(),
    ))
}
