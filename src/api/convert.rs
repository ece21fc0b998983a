//! Conversions between domain types and protobuf messages.

use super::pb;
use crate::domain::snapshot::{FieldChange, ManifestDiff, Snapshot};
use crate::store::Rejection;

pub fn snapshot(s: &Snapshot, refs: Vec<String>, rejection: Option<Rejection>, with_manifest: bool) -> pb::Snapshot {
    pb::Snapshot {
        environment: s.environment.clone(),
        version: s.version,
        digest: s.digest.clone(),
        created_at: s.created_at.clone(),
        author: s.author.clone(),
        message: s.message.clone(),
        labels: s.labels.clone().into_iter().collect(),
        parent_version: s.parent,
        refs,
        rejection: rejection.map(|r| pb::Rejection { by: r.by, at: r.at, reason: r.reason }),
        manifest_json: if with_manifest {
            serde_json::to_string_pretty(&s.manifest).expect("a manifest always serialises")
        } else {
            String::new()
        },
        service_count: s.manifest.services.len() as u32,
        region: s.manifest.region.clone(),
        provider: s.manifest.provider.as_str().to_string(),
        corruption: None,
        warnings: Vec::new(),
    }
}

/// A record that fails its integrity check, as listings report it.
pub fn corruption(c: crate::error::Corruption) -> pb::Corruption {
    pb::Corruption { key: c.key, problem: c.problem }
}

/// A snapshot whose stored object fails its check: what is known of it.
pub fn corrupt_snapshot(
    env: &str,
    c: &crate::store::snapshots::Corrupt,
    refs: Vec<String>,
    rejection: Option<Rejection>,
) -> pb::Snapshot {
    pb::Snapshot {
        environment: env.to_string(),
        version: c.version,
        refs,
        rejection: rejection.map(|r| pb::Rejection { by: r.by, at: r.at, reason: r.reason }),
        corruption: Some(pb::Corruption { key: c.key.clone(), problem: c.problem.clone() }),
        warnings: Vec::new(),
        ..Default::default()
    }
}

fn field(f: &FieldChange) -> pb::FieldChange {
    pb::FieldChange {
        path: f.path.clone(),
        before: f.before.clone().unwrap_or_default(),
        after: f.after.clone().unwrap_or_default(),
    }
}

pub fn diff(d: &ManifestDiff, from: pb::Snapshot, to: pb::Snapshot) -> pb::DiffSnapshotsResponse {
    pb::DiffSnapshotsResponse {
        from: Some(from),
        to: Some(to),
        environment: d.environment.iter().map(field).collect(),
        services: d
            .services
            .iter()
            .map(|s| pb::ServiceDiff {
                service: s.service.clone(),
                change: serde_json::to_value(s.change)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                fields: s.fields.iter().map(field).collect(),
            })
            .collect(),
    }
}

pub fn plan(p: &crate::domain::plan::Plan) -> pb::PlanResponse {
    pb::PlanResponse {
        environment: p.environment.clone(),
        region: p.region.clone(),
        snapshot_version: p.snapshot_version,
        snapshot_digest: p.snapshot_digest.clone(),
        steps: p
            .steps
            .iter()
            .map(|s| pb::PlanStep {
                service: s.service.clone(),
                action: crate::domain::plan::action_name(s.action).into(),
                image: s.image.clone(),
                replicas: s.replicas,
                depends_on: s.depends_on.clone(),
                current_instances: s.current.clone(),
                expected_ms: s.expected_ms,
                reason: s.reason.clone(),
                changes: p.changes.get(&s.service).map(|c| c.fields.iter().map(field).collect()).unwrap_or_default(),
                changes_from_version: p.changes.get(&s.service).map_or(0, |c| c.from_version),
                approval: p.approval_gates.contains(&s.service),
            })
            .collect(),
        critical_path: p.critical_path.clone(),
        critical_path_ms: p.critical_path_ms,
        preflight: p
            .preflight
            .iter()
            .map(|c| pb::PreflightCheck { name: c.name.clone(), ok: c.ok, message: c.message.clone() })
            .collect(),
        rto_objective_ms: p.rto_objective_ms,
        warnings: p.warnings.clone(),
        preflight_ok: p.preflight_ok(),
        traffic: p.traffic.iter().map(traffic).collect(),
    }
}

pub fn traffic(t: &crate::domain::plan::Traffic) -> pb::TrafficPath {
    pb::TrafficPath {
        service: t.service.clone(),
        via: t.via.clone(),
        points_to: t.points_to.clone(),
        here: t.here,
        decides: t.decides,
    }
}

pub fn run(v: &crate::domain::run::RunView) -> pb::Run {
    let (measured_path, measured_ms) = v.measured_critical_path();
    let kind = v.spec.kind_name().to_string();
    pb::Run {
        id: v.spec.id.clone(),
        kind,
        environment: v.spec.environment.clone(),
        region: v.spec.region.clone(),
        snapshot_version: v.spec.snapshot_version,
        snapshot_digest: v.spec.snapshot_digest.clone(),
        state: v.state.as_str().into(),
        started_at: v.started_at.clone(),
        finished_at: v.finished_at.clone().unwrap_or_default(),
        created_by: v.spec.created_by.clone(),
        parallelism: v.spec.parallelism as u32,
        services: v
            .spec
            .steps
            .iter()
            .map(|step| {
                let s = &v.services[&step.service];
                pb::ServiceRun {
                    name: s.name.clone(),
                    action: crate::domain::plan::action_name(s.action).into(),
                    state: v.shown_state(step).as_str().into(),
                    attempts: s.attempts,
                    queued_ms: v.queued_ms_of(step),
                    launched_ms: v.launch_began_ms(step),
                    healthy_ms: s.healthy_ms,
                    cutover_ms: s.cutover_ms,
                    finished_ms: s.finished_ms,
                    error: s.error.clone().unwrap_or_default(),
                    upstream: s.upstream.clone().unwrap_or_default(),
                    instances: s.instances.clone(),
                    logs: s.logs.clone(),
                    approved_by: s.approved_by.clone().unwrap_or_default(),
                    expected_ms: step.expected_ms,
                    depends_on: step.depends_on.clone(),
                }
            })
            .collect(),
        critical_path: v.spec.critical_path.clone(),
        critical_path_ms: v.spec.critical_path_ms,
        elapsed_ms: v.elapsed_ms,
        stopped_ms: v.stopped_ms,
        awaiting_approval: v.awaiting_approval(),
        approved_by: v.run_approved_by.clone().unwrap_or_default(),
        replans: v
            .replans
            .iter()
            .map(|r| pb::Replan {
                at: match r.at {
                    crate::domain::run::ReplanAt::Approval => "approval".into(),
                    crate::domain::run::ReplanAt::Resume => "resume".into(),
                },
                changes: r.changes.clone(),
                failed: r.failed.clone(),
            })
            .collect(),
        probed: v.probed.is_some(),
        probed_healthy: v.probed.map_or(0, |p| p.0 as u32),
        probed_unhealthy: v.probed.map_or(0, |p| p.1 as u32),
        proposal_expires_at: if v.awaiting_approval() {
            v.proposal_expires_at.clone().unwrap_or_default()
        } else {
            String::new()
        },
        verify: v
            .verify
            .iter()
            .map(|(check, passed, detail)| pb::VerifyResult {
                check: check.clone(),
                passed: *passed,
                detail: detail.clone(),
            })
            .collect(),
        cancel_requested: v.cancel_requested,
        owners: v.owners.clone(),
        measured_critical_path: measured_path,
        measured_critical_path_ms: measured_ms,
    }
}

pub fn event(n: crate::domain::run::Narrated) -> pb::RunEvent {
    let e = n.entry;
    pb::RunEvent {
        seq: e.seq,
        r#type: e.event.kind(),
        service: e.event.service().unwrap_or_default().to_string(),
        detail_json: serde_json::to_string(&e.event).unwrap_or_default(),
        at: e.at,
        elapsed_ms: e.elapsed_ms,
        message: n.message,
        waits_for: n.waits_for,
    }
}

pub fn environment_status(s: &crate::engine::status::EnvironmentStatus) -> pb::EnvironmentStatus {
    pb::EnvironmentStatus {
        environment: s.environment.clone(),
        region: s.region.clone(),
        home_region: s.home_region,
        known_good_version: s.known_good_version.unwrap_or(0),
        latest_version: s.latest_version.unwrap_or(0),
        deployed_version: s.deployed_version.unwrap_or(0),
        sync: s.sync.as_str().to_string(),
        sync_detail: s.sync_detail.clone(),
        services: s
            .services
            .iter()
            .map(|v| pb::ServiceStatus {
                name: v.name.clone(),
                state: v.state.to_string(),
                desired_replicas: v.desired_replicas,
                address: v.address.clone(),
                instances: v
                    .instances
                    .iter()
                    .map(|i| pb::InstanceStatus {
                        id: i.id.clone(),
                        healthy: i.healthy,
                        serving: i.serving,
                        address: i.address.clone(),
                        run_id: i.run_id.clone(),
                    })
                    .collect(),
                action: v.action.clone(),
                reason: v.reason.clone(),
            })
            .collect(),
        last_run: s.last_run.as_ref().map(run),
        last_drill: s.last_drill.as_ref().map(run),
        drift: s.drift.as_ref().map(|d| d.summary()).unwrap_or_default(),
        drift_checked_at: s.drift.as_ref().map(|d| d.checked_at.clone()).unwrap_or_default(),
        traffic: s.traffic.as_ref().map(|t| t.iter().map(traffic).collect()).unwrap_or_default(),
        traffic_error: s.traffic.as_ref().err().cloned().unwrap_or_default(),
        corrupt: s.corrupt.iter().cloned().map(corruption).collect(),
    }
}

pub fn drift(d: &crate::engine::drift::DriftReport) -> pb::DriftReport {
    pb::DriftReport {
        environment: d.environment.clone(),
        region: d.region.clone(),
        snapshot_version: d.snapshot_version,
        checked_at: d.checked_at.clone(),
        in_sync: d.in_sync(),
        services: d
            .services
            .iter()
            .map(|s| pb::ServiceDrift {
                service: s.service.clone(),
                state: s.state.as_str().to_string(),
                detail: s.detail.clone(),
                instances: s.instances.clone(),
            })
            .collect(),
    }
}

pub fn policy(p: &crate::store::policy::Policy) -> pb::EnvironmentPolicy {
    pb::EnvironmentPolicy {
        environment: p.environment.clone(),
        promotion: match p.promotion {
            crate::domain::manifest::Promotion::Manual => "manual".into(),
            crate::domain::manifest::Promotion::Drill => "drill".into(),
        },
        updated_by: p.updated_by.clone(),
        updated_at: p.updated_at.clone(),
    }
}
