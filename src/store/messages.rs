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
    /// A scheduled message's `subtype` (`reminder`), shown on its push.
    pub subtype: Option<String>,
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
    /// Its (mesh, sender member, `client_message_id`) was already taken,
    /// by a send stored earlier in this batch or by another node's racing
    /// batch: nothing was stored, and `original` is that send's message
    /// (`None` only if its key was swept in the meantime).
    Duplicate {
        original: Option<Uuid>,
    },
}

/// How long the record of a send outlives its envelope
/// (`delivered_retention_seconds`): deliveries that end are recorded, and
/// keys and records swept, against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub now: DateTime<Utc>,
    /// Sends made before this are forgotten; `None`: every send is.
    pub since: Option<DateTime<Utc>>,
}

impl Retention {
    pub fn new(now: DateTime<Utc>, seconds: u64) -> Retention {
        Retention {
            now,
            since: (seconds > 0).then(|| now - chrono::Duration::seconds(seconds as i64)),
        }
    }

    /// Whether a send made at `created` is still remembered.
    pub fn keeps(&self, created: DateTime<Utc>) -> bool {
        self.since.is_some_and(|s| created > s)
    }

    /// The smallest UUIDv7 of a send made at `since` or later: the sweep's
    /// cutoff, since message ids are UUIDv7 and so ordered by time.
    pub fn cutoff_id(&self) -> Uuid {
        let t = self.since.unwrap_or(self.now);
        let ms = t.timestamp_millis().max(0) as u64;
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6] = 0x70;
        b[8] = 0x80;
        Uuid::from_bytes(b)
    }
}

/// The record of one delivery that ended, kept for
/// `delivered_retention_seconds` after its send with what `message_status`
/// reports: never the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub message_id: Uuid,
    pub mesh_id: String,
    pub sender_member_id: String,
    pub target_spec: String,
    pub client_message_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub recipient_member_id: String,
    /// The presence that took it (its display name, its session key else
    /// its member key); the member's own for an expired member-addressed
    /// row nobody took.
    pub recipient_name: String,
    pub recipient_pubkey: String,
    /// `None`: it expired undelivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A new message id: a UUIDv7 of `at`, the send's own time (from the
/// engine's clock), so that "sent before t" is an id range for the sweeps.
pub fn new_message_id(at: DateTime<Utc>) -> Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp().max(0) as u64,
        at.timestamp_subsec_nanos(),
    );
    Uuid::new_v7(ts)
}

/// A remembered send: (mesh, sender member, `client_message_id`).
pub type SendKey<'a> = (&'a str, &'a str, &'a str);

/// The key a message's send is remembered by, if it has one.
pub fn send_key(m: &NewMessage) -> Option<SendKey<'_>> {
    let cm = m.echo.client_message_id.as_deref()?;
    Some((&m.mesh_id, &m.sender_member_id, cm))
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
    /// take a token from its bucket; if there is one, remember its send key
    /// (if it has a `client_message_id`) and, unless that key was taken
    /// already, store the message and its delivery rows. One verdict per
    /// message; nothing is written for a rate-limited one or a duplicate,
    /// and nothing at all if the transaction fails.
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

    /// The messages of sends already remembered by these keys, one
    /// answer per key (`None`: not remembered).
    async fn remembered_sends(&self, keys: &[SendKey<'_>]) -> StoreResult<Vec<Option<Uuid>>>;

    /// Written to the socket (sessions without `client_ack`): done. Each
    /// pair is (presence, row); a row another session holds stays. A row
    /// of a send `r` keeps is recorded as delivered at `r.now`.
    async fn complete_many(&self, done: &[(Uuid, i64)], r: Retention) -> StoreResult<()>;

    /// `client_ack`: completes (and records, as `complete_many`) the row
    /// of `message_id` this session holds. `false` when it holds none
    /// (unknown id, or another session's).
    async fn ack_delivery(
        &self,
        presence: Uuid,
        message_id: Uuid,
        r: Retention,
    ) -> StoreResult<bool>;

    /// `client_ack` by `clientMessageId`: completes a row this session
    /// holds (or held last) whose message carried that `client_message_id`
    /// in `mesh_id`. `false` when it holds none.
    async fn ack_client_message(
        &self,
        presence: Uuid,
        mesh_id: &str,
        client_message_id: &str,
        r: Retention,
    ) -> StoreResult<bool>;

    /// Deletes messages no row needs any more (every recipient has them),
    /// then expired messages with their rows (recording those rows as
    /// undelivered if `r` keeps their send), then the keys and records of
    /// sends `r` no longer keeps. Returns how many messages expired
    /// undelivered: a delivered message is not counted, whenever it goes.
    async fn sweep_messages(&self, r: Retention) -> StoreResult<u64>;

    /// The records of the deliveries of `message_id` (in `mesh_id`) that
    /// ended, oldest first; empty for another mesh's message.
    async fn delivery_records(
        &self,
        mesh_id: &str,
        message_id: Uuid,
    ) -> StoreResult<Vec<DeliveryRecord>>;

    /// Undelivered rows, all meshes.
    async fn queue_depth(&self) -> StoreResult<i64>;
}
