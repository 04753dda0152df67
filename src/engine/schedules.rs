//! Scheduled messages (PROTOCOL-MESH.md §12), the frames: `schedule` stores
//! an entry and tells every node's scheduler when it is due,
//! `list_scheduled` and `cancel_scheduled` read and remove. Firing is the
//! scheduler's (`engine::scheduler`). The stored message is plaintext and
//! never audited or logged.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::audit::Actor;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::{caller, is_privileged};
use super::signal::Signal;
use super::{bounded, Ctx};
use crate::protocol::cron::Cron;
use crate::protocol::ids;
use crate::protocol::schedules::{ScheduleFrame, MAX_AHEAD_DAYS, MAX_PER_MEMBER};
use crate::protocol::target::Target;
use crate::protocol::wire::Head;
use crate::store::{Member, Presence, Schedule};

pub async fn handle(s: &mut Session, frame: ScheduleFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    let (mesh, member) = caller(ctx, me).await?;
    match frame {
        ScheduleFrame::Schedule {
            to,
            message,
            deliver_at,
            cron,
            subtype,
        } => {
            let new = New {
                to,
                message,
                deliver_at,
                cron,
                subtype,
            };
            create(ctx, me, &member, new).await
        }
        ScheduleFrame::List => {
            let entries = bounded(ctx.store.list_schedules(&me.mesh_id, &member.id)).await?;
            let messages: Vec<Value> = entries.iter().map(listed).collect();
            Ok(Reply::Frame(
                json!({"type": "scheduled_list", "messages": messages}).to_string(),
            ))
        }
        ScheduleFrame::Cancel { scheduled_id } => {
            let only = (!is_privileged(&mesh, &member)).then_some(member.id.as_str());
            let ok = match ids::decode(&scheduled_id) {
                Some(id) => bounded(ctx.store.cancel_schedule(&me.mesh_id, id, only)).await?,
                None => false,
            };
            if ok {
                audit(
                    ctx,
                    &member,
                    "schedule_cancelled",
                    json!({"scheduled_id": scheduled_id}),
                );
                // Another node's timer may be waiting for it.
                ctx.signal_cluster(Signal::Due {
                    at: ctx.now().timestamp_millis(),
                });
            }
            Ok(Reply::Frame(
                json!({"type": "cancel_scheduled_ack", "scheduledId": scheduled_id, "ok": ok})
                    .to_string(),
            ))
        }
    }
}

struct New {
    to: String,
    message: String,
    deliver_at: Option<i64>,
    cron: Option<String>,
    subtype: Option<String>,
}

async fn create(ctx: &Ctx, me: &Presence, member: &Member, new: New) -> Handled {
    let max = ctx.config.settings.max_message_bytes;
    let encoded = new.message.len().div_ceil(3) * 4;
    if encoded > max {
        return Err(Refusal::bad_request(format!(
            "`message` is {encoded} bytes in base64; at most {max} (max_message_bytes)"
        )));
    }
    let now = ctx.now();
    let next_at = match &new.cron {
        Some(text) => {
            let cron = Cron::parse(text, now).map_err(|e| Refusal::new("invalid_cron", e))?;
            cron.next_after(now)
                .ok_or_else(|| Refusal::new("invalid_cron", "no matching minute"))?
        }
        None => {
            let ms = new.deliver_at.unwrap_or(0);
            let at = DateTime::<Utc>::from_timestamp_millis(ms)
                .ok_or_else(|| Refusal::bad_request("`deliverAt` is out of range"))?;
            if at > now + Duration::days(MAX_AHEAD_DAYS) {
                return Err(Refusal::bad_request(format!(
                    "`deliverAt` is more than {MAX_AHEAD_DAYS} days ahead"
                )));
            }
            // A time already past fires at once.
            at.max(now)
        }
    };
    let to_member_id = match Target::parse(&new.to) {
        Some(Target::Key(key)) => key_member(ctx, me, member, &key).await?,
        _ => None,
    };
    let entry = Schedule {
        id: crate::store::new_message_id(now),
        mesh_id: me.mesh_id.clone(),
        member_id: member.id.clone(),
        member_pubkey: member.pubkey.clone(),
        member_name: member.display_name.clone(),
        to: new.to,
        to_member_id,
        message: new.message,
        subtype: new.subtype,
        cron: new.cron,
        next_at,
        created_at: now,
        fired_count: 0,
    };
    if !bounded(ctx.store.create_schedule(&entry, MAX_PER_MEMBER)).await? {
        return Err(Refusal::new(
            "limit",
            format!("this member has {MAX_PER_MEMBER} active scheduled messages; cancel one first"),
        ));
    }
    let scheduled_id = ids::encode(entry.id);
    audit(
        ctx,
        member,
        "schedule_created",
        json!({"scheduled_id": scheduled_id, "to": entry.to, "cron": entry.cron.is_some(),
            "deliver_at": next_at.timestamp_millis(), "size_bytes": entry.message.len()}),
    );
    ctx.signal_cluster(Signal::Due {
        at: next_at.timestamp_millis(),
    });
    let mut ack = json!({"type": "scheduled_ack", "scheduledId": scheduled_id,
        "deliverAt": next_at.timestamp_millis()});
    if let Some(c) = &entry.cron {
        ack["cron"] = json!(c);
    }
    Ok(Reply::Frame(ack.to_string()))
}

/// The member a key names now: the caller's own member, a member of the
/// mesh, or the member of a live or in-grace session. Kept with the entry
/// so the fire still reaches that member once the session has ended.
async fn key_member(
    ctx: &Ctx,
    me: &Presence,
    member: &Member,
    key: &str,
) -> Result<Option<String>, Refusal> {
    if member.pubkey == key || me.session_pubkey.as_deref() == Some(key) {
        return Ok(Some(member.id.clone()));
    }
    if let Some(m) = bounded(ctx.store.member_by_pubkey(&me.mesh_id, key)).await? {
        return Ok(Some(m.id));
    }
    let routes = bounded(ctx.store.send_routes(&me.mesh_id, true)).await?;
    Ok(routes
        .targets
        .iter()
        .find(|p| p.session_pubkey.as_deref() == Some(key))
        .map(|p| p.member_id.clone()))
}

fn listed(e: &Schedule) -> Value {
    let mut v = json!({"id": ids::encode(e.id), "to": e.to, "message": e.message,
        "deliverAt": e.next_at.timestamp_millis(), "createdAt": e.created_at.timestamp_millis(),
        "firedCount": e.fired_count});
    if let Some(c) = &e.cron {
        v["cron"] = json!(c);
    }
    v
}

fn audit(ctx: &Ctx, member: &Member, event: &'static str, data: Value) {
    ctx.audit.record(
        &member.mesh_id,
        event,
        Some(Actor {
            member_id: &member.id,
            name: &member.display_name,
        }),
        data,
    );
}
