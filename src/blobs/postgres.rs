//! The Postgres blob store: 1 MiB `bytea` chunks in `file_blob`, written
//! in one transaction (a failed or cut-off upload leaves nothing), read
//! back one chunk per statement. Its own small pool: an upload holds its
//! connection while the body arrives, and must not starve the store's.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::stream::StreamExt;

use super::{chunked, BlobError, BlobStore, ByteStream, Bytes};
use crate::pgconn::{describe, Database};

/// How long taking a connection may wait before the request fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows of `file_blob`.
pub const CHUNK: usize = 1 << 20;

pub struct PgBlobs {
    pool: Pool,
}

fn err(e: tokio_postgres::Error) -> BlobError {
    BlobError::Unavailable(describe(&e))
}

impl PgBlobs {
    /// `size` connections: uploads and downloads in flight at once.
    pub fn open(db: &Database, size: usize) -> anyhow::Result<PgBlobs> {
        let mut cfg = db.config.clone();
        cfg.connect_timeout(CONNECT_TIMEOUT);
        cfg.application_name("claudemesh-broker-blobs");
        let mgr = Manager::from_config(
            cfg,
            db.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(size)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        Ok(PgBlobs { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, BlobError> {
        self.pool
            .get()
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))
    }
}

#[async_trait]
impl BlobStore for PgBlobs {
    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64, BlobError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        tx.execute("DELETE FROM file_blob WHERE blob_key = $1", &[&key])
            .await
            .map_err(err)?;
        let insert = tx
            .prepare("INSERT INTO file_blob (blob_key, seq, data) VALUES ($1, $2, $3)")
            .await
            .map_err(err)?;
        let mut seq: i32 = 0;
        let (t, insert) = (&tx, &insert);
        let n = chunked(body, CHUNK, limit, |chunk| {
            seq += 1;
            let at = seq;
            async move {
                t.execute(insert, &[&key, &at, &chunk.as_ref()])
                    .await
                    .map(|_| ())
                    .map_err(err)
            }
        })
        .await?;
        // Dropping the transaction on any error above rolled it back.
        tx.commit().await.map_err(err)?;
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<ByteStream, BlobError> {
        let c = self.client().await?;
        let chunks: i64 = c
            .query_one(
                "SELECT count(*) FROM file_blob WHERE blob_key = $1",
                &[&key],
            )
            .await
            .map_err(err)?
            .get(0);
        drop(c);
        if chunks == 0 {
            return Err(BlobError::NotFound);
        }
        let pool = self.pool.clone();
        let key = key.to_string();
        let stream = futures_util::stream::iter(1..=chunks as i32).then(move |seq| {
            let (pool, key) = (pool.clone(), key.clone());
            async move {
                let c = pool
                    .get()
                    .await
                    .map_err(|e| BlobError::Unavailable(e.to_string()))?;
                let row = c
                    .query_opt(
                        "SELECT data FROM file_blob WHERE blob_key = $1 AND seq = $2",
                        &[&key, &seq],
                    )
                    .await
                    .map_err(err)?
                    // Deleted while being read.
                    .ok_or(BlobError::NotFound)?;
                Ok(Bytes::from(row.get::<_, Vec<u8>>(0)))
            }
        });
        Ok(stream.boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let c = self.client().await?;
        c.execute("DELETE FROM file_blob WHERE blob_key = $1", &[&key])
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn presign_get(&self, _key: &str, _ttl: Duration) -> Option<String> {
        None
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
