//! `mesh_info` (PROTOCOL-MESH.md §7) and the audit log over WebSocket
//! (§8): read-only, for any member, cluster-wide from the shared store.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::audit::verify_chain;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::caller;
use super::{bounded, Ctx};
use crate::protocol::mesh::MeshFrame;
use crate::protocol::wire::Head;
use crate::store::Presence;
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: MeshFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    caller(ctx, me).await.map_err(|r| match (r.code, &frame) {
        ("unavailable", MeshFrame::AuditQuery { .. }) => {
            Refusal::new("audit_query_error", "the audit log cannot be read")
        }
        ("unavailable", MeshFrame::AuditVerify) => {
            Refusal::new("audit_verify_error", "the audit log cannot be read")
        }
        _ => r,
    })?;
    match frame {
        MeshFrame::Info => info(ctx, me).await,
        MeshFrame::AuditQuery {
            limit,
            offset,
            event_type,
        } => {
            let failed = |_| Refusal::new("audit_query_error", "the audit log cannot be read");
            let (_, mut entries) = bounded(ctx.store.audit_chain(&me.mesh_id))
                .await
                .map_err(failed)?;
            entries.retain(|e| event_type.as_deref().is_none_or(|t| e.event_type == t));
            entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
            let total = entries.len();
            let page: Vec<Value> = entries
                .iter()
                .skip(offset)
                .take(limit)
                .map(|e| {
                    let actor = e
                        .actor_name
                        .clone()
                        .or_else(|| e.actor_member_id.clone())
                        .unwrap_or_else(|| "system".into());
                    json!({"id": e.seq, "eventType": e.event_type, "actor": actor,
                        "payload": e.payload, "hash": e.hash, "createdAt": iso(e.created_at)})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "audit_result", "entries": page, "total": total}).to_string(),
            ))
        }
        MeshFrame::AuditVerify => {
            let v = bounded(verify_chain(ctx, &me.mesh_id))
                .await
                .map_err(|_| Refusal::new("audit_verify_error", "the audit log cannot be read"))?;
            let mut r =
                json!({"type": "audit_verify_result", "valid": v.valid, "entries": v.entries});
            if let Some(seq) = v.broken_at {
                r["brokenAt"] = json!(seq);
            }
            Ok(Reply::Frame(r.to_string()))
        }
    }
}

async fn info(ctx: &Ctx, me: &Presence) -> Handled {
    let mesh = &me.mesh_id;
    let presences = bounded(ctx.store.list_presences(mesh)).await?;
    let groups: BTreeSet<String> = presences
        .iter()
        .flat_map(|p| p.groups.iter().map(|g| format!("@{}", g.name)))
        .collect();
    let state_keys: Vec<String> = bounded(ctx.store.list_state(mesh))
        .await?
        .into_iter()
        .map(|e| e.key)
        .collect();
    let memories = bounded(ctx.store.count_memories(mesh)).await?;
    let (open, claimed, done) = bounded(ctx.store.count_tasks(mesh)).await?;
    let collections = bounded(ctx.store.list_collections(mesh)).await?;
    // Files and streams are later families (PROTOCOL-MESH.md §14, §17):
    // none exist in this broker yet.
    Ok(Reply::Frame(
        json!({
            "type": "mesh_info_result",
            "mesh": mesh,
            "peers": presences.len(),
            "groups": groups,
            "stateKeys": state_keys,
            "memoryCount": memories,
            "fileCount": 0,
            "tasks": {"open": open, "claimed": claimed, "done": done},
            "streams": [],
            "tables": [],
            "collections": collections,
            "yourName": me.display_name,
            "yourGroups": me.groups,
        })
        .to_string(),
    ))
}
