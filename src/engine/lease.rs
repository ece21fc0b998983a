//! One run per region: a lease object with an expiry, taken with a
//! conditional write, renewed by compare-and-swap while the run is alive.
//! Losing a renewal means another server owns the region now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::clock::rfc3339;
use crate::domain::snapshot::IntegrityError;
use crate::error::{Error, Result};
use crate::store::codec::{self, Persisted};
use crate::store::{DynStore, ETag, PutOptions, StoreError, layout};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub format_version: u32,
    pub region: String,
    pub run_id: String,
    pub owner: String,
    /// Incremented on every acquisition: a fencing token.
    pub epoch: u64,
    pub expires_at: String,
    /// Empty when released.
    pub released: bool,
}

impl Persisted for LeaseRecord {
    const KIND: &'static str = "lease";
    const FORMAT: u32 = 1;
}

impl LeaseRecord {
    /// Checked when read: a lease whose expiry does not parse is corrupt,
    /// never free.
    fn expires(&self) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&self.expires_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
    pub fn is_free(&self, now: DateTime<Utc>) -> bool {
        self.released || self.expires() <= now
    }
}

pub struct Lease {
    store: DynStore,
    key: String,
    etag: ETag,
    pub record: LeaseRecord,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).field("record", &self.record).finish()
    }
}

/// Who holds a region, if anyone.
pub async fn read(store: &DynStore, region: &str) -> Result<Option<(LeaseRecord, ETag)>> {
    let key = layout::lease(region);
    match store.get(&key).await? {
        None => Ok(None),
        Some(obj) => {
            let r: LeaseRecord = codec::decode(&obj.bytes, &key, &store.describe())?;
            if let Err(e) = DateTime::parse_from_rfc3339(&r.expires_at) {
                return Err(Error::Integrity {
                    what: "lease".into(),
                    key,
                    store: store.describe(),
                    source: Box::new(IntegrityError::Malformed(format!(
                        "its expires_at {:?} is not a time ({e})",
                        r.expires_at
                    ))),
                });
            }
            Ok(Some((r, obj.etag)))
        }
    }
}

fn held_error(r: &LeaseRecord) -> Error {
    Error::Conflict(format!(
        "region {} is leased by run {} (owner {}, until {}); wait for it, or cancel it with `lifeboat run cancel {}`",
        r.region, r.run_id, r.owner, r.expires_at, r.run_id
    ))
}

impl Lease {
    /// Takes the region's lease for `run_id`, if it is free or expired.
    pub async fn acquire(
        store: &DynStore,
        region: &str,
        run_id: &str,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease> {
        let key = layout::lease(region);
        let current = read(store, region).await?;
        let epoch = match &current {
            Some((r, _)) if !(r.is_free(now) || (r.run_id == run_id && r.owner == owner)) => return Err(held_error(r)),
            Some((r, _)) => r.epoch + 1,
            None => 1,
        };
        let record = LeaseRecord {
            format_version: 1,
            region: region.into(),
            run_id: run_id.into(),
            owner: owner.into(),
            epoch,
            expires_at: rfc3339(now + chrono::Duration::from_std(ttl).unwrap_or_default()),
            released: false,
        };
        let bytes = codec::encode(&record);
        match store.put(&key, bytes, PutOptions::swap(current.map(|(_, e)| e))).await {
            Ok(etag) => Ok(Lease { store: store.clone(), key, etag, record, ttl }),
            Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. }) => {
                // Someone else won the race: report who.
                match read(store, region).await? {
                    Some((r, _)) => Err(held_error(&r)),
                    None => Err(Error::Conflict(format!("region {region}'s lease changed concurrently; try again"))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Extends the expiry. `Conflict`: the lease was taken over; stop.
    pub async fn renew(&mut self, now: DateTime<Utc>) -> Result<()> {
        let mut next = self.record.clone();
        next.expires_at = rfc3339(now + chrono::Duration::from_std(self.ttl).unwrap_or_default());
        self.write(next).await
    }

    /// Marks the lease free (never deletes: a delete could remove a successor's lease).
    pub async fn release(mut self) -> Result<()> {
        let mut next = self.record.clone();
        next.released = true;
        self.write(next).await
    }

    async fn write(&mut self, next: LeaseRecord) -> Result<()> {
        let bytes = codec::encode(&next);
        match self.store.put(&self.key, bytes, PutOptions::update(self.etag.clone())).await {
            Ok(etag) => {
                self.etag = etag;
                self.record = next;
                Ok(())
            }
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => Err(Error::Conflict(format!(
                "lost the lease on region {} for run {} (epoch {}): another server took it over",
                self.record.region, self.record.run_id, self.record.epoch
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;

    fn store() -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().unwrap();
        let s: DynStore = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        (dir, s)
    }

    #[tokio::test]
    async fn one_holder_expiry_and_fencing() {
        let (_d, s) = store();
        let t0 = Utc::now();
        let ttl = Duration::from_secs(10);
        let mut a = Lease::acquire(&s, "eu", "run-a", "srv-1", ttl, t0).await.unwrap();
        let err = Lease::acquire(&s, "eu", "run-b", "srv-2", ttl, t0).await.unwrap_err();
        assert!(err.to_string().contains("leased by run run-a"), "{err}");
        a.renew(t0 + chrono::Duration::seconds(5)).await.unwrap();
        // Still held at t0+12s thanks to the renewal; free after it expires.
        assert!(Lease::acquire(&s, "eu", "run-b", "srv-2", ttl, t0 + chrono::Duration::seconds(12)).await.is_err());
        let b = Lease::acquire(&s, "eu", "run-b", "srv-2", ttl, t0 + chrono::Duration::seconds(16)).await.unwrap();
        assert_eq!(b.record.epoch, 2);
        // The stalled first owner is fenced: its renewal fails.
        let err = a.renew(t0 + chrono::Duration::seconds(17)).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        b.release().await.unwrap();
        Lease::acquire(&s, "eu", "run-c", "srv-3", ttl, t0 + chrono::Duration::seconds(17)).await.unwrap();
    }

    #[tokio::test]
    async fn racing_acquirers_one_wins() {
        let (_d, s) = store();
        let now = Utc::now();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    Lease::acquire(&s, "eu", &format!("run-{i}"), "srv", Duration::from_secs(30), now).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
    }
}
