//! The blob-store contract, one body per behaviour over every backend:
//! memory, Postgres chunk rows, and S3 against a real S3 API server.
//! Bodies round-trip across chunk boundaries; one over its limit, or cut
//! off mid-way, leaves nothing; deletes are idempotent.

use std::sync::Arc;

use claudemesh_broker::blobs::s3::{S3Blobs, S3Config};
use claudemesh_broker::blobs::Bytes;
use claudemesh_broker::blobs::{BlobError, BlobStore, ByteStream, MemoryBlobs, PgBlobs};
use claudemesh_broker::store::postgres::Database;
use futures_util::stream::StreamExt;

use crate::harness::{s3, TestDb};

/// `len` bytes of a pattern, in pieces of `piece` bytes, optionally
/// failing after `fail_after` pieces.
fn body(len: usize, piece: usize, fail_after: Option<usize>) -> (ByteStream, Vec<u8>) {
    let all: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut items: Vec<Result<Bytes, BlobError>> = all
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    if let Some(n) = fail_after {
        items.truncate(n);
        items.push(Err(BlobError::Body("connection reset".into())));
    }
    (futures_util::stream::iter(items).boxed(), all)
}

async fn read(b: &dyn BlobStore, key: &str) -> Result<Vec<u8>, BlobError> {
    let mut s = b.get(key).await?;
    let mut out = Vec::new();
    while let Some(piece) = s.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}

async fn contract(b: &dyn BlobStore) {
    // Across chunk (1 MiB) and part (5 MiB) boundaries.
    let (stream, want) = body((11 << 20) + 12345, 64 << 10, None);
    assert_eq!(
        b.put("m/one", stream, 50 << 20).await.unwrap(),
        want.len() as u64
    );
    assert_eq!(read(b, "m/one").await.unwrap(), want);
    // Overwritten whole.
    let (stream, small) = body(10, 3, None);
    b.put("m/one", stream, 100).await.unwrap();
    assert_eq!(read(b, "m/one").await.unwrap(), small);
    // Over the limit: refused, nothing kept.
    let (stream, _) = body(6 << 20, 1 << 20, None);
    assert!(matches!(
        b.put("m/big", stream, 5 << 20).await,
        Err(BlobError::TooLarge(_))
    ));
    assert!(matches!(read(b, "m/big").await, Err(BlobError::NotFound)));
    // Cut off mid-way: nothing kept.
    let (stream, _) = body(7 << 20, 1 << 20, Some(6));
    assert!(matches!(
        b.put("m/cut", stream, 50 << 20).await,
        Err(BlobError::Body(_))
    ));
    assert!(matches!(read(b, "m/cut").await, Err(BlobError::NotFound)));
    // Deleted, twice.
    b.delete("m/one").await.unwrap();
    b.delete("m/one").await.unwrap();
    assert!(matches!(read(b, "m/one").await, Err(BlobError::NotFound)));
    b.delete("m/never").await.unwrap();
}

#[tokio::test]
async fn memory_blobs_keep_the_contract() {
    contract(&MemoryBlobs::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_blobs_keep_the_contract() {
    let db = TestDb::migrated().await;
    let blobs = PgBlobs::open(&Database::parse(&db.url, None).unwrap(), 2).unwrap();
    contract(&blobs).await;
    // A refused or cut-off body left no chunk rows behind.
    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM file_blob", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

pub async fn s3_blobs(server: &s3::S3Server) -> Arc<S3Blobs> {
    let bucket = server.bucket().await;
    Arc::new(
        S3Blobs::open(&S3Config {
            endpoint: Some(server.endpoint.clone()),
            region: Some("us-east-1".into()),
            bucket,
            access_key: Some("test".into()),
            secret_key: Some("test".into()),
            path_style: true,
        })
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_blobs_keep_the_contract() {
    let Some(server) = s3::or_skip("s3_blobs_keep_the_contract") else {
        return;
    };
    let blobs = s3_blobs(server).await;
    contract(&*blobs).await;
    // A presigned GET fetches the object with no credentials.
    let (stream, want) = body(1000, 100, None);
    blobs.put("m/signed", stream, 10_000).await.unwrap();
    let url = blobs
        .presign_get("m/signed", std::time::Duration::from_secs(60))
        .await
        .expect("S3 presigns");
    let got = reqwest::get(&url).await.unwrap();
    assert!(got.status().is_success(), "{}", got.status());
    assert_eq!(got.bytes().await.unwrap().to_vec(), want);
}
