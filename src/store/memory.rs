//! An in-memory store for unit tests of logic (engine scheduling on a paused
//! clock) and benchmarks. Not selectable as a server store.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ETag, Object, ObjectStore, PutMode, PutOptions, StoreError, StoreResult, check_key};

#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, (Bytes, u64)>>,
    next: Mutex<u64>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        check_key(key)?;
        let m = self.objects.lock().expect("lock");
        Ok(m.get(key).map(|(b, v)| Object { bytes: b.clone(), etag: v.to_string() }))
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag> {
        check_key(key)?;
        let mut m = self.objects.lock().expect("lock");
        match (&opts.mode, m.get(key)) {
            (PutMode::Create, Some(_)) => return Err(StoreError::AlreadyExists { key: key.into() }),
            (PutMode::Update(_), None) => return Err(StoreError::Conflict { key: key.into() }),
            (PutMode::Update(want), Some((_, v))) if &v.to_string() != want => {
                return Err(StoreError::Conflict { key: key.into() });
            }
            _ => {}
        }
        let mut next = self.next.lock().expect("lock");
        *next += 1;
        m.insert(key.to_string(), (bytes, *next));
        Ok(next.to_string())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let m = self.objects.lock().expect("lock");
        Ok(m.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.objects.lock().expect("lock").remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        crate::store::conformance::run_all(std::sync::Arc::new(super::MemStore::new())).await;
    }
}
