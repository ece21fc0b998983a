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

/// The most of one user-supplied value an audit record keeps.
pub const MAX_AUDIT_VALUE: usize = 256;

/// A value cut to `MAX_AUDIT_VALUE` characters, noting the original size:
/// rejected input (an 8 MB tag name) must not be copied into the log whole.
pub fn clip(value: &str) -> String {
    if value.len() <= MAX_AUDIT_VALUE {
        return value.to_string();
    }
    let cut: String = value.chars().take(MAX_AUDIT_VALUE).collect();
    format!("{cut}… ({} bytes in all)", value.len())
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
            actor: clip(actor),
            action: clip(action),
            target: clip(target),
            outcome: clip(outcome),
        };
        let key =
            layout::audit(&now.format("%Y-%m-%d").to_string(), &now.format("%Y%m%dT%H%M%S%.3fZ").to_string(), &id);
        let bytes = super::codec::encode(&rec);
        self.store.put(&key, bytes, PutOptions::create()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_clipped_with_their_size() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(10_000);
        let c = clip(&long);
        assert!(c.starts_with(&"é".repeat(256)) && c.ends_with("… (20000 bytes in all)"), "{c}");
    }
}
