//! Accepted hello signatures, so each is single-use cluster-wide
//! (PROTOCOL-SESSIONS.md §11): a v1 hello signs neither `sessionId` nor
//! `sessionPubkey`, so a captured one could otherwise be replayed inside
//! the skew window under a session key of the replayer's choosing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// Single-use hello signatures.
#[async_trait]
pub trait SignatureStore: Send + Sync + 'static {
    /// Records the SHA-256 of an accepted signature, kept until `until`.
    /// `false` when it was recorded already: a replay. Atomic across nodes.
    async fn use_signature(&self, hash: &[u8], until: DateTime<Utc>) -> StoreResult<bool>;

    /// Forgets a signature recorded by a hello that was refused after all
    /// (a refused hello does not consume its signature).
    async fn release_signature(&self, hash: &[u8]) -> StoreResult<()>;

    /// Drops signatures kept until before `now`. Returns how many went.
    async fn sweep_signatures(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}
