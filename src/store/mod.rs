//! Every durable fact of the broker, behind one trait with two
//! implementations: `postgres` (the cluster) and `memory` (a single node).
//! The store owns atomicity (capacity checks, invite uses, status rules);
//! it knows nothing of sockets or the wire.

pub mod bucket;
pub mod memory;
pub mod postgres;
mod types;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use types::*;

use crate::audit::{Checkpoint, Entry};
use crate::protocol::{Source, Status};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (mesh slug, member pubkey).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database could not be reached or failed; nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `memory` or `postgres`, for logs and `/health`.
    fn backend(&self) -> &'static str;
    /// (in use, idle, waiting) connections of the database pools, if any.
    fn pool_status(&self) -> Option<(i64, i64, i64)> {
        None
    }
    /// Cheap round trip used by readiness.
    async fn ping(&self) -> StoreResult<()>;

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
    ) -> StoreResult<Option<Vec<PresenceRef>>>;

    async fn insert_invite(&self, invite: &Invite) -> StoreResult<()>;
    /// The invite's mesh; `None` when no unrevoked invite has that token.
    async fn revoke_invite(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<String>>;
    /// The row-dependent checks of `/join` and the use, in one atomic step.
    async fn redeem_invite(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>>;

    async fn register_node(&self, node: &NodeRow) -> StoreResult<()>;
    /// `false` when the node's row is gone: another node declared it dead.
    async fn heartbeat_node(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        draining: bool,
    ) -> StoreResult<bool>;
    /// Declares nodes silent since before `dead_before` dead, under a
    /// cluster-wide lock (one reaper at a time): their online presences go
    /// to grace until `grace_until`, their claims are released and their
    /// rows removed. Returns the dead nodes' ids.
    async fn reap_dead_nodes(
        &self,
        dead_before: DateTime<Utc>,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>>;
    async fn remove_node(&self, id: Uuid) -> StoreResult<()>;
    /// Nodes with the number of online presences each holds.
    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>>;

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
    async fn send_routes(&self, mesh_id: &str, fresh: bool) -> StoreResult<Routes> {
        let _ = fresh;
        Ok(Routes {
            targets: std::sync::Arc::new(self.route_targets(mesh_id).await?),
            version: None,
        })
    }
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
    /// Deletes expired messages (with their rows) and messages no row
    /// needs any more. Returns how many messages went.
    async fn sweep_messages(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Undelivered rows, all meshes.
    async fn queue_depth(&self) -> StoreResult<i64>;

    /// Drops buckets untouched since `before` (they would be full again,
    /// which is what a missing bucket means). Returns how many went.
    async fn sweep_rate_buckets(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Takes one token from a shared bucket (hooks); `false` when empty.
    async fn take_token(
        &self,
        scope: &str,
        bucket: &Bucket,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The online or in-grace presence whose hook token hashes to `hash`.
    async fn presence_by_hook_token(&self, hash: &[u8]) -> StoreResult<Option<Presence>>;
    /// Online presences a v1 hook names: those with this (pid, cwd) in any
    /// mesh, else the newest one with this cwd.
    async fn hook_targets(&self, pid: Option<i64>, cwd: &str) -> StoreResult<Vec<Uuid>>;
    /// Keeps a hook that named no presence, for a hello that follows.
    async fn insert_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Removes and returns a pending hook newer than `since`.
    async fn take_pending_status(
        &self,
        pid: i64,
        cwd: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Status>>;
    /// Drops pending hooks older than `before`.
    async fn sweep_pending_status(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Flips presences `working` since before `before` to idle (`jsonl`);
    /// returns them with the node holding each.
    async fn expire_working(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PresenceRef>>;

    /// Chains `entries` onto their meshes' audit logs, in order, one
    /// transaction per call, serialised per mesh.
    async fn append_audit(&self, entries: &[NewAuditEntry]) -> StoreResult<()>;
    /// A mesh's retained chain (oldest first) and its checkpoint, if pruned.
    async fn audit_chain(&self, mesh_id: &str) -> StoreResult<(Option<Checkpoint>, Vec<Entry>)>;
    /// Prunes entries created before `before`, checkpointing each mesh's
    /// last pruned entry. Returns how many went.
    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}
