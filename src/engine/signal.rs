//! What one node asks of another, and the bus that carries it. The engine
//! defines both; `cluster::bus` implements [`Bus`] over LISTEN/NOTIFY and
//! hands received signals back to [`Sessions::apply`](super::sessions::Sessions::apply).
//! Memory mode has no bus: it is one node, and every signal is local.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::relays::Answered;
use super::Ctx;
use crate::protocol::relay::RelayKind;
pub use crate::store::Notice;

/// The largest signal payload a bus must carry. Postgres refuses NOTIFY
/// payloads of 8000 bytes or more; stay clear.
pub const MAX_PAYLOAD: usize = 7900;

/// A wake-up, a close or an event, addressed to a node's sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Signal {
    /// These sessions may have something to claim.
    Wake { p: Vec<Uuid> },
    /// Every local session of these (mesh, member) pairs may.
    WakeMember { m: Vec<(String, String)> },
    /// Close a socket (replaced elsewhere, member revoked, kicked), with
    /// its close reason and an `error` frame to write first, if any.
    Close {
        p: Uuid,
        c: Uuid,
        code: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A system event frame for a mesh's sessions, except `skip`.
    Event {
        mesh: String,
        skip: Skip,
        frame: String,
    },
    /// A stream publish: `frame` for the sessions subscribed to `stream`
    /// of `mesh`, except the publishing presence `skip`.
    Stream {
        mesh: String,
        stream: String,
        skip: Uuid,
        frame: String,
    },
    /// A scheduled entry is due at `at` (ms since the epoch), or one was
    /// cancelled: the node's scheduler looks at the table again.
    Due { at: i64 },
    /// A mesh clock changed (speed, pause, resume): its owner reschedules.
    Clock,
    /// A relayed request for `host`, a presence of the receiving node:
    /// `frame` goes to its socket, and its answer to relay `id` back to
    /// node `from`.
    Forward {
        id: String,
        from: Uuid,
        host: Uuid,
        kind: RelayKind,
        frame: String,
    },
    /// The answer to relay `id`, for the node its caller waits on.
    Answer { id: String, answer: Answered },
}

/// Who does not hear a mesh event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Every session of this member (its own joins, leaves, …).
    Member(String),
    /// Only this presence: a `session_hello`'s join reaches the member's
    /// other sessions too (PROTOCOL-SESSIONS.md §3).
    Presence(Uuid),
    /// Every presence hears it (a webhook's push).
    Nobody,
}

/// Carries signals to other nodes. Fire and forget: a lost wake-up only
/// delays (every session also polls), a lost event is advisory.
pub trait Bus: Send + Sync + 'static {
    fn to_node(&self, node: Uuid, signal: Signal);
    fn to_cluster(&self, signal: Signal);
    /// The NOTIFYs for a send batch's wake-ups of other nodes: each
    /// `(node, signal, message)` says which message caused it, so the
    /// store sends a notice only if one of its messages was stored.
    fn notices(&self, wakes: &[(Uuid, Signal, Uuid)]) -> Vec<Notice>;
}

impl Ctx {
    /// Delivers `signal` to `node`: directly when it is this one.
    pub fn signal(&self, node: Uuid, signal: Signal) {
        if node == self.node_id {
            self.apply(signal);
        } else if let Some(bus) = &self.bus {
            bus.to_node(node, signal);
        }
    }

    /// Applies `signal` here and sends it to every other node.
    pub fn signal_cluster(&self, signal: Signal) {
        if let Some(bus) = &self.bus {
            bus.to_cluster(signal.clone());
        }
        self.apply(signal);
    }

    /// Acts on a signal from the bus or from this node: the scheduler's
    /// own, or the sessions'.
    pub fn apply(&self, signal: Signal) {
        match signal {
            Signal::Due { at } => self.schedules.due_at(at),
            Signal::Clock => self.clocks.notify_one(),
            Signal::Stream {
                mesh,
                stream,
                skip,
                frame,
            } => {
                let n = self
                    .sessions
                    .stream_write(&mesh, &stream, skip, &frame.into());
                self.metrics.fanout.stream_fanout.inc_by(n as u64);
            }
            Signal::Forward {
                id,
                from,
                host,
                kind,
                frame,
            } => self.relays.forward(self, id, from, host, kind, frame),
            Signal::Answer { id, answer } => self.relays.answer(self, &id, answer),
            other => self.sessions.apply(other),
        }
    }

    /// See [`Bus::notices`]; none without a bus.
    pub fn notices(&self, wakes: &[(Uuid, Signal, Uuid)]) -> Vec<Notice> {
        match &self.bus {
            Some(bus) if !wakes.is_empty() => bus.notices(wakes),
            _ => Vec::new(),
        }
    }
}
