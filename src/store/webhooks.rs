//! Which run handles an incoming alert. Webhooks are delivered again and
//! again (retries, several PagerDuty subscriptions), so the first delivery
//! of an incident claims it with a create-if-absent write and later ones
//! find the claim: one alert never starts two runs.

use serde::{Deserialize, Serialize};

use super::{DynStore, ETag, PutOptions, StoreError, codec, layout};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub format_version: u32,
    /// `pagerduty` or `alertmanager`.
    pub source: String,
    /// The environment of the rule that matched: one alert key routed to two
    /// environments is two claims.
    #[serde(default)]
    pub environment: String,
    /// The incident ID or group key, as shown (clipped, escaped).
    pub key: String,
    /// The routing rule that matched.
    pub rule: String,
    /// The run started for it; `None` while it is being started.
    pub run_id: Option<String>,
    pub claimed_at: String,
    /// Set when the alert resolved: the next firing may claim it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
}

impl codec::Persisted for Claim {
    const KIND: &'static str = "webhook claim";
    const FORMAT: u32 = 1;
}

/// What a claim is on: a source's alert key, routed to an environment.
pub struct ClaimId<'a> {
    pub source: &'a str,
    pub environment: &'a str,
    /// The full alert key (hashed into the object key).
    pub key: &'a str,
}

impl ClaimId<'_> {
    fn object_key(&self) -> String {
        layout::webhook_claim(self.source, self.environment, &crate::domain::snapshot::sha256_hex(self.key.as_bytes()))
    }
}

pub struct Claims {
    store: DynStore,
}

impl Claims {
    pub fn new(store: DynStore) -> Claims {
        Claims { store }
    }

    /// The current claim on an alert, with its version.
    pub async fn read(&self, id: &ClaimId<'_>) -> Result<Option<(Claim, ETag)>> {
        let k = id.object_key();
        match self.store.get(&k).await? {
            None => Ok(None),
            Some(o) => Ok(Some((codec::decode(&o.bytes, &k, &self.store.describe())?, o.etag))),
        }
    }

    /// Claims an alert: create-if-absent, or replace the claim at `over`.
    /// `None` when another delivery got there first.
    pub async fn take(&self, id: &ClaimId<'_>, claim: &Claim, over: Option<ETag>) -> Result<Option<ETag>> {
        match self.store.put(&id.object_key(), codec::encode(claim), PutOptions::swap(over)).await {
            Ok(etag) => Ok(Some(etag)),
            Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the run a claim started.
    pub async fn set_run(&self, id: &ClaimId<'_>, claim: &Claim, etag: ETag) -> Result<()> {
        self.store.put(&id.object_key(), codec::encode(claim), PutOptions::update(etag)).await?;
        Ok(())
    }

    /// Marks the claim read at `etag` released (its alert resolved). A new
    /// firing that claimed it meanwhile wins: `false`, nothing changed.
    pub async fn release_if(&self, id: &ClaimId<'_>, held: &Claim, etag: ETag) -> Result<bool> {
        let mut released = held.clone();
        released.released_at = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        match self.store.put(&id.object_key(), codec::encode(&released), PutOptions::update(etag)).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a claim up (its run could not start), so a retried delivery
    /// can try again. Only the delivery that holds the claim calls this.
    pub async fn release(&self, id: &ClaimId<'_>) -> Result<()> {
        self.store.delete(&id.object_key()).await?;
        Ok(())
    }
}

/// A delivered event that changed something (started a run, released a
/// claim): the same event delivered again is a replay and changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedEvent {
    pub format_version: u32,
    pub source: String,
    /// As shown (clipped, escaped).
    pub event_id: String,
    pub at: String,
    /// What it did.
    pub outcome: String,
}

impl codec::Persisted for ProcessedEvent {
    const KIND: &'static str = "processed webhook event";
    const FORMAT: u32 = 1;
}

pub struct Events {
    store: DynStore,
}

impl Events {
    pub fn new(store: DynStore) -> Events {
        Events { store }
    }

    fn key(source: &str, event_id: &str) -> String {
        layout::webhook_event(source, &crate::domain::snapshot::sha256_hex(event_id.as_bytes()))
    }

    /// What the event did when it was processed before, if it was.
    pub async fn processed(&self, source: &str, event_id: &str) -> Result<Option<ProcessedEvent>> {
        let k = Events::key(source, event_id);
        match self.store.get(&k).await? {
            None => Ok(None),
            Some(o) => Ok(Some(codec::decode(&o.bytes, &k, &self.store.describe())?)),
        }
    }

    /// Removes the records of `source`'s events processed before `before`
    /// (their replays are refused as stale by then); returns how many went.
    /// A record that cannot be read is left, and named in the log.
    pub async fn prune(&self, source: &str, before: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        let keys = self.store.list(&format!("webhook-events/{source}/")).await?;
        let mut removed = 0;
        for chunk in keys.chunks(128) {
            let objects = self.store.get_many(chunk).await?;
            for (k, o) in chunk.iter().zip(objects) {
                let Some(o) = o else { continue };
                let e: ProcessedEvent = match codec::decode(&o.bytes, k, &self.store.describe()) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(key = %k, error = %e, "a processed webhook event that cannot be read is kept");
                        continue;
                    }
                };
                let at = chrono::DateTime::parse_from_rfc3339(&e.at).map(|t| t.with_timezone(&chrono::Utc));
                if at.is_ok_and(|t| t < before) {
                    self.store.delete(k).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    pub async fn record(&self, source: &str, event_id: &str, outcome: &str) -> Result<()> {
        let e = ProcessedEvent {
            format_version: 1,
            source: source.to_string(),
            event_id: crate::error::shown(event_id),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            outcome: crate::error::shown(outcome),
        };
        self.store.put(&Events::key(source, event_id), codec::encode(&e), PutOptions::overwrite()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::memory::MemStore;

    #[tokio::test]
    async fn processed_events_past_their_time_are_forgotten_and_others_kept() {
        let store: DynStore = Arc::new(MemStore::new());
        let events = Events::new(store.clone());
        events.record("pagerduty", "old", "started r-1").await.unwrap();
        events.record("pagerduty", "new", "started r-2").await.unwrap();
        events.record("alertmanager", "other", "started r-3").await.unwrap();
        // The old one was processed two hours ago.
        let key = Events::key("pagerduty", "old");
        let mut old: ProcessedEvent =
            codec::decode(&store.get(&key).await.unwrap().unwrap().bytes, &key, "mem").unwrap();
        old.at = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).to_rfc3339();
        store.put(&key, codec::encode(&old), PutOptions::overwrite()).await.unwrap();
        store
            .put("webhook-events/pagerduty/bad.json", bytes::Bytes::from_static(b"{"), PutOptions::create())
            .await
            .unwrap();

        let before = chrono::Utc::now() - chrono::TimeDelta::hours(1);
        assert_eq!(events.prune("pagerduty", before).await.unwrap(), 1);
        assert!(events.processed("pagerduty", "old").await.unwrap().is_none());
        assert!(events.processed("pagerduty", "new").await.unwrap().is_some());
        assert!(events.processed("alertmanager", "other").await.unwrap().is_some(), "another source's are its own");
        assert!(store.get("webhook-events/pagerduty/bad.json").await.unwrap().is_some(), "unreadable: kept");
    }
}
