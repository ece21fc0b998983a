//! The contract every `ObjectStore` adapter must meet, run by each adapter's
//! tests against a real backend (a temporary directory, a real S3 server).

use std::sync::Arc;

use bytes::Bytes;

use super::{ObjectStore, PutOptions, StoreError};

/// Runs every check under a fresh prefix so stores can be shared.
pub async fn run_all(store: Arc<dyn ObjectStore>) {
    let p = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    missing_keys(&*store, &p).await;
    many_at_once(&*store, &p).await;
    create_if_absent(&*store, &p).await;
    compare_and_swap(&*store, &p).await;
    listing(&*store, &p).await;
    deleting(&*store, &p).await;
    file_writes(&*store, &p).await;
    invalid_keys(&*store).await;
    racing_creates(store.clone(), &p).await;
    racing_swaps(store, &p).await;
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

async fn missing_keys(s: &dyn ObjectStore, p: &str) {
    assert!(s.get(&format!("{p}/missing")).await.unwrap().is_none());
}

/// `get_many` gives what one `get` per key gives, in the order asked, past
/// the size of a directory store's chunk.
async fn many_at_once(s: &dyn ObjectStore, p: &str) {
    let keys: Vec<String> = (0..300).map(|i| format!("{p}/many/{i:03}.json")).collect();
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 7 != 3) {
        s.put(k, Bytes::from(format!("object {i}")), PutOptions::create()).await.unwrap();
    }
    let mut asked = keys.clone();
    asked.reverse();
    let got = s.get_many(&asked).await.unwrap();
    assert_eq!(got.len(), asked.len());
    for (k, o) in asked.iter().zip(&got) {
        let one = s.get(k).await.unwrap();
        assert_eq!(o.as_ref().map(|o| (&o.bytes, &o.etag)), one.as_ref().map(|o| (&o.bytes, &o.etag)), "{k}");
    }
    assert_eq!(got.iter().filter(|o| o.is_none()).count(), 43, "the missing keys are None");
    assert!(s.get_many(&[]).await.unwrap().is_empty());
    assert!(s.get_many(&["../escape".to_string()]).await.is_err(), "an invalid key is refused");
}

async fn create_if_absent(s: &dyn ObjectStore, p: &str) {
    let k = format!("{p}/create/a.json");
    let etag = s.put(&k, b("one"), PutOptions::create()).await.unwrap();
    let got = s.get(&k).await.unwrap().unwrap();
    assert_eq!(got.bytes, b("one"));
    assert_eq!(got.etag, etag, "get returns the etag put returned");
    let again = s.put(&k, b("two"), PutOptions::create()).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists { .. })), "{again:?}");
    assert_eq!(s.get(&k).await.unwrap().unwrap().bytes, b("one"), "a refused create changes nothing");
    s.put(&k, b("three"), PutOptions::overwrite()).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap().unwrap().bytes, b("three"));
}

async fn compare_and_swap(s: &dyn ObjectStore, p: &str) {
    let k = format!("{p}/cas/ref");
    let missing = s.put(&k, b("x"), PutOptions::update("\"nope\"".into())).await;
    assert!(matches!(missing, Err(StoreError::Conflict { .. })), "update of a missing key: {missing:?}");
    let e1 = s.put(&k, b("v1"), PutOptions::swap(None)).await.unwrap();
    let e2 = s.put(&k, b("v2"), PutOptions::swap(Some(e1.clone()))).await.unwrap();
    assert_ne!(e1, e2);
    let stale = s.put(&k, b("v3"), PutOptions::update(e1)).await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })), "stale etag: {stale:?}");
    let got = s.get(&k).await.unwrap().unwrap();
    assert_eq!((got.bytes, got.etag), (b("v2"), e2));
}

async fn listing(s: &dyn ObjectStore, p: &str) {
    for k in ["list/b/2", "list/a/1", "list/a/10", "listing/x", "list/c"] {
        s.put(&format!("{p}/{k}"), b("."), PutOptions::overwrite()).await.unwrap();
    }
    let keys = s.list(&format!("{p}/list/")).await.unwrap();
    let expect: Vec<String> =
        ["list/a/1", "list/a/10", "list/b/2", "list/c"].iter().map(|k| format!("{p}/{k}")).collect();
    assert_eq!(keys, expect);
    let partial = s.list(&format!("{p}/list/a/1")).await.unwrap();
    assert_eq!(partial.len(), 2, "a prefix need not end at a separator: {partial:?}");
    assert!(s.list(&format!("{p}/nothing/")).await.unwrap().is_empty());
}

async fn deleting(s: &dyn ObjectStore, p: &str) {
    let k = format!("{p}/delete/me");
    s.put(&k, b("x"), PutOptions::create()).await.unwrap();
    s.delete(&k).await.unwrap();
    assert!(s.get(&k).await.unwrap().is_none());
    s.delete(&k).await.unwrap();
    s.put(&k, b("y"), PutOptions::create()).await.unwrap();
}

async fn file_writes(s: &dyn ObjectStore, p: &str) {
    let dir = std::env::temp_dir().join(format!("lifeboat-conformance-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("blob");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let k = format!("{p}/file/blob");
    s.put_file(&k, &file, PutOptions::create()).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap().unwrap().bytes.as_ref(), &content[..], "a file write stores the file's bytes");
    let again = s.put_file(&k, &file, PutOptions::create()).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists { .. })), "{again:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn invalid_keys(s: &dyn ObjectStore) {
    for k in ["", "../etc/passwd", "a//b", "a/../b", "/abs", "a/.hidden"] {
        let r = s.put(k, b("x"), PutOptions::overwrite()).await;
        assert!(matches!(r, Err(StoreError::InvalidKey { .. })), "{k:?}: {r:?}");
    }
}

async fn racing_creates(s: Arc<dyn ObjectStore>, p: &str) {
    let k = format!("{p}/race/create");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, k) = (s.clone(), k.clone());
            tokio::spawn(async move { s.put(&k, Bytes::from(format!("writer {i}")), PutOptions::create()).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one of 8 concurrent creates wins");
}

async fn racing_swaps(s: Arc<dyn ObjectStore>, p: &str) {
    let k = format!("{p}/race/swap");
    let base = s.put(&k, b("base"), PutOptions::create()).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, k, base) = (s.clone(), k.clone(), base.clone());
            tokio::spawn(async move { s.put(&k, Bytes::from(format!("writer {i}")), PutOptions::update(base)).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one of 8 concurrent compare-and-swaps wins");
}
