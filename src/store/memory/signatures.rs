//! Single-use hello signatures of the memory store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::store::*;

#[async_trait]
impl SignatureStore for MemoryStore {
    async fn use_signature(&self, hash: &[u8], until: DateTime<Utc>) -> StoreResult<bool> {
        let mut s = self.lock();
        if s.signatures.contains_key(hash) {
            return Ok(false);
        }
        s.signatures.insert(hash.to_vec(), until);
        Ok(true)
    }

    async fn release_signature(&self, hash: &[u8]) -> StoreResult<()> {
        self.lock().signatures.remove(hash);
        Ok(())
    }

    async fn sweep_signatures(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut s = self.lock();
        let n = s.signatures.len();
        s.signatures.retain(|_, until| *until >= now);
        Ok((n - s.signatures.len()) as u64)
    }
}
