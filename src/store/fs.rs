//! The embedded default store: a local directory. Writes go to a temporary
//! file that is fsynced and renamed into place, under an exclusive lock file
//! per key so create-if-absent and compare-and-swap hold across processes.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ETag, Object, ObjectStore, PutMode, PutOptions, StoreError, StoreResult, check_key};
use crate::domain::snapshot::sha256_hex;

const LOCK_DIR: &str = ".locks";
/// Files read by one blocking task in `get_many`.
const READ_CHUNK: usize = 128;

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn open(root: impl Into<PathBuf>) -> anyhow::Result<FsStore> {
        let root = root.into();
        fs::create_dir_all(root.join(LOCK_DIR))
            .map_err(|e| anyhow::anyhow!("cannot create store directory {}: {e}", root.display()))?;
        Ok(FsStore { root })
    }

    fn path(&self, key: &str) -> StoreResult<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn backend(&self, key: &str, what: &str, e: std::io::Error) -> StoreError {
        StoreError::Backend {
            store: self.describe(),
            message: format!("cannot {what} {key}: {e}"),
            retryable: matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock),
        }
    }

    /// An exclusive lock on a key, released when the file is dropped. Keys
    /// share a fixed pool of 256 lock files (by hash), so locks never pile up.
    fn lock(&self, key: &str) -> std::io::Result<File> {
        let name = format!("stripe-{}", &sha256_hex(key.as_bytes())[..2]);
        let f =
            OpenOptions::new().create(true).truncate(false).write(true).open(self.root.join(LOCK_DIR).join(name))?;
        f.lock()?;
        Ok(f)
    }

    fn read(path: &Path) -> std::io::Result<Option<Object>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(Object { etag: sha256_hex(&b), bytes: Bytes::from(b) })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_blocking(&self, key: &str, bytes: &[u8], mode: &PutMode) -> StoreResult<ETag> {
        let path = self.path(key)?;
        let io = |what: &str, e| self.backend(key, what, e);
        let _lock = self.lock(key).map_err(|e| io("lock", e))?;
        let current = Self::read(&path).map_err(|e| io("read", e))?;
        match (mode, &current) {
            (PutMode::Create, Some(_)) => return Err(StoreError::AlreadyExists { key: key.into() }),
            (PutMode::Update(_), None) => return Err(StoreError::Conflict { key: key.into() }),
            (PutMode::Update(want), Some(cur)) if &cur.etag != want => {
                return Err(StoreError::Conflict { key: key.into() });
            }
            _ => {}
        }
        let dir = path.parent().expect("a checked key has a parent");
        fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io("write", e));
        }
        Ok(sha256_hex(bytes))
    }

    /// `put_blocking` for a file: streamed into place, never whole in memory.
    fn put_file_blocking(&self, key: &str, src: &Path, mode: &PutMode) -> StoreResult<ETag> {
        let path = self.path(key)?;
        let io = |what: &str, e| self.backend(key, what, e);
        let _lock = self.lock(key).map_err(|e| io("lock", e))?;
        let exists = path.exists();
        match (mode, exists) {
            (PutMode::Create, true) => return Err(StoreError::AlreadyExists { key: key.into() }),
            (PutMode::Update(_), _) => {
                return Err(StoreError::InvalidKey {
                    key: key.into(),
                    reason: "file writes are create or overwrite".into(),
                });
            }
            _ => {}
        }
        let dir = path.parent().expect("a checked key has a parent");
        fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let write = || -> std::io::Result<String> {
            use sha2::Digest;
            let mut from = File::open(src)?;
            let mut to = File::create(&tmp)?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut from, &mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])?;
            }
            to.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(hex::encode(hasher.finalize()))
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io("write", e)
        })
    }

    fn list_blocking(&self, prefix: &str) -> StoreResult<Vec<String>> {
        // Walk only the deepest directory the prefix names.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let start = if dir_part.is_empty() { self.root.clone() } else { self.root.join(dir_part) };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.backend(prefix, "list", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.backend(prefix, "list", e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let file_type = entry.file_type().map_err(|e| self.backend(prefix, "list", e))?;
                if file_type.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                    if key.starts_with(prefix) && !super::hidden_from(prefix, &key) {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        let path = self.path(key)?;
        let read = tokio::task::spawn_blocking(move || Self::read(&path));
        read.await
            .map_err(|e| self.backend(key, "read", std::io::Error::other(e)))?
            .map_err(|e| self.backend(key, "read", e))
    }

    /// In chunks of `READ_CHUNK` files, each one blocking task (a task per
    /// file costs more in thread hand-offs than the read), two at once.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Object>>> {
        use futures::{StreamExt, TryStreamExt};
        let paths: Vec<PathBuf> = keys.iter().map(|k| self.path(k)).collect::<StoreResult<_>>()?;
        let chunks: Vec<Vec<PathBuf>> = paths.chunks(READ_CHUNK).map(<[PathBuf]>::to_vec).collect();
        let chunks: Vec<Vec<Option<Object>>> = futures::stream::iter(chunks.into_iter().enumerate())
            .map(|(n, chunk)| async move {
                tokio::task::spawn_blocking(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, p)| Self::read(p).map_err(|e| (i, e)))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                .map_err(|e| self.backend(&keys[n * READ_CHUNK], "read", std::io::Error::other(e)))?
                .map_err(|(i, e)| self.backend(&keys[n * READ_CHUNK + i], "read", e))
            })
            .buffered(2)
            .try_collect()
            .await?;
        Ok(chunks.into_iter().flatten().collect())
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag> {
        let this = FsStore { root: self.root.clone() };
        let key_owned = key.to_string();
        tokio::task::spawn_blocking(move || this.put_blocking(&key_owned, &bytes, &opts.mode))
            .await
            .map_err(|e| self.backend(key, "write", std::io::Error::other(e)))?
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let this = FsStore { root: self.root.clone() };
        let prefix_owned = prefix.to_string();
        tokio::task::spawn_blocking(move || this.list_blocking(&prefix_owned))
            .await
            .map_err(|e| self.backend(prefix, "list", std::io::Error::other(e)))?
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path(key)?;
        let this = FsStore { root: self.root.clone() };
        let key_owned = key.to_string();
        tokio::task::spawn_blocking(move || {
            let _lock = this.lock(&key_owned)?;
            match fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| self.backend(key, "delete", std::io::Error::other(e)))?
        .map_err(|e| self.backend(key, "delete", e))
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn put_file(&self, key: &str, path: &Path, opts: PutOptions) -> StoreResult<ETag> {
        let this = FsStore { root: self.root.clone() };
        let (key_owned, src) = (key.to_string(), path.to_path_buf());
        tokio::task::spawn_blocking(move || this.put_file_blocking(&key_owned, &src, &opts.mode))
            .await
            .map_err(|e| self.backend(key, "write", std::io::Error::other(e)))?
    }

    async fn features(&self) -> Vec<super::Feature> {
        vec![
            super::Feature::new("versioning", "not supported by a directory store"),
            super::Feature::new("object lock", "not supported by a directory store"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        crate::store::conformance::run_all(store).await;
    }

    #[tokio::test]
    async fn lock_files_are_a_fixed_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for i in 0..600 {
            store.put(&format!("k/{i}"), Bytes::from_static(b"x"), PutOptions::create()).await.unwrap();
        }
        let locks = fs::read_dir(dir.path().join(LOCK_DIR)).unwrap().count();
        assert!(locks <= 256, "{locks} lock files for 600 objects");
    }

    #[tokio::test]
    async fn temp_and_lock_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store.put("a/b", Bytes::from_static(b"x"), PutOptions::create()).await.unwrap();
        fs::write(dir.path().join("a/.tmp-123"), b"partial").unwrap();
        assert_eq!(store.list("").await.unwrap(), vec!["a/b".to_string()]);
    }
}
