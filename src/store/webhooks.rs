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
    /// The incident ID or group key.
    pub key: String,
    /// The routing rule that matched.
    pub rule: String,
    /// The run started for it; `None` while it is being started.
    pub run_id: Option<String>,
    pub claimed_at: String,
}

impl codec::Persisted for Claim {
    const KIND: &'static str = "webhook claim";
    const FORMAT: u32 = 1;
}

pub struct Claims {
    store: DynStore,
}

fn key_of(source: &str, key: &str) -> String {
    layout::webhook_claim(source, &crate::domain::snapshot::sha256_hex(key.as_bytes()))
}

impl Claims {
    pub fn new(store: DynStore) -> Claims {
        Claims { store }
    }

    /// The current claim on an alert, with its version.
    pub async fn read(&self, source: &str, key: &str) -> Result<Option<(Claim, ETag)>> {
        let k = key_of(source, key);
        match self.store.get(&k).await? {
            None => Ok(None),
            Some(o) => Ok(Some((codec::decode(&o.bytes, &k, &self.store.describe())?, o.etag))),
        }
    }

    /// Claims an alert: create-if-absent, or replace the claim at `over`.
    /// `None` when another delivery got there first.
    pub async fn take(&self, claim: &Claim, over: Option<ETag>) -> Result<Option<ETag>> {
        let k = key_of(&claim.source, &claim.key);
        match self.store.put(&k, codec::encode(claim), PutOptions::swap(over)).await {
            Ok(etag) => Ok(Some(etag)),
            Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the run a claim started.
    pub async fn set_run(&self, claim: &Claim, etag: ETag) -> Result<()> {
        self.store.put(&key_of(&claim.source, &claim.key), codec::encode(claim), PutOptions::update(etag)).await?;
        Ok(())
    }

    /// Gives a claim up (its run could not start), so a retried delivery can try again.
    pub async fn release(&self, source: &str, key: &str) -> Result<()> {
        self.store.delete(&key_of(source, key)).await?;
        Ok(())
    }
}
