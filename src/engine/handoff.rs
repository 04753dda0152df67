//! Pre-claimed delivery: when the sending node itself holds a recipient
//! session that is caught up (see `Mailbox`) and may take the message now
//! (status idle, or priority `now`, as a claim would decide), the batcher
//! stores the row already claimed by that session and hands it over after
//! the commit. The push then needs no claim round trip, which is most of
//! the latency left once the send is durable.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sessions::Mailbox;
use super::Ctx;
use crate::protocol::target::Priority;
use crate::protocol::Status;
use crate::store::{Claimed, NewDelivery, NewMessage, PreClaim, RouteTarget, StoredMessage};

/// Local sessions able to take a handoff in this batch: caught up, with
/// a status settled before their last full claim. Built once per batch so
/// each delivery is a map lookup, not a scan of the mesh.
#[derive(Default)]
pub struct Takers {
    by_session: HashMap<Uuid, Taker>,
    /// In presence order, so a member-addressed row goes where a scan of
    /// the mesh would have found it first.
    by_member: HashMap<String, Vec<Uuid>>,
}

struct Taker {
    mailbox: Arc<Mailbox>,
    status: Status,
}

impl Takers {
    pub fn is_empty(&self) -> bool {
        self.by_session.is_empty()
    }

    /// The session that may take `d` now, if one here may.
    fn pick(&self, d: &NewDelivery, priority: Priority) -> Option<Uuid> {
        let may = |id: &Uuid| {
            self.by_session
                .get(id)
                .is_some_and(|t| priority == Priority::Now || t.status == Status::Idle)
        };
        match d.recipient_session {
            Some(s) => may(&s).then_some(s),
            None => self
                .by_member
                .get(&d.recipient_member_id)?
                .iter()
                .find(|id| d.exclude_session != Some(**id) && may(id))
                .copied(),
        }
    }
}

/// A status must be this much older than the recipient's last full claim
/// for a handoff: the claim then ran under that status, so nothing was
/// held back from it. The margin covers clock skew between the node that
/// wrote the status (a hook may land anywhere) and this one.
const STATUS_SETTLED: chrono::Duration = chrono::Duration::seconds(1);

/// The caught-up local sessions among `presences`.
pub(super) fn takers<'a>(ctx: &Ctx, presences: impl Iterator<Item = &'a RouteTarget>) -> Takers {
    let local: Vec<&RouteTarget> = presences.filter(|p| p.node_id == ctx.node_id).collect();
    let mut mailboxes = ctx.sessions.handoff_targets(local.iter().map(|p| p.id));
    let mut takers = Takers::default();
    for p in local {
        let Some(mailbox) = mailboxes.remove(&p.id) else {
            continue;
        };
        let settled = mailbox
            .claimed_all()
            .is_some_and(|at| p.status_updated_at + STATUS_SETTLED < at);
        if !settled {
            continue;
        }
        takers
            .by_member
            .entry(p.member_id.clone())
            .or_default()
            .push(p.id);
        takers.by_session.insert(
            p.id,
            Taker {
                mailbox,
                status: p.status,
            },
        );
    }
    takers
}

/// Marks each delivery a local caught-up session may take now as
/// claimed by it.
pub(super) fn preclaim(
    ctx: &Ctx,
    deliveries: &mut [NewDelivery],
    takers: &Takers,
    priority: Priority,
    until: DateTime<Utc>,
) {
    for d in deliveries.iter_mut() {
        if let Some(session) = takers.pick(d, priority) {
            d.claim = Some(PreClaim {
                session,
                node: ctx.node_id,
                until,
            });
        }
    }
}

/// Hands the stored pre-claimed rows of one message to their sessions'
/// mailboxes (collected in `out`, in batch order). `claimed` holds the
/// row ids in the order of the pre-claimed deliveries.
pub(super) fn collect_handed(
    message: &NewMessage,
    deliveries: &[NewDelivery],
    claimed: Vec<i64>,
    out: &mut Vec<(Uuid, Claimed)>,
) {
    let wanted = deliveries.iter().filter(|d| d.claim.is_some()).count();
    if wanted != claimed.len() {
        // Not expected from either store; the rows stay claimed until
        // their lease lapses, then any claim takes them.
        tracing::error!(message_id = %message.id, wanted, got = claimed.len(),
            "pre-claimed rows do not match; they will be delivered after the lease");
        return;
    }
    if wanted == 0 {
        return;
    }
    let stored = Arc::new(StoredMessage::of(message));
    let sessions = deliveries.iter().filter_map(|d| d.claim.map(|c| c.session));
    for (session, delivery_id) in sessions.zip(claimed) {
        out.push((
            session,
            Claimed {
                delivery_id,
                message: stored.clone(),
                redelivery: false,
            },
        ));
    }
}

/// Delivers collected handoffs. A session that ended (or was replaced)
/// while the batch was stored gets its rows released instead: its
/// presence's claims were released before ours landed.
pub(super) async fn hand_over(ctx: &Ctx, handed: Vec<(Uuid, Claimed)>, takers: &Takers) {
    // Order matters within a session, not between sessions.
    let mut by: HashMap<Uuid, Vec<Claimed>> = HashMap::new();
    for (session, row) in handed {
        by.entry(session).or_default().push(row);
    }
    for (session, rows) in by {
        let current = ctx.sessions.mailbox(session);
        match (takers.by_session.get(&session), current) {
            (Some(Taker { mailbox: mb, .. }), Some(cur)) if Arc::ptr_eq(mb, &cur) => {
                ctx.metrics.handoffs.inc_by(rows.len() as u64);
                mb.hand(rows);
            }
            _ => {
                let ids: Vec<i64> = rows.iter().map(|r| r.delivery_id).collect();
                if let Err(e) = super::bounded(ctx.store.release_rows(session, &ids)).await {
                    tracing::warn!(presence_id = %session, error = %e,
                        "could not release pre-claimed rows; they return after the lease");
                }
                ctx.sessions.wake(session);
            }
        }
    }
}
