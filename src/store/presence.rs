//! Presences: the cluster-wide record of every live or in-grace session,
//! its status under the status model, and a member's saved state.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::StoreResult;
use crate::protocol::limits::MAX_GROUPS;
use crate::protocol::{GroupRef, Profile, Source, Status};

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

/// Which handshake made a presence (PROTOCOL-SESSIONS.md §4). Roles
/// never collide: a hello re-attaches to and replaces only `control-plane`
/// presences, a `session_hello` only `session` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Made by `hello`: plain clients and the 1.37 daemon's member socket.
    ControlPlane,
    /// Made by `session_hello`: one launched Claude Code session.
    Session,
}

impl PeerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::ControlPlane => "control-plane",
            PeerRole::Session => "session",
        }
    }
    /// The table's check constraint allows only these two.
    pub fn parse(s: &str) -> PeerRole {
        match s {
            "session" => PeerRole::Session,
            _ => PeerRole::ControlPlane,
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
    pub role: PeerRole,
    pub session_id: String,
    pub session_pubkey: Option<String>,
    pub display_name: String,
    /// The hello named the session (`displayName` sent): a re-attaching
    /// `session_hello` keeps the old name otherwise.
    pub named: bool,
    pub pid: Option<i64>,
    pub cwd: Option<String>,
    pub hostname: Option<String>,
    pub peer_type: Option<String>,
    pub channel: Option<String>,
    pub model: Option<String>,
    pub capabilities: Vec<String>,
    /// At-least-once delivery (PROTOCOL-SESSIONS.md §5): pushes are leased
    /// until acked. On a presence it never turns off.
    pub at_least_once: bool,
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
    pub role: PeerRole,
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
    /// At-least-once delivery (PROTOCOL-SESSIONS.md §5): pushes are leased
    /// until acked. On a presence it never turns off.
    pub at_least_once: bool,
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
    /// The last frame or pong its socket sent, as recorded (in batches)
    /// by the node holding it; `None` if none since the attach.
    pub last_active_at: Option<DateTime<Utc>>,
}

impl Presence {
    /// Its last activity: the last recorded frame or pong, else the
    /// attach (or release) itself.
    pub fn last_active(&self) -> DateTime<Utc> {
        self.last_active_at
            .map_or(self.last_seen_at, |a| a.max(self.last_seen_at))
    }

    /// A brand-new presence from a hello: idle, inferred (`jsonl`).
    pub fn from_new(p: &NewPresence) -> Presence {
        Presence {
            id: p.id,
            mesh_id: p.mesh_id.clone(),
            member_id: p.member_id.clone(),
            member_pubkey: p.member_pubkey.clone(),
            node_id: p.node_id,
            conn_id: p.conn_id,
            role: p.role,
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
            at_least_once: p.at_least_once,
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
            last_active_at: None,
        }
    }

    /// A re-attaching or replacing hello refreshes what the session says
    /// about itself, keeping status, summary, stats and identity.
    pub fn reattach(&mut self, p: &NewPresence) {
        self.attach_socket(p);
        if p.session_pubkey.is_some() {
            self.session_pubkey = p.session_pubkey.clone();
        }
        self.display_name = p.display_name.clone();
        self.peer_type = p.peer_type.clone();
        self.channel = p.channel.clone();
        self.model = p.model.clone();
        self.capabilities = p.capabilities.clone();
        self.groups = p.groups.clone();
    }

    /// A re-attaching `session_hello` (PROTOCOL-SESSIONS.md §3) keeps the
    /// presence's groups, status and mode, and refreshes what the session
    /// says of where it runs (and its name, when it sent one).
    pub fn reattach_session(&mut self, p: &NewPresence) {
        self.attach_socket(p);
        self.session_id = p.session_id.clone();
        if p.named {
            self.display_name = p.display_name.clone();
        }
    }

    /// What every re-attach does: the new socket, where the session runs,
    /// online again. The mode lives on the presence: a re-attach keeps it.
    fn attach_socket(&mut self, p: &NewPresence) {
        self.node_id = p.node_id;
        self.conn_id = p.conn_id;
        self.pid = p.pid;
        self.cwd = p.cwd.clone();
        self.hostname = p.hostname.clone();
        self.at_least_once |= p.at_least_once;
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
    /// A `session_hello` whose session id was held by another key of the
    /// member: that presence (`old`) ended, without grace, and a new one
    /// was created.
    Superseded {
        presence: Presence,
        old: PresenceRef,
    },
    /// A `session_hello` whose key is another member's presence's.
    Foreign,
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
    /// Member-key sends prefer live presences in at-least-once mode,
    /// control-plane first (PROTOCOL-SESSIONS.md §5).
    pub online: bool,
    pub at_least_once: bool,
    pub role: PeerRole,
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
            online: p.state == PresenceState::Online,
            at_least_once: p.at_least_once,
            role: p.role,
        }
    }
}

/// Presences and member state.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Attaches a hello to a presence: re-attaches one in grace, takes over
    /// one still online (the caller closes the old socket), or creates one
    /// if the mesh is under `max_per_mesh` non-gone presences.
    async fn attach_presence(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach>;

    async fn member_state(
        &self,
        mesh_id: &str,
        member_id: &str,
    ) -> StoreResult<Option<MemberState>>;

    /// Applies a field change to an online or in-grace presence.
    async fn update_presence(&self, id: Uuid, patch: &PresencePatch) -> StoreResult<PatchResult>;

    /// Applies a status write under the status model. `None` when the
    /// presence is gone; else the status now recorded and whether it changed.
    async fn write_status(
        &self,
        id: Uuid,
        status: Status,
        source: Source,
        now: DateTime<Utc>,
        fresh_window_ms: i64,
    ) -> StoreResult<Option<StatusWrite>>;

    /// Attaches a `session_hello` (PROTOCOL-SESSIONS.md §3), looked up
    /// in this order: the mesh's presence with this `session_pubkey`
    /// (another member's, or not a session presence: `Foreign`; online:
    /// taken over, `Replaced`; in grace: `Reattached`; groups, status and
    /// mode kept); else the member's session presence with this
    /// `session_id` ends and a new presence starts (`Superseded`); else a
    /// new one under `max_per_mesh` (`Created`, or `Capacity`).
    async fn attach_session(&self, p: &NewPresence, max_per_mesh: u32) -> StoreResult<Attach>;

    /// Ends these presences at once, without grace (kick, disconnect):
    /// their rows become their members', their claims are freed. Returns
    /// the ended ones, as they were, oldest first.
    async fn end_presences(&self, ids: &[Uuid]) -> StoreResult<Vec<Presence>>;

    /// Puts a presence in at-least-once mode (its first `client_ack`).
    /// `false` when no live or in-grace presence has that id.
    async fn enter_at_least_once(&self, id: Uuid) -> StoreResult<bool>;

    /// Records when each presence's socket was last heard from; a time
    /// older than the one recorded changes nothing, an ended presence is
    /// skipped.
    async fn record_activity(&self, heard: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()>;

    /// Socket closed: online → grace until `grace_until`, if `conn_id` is
    /// still the attached socket. Saves the member's state for `restored`.
    async fn release_presence(
        &self,
        id: Uuid,
        conn_id: Uuid,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Routing view of a mesh's online and in-grace presences.
    async fn route_targets(&self, mesh_id: &str) -> StoreResult<Vec<RouteTarget>>;

    /// One online or in-grace presence.
    async fn presence_by_id(&self, id: Uuid) -> StoreResult<Option<Presence>>;

    /// Online and in-grace presences of a mesh, oldest first.
    async fn list_presences(&self, mesh_id: &str) -> StoreResult<Vec<Presence>>;

    /// Ends (deletes) presences whose grace ran out; returns them as they
    /// were. Their undelivered rows become member-addressed, so the
    /// member's next session gets them.
    async fn expire_grace(&self, now: DateTime<Utc>) -> StoreResult<Vec<Presence>>;

    /// Flips presences `working` since before `before` to idle (`jsonl`);
    /// returns them with the node holding each.
    async fn expire_working(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PresenceRef>>;
}
