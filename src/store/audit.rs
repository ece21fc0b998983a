//! Append-only audit records: who did what, when, with what outcome.

use serde::{Deserialize, Serialize};

use super::{DynStore, PutOptions, layout};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub format_version: u32,
    pub id: String,
    pub at: String,
    pub actor: String,
    /// e.g. `snapshot.promote`.
    pub action: String,
    /// e.g. `shop@7`.
    pub target: String,
    /// `ok` or the error message.
    pub outcome: String,
}

impl super::codec::Persisted for AuditRecord {
    const KIND: &'static str = "audit record";
    const FORMAT: u32 = 1;
}

#[derive(Clone)]
pub struct AuditLog {
    store: DynStore,
}

impl AuditLog {
    pub fn new(store: DynStore) -> AuditLog {
        AuditLog { store }
    }

    pub async fn record(&self, actor: &str, action: &str, target: &str, outcome: &str) -> Result<()> {
        let now = chrono::Utc::now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let rec = AuditRecord {
            format_version: 1,
            id: id.clone(),
            at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
        };
        let key =
            layout::audit(&now.format("%Y-%m-%d").to_string(), &now.format("%Y%m%dT%H%M%S%.3fZ").to_string(), &id);
        let bytes = super::codec::encode(&rec);
        self.store.put(&key, bytes, PutOptions::create()).await?;
        Ok(())
    }
}
