//! Streams (PROTOCOL-MESH.md §14): a publish reaches every other online
//! subscriber of that stream in the mesh on every node, at most once: the
//! store names the subscribers and their nodes, this node writes to its
//! own and signals each other node once per publish.

use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;

use super::audit::Actor;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::member_of;
use super::signal::Signal;
use super::{bounded, Ctx};
use crate::metrics::ResultLabel;
use crate::protocol::ids;
use crate::protocol::streams::{StreamFrame, MAX_STREAMS_PER_MESH};
use crate::protocol::wire::Head;
use crate::store::{Presence, Publish, StreamCreated, StreamRow};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: StreamFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    match frame {
        StreamFrame::Create { name } => create(ctx, me, name).await,
        StreamFrame::Subscribe { stream } => {
            if !bounded(ctx.store.subscribe(&me.mesh_id, &stream, me.id)).await? {
                return Err(Refusal::new("forbidden", "this session has ended"));
            }
            Ok(Reply::Frame(
                json!({"type": "subscribed", "stream": stream}).to_string(),
            ))
        }
        StreamFrame::Unsubscribe { stream } => {
            bounded(ctx.store.unsubscribe(&me.mesh_id, &stream, me.id)).await?;
            Ok(Reply::None)
        }
        StreamFrame::Publish { stream, data } => publish(ctx, me, &stream, data).await,
        StreamFrame::List => {
            let listed = bounded(ctx.store.list_streams(&me.mesh_id)).await?;
            let streams: Vec<Value> = listed
                .iter()
                .map(|l| {
                    json!({"id": ids::encode(l.stream.id), "name": l.stream.name,
                        "createdBy": l.stream.created_by, "createdAt": iso(l.stream.created_at),
                        "subscriberCount": l.subscribers})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "stream_list", "streams": streams}).to_string(),
            ))
        }
    }
}

async fn create(ctx: &Ctx, me: &Presence, name: String) -> Handled {
    let member = member_of(ctx, me).await?;
    let now = ctx.now();
    let row = StreamRow {
        id: crate::store::new_message_id(now),
        mesh_id: me.mesh_id.clone(),
        name,
        created_by: member.display_name.clone(),
        created_by_member: member.id.clone(),
        created_at: now,
    };
    let id = match bounded(ctx.store.create_stream(&row, MAX_STREAMS_PER_MESH)).await? {
        StreamCreated::Existing(id) => id,
        StreamCreated::Full => {
            return Err(Refusal::new(
                "limit",
                format!("the mesh holds {MAX_STREAMS_PER_MESH} streams"),
            ))
        }
        StreamCreated::Created => {
            ctx.audit.record(
                &me.mesh_id,
                "stream_created",
                Some(Actor {
                    member_id: &member.id,
                    name: &member.display_name,
                }),
                json!({"stream": row.name}),
            );
            row.id
        }
    };
    Ok(Reply::Frame(
        json!({"type": "stream_created", "id": ids::encode(id), "name": row.name}).to_string(),
    ))
}

async fn publish(ctx: &Ctx, me: &Presence, stream: &str, data: Value) -> Handled {
    let max = ctx.config.settings.max_message_bytes;
    let size = data.to_string().len();
    if size > max {
        return Err(Refusal::bad_request(format!(
            "`data` is {size} bytes serialised; at most {max} (max_message_bytes)"
        )));
    }
    let rate = ctx.config.settings.stream_rate_per_min;
    let m = &ctx.metrics.fanout;
    let route = ctx
        .store
        .publish_route(&me.mesh_id, stream, &me.member_id, rate, ctx.now());
    let (published_by, to) = match bounded(route).await? {
        Publish::Gone => {
            return Err(Refusal::new(
                "forbidden",
                "this session's member is no longer in the mesh",
            ))
        }
        Publish::Limited => {
            m.stream_publishes
                .get_or_create(&ResultLabel {
                    result: "rate_limit",
                })
                .inc();
            return Err(Refusal::new(
                "rate_limit",
                format!("over the publish budget of {rate} per minute (stream_rate_per_min)"),
            ));
        }
        Publish::Route { published_by, to } => (published_by, to),
    };
    m.stream_publishes
        .get_or_create(&ResultLabel { result: "ok" })
        .inc();
    let mut by_node: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (presence, node) in to.into_iter().filter(|(p, _)| *p != me.id) {
        by_node.entry(node).or_default().push(presence);
    }
    if by_node.is_empty() {
        return Ok(Reply::None);
    }
    let frame = json!({"type": "stream_data", "stream": stream, "data": data,
        "publishedBy": published_by})
    .to_string();
    for (node, p) in by_node {
        m.stream_fanout.inc_by(p.len() as u64);
        ctx.signal(
            node,
            Signal::Frames {
                p,
                frame: frame.clone(),
            },
        );
    }
    Ok(Reply::None)
}
