//! What a store honours, checked on a scratch key: create-if-absent,
//! compare-and-swap with the current and with a stale ETag, read-after-write
//! and list-after-write, plus what the backend reports (versioning, Object
//! Lock). Run at start-up (a store failing a guarantee is refused) and by
//! `lifeboat store check`.

use bytes::Bytes;
use serde::Serialize;

use super::{ObjectStore, PutOptions, StoreError};

/// Where scratch keys go; listings skip it.
pub const SCRATCH_PREFIX: &str = "_lifeboat/probe/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A guarantee Lifeboat relies on, honoured.
    Ok,
    /// A guarantee Lifeboat relies on, not honoured: the store is refused.
    Failed,
    /// Reported for information (versioning, Object Lock).
    Info,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub guarantee: String,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub store: String,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.verdict != Verdict::Failed)
    }

    /// One sentence naming what failed, for refusing the store.
    pub fn refusal(&self) -> Option<String> {
        let failed: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Failed)
            .map(|r| format!("{} ({})", r.guarantee, r.detail))
            .collect();
        (!failed.is_empty()).then(|| {
            format!(
                "the object store {} does not honour {}; Lifeboat refuses to use it, because concurrent writers could overwrite each other's state (run `lifeboat store check --store URL` for details)",
                self.store,
                failed.join(" and ")
            )
        })
    }
}

fn row(guarantee: &str, ok: bool, detail: impl Into<String>) -> Row {
    Row { guarantee: guarantee.into(), verdict: if ok { Verdict::Ok } else { Verdict::Failed }, detail: detail.into() }
}

/// Runs every check on a fresh scratch key and removes it afterwards.
pub async fn run(store: &dyn ObjectStore) -> Report {
    let key = format!("{SCRATCH_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let mut rows = checks(store, &key).await;
    let _ = store.delete(&key).await;
    rows.extend(store.features().await.into_iter().map(|f| Row {
        guarantee: f.name,
        verdict: Verdict::Info,
        detail: f.detail,
    }));
    Report { store: store.describe(), rows }
}

async fn checks(store: &dyn ObjectStore, key: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let first = match store.put(key, Bytes::from_static(b"one"), PutOptions::create()).await {
        Ok(etag) => etag,
        Err(e) => {
            rows.push(row("create-if-absent", false, format!("cannot write a scratch object: {e}")));
            return rows;
        }
    };
    rows.push(match store.put(key, Bytes::from_static(b"two"), PutOptions::create()).await {
        Err(StoreError::AlreadyExists { .. }) => row("create-if-absent", true, "a second create of one key is refused"),
        Ok(_) => row("create-if-absent", false, "a second create of one key succeeded (If-None-Match: * ignored)"),
        Err(e) => row("create-if-absent", false, format!("a second create failed oddly: {e}")),
    });
    let second = match store.put(key, Bytes::from_static(b"three"), PutOptions::update(first.clone())).await {
        Ok(etag) => {
            rows.push(row("compare-and-swap", true, "a write with the current ETag succeeds"));
            Some(etag)
        }
        Err(e) => {
            rows.push(row("compare-and-swap", false, format!("a write with the current ETag was refused: {e}")));
            None
        }
    };
    if let Some(second) = &second {
        rows.push(match store.put(key, Bytes::from_static(b"four"), PutOptions::update(first)).await {
            Err(StoreError::Conflict { .. }) => {
                row("stale compare-and-swap", true, "a write with a stale ETag is refused")
            }
            Ok(_) => row("stale compare-and-swap", false, "a write with a stale ETag succeeded (If-Match ignored)"),
            Err(e) => row("stale compare-and-swap", false, format!("a write with a stale ETag failed oddly: {e}")),
        });
        rows.push(match store.get(key).await {
            Ok(Some(o)) if o.bytes.as_ref() == b"three" && &o.etag == second => {
                row("read-after-write", true, "a read returns the last write and its ETag")
            }
            Ok(Some(_)) => row("read-after-write", false, "a read returned an older version"),
            Ok(None) => row("read-after-write", false, "a read did not find the object just written"),
            Err(e) => row("read-after-write", false, format!("cannot read back: {e}")),
        });
    }
    let prefix = key.rsplit_once('/').map_or(key, |(p, _)| p);
    rows.push(match store.list(&format!("{prefix}/")).await {
        Ok(keys) if keys.iter().any(|k| k == key) => row("list-after-write", true, "a listing shows the object"),
        Ok(_) => row("list-after-write", false, "a listing right after the write does not show it"),
        Err(e) => row("list-after-write", false, format!("cannot list: {e}")),
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_store_passes() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::FsStore::open(dir.path()).unwrap();
        let report = run(&store).await;
        assert!(report.passed(), "{report:?}");
        assert!(report.rows.iter().any(|r| r.guarantee == "versioning" && r.verdict == Verdict::Info));
        assert!(store.list("").await.unwrap().is_empty(), "the scratch object is removed");
    }
}
