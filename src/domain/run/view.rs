//! A run's state: the fold of its journal into a view of the run and each service.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Pending,
    AwaitingApproval,
    Launching,
    HealthGate,
    /// Healthy and serving traffic (cut over, or kept as it was).
    Healthy,
    Failed,
    Skipped,
    Cancelled,
    /// Pruned: absent from the snapshot, its instances removed.
    Removed,
}

impl ServiceState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ServiceState::Healthy
                | ServiceState::Failed
                | ServiceState::Skipped
                | ServiceState::Cancelled
                | ServiceState::Removed
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Pending => "pending",
            ServiceState::AwaitingApproval => "awaiting_approval",
            ServiceState::Launching => "launching",
            ServiceState::HealthGate => "health_gate",
            ServiceState::Healthy => "healthy",
            ServiceState::Failed => "failed",
            ServiceState::Skipped => "skipped",
            ServiceState::Cancelled => "cancelled",
            ServiceState::Removed => "removed",
        }
    }
}

/// One service's progress, folded from the journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceProgress {
    pub name: String,
    pub action: Action,
    pub state: ServiceState,
    pub attempts: u32,
    /// The highest attempt recorded as failed (0: none).
    pub failed_attempt: u32,
    pub approved_by: Option<String>,
    /// When the service started waiting for approval.
    pub approval_requested_ms: Option<u64>,
    pub launched_ms: Option<u64>,
    /// When the current attempt's instances were running (launch overhead ends, start-up begins).
    pub running_ms: Option<u64>,
    pub healthy_ms: Option<u64>,
    pub cutover_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Instances launched by the current attempt.
    pub instances: Vec<String>,
    /// Instances launched by failed attempts (terminated).
    pub failed_instances: Vec<String>,
    pub decommissioned: bool,
    pub error: Option<String>,
    /// The failed service that caused a skip.
    pub upstream: Option<String>,
    pub logs: Vec<String>,
    /// Each attempt's times, for timelines.
    pub attempt_spans: Vec<AttemptSpan>,
}

/// One attempt of a service: launched, running, and when its health gate
/// ended (passed or failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpan {
    pub attempt: u32,
    pub launched_ms: u64,
    pub running_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub failed: bool,
}

impl ServiceProgress {
    /// An attempt is under way (announced, not failed, not cut over): a
    /// resumed run carries it on under its launch key.
    pub fn attempt_in_flight(&self) -> bool {
        !self.current_attempt_failed() && matches!(self.state, ServiceState::Launching | ServiceState::HealthGate)
    }

    /// The run has not acted on it yet (nothing launched, kept, asked or
    /// decided): a plan made again may give it another step.
    pub fn untouched(&self) -> bool {
        self.state == ServiceState::Pending && self.attempts == 0 && self.approval_requested_ms.is_none()
    }

    /// Kept as it ran (healthy with nothing launched for it by this run).
    pub fn only_kept(&self) -> bool {
        self.state == ServiceState::Healthy && self.attempts == 0 && self.instances.is_empty()
    }

    /// The latest attempt is recorded as failed (the next one is due).
    pub fn current_attempt_failed(&self) -> bool {
        self.attempts > 0 && self.failed_attempt == self.attempts
    }
}

/// A run's whole state: its spec plus the fold of its journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// Shared: at 10,000 services the steps are megabytes, and a view is
    /// copied for every reply.
    pub spec: std::sync::Arc<RunSpec>,
    pub state: RunState,
    pub services: BTreeMap<String, ServiceProgress>,
    pub cancel_requested: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub elapsed_ms: u64,
    pub last_seq: Option<u64>,
    pub owners: Vec<String>,
    /// Time with no server running the run (between a server stopping and
    /// another resuming it); part of `elapsed_ms`.
    pub stopped_ms: u64,
    /// Each stretch with no server running the run: (from, to) in ms.
    pub stopped: Vec<(u64, u64)>,
    /// `[[verify]]` results: (check, passed, detail).
    pub verify: Vec<(String, bool, String)>,
    /// Who approved a proposed run.
    pub run_approved_by: Option<String>,
    /// When the last `[[verify]]` check finished.
    pub verified_ms: Option<u64>,
    /// A drill's verdict, teardown, keep and promotion.
    pub judgement: Option<crate::domain::drill::Judgement>,
    pub torn_down: Option<(Vec<String>, Vec<String>)>,
    pub kept_until: Option<String>,
    pub promotion: Option<(bool, String)>,
    /// Each time the plan was made again (without its steps: `spec` has them).
    pub replans: Vec<Replan>,
    /// The final probe: (services confirmed healthy, services that were not).
    pub probed: Option<(usize, usize)>,
    /// When a proposal expires unless approved.
    pub proposal_expires_at: Option<String>,
    /// When the run began executing (a proposal waits for approval before).
    pub executing_from_ms: Option<u64>,
}

impl RunView {
    pub fn new(spec: impl Into<std::sync::Arc<RunSpec>>) -> RunView {
        let spec = spec.into();
        let services = spec
            .steps
            .iter()
            .map(|s| {
                (
                    s.service.clone(),
                    ServiceProgress {
                        name: s.service.clone(),
                        action: s.action,
                        state: ServiceState::Pending,
                        attempts: 0,
                        failed_attempt: 0,
                        approved_by: None,
                        approval_requested_ms: None,
                        launched_ms: None,
                        running_ms: None,
                        healthy_ms: None,
                        cutover_ms: None,
                        finished_ms: None,
                        instances: Vec::new(),
                        failed_instances: Vec::new(),
                        decommissioned: false,
                        error: None,
                        upstream: None,
                        logs: Vec::new(),
                        attempt_spans: Vec::new(),
                    },
                )
            })
            .collect();
        RunView {
            started_at: spec.created_at.clone(),
            spec,
            state: RunState::Running,
            services,
            cancel_requested: false,
            finished_at: None,
            elapsed_ms: 0,
            last_seq: None,
            owners: Vec::new(),
            stopped_ms: 0,
            stopped: Vec::new(),
            verify: Vec::new(),
            run_approved_by: None,
            verified_ms: None,
            judgement: None,
            torn_down: None,
            kept_until: None,
            promotion: None,
            replans: Vec::new(),
            probed: None,
            proposal_expires_at: None,
            executing_from_ms: None,
        }
    }

    /// Folds a sequence of entries (in seq order).
    pub fn replay(spec: impl Into<std::sync::Arc<RunSpec>>, entries: &[Entry]) -> RunView {
        let mut v = RunView::new(spec);
        for e in entries {
            v.apply(e);
        }
        v
    }

    pub fn apply(&mut self, e: &Entry) {
        use Event::*;
        self.last_seq = Some(e.seq);
        if let RunResumed { .. } = e.event
            && self.last_seq.is_some_and(|s| s > 0)
        {
            // Times run on from the run's start: the gap before a resume is
            // time nobody was running it.
            let gap = e.elapsed_ms.saturating_sub(self.elapsed_ms);
            self.stopped_ms += gap;
            if gap > 0 {
                self.stopped.push((self.elapsed_ms, e.elapsed_ms));
            }
        }
        self.elapsed_ms = self.elapsed_ms.max(e.elapsed_ms);
        let t = e.elapsed_ms;
        if let Some(name) = e.event.service() {
            let Some(s) = self.services.get_mut(name) else { return };
            match &e.event {
                ApprovalRequested { .. } => {
                    s.state = ServiceState::AwaitingApproval;
                    s.approval_requested_ms.get_or_insert(t);
                }
                Approved { by, .. } => {
                    s.approved_by = Some(by.clone());
                    if s.state == ServiceState::AwaitingApproval {
                        s.state = ServiceState::Pending;
                    }
                }
                LaunchStarted { attempt, .. } => {
                    s.state = ServiceState::Launching;
                    s.attempts = s.attempts.max(*attempt);
                    s.launched_ms.get_or_insert(t);
                    s.instances.clear();
                    if !s.attempt_spans.iter().any(|a| a.attempt == *attempt) {
                        let span = AttemptSpan {
                            attempt: *attempt,
                            launched_ms: t,
                            running_ms: None,
                            ended_ms: None,
                            failed: false,
                        };
                        s.attempt_spans.push(span);
                    }
                }
                InstancesLaunched { instances, attempt, .. } => {
                    s.state = ServiceState::HealthGate;
                    s.instances = instances.clone();
                    s.running_ms = Some(t);
                    if let Some(a) = s.attempt_spans.iter_mut().find(|a| a.attempt == *attempt) {
                        a.running_ms.get_or_insert(t);
                    }
                }
                Healthy { attempt, .. } => {
                    s.healthy_ms = Some(t);
                    if let Some(a) = s.attempt_spans.iter_mut().find(|a| a.attempt == *attempt) {
                        a.ended_ms.get_or_insert(t);
                    }
                }
                AttemptFailed { attempt, reason, logs, .. } => {
                    if let Some(a) = s.attempt_spans.iter_mut().find(|a| a.attempt == *attempt) {
                        a.ended_ms.get_or_insert(t);
                        a.failed = true;
                    }
                    s.failed_attempt = s.failed_attempt.max(*attempt);
                    s.failed_instances.append(&mut s.instances);
                    s.error = Some(reason.clone());
                    // Every attempt's lines: the first failure often says most.
                    s.logs.extend(logs.iter().cloned());
                }
                CutOver { instances, .. } => {
                    s.state = ServiceState::Healthy;
                    s.instances = instances.clone();
                    s.cutover_ms = Some(t);
                    s.finished_ms = Some(t);
                    s.error = None;
                }
                Kept { .. } => {
                    s.state = ServiceState::Healthy;
                    s.finished_ms = Some(t);
                }
                Decommissioned { .. } => s.decommissioned = true,
                ServiceFailed { reason, .. } => {
                    s.state = ServiceState::Failed;
                    s.error = Some(reason.clone());
                    s.finished_ms = Some(t);
                }
                Skipped { upstream, .. } => {
                    s.state = ServiceState::Skipped;
                    s.upstream = Some(upstream.clone());
                    s.error = Some(format!("skipped: upstream {upstream} failed"));
                    s.finished_ms = Some(t);
                }
                ServiceCancelled { .. } => {
                    s.state = ServiceState::Cancelled;
                    s.finished_ms = Some(t);
                }
                Removed { .. } => {
                    s.state = ServiceState::Removed;
                    s.finished_ms = Some(t);
                    s.decommissioned = true;
                }
                _ => {}
            }
            return;
        }
        match &e.event {
            RunStarted { owner } => {
                self.owners.push(owner.clone());
                self.executing_from_ms.get_or_insert(t);
            }
            RunResumed { owner } => self.owners.push(owner.clone()),
            CancelRequested { .. } => self.cancel_requested = true,
            RunApproved { by } => self.run_approved_by = Some(by.clone()),
            RunApprovalRequested { expires_at } => self.proposal_expires_at = expires_at.clone(),
            Replanned(r) => self.replan(r),
            Probed { confirmed, unhealthy } => {
                for (name, why) in unhealthy {
                    if let Some(s) = self.services.get_mut(name) {
                        s.state = ServiceState::Failed;
                        s.error = Some(format!("not healthy when the run ended: {why}"));
                    }
                }
                self.probed = Some((*confirmed, unhealthy.len()));
            }
            Verified { check, passed, detail } => {
                self.verify.push((check.clone(), *passed, detail.clone()));
                self.verified_ms = Some(t);
            }
            DrillJudged { judgement } => self.judgement = Some(judgement.clone()),
            DrillTornDown { instances, remaining } => self.torn_down = Some((instances.clone(), remaining.clone())),
            DrillKept { until } => self.kept_until = Some(until.clone()),
            DrillPromotion { promoted, detail } => self.promotion = Some((*promoted, detail.clone())),
            RunFinished { state } => {
                self.state = *state;
                self.finished_at = Some(e.at.clone());
            }
            _ => {}
        }
    }

    /// The run executes `r`'s steps from now on: services it already acted
    /// on keep their progress, the others start afresh with their new action.
    fn replan(&mut self, r: &Replan) {
        let spec = RunSpec {
            steps: r.steps.clone(),
            critical_path: r.critical_path.clone(),
            critical_path_ms: r.critical_path_ms,
            ..(*self.spec).clone()
        };
        let mut before = std::mem::take(&mut self.services);
        let fresh = RunView::new(spec);
        for (name, mut p) in fresh.services {
            if let Some(mut old) = before.remove(&name) {
                // A kept service planned to launch now starts afresh.
                if !(old.only_kept() && p.action != Action::Keep) {
                    old.action = p.action;
                    p = old;
                }
            }
            self.services.insert(name, p);
        }
        self.spec = fresh.spec;
        self.replans.push(r.summary());
    }

    /// When a service became ready to launch: the moment its last dependency
    /// was healthy (0 for services without dependencies), once it was.
    /// Takes the step, not its name: looking each step up made a report of
    /// 10,000 services quadratic.
    pub fn queued_ms_of(&self, step: &PlannedStep) -> Option<u64> {
        step.depends_on.iter().try_fold(0, |at, d| {
            let dep = self.services.get(d)?;
            (dep.state == ServiceState::Healthy).then_some(at.max(dep.finished_ms.unwrap_or(0)))
        })
    }

    /// When a service's launch began: its `LaunchStarted`, or, when that was
    /// written ahead of its dependencies' cutovers, the moment the last of
    /// them was cut over (the launch waits for it). None while it waits.
    pub fn launch_began_ms(&self, step: &PlannedStep) -> Option<u64> {
        let launched = self.services.get(&step.service)?.launched_ms?;
        self.queued_ms_of(step).map(|ready| launched.max(ready))
    }

    /// A service's state as people see it: a launch announced ahead of its
    /// dependencies' cutovers (`launching` in the journal, so that a resumed
    /// run knows it may have begun) is `pending` until they are all cut over,
    /// as it does not begin before.
    pub fn shown_state(&self, step: &PlannedStep) -> ServiceState {
        let state = self.services.get(&step.service).map_or(ServiceState::Pending, |s| s.state);
        if state == ServiceState::Launching && self.queued_ms_of(step).is_none() {
            ServiceState::Pending
        } else {
            state
        }
    }

    /// The critical path over the step times this run measured (launch to
    /// cut over): the lower bound for any schedule of the same steps.
    pub fn measured_critical_path(&self) -> (Vec<String>, u64) {
        let dag =
            crate::domain::dag::Dag::new(self.spec.steps.iter().map(|s| (s.service.as_str(), s.depends_on.as_slice())));
        let took = |i: usize| {
            let s = &self.services[dag.name(i)];
            // The DAG was built from the steps in order: indices match.
            let ms = match (self.launch_began_ms(&self.spec.steps[i]), s.cutover_ms) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => 0,
            };
            std::time::Duration::from_millis(ms)
        };
        let (path, total) = dag.critical_path(took);
        (path.iter().map(|i| dag.name(*i).to_string()).collect(), total.as_millis() as u64)
    }

    /// What the final probe checks: every service the run holds healthy
    /// (cut over or kept), with the instances that should serve it.
    pub fn to_probe(&self) -> Vec<(String, Vec<String>)> {
        self.spec
            .steps
            .iter()
            .filter(|s| s.action != Action::Delete)
            .filter_map(|step| {
                let p = self.services.get(&step.service)?;
                if p.state != ServiceState::Healthy {
                    return None;
                }
                let serving = if p.cutover_ms.is_some() { &p.instances } else { &step.current };
                Some((step.service.clone(), serving.clone()))
            })
            .collect()
    }

    /// How long the run took from when it began executing (a proposal's
    /// wait for approval is not recovery time).
    pub fn executing_ms(&self) -> u64 {
        self.elapsed_ms.saturating_sub(self.executing_from_ms.unwrap_or(0))
    }

    /// A proposed run not approved yet: nothing launches.
    pub fn awaiting_approval(&self) -> bool {
        self.spec.proposed && self.run_approved_by.is_none() && !self.state.is_finished()
    }

    /// Waits for someone: a proposed run, or a service with `approval = true`.
    pub fn needs_approval(&self) -> bool {
        self.awaiting_approval()
            || (!self.state.is_finished() && self.services.values().any(|s| s.state == ServiceState::AwaitingApproval))
    }

    /// The state a finished run ends in, given its services.
    pub fn outcome(&self) -> RunState {
        let states = || self.services.values().map(|s| s.state);
        if states().any(|s| s == ServiceState::Failed) || self.verify.iter().any(|(_, passed, _)| !passed) {
            RunState::Failed
        } else if self.cancel_requested || states().any(|s| s == ServiceState::Cancelled) {
            RunState::Cancelled
        } else {
            RunState::Succeeded
        }
    }
}
