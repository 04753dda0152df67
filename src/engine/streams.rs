//! Streams (PROTOCOL-MESH.md §14): a publish reaches every other online
//! subscriber of that stream in the mesh on every node, at most once. The
//! subscriptions are rows of the store (counted cluster-wide, kept across
//! re-attach); each node also indexes those of its own sessions, so a
//! publish touches no database: it is one cluster signal, and every node
//! writes it to its local subscribers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
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
use crate::store::{Presence, StreamCreated, StreamRow};
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
            ctx.sessions.subscribe(me.id, &stream);
            Ok(Reply::Frame(
                json!({"type": "subscribed", "stream": stream}).to_string(),
            ))
        }
        StreamFrame::Unsubscribe { stream } => {
            ctx.sessions.unsubscribe(me.id, &stream);
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
    let m = &ctx.metrics.fanout;
    let rate = ctx.config.settings.stream_rate_per_min;
    if !ctx.publishing.take(&me.member_id, rate, ctx.now()) {
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
    let published_by = match ctx.publishing.name(&me.member_id) {
        Some(name) => name,
        None => {
            let member = member_of(ctx, me).await?;
            ctx.publishing.remember(&member.id, &member.display_name);
            member.display_name
        }
    };
    m.stream_publishes
        .get_or_create(&ResultLabel { result: "ok" })
        .inc();
    let frame = json!({"type": "stream_data", "stream": stream, "data": data,
        "publishedBy": published_by})
    .to_string();
    ctx.signal_cluster(Signal::Stream {
        mesh: me.mesh_id.clone(),
        stream: stream.to_string(),
        skip: me.id,
        frame,
    });
    Ok(Reply::None)
}

/// How long a member's display name is reused for `publishedBy` before it
/// is read again: a rename shows within it, and a publish costs no read.
const NAME_TTL: Duration = Duration::from_secs(10);
/// Budgets kept before idle (full) ones are dropped.
const BUDGETS_KEPT: usize = 10_000;

/// This node's publish budgets and publisher names. ◆ The budget is per
/// member on each node: a cluster-wide bucket would cost a database write
/// per publish, and a member publishing through sessions on several nodes
/// gets each node's share.
pub struct Publishing {
    budgets: Mutex<HashMap<String, (f64, DateTime<Utc>)>>,
    names: moka::sync::Cache<String, String>,
}

impl Default for Publishing {
    fn default() -> Self {
        Publishing {
            budgets: Mutex::default(),
            names: moka::sync::Cache::builder()
                .max_capacity(BUDGETS_KEPT as u64)
                .time_to_live(NAME_TTL)
                .build(),
        }
    }
}

impl Publishing {
    /// Takes one publish from `member`'s budget (`per_min` a minute, a
    /// minute's worth at once).
    fn take(&self, member: &str, per_min: u32, now: DateTime<Utc>) -> bool {
        let mut b = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= BUDGETS_KEPT && !b.contains_key(member) {
            // Refilled for a minute: as good as absent.
            b.retain(|_, (_, at)| now - *at < chrono::Duration::minutes(1));
        }
        let (tokens, at) = b.get(member).copied().unwrap_or((f64::from(per_min), now));
        match crate::store::refill_and_take(tokens, at, now, per_min, per_min) {
            Some(left) => {
                b.insert(member.to_string(), (left, now));
                true
            }
            None => false,
        }
    }

    fn name(&self, member: &str) -> Option<String> {
        self.names.get(member)
    }

    fn remember(&self, member: &str, name: &str) {
        self.names.insert(member.to_string(), name.to_string());
    }
}

/// A presence that existed before (re-attached, or its socket replaced)
/// starts here with the subscriptions it holds in the store.
pub async fn restore(ctx: &Ctx, presence: Uuid) {
    match bounded(ctx.store.presence_streams(presence)).await {
        Ok(streams) => {
            for s in streams {
                ctx.sessions.subscribe(presence, &s);
            }
        }
        Err(e) => {
            tracing::warn!(presence_id = %presence, error = %e,
                "could not restore stream subscriptions; the session misses publishes until it subscribes again")
        }
    }
}
