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

/// Which records `AuditLog::list` returns.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Records at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub actor: Option<String>,
    /// `snapshot.promote`, or just `promote`.
    pub action: Option<String>,
    /// Records whose target is in this environment (`ENV`, `ENV@REF`, `ENV/RUN`).
    pub environment: Option<String>,
    pub limit: usize,
}

impl AuditQuery {
    fn matches(&self, r: &AuditRecord) -> bool {
        let action = self.action.as_deref().is_none_or(|a| r.action == a || r.action.ends_with(&format!(".{a}")));
        let actor = self.actor.as_deref().is_none_or(|a| r.actor == a || r.actor.starts_with(&format!("{a} ")));
        let env = self.environment.as_deref().is_none_or(|e| {
            r.target == e || r.target.starts_with(&format!("{e}@")) || r.target.starts_with(&format!("{e}/"))
        });
        action && actor && env
    }
}

#[derive(Clone)]
pub struct AuditLog {
    store: DynStore,
}

/// Matching records, newest first, and the ones that could not be read.
#[derive(Debug, Default)]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
    pub corrupt: Vec<crate::error::Corruption>,
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

    /// Matching records, newest first, at most `query.limit`. Records are
    /// kept per day, so only the days since `query.since` are read.
    pub async fn list(&self, query: &AuditQuery, now: chrono::DateTime<chrono::Utc>) -> Result<AuditList> {
        let since = query.since.unwrap_or(now - chrono::Duration::days(1));
        let mut out = AuditList::default();
        let mut day = now.date_naive();
        while day >= since.date_naive() && out.records.len() < query.limit {
            let mut keys = self.store.list(&layout::audit_day(&day.format("%Y-%m-%d").to_string())).await?;
            keys.sort();
            for key in keys.iter().rev() {
                let Some(obj) = self.store.get(key).await? else { continue };
                // One bad record is named and passed over, never the end of the list.
                let r: AuditRecord = match super::codec::decode(&obj.bytes, key, &self.store.describe()) {
                    Ok(r) => r,
                    Err(e) => {
                        out.corrupt.extend(e.corruption());
                        continue;
                    }
                };
                let at = chrono::DateTime::parse_from_rfc3339(&r.at).map(|t| t.with_timezone(&chrono::Utc));
                if at.is_ok_and(|t| t < since) {
                    return Ok(out);
                }
                if query.matches(&r) {
                    out.records.push(r);
                    if out.records.len() >= query.limit {
                        break;
                    }
                }
            }
            let Some(prev) = day.pred_opt() else { break };
            day = prev;
        }
        Ok(out)
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
