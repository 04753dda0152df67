//! Who may use a mesh: meshes, their members and the invites that enrol
//! new members. The durable facts of `/join`, the admin API and every
//! hello's membership check.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::presence::Presence;
use super::StoreResult;
use crate::protocol::GroupRef;

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

/// Meshes, members and invites.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    async fn insert_mesh(&self, mesh: &Mesh) -> StoreResult<()>;

    async fn list_meshes(&self) -> StoreResult<Vec<Mesh>>;

    async fn mesh_by_slug(&self, slug: &str) -> StoreResult<Option<Mesh>>;

    async fn mesh_by_id(&self, id: &str) -> StoreResult<Option<Mesh>>;

    async fn insert_member(&self, member: &Member) -> StoreResult<()>;

    async fn list_members(&self, mesh_id: &str) -> StoreResult<Vec<Member>>;

    async fn member_by_id(&self, mesh_id: &str, member_id: &str) -> StoreResult<Option<Member>>;

    async fn member_by_pubkey(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<Member>>;

    /// Marks the member revoked and ends its presences. Returns the ended
    /// presences (so their sockets can be closed), or `None` when there is
    /// no such unrevoked member.
    async fn revoke_member(
        &self,
        mesh_id: &str,
        member_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<Presence>>>;

    /// Clears a revoked member's `revoked_at` (unban): it may connect
    /// again. `false` when there is no such revoked member.
    async fn unrevoke_member(&self, mesh_id: &str, member_id: &str) -> StoreResult<bool>;

    async fn insert_invite(&self, invite: &Invite) -> StoreResult<()>;

    /// The invite's mesh; `None` when no unrevoked invite has that token.
    async fn revoke_invite(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<String>>;

    /// The row-dependent checks of `/join` and the use, in one atomic step.
    async fn redeem_invite(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>>;
}
