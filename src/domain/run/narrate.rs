//! How a run's events are worded for people (`run watch`, reports): wording
//! changes here never touch the stored format.

use std::collections::BTreeMap;

use super::*;

impl Event {
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
