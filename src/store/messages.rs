//! Envelopes and their delivery rows: the group-committed send, claims
//! (oldest first, gated by status), completion and acks, and expiry.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::presence::RouteTarget;
use super::rate::Bucket;
use super::StoreResult;
use crate::protocol::target::Priority;

/// What a message's pushes say of its sender and echo of its `send`
/// (PROTOCOL-SESSIONS.md §6, §7), stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    /// The sending presence's display name (`senderName`).
    pub sender_name: String,
    pub client_message_id: Option<String>,
    pub request_fingerprint: Option<String>,
    pub reply_to_id: Option<String>,
}

/// An envelope to store. `nonce` and `ciphertext` are opaque to the broker.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub mesh_id: String,
    pub sender_member_id: String,
    pub sender_member_pubkey: String,
    pub sender_session_pubkey: Option<String>,
    pub target_spec: String,
    pub priority: Priority,
    pub nonce: String,
    pub ciphertext: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub echo: Echo,
}

/// One recipient of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub recipient_member_id: String,
    /// `None`: any session of the member may claim it.
    pub recipient_session: Option<Uuid>,
    /// A member-addressed row that this session must not claim (the sender
    /// writing to its own member key).
    pub exclude_session: Option<Uuid>,
    /// Stored already claimed: the sending node holds a caught-up session
    /// that may take it now, and pushes it straight after the commit.
    pub claim: Option<PreClaim>,
}

/// A claim made as the row is stored (see `NewDelivery::claim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreClaim {
    pub session: Uuid,
    pub node: Uuid,
    pub until: DateTime<Utc>,
}

impl NewDelivery {
    pub fn to_session(p: &RouteTarget) -> NewDelivery {
        NewDelivery {
            recipient_member_id: p.member_id.clone(),
            recipient_session: Some(p.id),
            exclude_session: None,
            claim: None,
        }
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Stored; `claimed` holds the ids of the rows stored pre-claimed, in
    /// the order of the send's deliveries.
    Queued {
        claimed: Vec<i64>,
    },
    RateLimited,
}

/// The presences a send batch routes by. A store that caches them gives a
/// `version`; a batch routed by a versioned read names it, and is refused
/// whole (nothing written) if that mesh's presences changed since.
#[derive(Debug, Clone)]
pub struct Routes {
    pub targets: std::sync::Arc<Vec<RouteTarget>>,
    pub version: Option<std::sync::Arc<str>>,
}

/// A stored send batch: a verdict per message, and how the notices went
/// (the batch stands either way).
#[derive(Debug)]
pub struct Stored {
    pub results: Vec<SendResult>,
    pub notified: Result<u64, super::StoreError>,
}

/// A NOTIFY to send right after a send batch commits, in its own
/// transaction, if at least one of `messages` was stored (a wake-up for a
/// rate-limited send would only cost the recipient's node a claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub channel: String,
    pub payload: String,
    pub messages: Vec<Uuid>,
}

/// "Give me what I may deliver now", for one session.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub presence: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    pub node_id: Uuid,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub limit: usize,
    /// Also take rows this session already holds: set
    /// after a claim whose outcome is unknown (timed out), which may have
    /// claimed rows nobody pushed.
    pub reclaim_own: bool,
}

/// A stored envelope as pushed to recipients.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: Uuid,
    pub mesh_id: String,
    pub sender_member_id: String,
    pub sender_member_pubkey: String,
    pub sender_session_pubkey: Option<String>,
    pub priority: Priority,
    pub nonce: String,
    pub ciphertext: String,
    pub created_at: DateTime<Utc>,
    pub echo: Echo,
}

impl StoredMessage {
    pub fn of(m: &NewMessage) -> StoredMessage {
        StoredMessage {
            id: m.id,
            mesh_id: m.mesh_id.clone(),
            sender_member_id: m.sender_member_id.clone(),
            sender_member_pubkey: m.sender_member_pubkey.clone(),
            sender_session_pubkey: m.sender_session_pubkey.clone(),
            priority: m.priority,
            nonce: m.nonce.clone(),
            ciphertext: m.ciphertext.clone(),
            created_at: m.created_at,
            echo: m.echo.clone(),
        }
    }
}

/// One claimed delivery row, oldest first.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub message: Arc<StoredMessage>,
    /// The row had been claimed before (lease lapsed, session re-attached):
    /// this push is a redelivery.
    pub redelivery: bool,
}
/// One message to store with its rows and its sender's bucket.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message: NewMessage,
    pub deliveries: Vec<NewDelivery>,
    pub bucket: Bucket,
}

/// Messages, deliveries and claims.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a batch in one transaction, in order: for each message,
    /// take a token from its bucket; if there is one, store the message and
    /// its delivery rows. One verdict per message; nothing is written for a
    /// rate-limited one, and nothing at all if the transaction fails.
    /// `checks` names the route versions (`send_routes`) the batch was
    /// routed by: `None` when one of those meshes changed since, and then
    /// nothing was written. Then the `notices` whose messages were stored
    /// go out as soon as the batch commits (a store without a bus sends
    /// none).
    async fn insert_messages(
        &self,
        batch: &[Outgoing],
        notices: &[Notice],
        checks: &[(&str, &str)],
    ) -> StoreResult<Option<Stored>>;

    /// The routing view of a mesh for a send batch; a store may serve it
    /// from a cache (with a version) unless `fresh`.
    async fn send_routes(&self, mesh_id: &str, fresh: bool) -> StoreResult<Routes>;

    /// For each request, claims up to `limit` deliverable rows for its
    /// session, oldest first: rows for it or its member, unclaimed or with
    /// a lapsed claim, `now` priority only unless the session is idle. One
    /// result per request in order; a row two requests could take goes to
    /// one.
    async fn claim_many(&self, reqs: &[ClaimRequest]) -> StoreResult<Vec<Vec<Claimed>>>;

    /// Gives back rows `presence` holds (stored pre-claimed for a session
    /// that ended meanwhile), so they are claimable at once.
    async fn release_rows(&self, presence: Uuid, delivery_ids: &[i64]) -> StoreResult<()>;

    /// Written to the socket (sessions without `client_ack`): done. Each
    /// pair is (presence, row); a row another session holds stays.
    async fn complete_many(&self, done: &[(Uuid, i64)]) -> StoreResult<()>;

    /// `client_ack`: completes the row of `message_id` this session holds.
    /// `false` when it holds none (unknown id, or another session's).
    async fn ack_delivery(&self, presence: Uuid, message_id: Uuid) -> StoreResult<bool>;

    /// `client_ack` by `clientMessageId`: completes a row this session
    /// holds (or held last) whose message carried that `client_message_id`
    /// in `mesh_id`. `false` when it holds none.
    async fn ack_client_message(
        &self,
        presence: Uuid,
        mesh_id: &str,
        client_message_id: &str,
    ) -> StoreResult<bool>;

    /// Deletes messages no row needs any more (every recipient has them),
    /// then expired messages with their rows. Returns how many expired
    /// undelivered: a delivered message is not counted, whenever it goes.
    async fn sweep_messages(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Undelivered rows, all meshes.
    async fn queue_depth(&self) -> StoreResult<i64>;
}
