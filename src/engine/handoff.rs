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
use super::Node;
use crate::protocol::frames::Status;
use crate::protocol::target::Priority;
use crate::store::{Claimed, NewDelivery, NewMessage, PreClaim, RouteTarget, StoredMessage};

/// Local sessions able to take a handoff in this batch, by presence.
pub type Takers = HashMap<Uuid, Arc<Mailbox>>;

/// A status must be this much older than the recipient's last full claim
/// for a handoff: the claim then ran under that status, so nothing was
/// held back from it. The margin covers clock skew between the node that
/// wrote the status (a hook may land anywhere) and this one.
const STATUS_SETTLED: chrono::Duration = chrono::Duration::seconds(1);

impl Node {
    /// The caught-up local sessions among `presences`.
    pub(super) fn takers<'a>(&self, presences: impl Iterator<Item = &'a RouteTarget>) -> Takers {
        self.sessions
            .handoff_targets(presences.filter(|p| p.node_id == self.id).map(|p| p.id))
    }

    /// Marks each delivery a local caught-up session may take now as
    /// claimed by it.
    pub(super) fn preclaim(
        &self,
        deliveries: &mut [NewDelivery],
        presences: &[RouteTarget],
        takers: &Takers,
        priority: Priority,
        until: DateTime<Utc>,
    ) {
        for d in deliveries.iter_mut() {
            let pick = presences.iter().find(|p| {
                takers.get(&p.id).is_some_and(|m| {
                    m.claimed_all()
                        .is_some_and(|at| p.status_updated_at + STATUS_SETTLED < at)
                }) && match d.recipient_session {
                    Some(s) => p.id == s,
                    None => p.member_id == d.recipient_member_id && d.exclude_session != Some(p.id),
                } && (priority == Priority::Now || p.status == Status::Idle)
            });
            if let Some(p) = pick {
                d.claim = Some(PreClaim {
                    session: p.id,
                    node: self.id,
                    until,
                });
            }
        }
    }

    /// Hands the stored pre-claimed rows of one message to their sessions'
    /// mailboxes (collected in `out`, in batch order). `claimed` holds the
    /// row ids in the order of the pre-claimed deliveries.
    pub(super) fn collect_handed(
        &self,
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
    pub(super) async fn hand_over(&self, handed: Vec<(Uuid, Claimed)>, takers: &Takers) {
        let mut by: Vec<(Uuid, Vec<Claimed>)> = Vec::new();
        for (session, row) in handed {
            match by.iter_mut().find(|(s, _)| *s == session) {
                Some((_, rows)) => rows.push(row),
                None => by.push((session, vec![row])),
            }
        }
        for (session, rows) in by {
            let current = self.sessions.mailbox(session);
            match (takers.get(&session), current) {
                (Some(mb), Some(cur)) if Arc::ptr_eq(mb, &cur) => {
                    self.metrics.handoffs.inc_by(rows.len() as u64);
                    mb.hand(rows);
                }
                _ => {
                    let ids: Vec<i64> = rows.iter().map(|r| r.delivery_id).collect();
                    if let Err(e) = super::bounded(self.store.release_rows(session, &ids)).await {
                        tracing::warn!(presence_id = %session, error = %e,
                            "could not release pre-claimed rows; they return after the lease");
                    }
                    self.sessions.wake(session);
                }
            }
        }
    }
}
