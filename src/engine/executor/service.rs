//! One service's task: blue-green replacement with its health gate,
//! approvals, retries and cutover.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::side::emit;
use super::{LOGS_LIMIT, Msg, Outcome};
use crate::domain::manifest::Service;
use crate::domain::run::{Action, Event, PlannedStep, ServiceProgress, ServiceState};
use crate::error::Result;
use crate::provider::{CALL_LIMIT, ComputeProvider, LaunchSpec, ProviderError, ServiceRef, bounded};

/// One service's blue-green replacement.
pub(super) struct ServiceTask {
    pub(super) provider: Arc<dyn ComputeProvider>,
    pub(super) target: ServiceRef,
    pub(super) progress: ServiceProgress,
    /// The run's elapsed time when the task started.
    pub(super) elapsed_ms: u64,
    pub(super) step: PlannedStep,
    pub(super) svc: Service,
    pub(super) run_id: String,
    pub(super) snapshot: u64,
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) approvals: watch::Receiver<BTreeSet<String>>,
    pub(super) cancel: CancellationToken,
    pub(super) abort: CancellationToken,
    /// Until when the run's lease surely holds (`Executor::holds_until`).
    pub(super) holds: watch::Receiver<tokio::time::Instant>,
    /// `[engine] cutover = "fenced"`: `Healthy` is durable before every cutover.
    pub(super) fenced: bool,
}

pub(super) enum Stop {
    Cancelled,
    Aborted,
}

impl ServiceTask {
    /// Persists an event; `Err` when the run lost ownership.
    async fn emit(&self, event: Event) -> Result<(), Stop> {
        if emit(&self.tx, event).await { Ok(()) } else { Err(Stop::Aborted) }
    }

    /// Queues an event for the journal without waiting for it to be durable
    /// (for an event no action depends on; a later `emit` still waits for it).
    async fn record(&self, event: Event) -> Result<(), Stop> {
        let (ack, _) = oneshot::channel();
        self.tx.send(Msg { event, ack }).await.map_err(|_| Stop::Aborted)
    }

    fn stop(&self) -> Stop {
        if self.abort.is_cancelled() { Stop::Aborted } else { Stop::Cancelled }
    }

    pub(super) async fn run(self) -> Outcome {
        let name = self.step.service.clone();
        match self.replace().await {
            Ok(outcome) => outcome,
            Err(Stop::Aborted) => Outcome::Done,
            Err(Stop::Cancelled) => {
                let _ = self.emit(Event::ServiceCancelled { service: name }).await;
                Outcome::Done
            }
        }
    }

    async fn replace(&self) -> Result<Outcome, Stop> {
        let name = self.step.service.clone();
        if self.step.action == Action::Keep {
            self.emit(Event::Kept { service: name }).await?;
            return Ok(Outcome::Done);
        }
        if self.step.action == Action::Cutover {
            return self.move_traffic_here().await;
        }
        if self.svc.approval && self.progress.approved_by.is_none() {
            if self.progress.state != ServiceState::AwaitingApproval {
                self.emit(Event::ApprovalRequested { service: name.clone() }).await?;
            }
            // The wait is bounded (from when it began, across a resume), so a
            // forgotten approval cannot hold the region lease for ever.
            let limit = self.svc.approval_timeout.0;
            let waited = self.progress.approval_requested_ms.map_or(0, |t| self.elapsed_ms.saturating_sub(t));
            let deadline = tokio::time::Instant::now() + limit.saturating_sub(Duration::from_millis(waited));
            let mut approvals = self.approvals.clone();
            loop {
                if approvals.borrow_and_update().contains(&name) {
                    break;
                }
                tokio::select! {
                    changed = approvals.changed() => if changed.is_err() { return Err(Stop::Aborted) },
                    _ = self.cancel.cancelled() => return Err(self.stop()),
                    _ = tokio::time::sleep_until(deadline) => {
                        let reason = format!(
                            "approval timed out: nobody approved it within {} (approval_timeout)",
                            crate::domain::duration::human(limit)
                        );
                        self.emit(Event::ServiceFailed { service: name, reason }).await?;
                        return Ok(Outcome::Done);
                    }
                }
            }
        }
        // Resumed: carry on with the attempt in flight (its launch is
        // idempotent), or start the one after the last failed attempt.
        let current_failed = self.progress.current_attempt_failed();
        let resume_in_flight = self.progress.attempt_in_flight();
        let first = if current_failed { self.progress.attempts + 1 } else { self.progress.attempts.max(1) };
        let mut last_error = self.progress.error.clone().unwrap_or_default();
        let mut delays = crate::backoff::pauses(Duration::from_secs(1), Duration::from_secs(30));
        for attempt in first..=self.svc.attempts {
            let resumed = resume_in_flight && attempt == self.progress.attempts;
            if !resumed {
                self.emit(Event::LaunchStarted { service: name.clone(), attempt }).await?;
            }
            match self.attempt(attempt, resumed).await {
                Ok(instances) => {
                    self.emit(Event::CutOver { service: name.clone(), instances }).await?;
                    return Ok(Outcome::CutOver(self.step.current.clone()));
                }
                Err(AttemptError::Stop(s)) => return Err(s),
                Err(AttemptError::Failed { reason, retryable: false }) => {
                    let reason = if attempt < self.svc.attempts {
                        format!("{reason} (a permanent error: not retried)")
                    } else {
                        reason
                    };
                    self.emit(Event::ServiceFailed { service: name, reason }).await?;
                    return Ok(Outcome::Done);
                }
                Err(AttemptError::Failed { reason, retryable: true }) => {
                    last_error = reason;
                    if attempt < self.svc.attempts {
                        let delay = delays.next().unwrap_or(Duration::from_secs(1));
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.cancel.cancelled() => return Err(self.stop()),
                        }
                    }
                }
            }
        }
        let reason = if self.svc.attempts > 1 {
            format!("{last_error} (gave up after {} attempts)", self.svc.attempts)
        } else {
            last_error
        };
        self.emit(Event::ServiceFailed { service: name, reason }).await?;
        Ok(Outcome::Done)
    }

    /// A service that runs the snapshot here but whose traffic goes
    /// elsewhere (fail-back after a failover): its instances pass a health
    /// gate, `Healthy` is written (the fence), then traffic moves to them.
    /// Nothing is launched and nothing removed; a failure leaves the
    /// traffic where it was.
    async fn move_traffic_here(&self) -> Result<Outcome, Stop> {
        let name = self.step.service.clone();
        let here = self.step.current.clone();
        let limit = self.svc.health.as_ref().map_or(self.svc.timeout.0, |h| h.timeout.0.min(self.svc.timeout.0));
        let failed = |why: String| Event::ServiceFailed {
            service: name.clone(),
            reason: format!("traffic not moved here (it stays where it was): {why}"),
        };
        match self.provider.wait_healthy(&self.target, &here, limit, &self.cancel).await {
            Ok(()) => {}
            Err(ProviderError::Cancelled) => return Err(self.stop()),
            Err(e) => {
                self.emit(failed(e.to_string())).await?;
                return Ok(Outcome::Done);
            }
        }
        self.emit(Event::Healthy { service: name.clone(), attempt: 0 }).await?;
        if let Err(e) = bounded("cutover", CALL_LIMIT, &self.abort, self.provider.cutover(&self.target, &here)).await {
            self.emit(failed(format!("cutover failed: {e}"))).await?;
            return Ok(Outcome::Done);
        }
        self.emit(Event::CutOver { service: name, instances: here }).await?;
        Ok(Outcome::Done)
    }

    /// Launch → health gate → cutover. New instances that do not make it are
    /// terminated (after keeping their last output lines).
    async fn attempt(&self, attempt: u32, resumed: bool) -> Result<Vec<String>, AttemptError> {
        let name = &self.step.service;
        let budget = self.svc.timeout.0;
        let started = tokio::time::Instant::now();
        let spec = LaunchSpec {
            target: self.target.clone(),
            image: self.step.image.clone(),
            replicas: self.step.replicas,
            run_id: self.run_id.clone(),
            snapshot: self.snapshot,
            launch_key: format!("{}/{}/{}", self.run_id, name, attempt),
            fingerprint: self.step.fingerprint.clone(),
        };
        timeline!(name, "launch called");
        let launched = tokio::time::timeout(budget, self.provider.launch(&spec, &self.cancel)).await;
        let instances = match launched {
            Ok(Ok(ids)) => ids,
            Ok(Err(ProviderError::Cancelled)) => return Err(AttemptError::Stop(self.stop())),
            Ok(Err(e)) => return self.fail(attempt, e.to_string(), e.is_retryable(), &[]).await,
            Err(_) => {
                return self
                    .fail(
                        attempt,
                        format!("launch did not finish within {}", crate::domain::duration::human(budget)),
                        true,
                        &[],
                    )
                    .await;
            }
        };
        // Recorded without waiting for it to be durable: the health gate
        // changes nothing, and `Healthy`, which the cutover waits for, is
        // written after it. A run resumed before it was written relaunches
        // with the same launch key and finds these instances.
        if !(resumed && self.progress.instances == instances) {
            self.record(Event::InstancesLaunched { service: name.clone(), attempt, instances: instances.clone() })
                .await
                .map_err(AttemptError::Stop)?;
        }
        let within = budget.saturating_sub(started.elapsed());
        let gate_limit = self.svc.health.as_ref().map_or(within, |h| h.timeout.0.min(within));
        match self.provider.wait_healthy(&self.target, &instances, gate_limit, &self.cancel).await {
            Ok(()) => {}
            Err(ProviderError::Cancelled) => {
                if !self.abort.is_cancelled() {
                    self.point_back(resumed).await;
                    let _ = bounded("terminate", CALL_LIMIT, &self.abort, self.provider.terminate(&instances)).await;
                }
                return Err(AttemptError::Stop(self.stop()));
            }
            Err(e) => {
                self.point_back(resumed).await;
                return self.fail(attempt, e.to_string(), e.is_retryable(), &instances).await;
            }
        }
        timeline!(name, "gate passed");
        // The attempt's `LaunchStarted`, durable before the launch, announced
        // this cutover too: while the lease surely holds (no other server can
        // have taken the run over), `Healthy` is recorded without waiting for
        // it, and the cutover (and the dependents' launches it releases) do
        // not wait for a journal write. A run resumed before `CutOver` is
        // durable treats the attempt as possibly cut over (`point_back`).
        // Past that time the write is the fence: a lost ownership stops here.
        let healthy = Event::Healthy { service: name.clone(), attempt };
        if !self.fenced && tokio::time::Instant::now() < *self.holds.borrow() {
            self.record(healthy).await.map_err(AttemptError::Stop)?;
        } else {
            self.emit(healthy).await.map_err(AttemptError::Stop)?;
        }
        let cutover = self.provider.cutover(&self.target, &instances);
        if let Err(e) = bounded("cutover", CALL_LIMIT, &self.abort, cutover).await {
            // It may have moved part of the traffic.
            self.point_back(true).await;
            return self.fail(attempt, format!("cutover failed: {e}"), e.is_retryable(), &instances).await;
        }
        timeline!(name, "cut over");
        Ok(instances)
    }

    /// An attempt that may have been cut over (resumed: the server that ran
    /// it before may have cut over without `CutOver` being durable; or its
    /// cutover failed part way): before its new instances are removed,
    /// traffic goes back to the instances it replaced, which are still there
    /// (they go only after a durable `CutOver`).
    async fn point_back(&self, maybe_cut: bool) {
        let old = &self.step.current;
        if !maybe_cut || old.is_empty() || self.abort.is_cancelled() {
            return;
        }
        if let Err(e) = bounded("cutover", CALL_LIMIT, &self.abort, self.provider.cutover(&self.target, old)).await {
            tracing::error!(service = %self.step.service, error = %e, "cannot point traffic back to the instances this attempt was to replace");
        }
    }

    async fn fail(
        &self,
        attempt: u32,
        reason: String,
        retryable: bool,
        instances: &[String],
    ) -> Result<Vec<String>, AttemptError> {
        let mut logs = Vec::new();
        for id in instances {
            let lines = tokio::time::timeout(LOGS_LIMIT, self.provider.logs(id, 20)).await.unwrap_or_default();
            for line in lines {
                logs.push(format!("{id}: {line}"));
            }
        }
        if !instances.is_empty()
            && let Err(e) = bounded("terminate", CALL_LIMIT, &self.abort, self.provider.terminate(instances)).await
        {
            tracing::error!(service = %self.step.service, error = %e, "cannot terminate instances that failed their health gate");
        }
        let event = Event::AttemptFailed { service: self.step.service.clone(), attempt, reason: reason.clone(), logs };
        self.emit(event).await.map_err(AttemptError::Stop)?;
        Err(AttemptError::Failed { reason, retryable })
    }
}

enum AttemptError {
    Failed { reason: String, retryable: bool },
    Stop(Stop),
}
