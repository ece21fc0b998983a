//! The executor's side tasks: journal commits, decommissioning, the final
//! probe, verify checks, and removing a pruned service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Msg, Outcome};
use crate::domain::manifest::{Manifest, VerifyCheck};
use crate::domain::run::{Entry, Event, PlannedStep};
use crate::engine::journal::Write;
use crate::error::{Error, Result};
use crate::provider::{CALL_LIMIT, ComputeProvider, ProviderError, ServiceRef, bounded};

/// Makes a journal write, retrying what the store may answer next time
/// until `holds_until` (the lease surely holds until then).
pub(super) async fn commit(write: Write, run_id: String, holds_until: tokio::time::Instant) -> Result<Vec<Entry>> {
    let mut pauses = crate::backoff::pauses(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match write.commit().await {
            Err(Error::Store(e)) if e.is_retryable() && tokio::time::Instant::now() < holds_until => {
                tracing::warn!(run_id = %run_id, error = %e, "cannot write the journal; retrying while the lease holds");
                tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(2))).await;
            }
            other => return other,
        }
    }
}

/// Removes old instances after the grace period, then records it.
pub(super) async fn decommission(
    provider: Arc<dyn ComputeProvider>,
    service: String,
    old: Vec<String>,
    grace: Duration,
    tx: mpsc::Sender<Msg>,
    abort: CancellationToken,
) {
    tokio::time::sleep(grace).await;
    if let Err(e) = bounded("terminate", CALL_LIMIT, &abort, provider.terminate(&old)).await {
        tracing::error!(service, error = %e, "cannot decommission old instances; they stay tagged for the orphan sweep");
        return;
    }
    emit(&tx, Event::Decommissioned { service, instances: old }).await;
}

/// Has the executor loop persist an event; true once it is durable (false:
/// the run lost ownership or stopped).
pub(super) async fn emit(tx: &mpsc::Sender<Msg>, event: Event) -> bool {
    let (ack, done) = oneshot::channel();
    tx.send(Msg { event, ack }).await.is_ok() && matches!(done.await, Ok(true))
}

/// How many times the final probe looks before it calls a service unhealthy
/// (a single failed probe may be a blip), and how long it waits between.
const PROBE_ROUNDS: u32 = 3;
const PROBE_PAUSE: Duration = Duration::from_secs(1);

/// Probes every service the run holds healthy through the provider's
/// inventory (which checks each instance's health now), and records what
/// does not answer.
pub(super) async fn final_probe(
    provider: Arc<dyn ComputeProvider>,
    env: String,
    region: String,
    expected: Vec<(String, Vec<String>)>,
    tx: mpsc::Sender<Msg>,
    abort: CancellationToken,
) -> (String, Outcome) {
    let mut unhealthy = BTreeMap::new();
    for round in 0..PROBE_ROUNDS {
        if round > 0 {
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        unhealthy = match bounded("inventory", CALL_LIMIT, &abort, provider.inventory(&env, &region)).await {
            Ok(live) => crate::domain::plan::unanswered(&expected, &live),
            Err(ProviderError::Cancelled) => return ("probe".into(), Outcome::Done),
            Err(e) => expected
                .iter()
                .map(|(s, _)| (s.clone(), format!("it cannot be probed: the provider's inventory failed: {e}")))
                .collect(),
        };
        if unhealthy.is_empty() {
            break;
        }
    }
    let confirmed = expected.len() - unhealthy.len();
    emit(&tx, Event::Probed { confirmed, unhealthy }).await;
    ("probe".into(), Outcome::Done)
}

/// Runs smoke checks one after the other, recording each result.
pub(super) async fn verify_checks(
    m: Arc<Manifest>,
    region: String,
    checks: Vec<VerifyCheck>,
    tx: mpsc::Sender<Msg>,
) -> (String, Outcome) {
    for check in checks {
        let (passed, detail) = super::super::verify::run(&m, &region, &check).await;
        if !emit(&tx, Event::Verified { check: check.name.clone(), passed, detail }).await {
            break;
        }
    }
    ("verify".to_string(), Outcome::Done)
}

/// Prune: a service absent from the snapshot stops receiving traffic, then
/// its instances are removed (both idempotent, so a resumed run redoes them).
pub(super) async fn remove_service(
    provider: Arc<dyn ComputeProvider>,
    target: ServiceRef,
    step: PlannedStep,
    tx: mpsc::Sender<Msg>,
    abort: CancellationToken,
) -> (String, Outcome) {
    let service = step.service.clone();
    let removed = async {
        bounded("retire", CALL_LIMIT, &abort, provider.retire(&target)).await?;
        bounded("terminate", CALL_LIMIT, &abort, provider.terminate(&step.current)).await
    };
    let event = match removed.await {
        Ok(()) => Event::Removed { service: service.clone(), instances: step.current.clone() },
        Err(e) => Event::ServiceFailed { service: service.clone(), reason: format!("cannot remove it: {e}") },
    };
    emit(&tx, event).await;
    (service, Outcome::Done)
}
