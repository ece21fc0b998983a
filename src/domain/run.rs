//! Runs: the append-only event journal and the state folded from it. A run's
//! state is never stored on its own; it is always the fold of its events, so
//! a resumed run knows exactly what happened before the crash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const RUN_FORMAT: u32 = 1;
pub const ENTRY_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Recovery,
    Drill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No instances yet: launch them.
    Create,
    /// Instances exist but differ (image, count, health): blue-green replace.
    Replace,
    /// Already running the snapshot's image, healthy: leave alone.
    Keep,
    /// Running the snapshot's image, healthy, but its traffic points
    /// elsewhere (another region after a failover): move it back here,
    /// after a health gate, launching nothing.
    Cutover,
    /// Running but absent from the snapshot: once every other service is
    /// healthy, its traffic stops and its instances are removed.
    Delete,
}

/// What a run was asked to do; written once when it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub format_version: u32,
    pub id: String,
    pub kind: RunKind,
    pub environment: String,
    pub region: String,
    pub snapshot_version: u64,
    pub snapshot_digest: String,
    pub parallelism: usize,
    pub created_at: String,
    pub created_by: String,
    /// The plan's steps, in the manifest's service order.
    pub steps: Vec<PlannedStep>,
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
    /// Proposed: nothing launches until the whole run is approved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proposed: bool,
    /// The manifest's `rto_objective`, which reports measure the run against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_objective_ms: Option<u64>,
    /// Asked with `--force` (replace even what matches): a plan made again keeps it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Asked to prune (delete running services absent from the snapshot).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
    /// A decommission: every instance of the environment in the region is
    /// removed, nothing launched (planned against a manifest with no services).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decommission: bool,
    /// A drill: where it runs apart from production, and what it was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<crate::domain::drill::DrillSpec>,
}

impl RunSpec {
    /// "recovery" or "drill".
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RunKind::Recovery if self.decommission => "decommission",
            RunKind::Recovery => "recovery",
            RunKind::Drill => "drill",
        }
    }

    /// The environment the provider sees: a drill's own namespace, or the environment.
    pub fn target_environment(&self) -> &str {
        self.drill.as_ref().map_or(&self.environment, |d| &d.namespace)
    }

    /// The lease the run holds: its region's, or for a drill `drill/ENV/REGION`
    /// (a drill never blocks a recovery, nor waits for one).
    pub fn lease_key(&self) -> String {
        match &self.drill {
            Some(_) => format!("drill/{}/{}", self.environment, self.region),
            None => self.region.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub service: String,
    pub action: Action,
    /// Why: "not running", "image changed", "settings changed", …
    #[serde(default)]
    pub reason: String,
    /// What new instances are launched with (see `plan::fingerprint`).
    #[serde(default)]
    pub fingerprint: String,
    pub image: String,
    pub replicas: u32,
    pub depends_on: Vec<String>,
    /// Instances running before the run (replaced ones are decommissioned).
    pub current: Vec<String>,
    pub expected_ms: u64,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub format_version: u32,
    pub seq: u64,
    /// Wall-clock time, RFC 3339.
    pub at: String,
    /// Milliseconds since the run started (monotonic within one server).
    pub elapsed_ms: u64,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        owner: String,
    },
    /// A server took the run over (after a crash or restart).
    RunResumed {
        owner: String,
    },
    ApprovalRequested {
        service: String,
    },
    Approved {
        service: String,
        by: String,
    },
    LaunchStarted {
        service: String,
        attempt: u32,
    },
    InstancesLaunched {
        service: String,
        attempt: u32,
        instances: Vec<String>,
    },
    Healthy {
        service: String,
        attempt: u32,
    },
    AttemptFailed {
        service: String,
        attempt: u32,
        reason: String,
        logs: Vec<String>,
    },
    CutOver {
        service: String,
        instances: Vec<String>,
    },
    Kept {
        service: String,
    },
    /// A cut-over service's old instances are removed after its grace period.
    DecommissionScheduled {
        service: String,
        instances: Vec<String>,
        grace_ms: u64,
    },
    Decommissioned {
        service: String,
        instances: Vec<String>,
    },
    ServiceFailed {
        service: String,
        reason: String,
    },
    Skipped {
        service: String,
        upstream: String,
    },
    CancelRequested {
        by: String,
    },
    /// A proposed run waits for `lifeboat run approve ID` before anything
    /// launches, until `expires_at` (RFC 3339; older runs did not say).
    RunApprovalRequested {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<String>,
    },
    RunApproved {
        by: String,
    },
    /// The plan made again against the live inventory as the run starts
    /// executing (after its approval, or on resume): the run executes it.
    Replanned(Replan),
    ServiceCancelled {
        service: String,
    },
    /// Every service the run saw healthy, probed once more as it ends (kept
    /// ones included): `unhealthy` names those that did not answer, which
    /// fail the run.
    Probed {
        confirmed: usize,
        unhealthy: BTreeMap<String, String>,
    },
    /// One `[[verify]]` check, once every service was healthy.
    Verified {
        check: String,
        passed: bool,
        detail: String,
    },
    /// A service absent from the snapshot: its traffic stopped, its
    /// instances removed (prune).
    Removed {
        service: String,
        instances: Vec<String>,
    },
    /// A drill's verdict, once every service is done.
    DrillJudged {
        judgement: crate::domain::drill::Judgement,
    },
    /// Everything a drill created is gone (`remaining`: what could not be removed).
    DrillTornDown {
        instances: Vec<String>,
        remaining: Vec<String>,
    },
    /// A passed drill is kept up for inspection until then (RFC 3339).
    DrillKept {
        until: String,
    },
    /// `--promote-on-pass`: known-good moved to the drilled snapshot, or why not.
    DrillPromotion {
        promoted: bool,
        detail: String,
    },
    RunFinished {
        state: RunState,
    },
}

impl Event {
    pub fn service(&self) -> Option<&str> {
        use Event::*;
        match self {
            ApprovalRequested { service }
            | Approved { service, .. }
            | LaunchStarted { service, .. }
            | InstancesLaunched { service, .. }
            | Healthy { service, .. }
            | AttemptFailed { service, .. }
            | CutOver { service, .. }
            | Kept { service }
            | Decommissioned { service, .. }
            | DecommissionScheduled { service, .. }
            | ServiceFailed { service, .. }
            | Skipped { service, .. }
            | Removed { service, .. }
            | ServiceCancelled { service } => Some(service),
            RunStarted { .. }
            | RunResumed { .. }
            | CancelRequested { .. }
            | RunFinished { .. }
            | RunApprovalRequested { .. }
            | RunApproved { .. }
            | Replanned(_)
            | Probed { .. }
            | DrillJudged { .. }
            | DrillTornDown { .. }
            | DrillKept { .. }
            | DrillPromotion { .. }
            | Verified { .. } => None,
        }
    }

    /// One line for people following a run.
    pub fn describe(&self, run_id: &str) -> String {
        use Event::*;
        match self {
            RunStarted { owner } => format!("run started (server {owner})"),
            RunResumed { owner } => format!("run resumed by server {owner}"),
            ApprovalRequested { service } => {
                format!("{service}: waiting for approval: lifeboat run approve {run_id} {service}")
            }
            Approved { service, by } => format!("{service}: approved by {by}"),
            LaunchStarted { service, attempt } if *attempt > 1 => format!("{service}: launching (attempt {attempt})"),
            LaunchStarted { service, .. } => format!("{service}: launching"),
            InstancesLaunched { service, instances, .. } => {
                format!("{service}: launched {}; health gate", instances.join(", "))
            }
            Healthy { service, .. } => format!("{service}: healthy"),
            AttemptFailed { service, attempt, reason, .. } => format!("{service}: attempt {attempt} failed: {reason}"),
            CutOver { service, instances } => format!("{service}: traffic cut over to {}", instances.join(", ")),
            Kept { service } => format!("{service}: already runs the snapshot's image and is healthy: kept"),
            DecommissionScheduled { service, grace_ms, .. } => format!(
                "{service}: waiting grace period ({}) before removing old instances",
                crate::domain::duration::human(std::time::Duration::from_millis(*grace_ms))
            ),
            Decommissioned { service, instances } => {
                format!("{service}: old instances decommissioned ({})", instances.join(", "))
            }
            ServiceFailed { service, reason } => format!("{service}: FAILED: {reason}"),
            Skipped { service, upstream } => format!("{service}: skipped (upstream {upstream} failed)"),
            CancelRequested { by } => format!("cancel requested by {by}"),
            RunApprovalRequested { expires_at } => {
                let mut line = format!(
                    "proposed: nothing launches until approved: lifeboat run approve {run_id} (or cancel it: lifeboat run cancel {run_id})"
                );
                if let Some(at) = expires_at {
                    line.push_str(&format!("; unapproved, it expires at {at}"));
                }
                line
            }
            RunApproved { by } => format!("run approved by {by}"),
            Replanned(r) => r.describe(),
            Probed { confirmed, unhealthy } if unhealthy.is_empty() => {
                format!("final probe: all {confirmed} services answer their health checks")
            }
            Probed { unhealthy, .. } => {
                let each: Vec<String> = unhealthy.iter().map(|(s, why)| format!("{s}: {why}")).collect();
                format!("final probe: NOT healthy as the run ends: {}", each.join("; "))
            }
            Verified { check, passed: true, detail } => format!("verify {check}: passed ({detail})"),
            Verified { check, passed: false, detail } => format!("verify {check}: FAILED: {detail}"),
            ServiceCancelled { service } => format!("{service}: cancelled"),
            Removed { service, instances } => {
                format!("{service}: not in the snapshot: traffic stopped, instances removed ({})", instances.join(", "))
            }
            DrillJudged { judgement: j } => {
                let rto = crate::domain::duration::human(std::time::Duration::from_millis(j.rto_ms));
                match (&j.root_cause, j.rto_objective_ms) {
                    (Some(why), _) => format!("drill FAILED: {why}"),
                    (None, Some(o)) => format!(
                        "drill {}: RTO {rto} (objective {})",
                        j.verdict.as_str(),
                        crate::domain::duration::human(std::time::Duration::from_millis(o))
                    ),
                    (None, None) => format!("drill {}: RTO {rto}", j.verdict.as_str()),
                }
            }
            DrillTornDown { instances, remaining } if remaining.is_empty() => {
                format!("drill torn down: {} instances removed, none left", instances.len())
            }
            DrillTornDown { instances, remaining } => {
                format!("drill torn down: {} instances removed; NOT removed: {}", instances.len(), remaining.join(", "))
            }
            DrillKept { until } => format!("drill kept up for inspection until {until} (then torn down)"),
            DrillPromotion { detail, .. } => detail.clone(),
            RunFinished { state } => format!("run {}", state.as_str()),
        }
    }

    /// `launch_started`, `healthy`, …
    pub fn kind(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default()
    }
}

/// When a run's plan was made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplanAt {
    /// A proposed run, approved: its proposal may be hours old.
    Approval,
    /// A run taken over by a server: the region may have changed meanwhile.
    Resume,
}

/// A run's plan made again against the live inventory when it starts
/// executing: the steps it executes, and how they differ from those it had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replan {
    pub at: ReplanAt,
    /// Every step of the run from now on (services the run already acted
    /// on keep theirs).
    pub steps: Vec<PlannedStep>,
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
    /// One line per step that changed: `db: keep -> create (not running)`.
    pub changes: Vec<String>,
    /// Preflight checks the fresh plan failed: the run ends, launching nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

impl Replan {
    pub fn describe(&self) -> String {
        let when = match self.at {
            ReplanAt::Approval => "at approval",
            ReplanAt::Resume => "on resume",
        };
        if !self.failed.is_empty() {
            return format!(
                "planned again {when} against what runs now: preflight FAILED ({}): nothing launches",
                self.failed.join("; ")
            );
        }
        match self.changes.as_slice() {
            [] => format!("planned again {when} against what runs now: the same steps as before"),
            changes => format!("planned again {when} against what runs now: {}", changes.join("; ")),
        }
    }

    /// The same, without the steps (what a view keeps).
    pub fn summary(&self) -> Replan {
        Replan { steps: Vec::new(), ..self.clone() }
    }
}

/// Words a run's events, in order, for people following it. A launch the
/// engine announced ahead of its dependencies' cutovers (it writes it while
/// their health gates run) begins only once they are cut over; its line says
/// what it waits for instead of "launching".
pub struct Narrator {
    deps: BTreeMap<String, Vec<String>>,
    done: std::collections::BTreeSet<String>,
    /// A drill's cutover moves no production traffic: it is worded so.
    drill: bool,
}

/// An entry with its line for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Narrated {
    pub entry: Entry,
    pub message: String,
    /// For a launch announced ahead: the dependencies not cut over (or kept) yet.
    pub waits_for: Vec<String>,
}

impl Narrator {
    pub fn new(spec: &RunSpec) -> Narrator {
        let deps = spec.steps.iter().map(|s| (s.service.clone(), s.depends_on.clone())).collect();
        Narrator { deps, done: Default::default(), drill: spec.drill.is_some() }
    }

    /// Notes an entry that is not shown (before a watcher's `from_seq`).
    pub fn note(&mut self, e: &Entry) {
        if let Event::CutOver { service, .. } | Event::Kept { service } = &e.event {
            self.done.insert(service.clone());
        }
    }

    pub fn tell(&mut self, e: Entry, run_id: &str) -> Narrated {
        self.note(&e);
        let waits_for: Vec<String> = match &e.event {
            Event::LaunchStarted { service, .. } => {
                self.deps.get(service).into_iter().flatten().filter(|d| !self.done.contains(*d)).cloned().collect()
            }
            _ => vec![],
        };
        let message = match &e.event {
            Event::LaunchStarted { service, .. } if !waits_for.is_empty() => format!(
                "{service}: launch announced: it begins once {} {} cut over",
                waits_for.join(", "),
                if waits_for.len() == 1 { "is" } else { "are" }
            ),
            Event::CutOver { service, instances } if self.drill => format!(
                "{service}: healthy; its drill address serves {} (production traffic is never touched)",
                instances.join(", ")
            ),
            event => event.describe(run_id),
        };
        Narrated { entry: e, message, waits_for }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn is_finished(self) -> bool {
        self != RunState::Running
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

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
                old.action = p.action;
                p = old;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            format_version: RUN_FORMAT,
            id: "r1".into(),
            kind: RunKind::Recovery,
            environment: "shop".into(),
            region: "r".into(),
            snapshot_version: 1,
            snapshot_digest: "sha256:x".into(),
            parallelism: 4,
            created_at: "t0".into(),
            created_by: "me".into(),
            steps: ["db", "api"]
                .iter()
                .map(|s| PlannedStep {
                    service: s.to_string(),
                    action: Action::Create,
                    reason: String::new(),
                    fingerprint: String::new(),
                    image: "sha256:x".into(),
                    replicas: 1,
                    depends_on: vec![],
                    current: vec![],
                    expected_ms: 1000,
                })
                .collect(),
            critical_path: vec![],
            critical_path_ms: 0,
            proposed: false,
            rto_objective_ms: None,
            force: false,
            prune: false,
            decommission: false,
            drill: None,
        }
    }

    fn entry(seq: u64, event: Event) -> Entry {
        Entry { format_version: ENTRY_FORMAT, seq, at: format!("t{seq}"), elapsed_ms: seq * 10, event }
    }

    /// A launch written ahead of its dependencies' cutovers says what it
    /// waits for; once they are cut over (or kept), a launch is a launch.
    /// Entries a watcher skips (before its `from_seq`) still count.
    #[test]
    fn a_launch_announced_ahead_says_what_it_waits_for() {
        let mut spec = spec();
        let step = |name: &str, deps: &[&str]| PlannedStep {
            service: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..spec.steps[0].clone()
        };
        spec.steps = vec![step("db", &[]), step("cache", &[]), step("api", &["db", "cache"]), step("web", &["api"])];
        let mut narrator = Narrator::new(&spec);
        let launch = |s: &str| entry(1, Event::LaunchStarted { service: s.into(), attempt: 1 });
        let mut told = |e: Entry| {
            let n = narrator.tell(e, "r1");
            (n.message, n.waits_for)
        };
        assert_eq!(told(launch("db")), ("db: launching".into(), vec![]));
        assert_eq!(
            told(launch("api")),
            ("api: launch announced: it begins once db, cache are cut over".into(), vec!["db".into(), "cache".into()])
        );
        told(entry(2, Event::CutOver { service: "db".into(), instances: vec![] }));
        assert_eq!(told(launch("api")).0, "api: launch announced: it begins once cache is cut over");
        told(entry(3, Event::Kept { service: "cache".into() }));
        assert_eq!(told(launch("api")), ("api: launching".into(), vec![]));
        assert_eq!(told(launch("web")).1, vec!["api"], "web waits for api");

        let mut late = Narrator::new(&spec);
        late.note(&entry(2, Event::CutOver { service: "db".into(), instances: vec![] }));
        late.note(&entry(3, Event::Kept { service: "cache".into() }));
        assert_eq!(late.tell(launch("api"), "r1").message, "api: launching");
    }

    #[test]
    fn fold_tracks_attempts_failures_and_skips() {
        let s = |n: &str| n.to_string();
        let events = vec![
            Event::RunStarted { owner: s("a") },
            Event::LaunchStarted { service: s("db"), attempt: 1 },
            Event::InstancesLaunched { service: s("db"), attempt: 1, instances: vec![s("i1")] },
            Event::AttemptFailed { service: s("db"), attempt: 1, reason: s("unhealthy"), logs: vec![s("boom")] },
            Event::LaunchStarted { service: s("db"), attempt: 2 },
            Event::InstancesLaunched { service: s("db"), attempt: 2, instances: vec![s("i2")] },
            Event::ServiceFailed { service: s("db"), reason: s("unhealthy after 2 attempts") },
            Event::Skipped { service: s("api"), upstream: s("db") },
        ];
        let entries: Vec<Entry> = events.into_iter().enumerate().map(|(i, e)| entry(i as u64, e)).collect();
        let v = RunView::replay(spec(), &entries);
        let db = &v.services["db"];
        assert_eq!((db.state, db.attempts, db.failed_attempt), (ServiceState::Failed, 2, 1));
        assert_eq!(db.failed_instances, vec!["i1"]);
        assert_eq!(db.launched_ms, Some(10));
        assert_eq!(v.services["api"].upstream.as_deref(), Some("db"));
        let queued = |name: &str| v.queued_ms_of(v.spec.steps.iter().find(|s| s.service == name).unwrap());
        assert_eq!(queued("db"), Some(0));
        assert_eq!(queued("api"), Some(0), "api has no dependencies in this spec");
        assert_eq!(v.outcome(), RunState::Failed);
        assert_eq!(v.last_seq, Some(7));
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = Event::Skipped { service: "api".into(), upstream: "db".into() };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, r#"{"type":"skipped","service":"api","upstream":"db"}"#);
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);
        assert_eq!(e.kind(), "skipped");
    }
}
