//! The one compare-and-swap loop: read, decide, write with the ETag read;
//! on a conflict, read again and retry with a jittered backoff. Bounded in
//! attempts and time, and it tells a real conflict (someone else moved the
//! object) from a store that refuses a valid compare-and-swap.

use std::time::Duration;

use bytes::Bytes;

use super::{DynStore, ETag, Object, PutOptions, StoreError};
use crate::error::{Error, Result};

/// Limits of one loop.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub attempts: u32,
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { attempts: 32, time: Duration::from_secs(20) }
    }
}

/// What `decide` wants written.
pub enum Step {
    /// Nothing to do (the object already says what we wanted).
    Done,
    Write(Bytes),
}

/// Applies `decide` to the current object until its write lands. `decide`
/// may fail (e.g. a corrupt object), which ends the loop with that error.
pub async fn update(
    store: &DynStore,
    key: &str,
    budget: Budget,
    mut decide: impl FnMut(Option<&Object>) -> Result<Step>,
) -> Result<Option<ETag>> {
    let started = tokio::time::Instant::now();
    let mut refused = 0u32;
    let mut moved = 0u32;
    let mut pauses = crate::backoff::pauses(Duration::from_millis(10), Duration::from_secs(1));
    for attempt in 1..=budget.attempts {
        let current = store.get(key).await?;
        let bytes = match decide(current.as_ref())? {
            Step::Done => return Ok(current.map(|o| o.etag)),
            Step::Write(b) => b,
        };
        let etag = current.as_ref().map(|o| o.etag.clone());
        match store.put(key, bytes, PutOptions::swap(etag.clone())).await {
            Ok(etag) => return Ok(Some(etag)),
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => {
                // Did someone else write, or did the store refuse a valid swap?
                let now = store.get(key).await?.map(|o| o.etag);
                if now == etag {
                    refused += 1;
                    if refused >= 3 {
                        return Err(Error::Store(StoreError::Backend {
                            store: store.describe(),
                            message: format!(
                                "the store refused {refused} compare-and-swaps on {key} although the ETag was current; it does not honour If-Match (run `lifeboat store check`)"
                            ),
                            retryable: false,
                        }));
                    }
                } else {
                    moved += 1;
                }
            }
            Err(e) => return Err(e.into()),
        }
        // Jittered, so racing writers spread out.
        let pause = pauses.next().unwrap_or(Duration::from_secs(1));
        if attempt == budget.attempts || started.elapsed() + pause > budget.time {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    Err(Error::Conflict(format!(
        "{key} was changed by other writers {moved} times while this write tried for {:.1}s; try again",
        started.elapsed().as_secs_f64()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn racing_updates_all_land_once() {
        let store: DynStore = Arc::new(MemStore::new());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    update(&store, "counter", Budget::default(), |cur| {
                        let n: u64 = cur.map_or(0, |o| String::from_utf8_lossy(&o.bytes).parse().unwrap());
                        Ok(Step::Write(Bytes::from((n + 1).to_string())))
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.get("counter").await.unwrap().unwrap().bytes, Bytes::from("16"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_refuses_valid_swaps_is_named() {
        use crate::store::faults::{Fault, FaultyStore, Rule};
        let faulty = FaultyStore::new(MemStore::new());
        faulty.add(Rule::puts("ref").fault(Fault::RefuseSwap));
        let store: DynStore = Arc::new(faulty);
        store.put("ref", Bytes::from("0"), PutOptions::create()).await.unwrap();
        let err = update(&store, "ref", Budget::default(), |_| Ok(Step::Write(Bytes::from("1")))).await.unwrap_err();
        assert!(err.to_string().contains("refused 3 compare-and-swaps on ref"), "{err}");
        assert!(!matches!(err, Error::Conflict(_)), "not a conflict: exit 1, not 4");
    }

    #[tokio::test(start_paused = true)]
    async fn endless_contention_ends_as_a_conflict() {
        use crate::store::faults::{Fault, FaultyStore, Rule};
        let faulty = FaultyStore::new(MemStore::new());
        faulty.add(Rule::puts("ref").fault(Fault::ConcurrentWriter));
        let store: DynStore = Arc::new(faulty);
        store.put("ref", Bytes::from("0"), PutOptions::create()).await.unwrap();
        let err = update(&store, "ref", Budget::default(), |_| Ok(Step::Write(Bytes::from("1")))).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
    }
}
