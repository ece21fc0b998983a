//! One retry policy for every adapter: transient failures are retried with a
//! jittered exponential backoff, bounded in attempts and time, and a write
//! whose reply was lost (an "ambiguous" write) is resolved by reading back.
//! Adapters make single attempts and classify their errors; this wraps them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

use super::{ETag, Object, ObjectStore, PutMode, PutOptions, StoreError, StoreResult};

/// Keys read (and retried) together by `get_many`: two such chunks at once.
const MANY_CHUNK: usize = 128;

/// How hard to try before giving up on a transient failure.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Total time spent sleeping between attempts, at most.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            budget: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        crate::backoff::builder(self.min_delay, self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1))
            .with_total_delay(Some(self.budget))
    }
}

pub struct Retrying<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: ObjectStore> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Retrying<S> {
        Retrying { inner, policy }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// One call, as the metrics see it: a request, and an error if it failed
/// after its retries.
fn count<T>(operation: &str, result: StoreResult<T>) -> StoreResult<T> {
    count_many(operation, 1, result)
}

/// The same for a call that stands for `requests` requests (`get_many`).
fn count_many<T>(operation: &str, requests: usize, result: StoreResult<T>) -> StoreResult<T> {
    let m = crate::metrics::get();
    let l = crate::metrics::labels(&[("operation", operation)]);
    m.store_requests.get_or_create(&l).inc_by(requests as u64);
    if result.is_err() {
        m.store_errors.get_or_create(&l).inc();
    }
    result
}

/// Bytes a successful call moved.
fn moved(direction: &str, bytes: usize) {
    let l = crate::metrics::labels(&[("direction", direction)]);
    crate::metrics::get().store_bytes.get_or_create(&l).inc_by(bytes as u64);
}

fn retried(operation: &'static str) -> impl Fn(&StoreError, std::time::Duration) {
    move |_, _| {
        crate::metrics::get().store_retries.get_or_create(&crate::metrics::labels(&[("operation", operation)])).inc();
    }
}

impl<S: ObjectStore> Retrying<S> {
    async fn get_chunk(&self, chunk: &[String]) -> StoreResult<Vec<Option<Object>>> {
        let got = count_many(
            "get",
            chunk.len(),
            (|| self.inner.get_many(chunk))
                .retry(self.policy.backoff())
                .when(StoreError::is_retryable)
                .notify(retried("get"))
                .await,
        );
        if let Ok(objects) = &got {
            moved("read", objects.iter().flatten().map(|o| o.bytes.len()).sum());
        }
        got
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Retrying<S> {
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        let got = count(
            "get",
            (|| self.inner.get(key))
                .retry(self.policy.backoff())
                .when(StoreError::is_retryable)
                .notify(retried("get"))
                .await,
        );
        if let Ok(Some(o)) = &got {
            moved("read", o.bytes.len());
        }
        got
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag> {
        let attempts = AtomicU32::new(0);
        let once = || async {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            match self.inner.put(key, bytes.clone(), opts.clone()).await {
                // An earlier attempt may have landed with its reply lost: if
                // what is stored now is exactly ours, the write happened.
                Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. })
                    if n > 0 && opts.mode != PutMode::Overwrite =>
                {
                    match self.inner.get(key).await? {
                        Some(obj) if obj.bytes == bytes => Ok(obj.etag),
                        _ => self.inner.put(key, bytes.clone(), opts.clone()).await,
                    }
                }
                other => other,
            }
        };
        let put =
            count("put", once.retry(self.policy.backoff()).when(StoreError::is_retryable).notify(retried("put")).await);
        if put.is_ok() {
            moved("written", bytes.len());
        }
        put
    }

    /// In chunks of `MANY_CHUNK` keys, each chunk retried on its own (a
    /// transient failure late in a long read repeats one chunk, not all).
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Object>>> {
        use futures::{StreamExt, TryStreamExt};
        let chunks: Vec<Vec<Option<Object>>> = futures::stream::iter(keys.chunks(MANY_CHUNK).map(<[String]>::to_vec))
            .map(|chunk| async move { self.get_chunk(&chunk).await })
            .buffered(2)
            .try_collect()
            .await?;
        Ok(chunks.into_iter().flatten().collect())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        count(
            "list",
            (|| self.inner.list(prefix))
                .retry(self.policy.backoff())
                .when(StoreError::is_retryable)
                .notify(retried("list"))
                .await,
        )
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        count(
            "delete",
            (|| self.inner.delete(key))
                .retry(self.policy.backoff())
                .when(StoreError::is_retryable)
                .notify(retried("delete"))
                .await,
        )
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn features(&self) -> Vec<super::Feature> {
        self.inner.features().await
    }

    async fn put_file(&self, key: &str, path: &std::path::Path, opts: PutOptions) -> StoreResult<ETag> {
        let r = (|| self.inner.put_file(key, path, opts.clone()))
            .retry(self.policy.backoff())
            .when(StoreError::is_retryable)
            .notify(retried("put_file"))
            .await;
        if r.is_ok() {
            moved("written", std::fs::metadata(path).map_or(0, |m| m.len() as usize));
        }
        count("put_file", r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::faults::{Fault, FaultyStore, Rule};
    use crate::store::memory::MemStore;

    /// A transient failure late in a long `get_many` repeats its own chunk
    /// only; a permanent one is not retried and names the key.
    #[tokio::test(start_paused = true)]
    async fn get_many_retries_the_failed_chunk() {
        let faulty = FaultyStore::new(MemStore::new());
        let keys: Vec<String> = (0..300).map(|i| format!("k/{i:03}.json")).collect();
        for k in &keys {
            faulty.put(k, Bytes::from(k.clone()), PutOptions::create()).await.unwrap();
        }
        let flaky = faulty.add(Rule::gets("k/250.").fault(Fault::Transient).times(2));
        let first = faulty.add(Rule::gets("k/000.").fault(Fault::Latency(Duration::ZERO)));
        let store = Retrying::new(faulty, RetryPolicy::default());

        let got = store.get_many(&keys).await.unwrap();
        let got: Vec<Bytes> = got.into_iter().map(|o| o.unwrap().bytes).collect();
        assert_eq!(got, keys.iter().map(|k| Bytes::from(k.clone())).collect::<Vec<_>>());
        assert_eq!(flaky.fired(), 2);
        assert_eq!(first.fired(), 1, "the first chunk was read once");

        store.inner().clear();
        store.inner().add(Rule::gets("k/299.").fault(Fault::Permanent));
        let err = store.get_many(&keys).await.unwrap_err();
        assert!(!err.is_retryable() && err.to_string().contains("k/299.json"), "{err}");
    }
}
