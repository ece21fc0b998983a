//! `lifeboat.v1.AuditService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::to_status;
use super::{Ctx, pb};
use crate::error::Error;
use crate::store::audit::AuditQuery;
use crate::store::check_environment;

pub struct Audit {
    ctx: Arc<Ctx>,
}

impl Audit {
    pub fn new(ctx: Arc<Ctx>) -> Audit {
        Audit { ctx }
    }
}

/// How far back `audit list` reads: records are kept per day, one listing
/// each, so an unbounded `since` would be hundreds of thousands of listings.
pub const MAX_AUDIT_DAYS: i64 = 3 * 366;

/// "2h" back from `now`, or an RFC 3339 time; at most `MAX_AUDIT_DAYS` back.
fn since(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Option<chrono::DateTime<chrono::Utc>>, Error> {
    let t = since_unclamped(text, now)?;
    let oldest = now - chrono::Duration::days(MAX_AUDIT_DAYS);
    Ok(t.map(|t| t.max(oldest)))
}

fn since_unclamped(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Error> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&chrono::Utc)));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        Error::InvalidArgument(format!(
            "since \"{}\" is neither a duration (2h, 7d) nor an RFC 3339 time: {e}",
            crate::error::shown(text)
        ))
    })?;
    // A duration past what a date can hold (300000years) is as far back as we read.
    let oldest = now - chrono::Duration::days(MAX_AUDIT_DAYS);
    Ok(Some(chrono::Duration::from_std(d).ok().and_then(|d| now.checked_sub_signed(d)).unwrap_or(oldest)))
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Audit {
    async fn list(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let now = chrono::Utc::now();
        let non_empty = |s: String| Some(s).filter(|x| !x.is_empty());
        if !r.environment.is_empty() {
            check_environment(&r.environment).map_err(to_status)?;
        }
        let query = AuditQuery {
            since: since(&r.since, now).map_err(to_status)?,
            actor: non_empty(r.actor),
            action: non_empty(r.action),
            environment: non_empty(r.environment),
            limit: if r.limit == 0 { 100 } else { r.limit.min(1000) as usize },
        };
        let listed = self.ctx.audit.list(&query, now).await.map_err(to_status)?;
        Ok(Response::new(pb::ListAuditResponse {
            corrupt: listed.corrupt.into_iter().map(super::convert::corruption).collect(),
            records: listed
                .records
                .into_iter()
                .map(|a| pb::AuditRecord {
                    id: a.id,
                    at: a.at,
                    actor: a.actor,
                    action: a.action,
                    target: a.target,
                    outcome: a.outcome,
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_clamped_and_never_overflows() {
        let now = chrono::Utc::now();
        let oldest = now - chrono::Duration::days(MAX_AUDIT_DAYS);
        assert_eq!(since("300000years", now).unwrap(), Some(oldest));
        assert_eq!(since("0001-01-01T00:00:00Z", now).unwrap(), Some(oldest));
        assert_eq!(since("2h", now).unwrap(), Some(now - chrono::Duration::hours(2)));
        assert_eq!(since("", now).unwrap(), None);
        assert!(since("yesterday-ish", now).is_err());
    }
}
