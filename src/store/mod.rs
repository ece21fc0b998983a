//! Object storage: a narrow bytes-only port with conditional writes, its
//! adapters (a local directory and S3), and the repositories built on it.
//! Only `layout` knows object keys.

pub mod archive;
pub mod audit;
pub mod cas;
pub mod codec;
mod fs;
pub mod images;
pub mod layout;
pub mod policy;
mod retry;
mod s3;
pub mod selftest;
pub mod snapshots;
pub mod webhooks;

/// The suite every adapter must pass (used by the adapters' tests).
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
pub mod faults;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use audit::{AuditLog, AuditRecord};
pub use fs::FsStore;
pub use images::{ImageMeta, ImageRepo};
pub use retry::{RetryPolicy, Retrying};
pub use s3::{ObjectLockConfig, S3Config, S3Store};
pub use snapshots::{NewSnapshot, RefRecord, Rejection, SnapshotRepo, check_environment};

/// An opaque version tag of a stored object, used for compare-and-swap.
pub type ETag = String;

/// How a write treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Fail with `AlreadyExists` if the key exists.
    Create,
    /// Fail with `Conflict` unless the object still has this ETag.
    Update(ETag),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOptions {
    pub mode: PutMode,
    /// Apply the store's retention (S3 Object Lock) to this object.
    pub retain: bool,
}

impl PutOptions {
    pub fn create() -> PutOptions {
        PutOptions { mode: PutMode::Create, retain: false }
    }
    pub fn overwrite() -> PutOptions {
        PutOptions { mode: PutMode::Overwrite, retain: false }
    }
    pub fn update(etag: ETag) -> PutOptions {
        PutOptions { mode: PutMode::Update(etag), retain: false }
    }
    /// Create-if-absent when there is no current version, else compare-and-swap.
    pub fn swap(current: Option<ETag>) -> PutOptions {
        current.map_or_else(PutOptions::create, PutOptions::update)
    }
    pub fn retained(mut self) -> PutOptions {
        self.retain = true;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Bytes,
    pub etag: ETag,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    #[error("object {key} was changed by another writer (compare-and-swap failed)")]
    Conflict { key: String },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("{store}: {message}")]
    Backend { store: String, message: String, retryable: bool },
}

impl StoreError {
    /// Transient failures worth another attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend { retryable: true, .. })
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage port. Every adapter passes `conformance::run_all`.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// `Ok(None)` when there is no such key.
    async fn get(&self, key: &str) -> StoreResult<Option<Object>>;
    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag>;
    /// Several objects, in the order of `keys` (`None` for a missing one).
    /// A backend that reads many objects more cheaply than one by one (a
    /// local directory) overrides it; the default makes up to 32 gets at once.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Object>>> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(keys.iter().cloned())
            .map(|k| async move { self.get(&k).await })
            .buffered(32)
            .try_collect()
            .await
    }
    /// Keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>>;
    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Where the data lives, for messages: `/var/lib/lifeboat` or `s3://bucket/prefix`.
    fn describe(&self) -> String;
    /// What the backend reports about itself (versioning, Object Lock), for `store check`.
    async fn features(&self) -> Vec<Feature> {
        Vec::new()
    }
    /// Writes a file's content without holding it in memory (where the
    /// backend can). For content-addressed, write-once objects (artifacts):
    /// a retried write that finds the object there reports `AlreadyExists`.
    async fn put_file(&self, key: &str, path: &std::path::Path, opts: PutOptions) -> StoreResult<ETag> {
        let bytes = tokio::fs::read(path).await.map_err(|e| StoreError::Backend {
            store: self.describe(),
            message: format!("cannot read {}: {e}", path.display()),
            retryable: false,
        })?;
        self.put(key, Bytes::from(bytes), opts).await
    }
}

/// A property a backend reports, shown by `lifeboat store check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    pub detail: String,
}

impl Feature {
    pub fn new(name: &str, detail: impl Into<String>) -> Feature {
        Feature { name: name.into(), detail: detail.into() }
    }
}

pub type DynStore = Arc<dyn ObjectStore>;

#[async_trait]
impl<T: ObjectStore + ?Sized> ObjectStore for Arc<T> {
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        (**self).get(key).await
    }
    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag> {
        (**self).put(key, bytes, opts).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Object>>> {
        (**self).get_many(keys).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        (**self).list(prefix).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        (**self).delete(key).await
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn features(&self) -> Vec<Feature> {
        (**self).features().await
    }
    async fn put_file(&self, key: &str, path: &std::path::Path, opts: PutOptions) -> StoreResult<ETag> {
        (**self).put_file(key, path, opts).await
    }
}

/// A file's SHA-256, size and first bytes, read in 1 MiB pieces.
pub(crate) struct FileSummary {
    pub sha256: Vec<u8>,
    pub size: u64,
    /// Up to the first 512 bytes.
    pub head: Vec<u8>,
}

impl FileSummary {
    pub(crate) fn read(path: &std::path::Path) -> std::io::Result<FileSummary> {
        use sha2::Digest;
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let (mut hasher, mut size, mut head, mut buf) = (sha2::Sha256::new(), 0u64, Vec::new(), vec![0u8; 1 << 20]);
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(FileSummary { sha256: hasher.finalize().to_vec(), size, head });
            }
            if head.len() < 512 {
                head.extend_from_slice(&buf[..n.min(512 - head.len())]);
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
    }
}

/// Keys under the scratch prefix are hidden from listings of anything else.
pub(crate) fn hidden_from(prefix: &str, key: &str) -> bool {
    key.starts_with("_lifeboat/") && !prefix.starts_with("_lifeboat/")
}

/// Checks that a key is a relative `/`-separated path with no empty, `.`,
/// `..` or hidden components, so both adapters map it the same way.
pub(crate) fn check_key(key: &str) -> StoreResult<()> {
    let bad = |reason: &str| Err(StoreError::InvalidKey { key: key.to_string(), reason: reason.to_string() });
    if key.is_empty() || key.len() > 900 {
        return bad("keys are 1 to 900 bytes");
    }
    for part in key.split('/') {
        if part.is_empty() || part.starts_with('.') {
            return bad("empty or hidden path component");
        }
        if part.chars().any(|c| c.is_control() || c == '\\') {
            return bad("control character or backslash");
        }
    }
    Ok(())
}

/// Opens the store named by a URL (a path, `file:///path`, or
/// `s3://bucket/prefix`) without checking it.
/// This store's identity (`st-` and 16 hex digits), made on first use.
pub async fn store_id(store: &DynStore) -> anyhow::Result<String> {
    let key = layout::store_id();
    for _ in 0..3 {
        if let Some(o) = store.get(&key).await? {
            let id = String::from_utf8_lossy(&o.bytes).trim().to_string();
            let valid = id.len() == 19 && id.starts_with("st-") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                anyhow::bail!(
                    "the store identity (object {key} in {}) is corrupt: {:?}",
                    store.describe(),
                    crate::error::shown(&id)
                );
            }
            return Ok(id);
        }
        let id = format!("st-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        match store.put(&key, bytes::Bytes::from(id.clone()), PutOptions::create()).await {
            Ok(_) => return Ok(id),
            Err(StoreError::AlreadyExists { .. }) => continue, // another server made it first
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("cannot read or make the store identity (object {key} in {})", store.describe())
}

pub async fn open_unchecked(url: &str, s3: &S3Config) -> anyhow::Result<DynStore> {
    let policy = RetryPolicy::default();
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("store URL {url:?} names no bucket; use s3://BUCKET/PREFIX");
        }
        let cfg = S3Config { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string(), ..s3.clone() };
        Ok(Arc::new(Retrying::new(S3Store::connect(cfg).await?, policy)))
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            anyhow::bail!("store URL is empty; use a directory path or s3://BUCKET/PREFIX");
        }
        Ok(Arc::new(Retrying::new(FsStore::open(path)?, policy)))
    }
}

/// Opens the store named by a URL and runs the self-test: a store that does
/// not honour conditional writes is refused with one sentence saying why.
pub async fn open(url: &str, s3: &S3Config) -> anyhow::Result<DynStore> {
    let store = open_unchecked(url, s3).await?;
    let report = selftest::run(&*store).await;
    if let Some(why) = report.refusal() {
        anyhow::bail!(why);
    }
    Ok(store)
}
