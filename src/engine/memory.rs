//! Memory (PROTOCOL-MESH.md §2): any member remembers and recalls;
//! only the author or a privileged member forgets. `recall` answers
//! `memory_results`, and `memory_recall_result` for the 1.37 daemon.
//! Audited by id and size, never the content.

use serde_json::{json, Value};

use super::audit::Actor;
use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::{caller, is_privileged};
use crate::protocol::ids;
use crate::protocol::memory::{MemoryFrame, MAX_RECALLED};
use crate::protocol::wire::Head;
use crate::store::{Forgot, Memory};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: MemoryFrame, head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    match frame {
        MemoryFrame::Remember { content, tags } => {
            let max = ctx.config.settings.max_message_bytes;
            if content.len() > max {
                return Err(Refusal::bad_request(format!(
                    "`content` is {} bytes; at most {max} (max_message_bytes)",
                    content.len()
                )));
            }
            let (_, member) = caller(ctx, me).await?;
            let now = ctx.now();
            let m = Memory {
                id: crate::store::new_message_id(now),
                mesh_id: me.mesh_id.clone(),
                content,
                tags,
                remembered_by: member.display_name.clone(),
                remembered_by_member: member.id.clone(),
                remembered_at: now,
            };
            bounded(ctx.store.remember(&m)).await?;
            let id = ids::encode(m.id);
            ctx.audit.record(
                &me.mesh_id,
                "memory_stored",
                Some(Actor {
                    member_id: &member.id,
                    name: &member.display_name,
                }),
                json!({"memory_id": id, "size_bytes": m.content.len(), "tags": m.tags.len()}),
            );
            Ok(Reply::Frame(
                json!({"type": "memory_stored", "id": id, "memoryId": id}).to_string(),
            ))
        }
        MemoryFrame::Recall { query } => {
            caller(ctx, me).await?;
            let found = bounded(ctx.store.recall(&me.mesh_id, &query, MAX_RECALLED)).await?;
            let memories: Vec<Value> = found.iter().map(wire).collect();
            let mut frames =
                vec![json!({"type": "memory_results", "memories": memories}).to_string()];
            // Matched by `_reqId` only: without one nobody could take it.
            if head.req_id.is_some() {
                frames
                    .push(json!({"type": "memory_recall_result", "matches": memories}).to_string());
            }
            Ok(Reply::Frames(frames))
        }
        MemoryFrame::Forget { memory_id } => {
            let (mesh, member) = caller(ctx, me).await?;
            let forgot = match ids::decode(&memory_id) {
                Some(id) => {
                    let privileged = is_privileged(&mesh, &member);
                    let f = ctx.store.forget(&me.mesh_id, id, &member.id, privileged);
                    bounded(f).await?
                }
                None => Forgot::NotFound,
            };
            match forgot {
                Forgot::Forbidden => {
                    return Err(Refusal::new(
                        "forbidden",
                        "only its author, an admin or the mesh owner can forget a memory",
                    ))
                }
                Forgot::Done => ctx.audit.record(
                    &me.mesh_id,
                    "memory_forgotten",
                    Some(Actor {
                        member_id: &member.id,
                        name: &member.display_name,
                    }),
                    json!({"memory_id": memory_id}),
                ),
                Forgot::NotFound => {}
            }
            // The same `ack` for an unknown id: the plain clients ignore it
            // (no pending send has that id).
            Ok(Reply::Frame(
                json!({"type": "ack", "id": memory_id, "messageId": memory_id, "queued": false})
                    .to_string(),
            ))
        }
    }
}

fn wire(m: &Memory) -> Value {
    json!({
        "id": ids::encode(m.id),
        "content": m.content,
        "tags": m.tags,
        "rememberedBy": m.remembered_by,
        "rememberedAt": iso(m.remembered_at),
    })
}
