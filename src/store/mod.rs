//! Every durable fact of the broker, one trait per family of facts, each
//! with two implementations: `postgres` (the cluster) and `memory` (a
//! single node). The store owns atomicity (capacity checks, invite uses,
//! status rules); it knows nothing of sockets or the wire.
//!
//! A family of facts adds its module here (its rows and its trait), the
//! trait to the bound of [`Store`], and an implementation in each backend;
//! `tests/it/store/` runs one conformance suite over both.

pub mod audit;
pub mod clocks;
pub mod contexts;
pub mod files;
pub mod hooks;
pub mod identity;
pub mod memories;
pub mod memory;
pub mod message_status;
pub mod messages;
pub mod nodes;
pub mod postgres;
pub mod presence;
pub mod rate;
pub mod relay;
pub mod schedules;
pub mod signatures;
pub mod skills;
pub mod state;
pub mod streams;
pub mod tasks;
pub mod vault;
pub mod vectors;
pub mod webhooks;

use async_trait::async_trait;

pub use audit::*;
pub use clocks::*;
pub use contexts::*;
pub use files::*;
pub use hooks::*;
pub use identity::*;
pub use memories::*;
pub use message_status::*;
pub use messages::*;
pub use nodes::*;
pub use presence::*;
pub use rate::*;
pub use relay::*;
pub use schedules::*;
pub use signatures::*;
pub use skills::*;
pub use state::*;
pub use streams::*;
pub use tasks::*;
pub use vault::*;
pub use vectors::*;
pub use webhooks::*;

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

/// One backend: every family's store, plus what health checks ask of it.
/// The registry of families is this bound.
#[async_trait]
pub trait Store:
    IdentityStore
    + NodeStore
    + PresenceStore
    + HookStore
    + MessageStore
    + RateStore
    + AuditStore
    + SignatureStore
    + StateStore
    + TaskStore
    + MemoriesStore
    + ContextStore
    + SkillStore
    + MessageStatusStore
    + VaultStore
    + VectorStore
    + WebhookStore
    + ScheduleStore
    + StreamStore
    + ClockStore
    + RelayStore
    + FileStore
{
    /// `memory` or `postgres`, for logs and `/health`.
    fn backend(&self) -> &'static str;

    /// (in use, idle, waiting) connections of the database pools, if any.
    fn pool_status(&self) -> Option<(i64, i64, i64)> {
        None
    }

    /// Cheap round trip used by readiness.
    async fn ping(&self) -> StoreResult<()>;
}
