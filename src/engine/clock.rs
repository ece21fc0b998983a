//! Wall-clock time behind a trait, so tests on a paused tokio clock get
//! timestamps that move with it.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that advances with `tokio::time` (paused in tests).
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock { base: Utc::now(), start: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let d = tokio::time::Instant::now() - self.start;
        self.base + chrono::Duration::from_std(d).unwrap_or_default()
    }
}

/// Milliseconds from an RFC 3339 time (a run's `created_at`) to `now`; 0
/// when it does not parse or lies ahead.
pub fn ms_since(at: &str, now: DateTime<Utc>) -> u64 {
    DateTime::parse_from_rfc3339(at)
        .map(|t| (now - t.with_timezone(&Utc)).num_milliseconds().max(0) as u64)
        .unwrap_or(0)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
