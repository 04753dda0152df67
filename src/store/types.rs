//! Rows and commands exchanged with a [`Store`](super::Store).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::protocol::limits::MAX_GROUPS;
use crate::protocol::target::Priority;
use crate::protocol::{GroupRef, Profile, Source, Status};

#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub owner_pubkey: String,
    /// Hex secret key (seed || public) that signs invites.
    pub owner_secret: String,
    pub root_key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub mesh_id: String,
    pub pubkey: String,
    pub display_name: String,
    pub role: Role,
    pub default_groups: Vec<GroupRef>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Invite {
    pub token: String,
    pub mesh_id: String,
    pub role: Role,
    pub max_uses: i32,
    pub used_count: i32,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A `/join` redemption after the signature and mesh checks passed.
#[derive(Debug, Clone)]
pub struct Redeem {
    pub token: String,
    pub mesh_id: String,
    pub pubkey: String,
    pub display_name: String,
    /// Id for the member if one is created.
    pub new_member_id: String,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redeemed {
    pub member_id: String,
    pub already_member: bool,
}

/// `/join` refusals decided against the invite row, in PROTOCOL.md order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    NotFound,
    MeshMismatch,
    Revoked,
    Expired,
    Exhausted,
}

impl InviteRefusal {
    pub fn code(self) -> &'static str {
        match self {
            InviteRefusal::NotFound => "invite_not_found",
            InviteRefusal::MeshMismatch => "invite_mesh_mismatch",
            InviteRefusal::Revoked => "invite_revoked",
            InviteRefusal::Expired => "invite_expired",
            InviteRefusal::Exhausted => "invite_exhausted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: Uuid,
    pub addr: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: Uuid,
    pub addr: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub draining: bool,
    pub sockets: i64,
}

/// A presence is online (a socket holds it) or in grace (waiting for its
/// session to reconnect). One that ends is deleted, not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceState {
    Online,
    Grace,
}

impl PresenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Online => "online",
            PresenceState::Grace => "grace",
        }
    }
    /// The table's check constraint allows only these two.
    pub fn parse(s: &str) -> PresenceState {
        match s {
            "online" => PresenceState::Online,
            _ => PresenceState::Grace,
        }
    }
}

/// Everything a hello says about its session, validated.
#[derive(Debug, Clone)]
pub struct NewPresence {
    /// Used only when a new presence is created.
    pub id: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    pub member_pubkey: String,
    pub node_id: Uuid,
    pub conn_id: Uuid,
    pub session_id: String,
    pub session_pubkey: Option<String>,
    pub display_name: String,
    pub pid: Option<i64>,
    pub cwd: Option<String>,
    pub hostname: Option<String>,
    pub peer_type: Option<String>,
    pub channel: Option<String>,
    pub model: Option<String>,
    pub capabilities: Vec<String>,
    pub groups: Vec<GroupRef>,
    pub profile: Profile,
    pub visible: bool,
    pub summary: Option<String>,
    pub hook_token_hash: Vec<u8>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    pub id: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    pub member_pubkey: String,
    pub node_id: Uuid,
    pub conn_id: Uuid,
    pub session_id: String,
    pub session_pubkey: Option<String>,
    pub display_name: String,
    pub pid: Option<i64>,
    pub cwd: Option<String>,
    pub hostname: Option<String>,
    pub peer_type: Option<String>,
    pub channel: Option<String>,
    pub model: Option<String>,
    pub capabilities: Vec<String>,
    pub status: Status,
    pub status_source: Source,
    pub status_updated_at: DateTime<Utc>,
    pub summary: Option<String>,
    pub groups: Vec<GroupRef>,
    pub visible: bool,
    pub profile: Profile,
    pub stats: Option<Map<String, Value>>,
    pub state: PresenceState,
    pub grace_until: Option<DateTime<Utc>>,
    /// SHA-256 of the hook token handed out in this session's `hello_ack`.
    pub hook_token_hash: Vec<u8>,
    pub connected_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl Presence {
    /// A brand-new presence from a hello: idle, inferred (`jsonl`).
    pub fn from_new(p: &NewPresence) -> Presence {
        Presence {
            id: p.id,
            mesh_id: p.mesh_id.clone(),
            member_id: p.member_id.clone(),
            member_pubkey: p.member_pubkey.clone(),
            node_id: p.node_id,
            conn_id: p.conn_id,
            session_id: p.session_id.clone(),
            session_pubkey: p.session_pubkey.clone(),
            display_name: p.display_name.clone(),
            pid: p.pid,
            cwd: p.cwd.clone(),
            hostname: p.hostname.clone(),
            peer_type: p.peer_type.clone(),
            channel: p.channel.clone(),
            model: p.model.clone(),
            capabilities: p.capabilities.clone(),
            status: Status::Idle,
            status_source: Source::Jsonl,
            status_updated_at: p.now,
            summary: p.summary.clone(),
            groups: p.groups.clone(),
            visible: p.visible,
            profile: p.profile.clone(),
            stats: None,
            state: PresenceState::Online,
            grace_until: None,
            hook_token_hash: p.hook_token_hash.clone(),
            connected_at: p.now,
            last_seen_at: p.now,
        }
    }

    /// A re-attaching or replacing hello refreshes what the session says
    /// about itself, keeping status, summary, stats and identity.
    pub fn reattach(&mut self, p: &NewPresence) {
        self.node_id = p.node_id;
        self.conn_id = p.conn_id;
        if p.session_pubkey.is_some() {
            self.session_pubkey = p.session_pubkey.clone();
        }
        self.display_name = p.display_name.clone();
        self.pid = p.pid;
        self.cwd = p.cwd.clone();
        self.hostname = p.hostname.clone();
        self.peer_type = p.peer_type.clone();
        self.channel = p.channel.clone();
        self.model = p.model.clone();
        self.capabilities = p.capabilities.clone();
        self.groups = p.groups.clone();
        self.state = PresenceState::Online;
        self.grace_until = None;
        self.hook_token_hash = p.hook_token_hash.clone();
        self.last_seen_at = p.now;
    }

    /// The key clients see: the session pubkey if any, else the member's.
    pub fn pubkey(&self) -> &str {
        self.session_pubkey
            .as_deref()
            .unwrap_or(&self.member_pubkey)
    }
}

/// What `attach_presence` did.
#[derive(Debug, Clone)]
pub enum Attach {
    Created(Presence),
    /// Was in grace: silent re-attach, same id.
    Reattached(Presence),
    /// Was online on `old_node` with socket `old_conn`: taken over.
    Replaced {
        presence: Presence,
        old_node: Uuid,
        old_conn: Uuid,
    },
    /// The mesh is at `max_connections_per_mesh`.
    Capacity,
}

/// Identifies a presence's attached socket, to close it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRef {
    pub id: Uuid,
    pub node_id: Uuid,
    pub conn_id: Uuid,
}

/// Saved state of a member's last session (`hello_ack.restored*`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberState {
    pub groups: Vec<GroupRef>,
    pub profile: Profile,
    pub visible: bool,
    pub last_summary: Option<String>,
    pub last_seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum PresencePatch {
    Summary(String),
    Visible(bool),
    Profile(Profile),
    Stats(Map<String, Value>),
    JoinGroup(GroupRef),
    LeaveGroup(String),
}

impl PresencePatch {
    /// Applies the patch to an in-memory row. Postgres runs the same
    /// function inside a locked read-modify-write, so both stores agree.
    /// `false` (row untouched) when joining would pass the group cap.
    pub fn apply(&self, p: &mut Presence) -> bool {
        if let PresencePatch::JoinGroup(g) = self {
            if p.groups.len() >= MAX_GROUPS && !p.groups.iter().any(|x| x.name == g.name) {
                return false;
            }
        }
        match self {
            PresencePatch::Summary(s) => p.summary = Some(s.clone()),
            PresencePatch::Visible(v) => p.visible = *v,
            PresencePatch::Profile(prof) => p.profile = prof.clone(),
            PresencePatch::Stats(s) => p.stats = Some(s.clone()),
            PresencePatch::JoinGroup(g) => match p.groups.iter_mut().find(|x| x.name == g.name) {
                Some(existing) => existing.role = g.role.clone(),
                None => p.groups.push(g.clone()),
            },
            PresencePatch::LeaveGroup(name) => p.groups.retain(|g| &g.name != name),
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWrite {
    pub status: Status,
    pub source: Source,
    pub changed: bool,
    /// The node holding the presence's socket (to wake it there).
    pub node_id: Uuid,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatchResult {
    /// The presence as it is now.
    Applied(Box<Presence>),
    /// The patch would pass a cap (too many groups).
    Refused,
    /// No online or in-grace presence has that id.
    Gone,
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

/// A token bucket shared by every node: `burst` tokens, refilled at
/// `rate_per_min`.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: String,
    pub rate_per_min: u32,
    pub burst: u32,
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
    pub sender_member_pubkey: String,
    pub sender_session_pubkey: Option<String>,
    pub priority: Priority,
    pub nonce: String,
    pub ciphertext: String,
    pub created_at: DateTime<Utc>,
}

impl StoredMessage {
    pub fn of(m: &NewMessage) -> StoredMessage {
        StoredMessage {
            id: m.id,
            mesh_id: m.mesh_id.clone(),
            sender_member_pubkey: m.sender_member_pubkey.clone(),
            sender_session_pubkey: m.sender_session_pubkey.clone(),
            priority: m.priority,
            nonce: m.nonce.clone(),
            ciphertext: m.ciphertext.clone(),
            created_at: m.created_at,
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

/// An audit event before it is chained (seq and hashes come at append).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub mesh_id: String,
    pub event_type: &'static str,
    pub actor_member_id: Option<String>,
    pub actor_name: Option<String>,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// One message to store with its rows and its sender's bucket.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message: NewMessage,
    pub deliveries: Vec<NewDelivery>,
    pub bucket: Bucket,
}

/// What routing needs of a live or in-grace presence: a lean read, done
/// once per mesh per send batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    pub id: Uuid,
    pub mesh_id: String,
    pub member_id: String,
    pub member_pubkey: String,
    pub session_pubkey: Option<String>,
    pub node_id: Uuid,
    pub visible: bool,
    pub groups: Vec<GroupRef>,
    /// Gates pre-claims as claims are gated (`now` always, else idle).
    pub status: Status,
    /// A pre-claim also needs the status older than the recipient's last
    /// full claim (see `engine::handoff`).
    pub status_updated_at: DateTime<Utc>,
}

impl RouteTarget {
    pub fn of(p: &Presence) -> RouteTarget {
        RouteTarget {
            id: p.id,
            mesh_id: p.mesh_id.clone(),
            member_id: p.member_id.clone(),
            member_pubkey: p.member_pubkey.clone(),
            session_pubkey: p.session_pubkey.clone(),
            node_id: p.node_id,
            visible: p.visible,
            groups: p.groups.clone(),
            status: p.status,
            status_updated_at: p.status_updated_at,
        }
    }
}
