//! Shared files' metadata (PROTOCOL-MESH.md §17): the file row, the keys
//! sealed to each reader, who fetched it, and the download-link key. The
//! bytes live in a [`crate::blobs::BlobStore`]. An upload first reserves
//! its row (`uploading`, counted against the mesh's quota) and is marked
//! stored once its blob is whole; a reservation left by a node that died
//! mid-upload is reclaimed, blob and row, by the sweeper.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    pub id: Uuid,
    pub mesh_id: String,
    pub name: String,
    /// Bytes stored (while uploading: bytes reserved).
    pub size: i64,
    pub content_type: Option<String>,
    pub tags: Vec<String>,
    pub uploader_member: String,
    /// The uploader member's display name at upload time.
    pub uploaded_by: String,
    pub persistent: bool,
    /// Ephemeral files only.
    pub expires_at: Option<DateTime<Utc>>,
    pub target_spec: Option<String>,
    pub encrypted: bool,
    pub owner_pubkey: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl FileRow {
    /// Where its blob is: `<meshId>/<fileId>`.
    pub fn blob_key(&self) -> String {
        blob_key(&self.mesh_id, self.id)
    }
}

pub fn blob_key(mesh_id: &str, id: Uuid) -> String {
    format!("{mesh_id}/{}", id.simple())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    pub peer_pubkey: String,
    pub sealed_key: String,
}

/// A stored file with its sealed keys.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFile {
    pub file: FileRow,
    pub keys: Vec<FileKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    Reserved,
    /// The mesh's files (and reservations) plus this one pass the quota.
    OverQuota,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileDeleted {
    /// Soft-deleted: its blob is the caller's to delete.
    Deleted(Box<FileRow>),
    /// Not the uploader and not privileged.
    Forbidden,
    /// No live file of that id in the mesh.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    Granted,
    Missing,
    /// The file holds the maximum number of keys.
    Full,
}

#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Reserves `f` (its `size` the bytes reserved) with its keys, if the
    /// mesh's live files and reservations stay within `quota` bytes.
    async fn reserve_file(
        &self,
        f: &FileRow,
        keys: &[FileKey],
        quota: u64,
    ) -> StoreResult<Reserved>;

    /// The upload of reservation `id` is whole at `size` bytes: the file
    /// is readable from now on. `false` when the reservation is gone.
    async fn finish_file(&self, id: Uuid, size: i64) -> StoreResult<bool>;

    /// Drops reservation `id` (its upload failed); a stored file stays.
    async fn abandon_file(&self, id: Uuid) -> StoreResult<()>;

    /// A stored file of the mesh, unless deleted or expired at `now`.
    async fn stored_file(
        &self,
        mesh_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StoredFile>>;

    /// The mesh's stored, live files, newest first, at most `limit`.
    async fn list_files(
        &self,
        mesh_id: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<StoredFile>>;

    async fn record_access(&self, id: Uuid, peer_name: &str, at: DateTime<Utc>) -> StoreResult<()>;

    /// Accesses of the mesh's file `id`, newest first, at most `limit`
    /// (none for another mesh's file).
    async fn file_accesses(
        &self,
        mesh_id: &str,
        id: Uuid,
        limit: usize,
    ) -> StoreResult<Vec<(String, DateTime<Utc>)>>;

    /// Soft-deletes a stored file if `member` uploaded it or `privileged`.
    async fn delete_file(
        &self,
        mesh_id: &str,
        id: Uuid,
        member: &str,
        privileged: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<FileDeleted>;

    /// Upserts the sealed key of `key.peer_pubkey` on a live stored file,
    /// within `max` keys.
    async fn grant_file_key(
        &self,
        mesh_id: &str,
        id: Uuid,
        key: &FileKey,
        max: usize,
        now: DateTime<Utc>,
    ) -> StoreResult<Granted>;

    /// Ends ephemeral files expired at `now` and drops reservations made
    /// before `stale`; returns their blob keys, for the caller to delete.
    async fn expire_files(
        &self,
        now: DateTime<Utc>,
        stale: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;

    /// The cluster's download-link key: the one stored, else `candidate`,
    /// stored now.
    async fn download_key(&self, candidate: &[u8]) -> StoreResult<Vec<u8>>;

    /// Records the remote address a presence's socket came from (for
    /// `upload_auth = "peer_address"`); it ends with the presence.
    async fn record_presence_addr(&self, presence: Uuid, addr: &str) -> StoreResult<()>;

    /// The most recently active online presence of the mesh whose socket
    /// came from `addr`, of `member` when given.
    async fn presence_at_addr(
        &self,
        mesh_id: &str,
        addr: &str,
        member: Option<&str>,
    ) -> StoreResult<Option<Uuid>>;
}
