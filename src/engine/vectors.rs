//! Vectors (PROTOCOL-MESH.md §11): store text points, find them by
//! substring, delete one's own (or anyone's, privileged). Storage
//! failures on store answer `vector_error`. Audited by id and size.

use serde_json::{json, Value};

use super::audit::Actor;
use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::{caller, is_privileged};
use crate::protocol::ids;
use crate::protocol::vectors::{VectorFrame, MAX_COLLECTIONS, MAX_POINTS};
use crate::protocol::wire::Head;
use crate::store::{Point, PointDeleted, PointStored};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: VectorFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    let (mesh, member) = caller(ctx, me).await.map_err(|r| match (r.code, &frame) {
        ("unavailable", VectorFrame::Store { .. }) => {
            Refusal::new("vector_error", "the point cannot be stored")
        }
        _ => r,
    })?;
    let actor = Actor {
        member_id: &member.id,
        name: &member.display_name,
    };
    match frame {
        VectorFrame::Store {
            collection,
            text,
            metadata,
        } => {
            let max = ctx.config.settings.max_message_bytes;
            let meta_size = Value::Object(metadata.clone()).to_string().len();
            for (field, size) in [("text", text.len()), ("metadata", meta_size)] {
                if size > max {
                    return Err(Refusal::bad_request(format!(
                        "`{field}` is {size} bytes; at most {max} (max_message_bytes)"
                    )));
                }
            }
            let now = ctx.now();
            let p = Point {
                id: crate::store::new_message_id(now),
                mesh_id: me.mesh_id.clone(),
                collection,
                text,
                metadata,
                stored_by_member: member.id.clone(),
                stored_by_pubkey: member.pubkey.clone(),
                stored_at: now,
            };
            let stored = bounded(ctx.store.store_point(&p, MAX_COLLECTIONS, MAX_POINTS))
                .await
                .map_err(|_| Refusal::new("vector_error", "the point cannot be stored"))?;
            if stored == PointStored::Full {
                return Err(Refusal::new(
                    "limit",
                    format!("a mesh holds at most {MAX_COLLECTIONS} collections and {MAX_POINTS} points"),
                ));
            }
            let id = ids::encode(p.id);
            ctx.audit.record(
                &me.mesh_id,
                "vector_stored",
                Some(actor),
                json!({"id": id, "collection": p.collection, "size_bytes": p.text.len()}),
            );
            Ok(Reply::Frame(
                json!({"type": "vector_stored", "id": id}).to_string(),
            ))
        }
        VectorFrame::Search {
            collection,
            query,
            limit,
        } => {
            let hits = ctx
                .store
                .search_points(&me.mesh_id, &collection, &query, limit);
            let results: Vec<Value> = bounded(hits)
                .await?
                .into_iter()
                .map(|p| {
                    let mut meta = p.metadata;
                    meta.insert("text".into(), json!(p.text));
                    meta.insert("mesh_id".into(), json!(p.mesh_id));
                    meta.insert("stored_by".into(), json!(p.stored_by_pubkey));
                    meta.insert("stored_at".into(), json!(iso(p.stored_at)));
                    json!({"id": ids::encode(p.id), "text": p.text, "score": 1.0,
                        "metadata": meta})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "vector_results", "results": results}).to_string(),
            ))
        }
        VectorFrame::Delete { collection, id } => {
            let deleted = match ids::decode(&id) {
                Some(uuid) => {
                    let privileged = is_privileged(&mesh, &member);
                    let d = ctx.store.delete_point(
                        &me.mesh_id,
                        &collection,
                        uuid,
                        &member.id,
                        privileged,
                    );
                    bounded(d).await?
                }
                None => PointDeleted::NotFound,
            };
            match deleted {
                PointDeleted::Forbidden => {
                    return Err(Refusal::new(
                        "forbidden",
                        "only its storer, an admin or the mesh owner can delete a point",
                    ))
                }
                PointDeleted::Deleted => ctx.audit.record(
                    &me.mesh_id,
                    "vector_deleted",
                    Some(actor),
                    json!({"id": id, "collection": collection}),
                ),
                PointDeleted::NotFound => {}
            }
            Ok(Reply::Frame(
                json!({"type": "ack", "id": id, "messageId": id, "queued": false}).to_string(),
            ))
        }
        VectorFrame::ListCollections => {
            let names = bounded(ctx.store.list_collections(&me.mesh_id)).await?;
            Ok(Reply::Frame(
                json!({"type": "collection_list", "collections": names}).to_string(),
            ))
        }
    }
}
