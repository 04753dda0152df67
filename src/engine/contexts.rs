//! Contexts (PROTOCOL-MESH.md §5): each member shares its own, replacing
//! the last; the 2026-04 client learns of it by a `state_change` on key
//! `_context:<name>` (no state entry is made). Audited by id and size.

use serde_json::{json, Value};

use super::audit::Actor;
use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::caller;
use super::signal::{Signal, Skip};
use crate::protocol::contexts::{ContextFrame, MAX_FOUND};
use crate::protocol::ids;
use crate::protocol::wire::Head;
use crate::store::Context;
use crate::time::iso;

/// `list_contexts` shows every member's; this only bounds a reply.
const MAX_LISTED: usize = 10_000;

pub async fn handle(s: &mut Session, frame: ContextFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    match frame {
        ContextFrame::Share {
            summary,
            files_read,
            key_findings,
            tags,
        } => {
            let max = ctx.config.settings.max_message_bytes;
            if summary.len() > max {
                return Err(Refusal::bad_request(format!(
                    "`summary` is {} bytes; at most {max} (max_message_bytes)",
                    summary.len()
                )));
            }
            let (_, member) = caller(ctx, me).await?;
            let now = ctx.now();
            let c = Context {
                id: crate::store::new_message_id(now),
                mesh_id: me.mesh_id.clone(),
                member_id: member.id.clone(),
                peer_name: member.display_name.clone(),
                summary,
                files_read,
                key_findings,
                tags,
                updated_at: now,
            };
            let stored = bounded(ctx.store.share_context(&c)).await?;
            let id = ids::encode(stored.id);
            ctx.audit.record(
                &me.mesh_id,
                "context_shared",
                Some(Actor {
                    member_id: &member.id,
                    name: &member.display_name,
                }),
                json!({"context_id": id, "size_bytes": stored.summary.len()}),
            );
            let event = json!({"type": "state_change",
                "key": format!("_context:{}", member.display_name),
                "value": stored.summary, "updatedBy": member.display_name});
            ctx.signal_cluster(Signal::Event {
                mesh: me.mesh_id.clone(),
                skip: Skip::Presence(me.id),
                frame: event.to_string(),
            });
            Ok(Reply::Frame(
                json!({"type": "context_shared", "id": id}).to_string(),
            ))
        }
        ContextFrame::Get { query } => {
            caller(ctx, me).await?;
            let found = bounded(ctx.store.find_contexts(&me.mesh_id, &query, MAX_FOUND)).await?;
            let contexts: Vec<Value> = found
                .iter()
                .map(|c| {
                    json!({"peerName": c.peer_name, "summary": c.summary,
                        "filesRead": c.files_read, "keyFindings": c.key_findings,
                        "tags": c.tags, "updatedAt": iso(c.updated_at)})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "context_results", "contexts": contexts}).to_string(),
            ))
        }
        ContextFrame::List => {
            caller(ctx, me).await?;
            let all = bounded(ctx.store.find_contexts(&me.mesh_id, "", MAX_LISTED)).await?;
            let contexts: Vec<Value> = all
                .iter()
                .map(|c| {
                    json!({"peerName": c.peer_name, "summary": c.summary, "tags": c.tags,
                        "updatedAt": iso(c.updated_at)})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "context_list", "contexts": contexts}).to_string(),
            ))
        }
    }
}
