//! What a run persists: its record (`RunSpec`) and journal entries (`Entry`, `Event`),
//! and the states they name. A change here is a change of stored format.

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
