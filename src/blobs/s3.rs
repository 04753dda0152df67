//! An S3-compatible blob store (AWS, MinIO, Ceph, R2, …) through the
//! `object_store` crate. Uploads are multipart, one 5 MiB part at a time
//! (S3's smallest part): the object appears only when completed, and an
//! upload that fails or is cut off is aborted, leaving nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use tokio::sync::Mutex;

use super::{chunked, BlobError, BlobStore, ByteStream, Bytes};

/// Parts of a multipart upload: S3's minimum (but for the last).
const PART: usize = 5 << 20;

/// Where the bucket is and how to sign for it.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: String,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// `endpoint/bucket/key` addressing (MinIO and most self-hosted
    /// servers), not `bucket.endpoint/key`.
    pub path_style: bool,
}

pub struct S3Blobs {
    s3: Arc<AmazonS3>,
}

fn err(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        other => BlobError::Unavailable(other.to_string()),
    }
}

impl S3Blobs {
    pub fn open(c: &S3Config) -> anyhow::Result<S3Blobs> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&c.bucket)
            .with_region(c.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_virtual_hosted_style_request(!c.path_style);
        if let Some(e) = &c.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(k) = &c.access_key {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &c.secret_key {
            b = b.with_secret_access_key(k);
        }
        Ok(S3Blobs {
            s3: Arc::new(b.build()?),
        })
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<u64, BlobError> {
        let path = Path::from(key);
        let upload = Mutex::new(self.s3.put_multipart(&path).await.map_err(err)?);
        let written = chunked(body, PART, limit, |part: Bytes| {
            let upload = &upload;
            async move {
                let sent = upload.lock().await.put_part(PutPayload::from(part));
                sent.await.map_err(err)
            }
        })
        .await;
        let mut upload = upload.into_inner();
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(key, error = %abort, "could not abort a failed S3 upload");
                }
                return Err(e);
            }
        };
        upload.complete().await.map_err(err)?;
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<ByteStream, BlobError> {
        let got = self.s3.get(&Path::from(key)).await.map_err(err)?;
        Ok(got.into_stream().map(|r| r.map_err(err)).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.s3.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Option<String> {
        let url = self
            .s3
            .signed_url(object_store::signer::Method::GET, &Path::from(key), ttl)
            .await;
        match url {
            Ok(u) => Some(u.to_string()),
            Err(e) => {
                tracing::warn!(key, error = %e, "could not presign an S3 download");
                None
            }
        }
    }

    fn backend(&self) -> &'static str {
        "s3"
    }
}
