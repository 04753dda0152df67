//! Shared files' metadata in the memory store.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryStore;
use crate::store::*;

struct Entry {
    file: StoredFile,
    stored: bool,
    deleted: bool,
    accesses: Vec<(String, DateTime<Utc>)>,
}

impl Entry {
    fn live(&self, mesh_id: &str, now: DateTime<Utc>) -> bool {
        self.file.file.mesh_id == mesh_id
            && self.stored
            && !self.deleted
            && self.file.file.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(Default)]
pub(super) struct Files {
    by_id: HashMap<Uuid, Entry>,
    download_key: Option<Vec<u8>>,
    /// presence → the address its socket came from.
    addrs: HashMap<Uuid, String>,
}

impl Files {
    pub(super) fn drop_presence(&mut self, presence: Uuid) {
        self.addrs.remove(&presence);
    }
}

fn upsert(keys: &mut Vec<FileKey>, key: &FileKey) {
    match keys.iter_mut().find(|k| k.peer_pubkey == key.peer_pubkey) {
        Some(k) => k.sealed_key = key.sealed_key.clone(),
        None => {
            keys.push(key.clone());
            keys.sort_by(|a, b| a.peer_pubkey.cmp(&b.peer_pubkey));
        }
    }
}

#[async_trait]
impl FileStore for MemoryStore {
    async fn reserve_file(
        &self,
        f: &FileRow,
        keys: &[FileKey],
        quota: u64,
    ) -> StoreResult<Reserved> {
        let mut s = self.lock();
        let used: i64 = s
            .files
            .by_id
            .values()
            .filter(|e| e.file.file.mesh_id == f.mesh_id && !e.deleted)
            .map(|e| e.file.file.size)
            .sum();
        if (used as u64).saturating_add(f.size as u64) > quota {
            return Ok(Reserved::OverQuota);
        }
        let mut sealed = Vec::new();
        for k in keys {
            upsert(&mut sealed, k);
        }
        s.files.by_id.insert(
            f.id,
            Entry {
                file: StoredFile {
                    file: f.clone(),
                    keys: sealed,
                },
                stored: false,
                deleted: false,
                accesses: Vec::new(),
            },
        );
        Ok(Reserved::Reserved)
    }

    async fn finish_file(&self, id: Uuid, size: i64) -> StoreResult<bool> {
        let mut s = self.lock();
        Ok(match s.files.by_id.get_mut(&id) {
            Some(e) if !e.stored => {
                e.stored = true;
                e.file.file.size = size;
                true
            }
            _ => false,
        })
    }

    async fn abandon_file(&self, id: Uuid) -> StoreResult<()> {
        let mut s = self.lock();
        if s.files.by_id.get(&id).is_some_and(|e| !e.stored) {
            s.files.by_id.remove(&id);
        }
        Ok(())
    }

    async fn stored_file(
        &self,
        mesh_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StoredFile>> {
        let s = self.lock();
        Ok(s.files
            .by_id
            .get(&id)
            .filter(|e| e.live(mesh_id, now))
            .map(|e| e.file.clone()))
    }

    async fn list_files(
        &self,
        mesh_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<StoredFile>> {
        let s = self.lock();
        let mut v: Vec<StoredFile> = s
            .files
            .by_id
            .values()
            .filter(|e| e.live(mesh_id, now))
            .map(|e| e.file.clone())
            .collect();
        v.sort_by_key(|f| std::cmp::Reverse((f.file.created_at, f.file.id)));
        v.truncate(limit);
        Ok(v)
    }

    async fn record_access(&self, id: Uuid, peer_name: &str, at: DateTime<Utc>) -> StoreResult<()> {
        if let Some(e) = self.lock().files.by_id.get_mut(&id) {
            e.accesses.push((peer_name.to_string(), at));
        }
        Ok(())
    }

    async fn file_accesses(
        &self,
        mesh_id: &str,
        id: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let s = self.lock();
        let Some(e) = s
            .files
            .by_id
            .get(&id)
            .filter(|e| e.file.file.mesh_id == mesh_id)
        else {
            return Ok(Vec::new());
        };
        let mut v = e.accesses.clone();
        // Newest first; the same instant keeps the later record first.
        v.reverse();
        v.sort_by_key(|a| std::cmp::Reverse(a.1));
        v.truncate(limit);
        Ok(v)
    }

    async fn delete_file(
        &self,
        mesh_id: &str,
        id: Uuid,
        member: &str,
        privileged: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<FileDeleted> {
        let mut s = self.lock();
        let Some(e) = s.files.by_id.get_mut(&id).filter(|e| e.live(mesh_id, now)) else {
            return Ok(FileDeleted::Missing);
        };
        if e.file.file.uploader_member != member && !privileged {
            return Ok(FileDeleted::Forbidden);
        }
        e.deleted = true;
        Ok(FileDeleted::Deleted(Box::new(e.file.file.clone())))
    }

    async fn grant_file_key(
        &self,
        mesh_id: &str,
        id: Uuid,
        key: &FileKey,
        max: usize,
        now: DateTime<Utc>,
    ) -> StoreResult<Granted> {
        let mut s = self.lock();
        let Some(e) = s.files.by_id.get_mut(&id).filter(|e| e.live(mesh_id, now)) else {
            return Ok(Granted::Missing);
        };
        let keys = &mut e.file.keys;
        if !keys.iter().any(|k| k.peer_pubkey == key.peer_pubkey) && keys.len() >= max {
            return Ok(Granted::Full);
        }
        upsert(keys, key);
        Ok(Granted::Granted)
    }

    async fn expire_files(
        &self,
        now: DateTime<Utc>,
        stale: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let mut s = self.lock();
        let mut keys = Vec::new();
        s.files.by_id.retain(|_, e| {
            let f = &e.file.file;
            if !e.stored && f.created_at < stale {
                keys.push(f.blob_key());
                return false;
            }
            if !e.deleted && f.expires_at.is_some_and(|x| x <= now) {
                e.deleted = true;
                keys.push(f.blob_key());
            }
            true
        });
        Ok(keys)
    }

    async fn download_key(&self, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let mut s = self.lock();
        Ok(s.files
            .download_key
            .get_or_insert_with(|| candidate.to_vec())
            .clone())
    }

    async fn record_presence_addr(&self, presence: Uuid, addr: &str) -> StoreResult<()> {
        let mut s = self.lock();
        if s.presences.contains_key(&presence) {
            s.files.addrs.insert(presence, addr.to_string());
        }
        Ok(())
    }

    async fn presence_at_addr(
        &self,
        mesh_id: &str,
        addr: &str,
        member: Option<&str>,
    ) -> StoreResult<Option<Uuid>> {
        let s = self.lock();
        Ok(s.files
            .addrs
            .iter()
            .filter(|(_, a)| *a == addr)
            .filter_map(|(id, _)| s.presences.get(id))
            .filter(|p| p.mesh_id == mesh_id && p.state == PresenceState::Online)
            .filter(|p| member.is_none_or(|m| p.member_id == m))
            .max_by_key(|p| p.last_active_at.unwrap_or(p.connected_at))
            .map(|p| p.id))
    }
}
