//! Shared state (PROTOCOL-MESH.md §1): `set_state` writes (null deletes)
//! and tells every other live presence of the mesh, on every node, with a
//! `state_change`; `get_state` and `list_state` read. Values are never
//! audited, only keys.

use serde_json::{json, Value};

use super::audit::Actor;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::member_of;
use super::signal::{Signal, Skip};
use super::{bounded, Ctx};
use crate::protocol::state::{StateFrame, MAX_KEYS_PER_MESH};
use crate::protocol::wire::Head;
use crate::store::{Presence, StateEntry, StateWrite, StateWritten};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: StateFrame, head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    match frame {
        StateFrame::Set { key, value } => set(ctx, me, &key, value).await,
        StateFrame::Get { key } => {
            let found = bounded(ctx.store.get_state(&me.mesh_id, &key)).await?;
            let result = match &found {
                Some(e) => json!({"type": "state_result", "key": key, "value": e.value,
                    "updatedBy": e.updated_by, "updatedAt": iso(e.updated_at)}),
                None => json!({"type": "state_result", "key": key, "value": null,
                    "updatedBy": "", "updatedAt": ""}),
            };
            let mut frames = vec![result.to_string()];
            // The 1.37 daemon's member socket reads `state_value`, matched
            // by `_reqId` only; without one nobody could take it.
            if head.req_id.is_some() {
                let state = found.as_ref().map(entry).unwrap_or(Value::Null);
                frames.push(json!({"type": "state_value", "state": state}).to_string());
            }
            Ok(Reply::Frames(frames))
        }
        StateFrame::List => {
            let entries = bounded(ctx.store.list_state(&me.mesh_id)).await?;
            let entries: Vec<Value> = entries.iter().map(entry).collect();
            Ok(Reply::Frame(
                json!({"type": "state_list", "entries": entries}).to_string(),
            ))
        }
    }
}

fn entry(e: &StateEntry) -> Value {
    json!({"key": e.key, "value": e.value, "updatedBy": e.updated_by,
        "updatedAt": iso(e.updated_at)})
}

async fn set(ctx: &Ctx, me: &Presence, key: &str, value: Value) -> Handled {
    let max = ctx.config.settings.max_message_bytes;
    let size = value.to_string().len();
    if size > max {
        return Err(Refusal::bad_request(format!(
            "`value` is {size} bytes serialised; at most {max} (max_message_bytes)"
        )));
    }
    let member = member_of(ctx, me).await?;
    let deleting = value.is_null();
    let write = StateWrite {
        mesh_id: &me.mesh_id,
        key,
        value: (!deleting).then_some(&value),
        member_id: &member.id,
        member_name: &member.display_name,
        at: ctx.now(),
        max_keys: MAX_KEYS_PER_MESH,
    };
    match bounded(ctx.store.write_state(&write)).await? {
        StateWritten::Full => {
            return Err(Refusal::new(
                "limit",
                format!("the mesh holds {MAX_KEYS_PER_MESH} state keys; delete one first"),
            ))
        }
        StateWritten::Deleted(false) => return Ok(Reply::None),
        StateWritten::Stored | StateWritten::Deleted(true) => {}
    }
    ctx.audit.record(
        &me.mesh_id,
        "state_set",
        Some(Actor {
            member_id: &member.id,
            name: &member.display_name,
        }),
        json!({"key": key, "deleted": deleting, "size_bytes": if deleting { 0 } else { size }}),
    );
    let frame = json!({"type": "state_change", "key": key, "value": value,
        "updatedBy": member.display_name})
    .to_string();
    ctx.signal_cluster(Signal::Event {
        mesh: me.mesh_id.clone(),
        skip: Skip::Presence(me.id),
        frame,
    });
    Ok(Reply::None)
}
