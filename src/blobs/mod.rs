//! Where shared files' bytes live (PROTOCOL-MESH.md §17 "Storage"): one
//! trait, three backends — Postgres chunk rows (a cluster's default, no
//! extra service or privilege), an S3-compatible bucket, and memory (memory
//! mode). Bodies stream through in chunks; no backend holds a whole file
//! in memory but the memory one.

pub mod postgres;
pub mod s3;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
pub use axum::body::Bytes;
use futures_util::stream::{BoxStream, StreamExt};

pub use postgres::PgBlobs;

/// A body in flight, either way.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such blob")]
    NotFound,
    /// The body passed the limit it was put with; nothing was kept.
    #[error("the body is over {0} bytes")]
    TooLarge(u64),
    /// The body stopped arriving (the client went away).
    #[error("the body failed: {0}")]
    Body(String),
    #[error("blob storage unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `body` under `key` (`<meshId>/<fileId>`), all or nothing;
    /// refused with `TooLarge` past `limit` bytes. Returns its length.
    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64, BlobError>;
    /// Streams the blob; `NotFound` when absent.
    async fn get(&self, key: &str) -> Result<ByteStream, BlobError>;
    /// Idempotent.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// A public presigned GET, where the backend can make one (S3 only).
    async fn presign_get(&self, _key: &str, _ttl: Duration) -> Option<String> {
        None
    }
    /// `postgres`, `s3` or `memory`, for logs.
    fn backend(&self) -> &'static str;
}

/// Cuts `body` into chunks of `size` bytes (the last one shorter), each
/// passed to `sink` as soon as it is full; fails with `TooLarge` as soon
/// as more than `limit` bytes arrived. Returns the total.
pub async fn chunked<F, Fut>(
    mut body: ByteStream,
    size: usize,
    limit: u64,
    mut sink: F,
) -> Result<u64, BlobError>
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), BlobError>>,
{
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    let mut total: u64 = 0;
    while let Some(piece) = body.next().await {
        let piece = piece?;
        total += piece.len() as u64;
        if total > limit {
            return Err(BlobError::TooLarge(limit));
        }
        let mut piece = &piece[..];
        while !piece.is_empty() {
            let take = (size - buf.len()).min(piece.len());
            buf.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if buf.len() == size {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(size));
                sink(Bytes::from(full)).await?;
            }
        }
    }
    if !buf.is_empty() {
        sink(Bytes::from(buf)).await?;
    }
    Ok(total)
}

/// Memory mode's blobs.
#[derive(Default)]
pub struct MemoryBlobs {
    blobs: Mutex<HashMap<String, Bytes>>,
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64, BlobError> {
        let mut all = Vec::new();
        let n = chunked(body, 1 << 20, limit, |c| {
            all.extend_from_slice(&c);
            std::future::ready(Ok(()))
        })
        .await?;
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), Bytes::from(all));
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<ByteStream, BlobError> {
        let blob = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
            .ok_or(BlobError::NotFound)?;
        Ok(futures_util::stream::once(async move { Ok(blob) }).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pieces: &[&[u8]]) -> ByteStream {
        let v: Vec<Result<Bytes, BlobError>> = pieces
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        futures_util::stream::iter(v).boxed()
    }

    #[tokio::test]
    async fn chunks_are_full_but_the_last_and_the_limit_holds() {
        let mut got = Vec::new();
        let n = chunked(body(&[b"abc", b"defgh", b"", b"ij"]), 4, 100, |c| {
            got.push(c);
            std::future::ready(Ok(()))
        })
        .await
        .unwrap();
        assert_eq!(n, 10);
        assert_eq!(got, [&b"abcd"[..], b"efgh", b"ij"]);
        let e = chunked(body(&[b"abc", b"def"]), 4, 5, |_| {
            std::future::ready(Ok(()))
        })
        .await
        .unwrap_err();
        assert!(matches!(e, BlobError::TooLarge(5)), "{e}");
    }
}
