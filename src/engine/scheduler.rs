//! The scheduler: every node fires due scheduled messages (PROTOCOL-MESH.md
//! §12), racing the others through the store's locked fire, so each entry
//! fires exactly once whoever is still there. It sleeps until the earliest
//! due entry the table holds, at most [`POLL`], and wakes early when any
//! node creates or cancels an entry ([`Signal::Due`](super::signal::Signal)).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::audit::Actor;
use super::routing::{route_from, Sender, WakeRouter};
use super::{bounded, Ctx};
use crate::metrics::ResultLabel;
use crate::protocol::cron::Cron;
use crate::protocol::ids;
use crate::protocol::target::{Priority, Target};
use crate::store::{Echo, Fire, Fired, NewDelivery, NewMessage, RouteTarget, Schedule};

/// Longest sleep between looks at the table.
pub const POLL: Duration = Duration::from_millis(500);
/// After a fire that took nothing while an entry is due (another node
/// holds it mid-fire): looking again at once would only spin.
const MIN_GAP: Duration = Duration::from_millis(50);
/// Entries per fire transaction.
pub const FIRE_BATCH: usize = 256;
/// Pause after a failed fire (database trouble).
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Wakes this node's scheduler: an entry was created or cancelled.
#[derive(Default)]
pub struct Wakeup(Notify);

impl Wakeup {
    /// An entry is due at `at` (ms since the epoch): look at the table
    /// again. Sleeps are at most [`POLL`], so an entry due later needs no
    /// wake-up.
    pub fn due_at(&self, at: i64) {
        if at <= Utc::now().timestamp_millis() + POLL.as_millis() as i64 {
            self.0.notify_one();
        }
    }
}

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    loop {
        // One cheap read when nothing is due: the fire transaction only
        // when something is.
        let wait = match bounded(ctx.store.next_schedule_due()).await {
            Ok(Some(at)) if at <= ctx.now() => match fire(&ctx).await {
                // Fired some: look at the table again at once.
                Ok(n) if n > 0 => continue,
                // Due but held by another node's fire.
                Ok(_) => MIN_GAP,
                Err(e) => {
                    tracing::warn!(error = %e, "firing scheduled messages failed");
                    RETRY_AFTER_ERROR
                }
            },
            Ok(Some(at)) => (at - ctx.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(POLL),
            Ok(None) => POLL,
            Err(_) => RETRY_AFTER_ERROR,
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.schedules.0.notified() => {}
        }
    }
}

/// Fires what is due now; how many entries.
async fn fire(ctx: &Ctx) -> Result<usize, crate::store::StoreError> {
    let now = ctx.now();
    let lease = Duration::from_secs(ctx.config.settings.node_lease_seconds);
    let planner = |s: &Schedule, targets: &[RouteTarget]| plan(ctx, now, s, targets);
    let fired = bounded(ctx.store.fire_due(now, FIRE_BATCH, lease, &planner)).await?;
    for f in &fired {
        after_fire(ctx, now, f);
    }
    Ok(fired.len())
}

/// The send a due entry makes now, and its next fire time (cron).
pub fn plan(ctx: &Ctx, now: DateTime<Utc>, s: &Schedule, targets: &[RouteTarget]) -> Fire {
    let next_at = s
        .cron
        .as_deref()
        .and_then(|c| Cron::parse(c, now).ok())
        .and_then(|c| c.next_after(now));
    let ttl = chrono::Duration::seconds(ctx.config.settings.queue_ttl_seconds as i64);
    let message = NewMessage {
        id: crate::store::new_message_id(now),
        mesh_id: s.mesh_id.clone(),
        sender_member_id: s.member_id.clone(),
        sender_member_pubkey: s.member_pubkey.clone(),
        // ◆ Empty: the body is not sealed, and the 2026-04 client decodes
        // a push as plain base64 only when `senderPubkey` is empty.
        sender_session_pubkey: Some(String::new()),
        target_spec: s.to.clone(),
        priority: Priority::Now,
        nonce: String::new(),
        ciphertext: base64::engine::general_purpose::STANDARD.encode(s.message.as_bytes()),
        created_at: now,
        expires_at: now + ttl,
        echo: Echo {
            sender_name: s.member_name.clone(),
            subtype: s.subtype.clone(),
            ..Echo::default()
        },
    };
    Fire {
        send: Some((message, recipients(s, targets))),
        next_at,
    }
}

/// The rows of a fire (PROTOCOL-MESH.md §12, "Recipients at fire time"):
/// multicasts as any send from the creating member; a key reaches its
/// session if live or in grace (the creator's own only while online),
/// else its member, queued even with nobody online.
pub fn recipients(s: &Schedule, targets: &[RouteTarget]) -> Vec<NewDelivery> {
    let sender = Sender {
        member_id: &s.member_id,
        presence: None,
    };
    let Some(target) = Target::parse(&s.to) else {
        return Vec::new();
    };
    let Target::Key(key) = &target else {
        return route_from(&target, Priority::Now, sender, targets);
    };
    if let Some(p) = targets
        .iter()
        .find(|p| p.session_pubkey.as_deref() == Some(key.as_str()))
    {
        if p.member_id != s.member_id || p.online {
            return vec![NewDelivery::to_session(p)];
        }
        // The creator's own session, gone quiet: to its member instead.
        let member = Target::Key(p.member_pubkey.clone());
        return route_from(&member, Priority::Now, sender, targets);
    }
    let routed = route_from(&target, Priority::Now, sender, targets);
    if !routed.is_empty() {
        return routed;
    }
    match &s.to_member_id {
        Some(member) => vec![NewDelivery {
            recipient_member_id: member.clone(),
            recipient_session: None,
            exclude_session: None,
            claim: None,
        }],
        None => Vec::new(),
    }
}

/// Metrics, audit and wake-ups of one committed fire.
fn after_fire(ctx: &Ctx, now: DateTime<Utc>, f: &Fired) {
    let m = &ctx.metrics.fanout;
    let late = (now - f.schedule.next_at).to_std().unwrap_or_default();
    m.schedule_lateness.observe(late.as_secs_f64());
    if let Some(cron) = f.schedule.cron.as_deref() {
        m.schedule_missed
            .inc_by(missed_periods(cron, f.schedule.next_at, now));
    }
    let Some((message, deliveries)) = &f.fire.send else {
        return;
    };
    let result = if deliveries.is_empty() {
        "no_recipient"
    } else {
        "sent"
    };
    m.schedule_fires
        .get_or_create(&ResultLabel { result })
        .inc();
    let kind = Target::parse(&f.schedule.to).map_or("unknown", |t| t.kind());
    ctx.audit.record(
        &f.schedule.mesh_id,
        "message_sent",
        Some(Actor {
            member_id: &f.schedule.member_id,
            name: &f.schedule.member_name,
        }),
        json!({
            "message_id": ids::encode(message.id),
            "scheduled_id": ids::encode(f.schedule.id),
            "target_kind": kind,
            "target_spec": f.schedule.to,
            "priority": "now",
            "size_bytes": message.ciphertext.len(),
            "recipients": deliveries.len(),
        }),
    );
    let router = WakeRouter::new(f.targets.iter());
    for (node, signal) in router.signals(&f.schedule.mesh_id, deliveries) {
        ctx.signal(node, signal);
    }
}

/// Matching minutes after `due` up to `now` that this fire stands in for:
/// an entry overdue by three periods fires once and misses two.
pub fn missed_periods(cron: &str, due: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let Ok(c) = Cron::parse(cron, due) else {
        return 0;
    };
    let mut n = 0;
    let mut t = due;
    // Bounded: a year of minutely periods is 525,600; count to a day's.
    while n < 1440 {
        match c.next_after(t) {
            Some(next) if next <= now => {
                n += 1;
                t = next;
            }
            _ => break,
        }
    }
    n
}
