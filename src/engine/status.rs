//! `lifeboat status`: per environment and region, what is deployed, whether
//! it matches known-good, each service's instances, and the last run (as
//! Argo CD's Synced/OutOfSync at a glance).

use std::collections::{BTreeMap, BTreeSet};

use super::Engine;
use crate::domain::plan::{self, LiveInstance, PlanInput, action_name};
use crate::domain::run::{Action, RunState, RunView};
use crate::error::{Error, Result};
use crate::store::layout;
use crate::store::snapshots::KNOWN_GOOD;

/// Runs looked at per environment (newest first) to find the last ones.
const RECENT_RUNS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    /// Every service runs known-good, healthy; nothing to delete.
    Synced,
    /// A recovery to known-good would change something (said in `detail`).
    OutOfSync,
    /// It cannot be told (no known-good, a corrupt snapshot, …).
    Unknown,
}

impl Sync {
    pub fn as_str(&self) -> &'static str {
        match self {
            Sync::Synced => "synced",
            Sync::OutOfSync => "out_of_sync",
            Sync::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub name: String,
    /// healthy, over_provisioned (every instance healthy, more than wanted),
    /// degraded, down, unmanaged (running, not in known-good)
    pub state: &'static str,
    pub desired_replicas: u32,
    /// The service's stable address, if it has one.
    pub address: String,
    pub instances: Vec<LiveInstance>,
    /// What a recovery to known-good would do, and why.
    pub action: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct EnvironmentStatus {
    pub environment: String,
    pub region: String,
    pub home_region: bool,
    pub known_good_version: Option<u64>,
    pub latest_version: Option<u64>,
    /// The snapshot of the newest run that succeeded in this region.
    pub deployed_version: Option<u64>,
    pub sync: Sync,
    pub sync_detail: String,
    pub services: Vec<ServiceStatus>,
    pub last_run: Option<RunView>,
    /// The newest drill (drills never count as deployed).
    pub last_drill: Option<RunView>,
    /// The server's latest drift check of this environment and region.
    pub drift: Option<super::drift::DriftReport>,
    /// Where each service's traffic points, seen from this region, or why it cannot be told.
    pub traffic: std::result::Result<Vec<crate::domain::plan::Traffic>, String>,
    /// Records of this environment that fail their checks (skipped).
    pub corrupt: Vec<crate::error::Corruption>,
}

impl Engine {
    /// One entry per environment and region (the home region, and every
    /// region a recent run went to); `environment` narrows it to one.
    pub async fn status(&self, environment: Option<&str>) -> Result<Vec<EnvironmentStatus>> {
        let envs: Vec<String> = match environment {
            Some(e) => {
                if self.repo.latest_version(e).await?.is_none() {
                    return Err(Error::NotFound(format!("environment {e} has no snapshots")));
                }
                vec![e.to_string()]
            }
            None => {
                let keys = self.ctx.store.list(&layout::environments_prefix()).await?;
                let names: BTreeSet<String> =
                    keys.iter().filter_map(|k| layout::environment_of(k)).map(str::to_string).collect();
                names.into_iter().collect()
            }
        };
        let mut out = Vec::new();
        for env in envs {
            out.extend(self.environment_status(&env).await?);
        }
        Ok(out)
    }

    async fn environment_status(&self, env: &str) -> Result<Vec<EnvironmentStatus>> {
        // A corrupt record (the known-good ref, a run) must not hide the
        // environment, or any other: it is named, and the rest is shown.
        let mut corrupt = Vec::new();
        let (known_good, unreadable_ref) = match self.repo.get_ref(env, KNOWN_GOOD).await {
            Ok(r) => (r.map(|r| r.version), None),
            Err(e) => match e.corruption() {
                Some(c) => {
                    let why = format!("the known-good ref cannot be read: {}", e);
                    corrupt.push(c);
                    (None, Some(why))
                }
                None => return Err(e),
            },
        };
        let latest = self.repo.latest_version(env).await?;
        let Some(home_version) = known_good.or(latest) else { return Ok(Vec::new()) };
        // A corrupt snapshot must not hide the environment: it shows as unknown.
        let home = self.repo.get(env, home_version).await;
        let listed = self.list(Some(env), false, RECENT_RUNS).await?;
        corrupt
            .extend(listed.corrupt.into_iter().filter(|c| c.environment.as_deref() == Some(env)).map(|c| c.corruption));
        let runs = listed.runs;
        let mut regions: BTreeSet<String> = runs.iter().map(|r| r.spec.region.clone()).collect();
        let home_region = home.as_ref().ok().map(|s| s.manifest.region.clone());
        regions.extend(home_region.clone());
        let mut out = Vec::new();
        for region in regions {
            let provider = home.as_ref().ok().and_then(|s| self.ctx.providers.get(s.manifest.provider).ok());
            let inventory = match &provider {
                Some(p) => p.inventory(env, &region).await.map_err(|e| e.to_string()),
                None => Ok(Vec::new()),
            };
            // Where traffic points, seen from this region (after a failover: elsewhere).
            let traffic = match (&provider, &home, &inventory) {
                (Some(p), Ok(snap), Ok(inv)) => {
                    p.traffic(env, &snap.manifest, &region, inv).await.map_err(|e| e.to_string())
                }
                _ => Ok(Vec::new()),
            };
            let here: Vec<&RunView> = runs.iter().filter(|r| r.spec.region == region).collect();
            // A drill restores into its own namespace: it never deploys anything.
            let recoveries: Vec<&RunView> = here.iter().copied().filter(|r| r.spec.drill.is_none()).collect();
            let last_drill = here.iter().find(|r| r.spec.drill.is_some()).map(|r| (*r).clone());
            // A decommission that succeeded last leaves nothing deployed.
            let deployed = recoveries
                .iter()
                .find(|r| r.state == RunState::Succeeded)
                .filter(|r| !r.spec.decommission)
                .map(|r| r.spec.snapshot_version);
            // The planner's decisions over the inventory read once here (no
            // preflight: status changes nothing and probes nothing).
            let plan = match (known_good, &home, &inventory) {
                (Some(_), Ok(snap), Ok(inv)) => Some(Ok(plan::plan(PlanInput {
                    manifest: &snap.manifest,
                    snapshot_version: snap.version,
                    snapshot_digest: &snap.digest,
                    region: &region,
                    inventory: inv,
                    force: false,
                    prune: true,
                    history: &BTreeMap::new(),
                    traffic: traffic.as_deref().unwrap_or_default(),
                }))),
                (Some(_), Ok(_), Err(e)) => Some(Err(format!("cannot read what runs of {env} in {region}: {e}"))),
                _ => None,
            };
            let inventory = inventory.unwrap_or_default();
            let (sync, sync_detail, steps) = match plan {
                None if known_good.is_none() => (
                    Sync::Unknown,
                    unreadable_ref.clone().unwrap_or_else(|| "no known-good snapshot yet".to_string()),
                    Vec::new(),
                ),
                None => (
                    Sync::Unknown,
                    format!(
                        "known-good cannot be read: {}",
                        home.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
                    ),
                    Vec::new(),
                ),
                Some(Err(e)) => (Sync::Unknown, e, Vec::new()),
                Some(Ok(p)) => {
                    let changes: BTreeMap<Action, usize> = p.steps.iter().fold(BTreeMap::new(), |mut m, s| {
                        *m.entry(s.action).or_default() += 1;
                        m
                    });
                    let to_change: Vec<String> = [Action::Create, Action::Replace, Action::Delete]
                        .iter()
                        .filter_map(|a| changes.get(a).map(|n| format!("{n} to {}", action_name(*a))))
                        .collect();
                    if to_change.is_empty() {
                        (Sync::Synced, "every service runs known-good, healthy".to_string(), p.steps)
                    } else {
                        (Sync::OutOfSync, to_change.join(", "), p.steps)
                    }
                }
            };
            let manifest = home.as_ref().ok().map(|s| &s.manifest);
            // Dependencies first (the plan's order), then anything else running.
            let mut names: Vec<String> = steps.iter().map(|s| s.service.clone()).collect();
            let mut rest: BTreeSet<String> = manifest.map(|m| m.services.keys().cloned().collect()).unwrap_or_default();
            rest.extend(inventory.iter().map(|i| i.service.clone()));
            names.extend(rest.into_iter().filter(|n| !steps.iter().any(|s| &s.service == n)));
            let services = names
                .into_iter()
                .map(|name| {
                    let instances: Vec<LiveInstance> =
                        inventory.iter().filter(|i| i.service == name).cloned().collect();
                    let svc = manifest.and_then(|m| m.services.get(&name));
                    let desired = svc.map_or(0, |s| s.replicas);
                    let healthy = instances.iter().filter(|i| i.healthy && i.serving).count();
                    let state = match svc {
                        None => "unmanaged",
                        Some(_) if instances.is_empty() => "down",
                        Some(_) if healthy == instances.len() && healthy == desired as usize => "healthy",
                        Some(_) if healthy == instances.len() && healthy > desired as usize => "over_provisioned",
                        Some(_) => "degraded",
                    };
                    let address = svc
                        .and_then(|s| s.launch.get("listen"))
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .unwrap_or_default();
                    let step = steps.iter().find(|s| s.service == name);
                    ServiceStatus {
                        name,
                        state,
                        desired_replicas: desired,
                        address,
                        instances,
                        action: step.map(|s| action_name(s.action).to_string()).unwrap_or_default(),
                        reason: step.map(|s| s.reason.clone()).unwrap_or_default(),
                    }
                })
                .collect();
            out.push(EnvironmentStatus {
                traffic,
                drift: self.latest_drift(env, &region),
                environment: env.to_string(),
                home_region: home_region.as_deref() == Some(region.as_str()),
                region,
                known_good_version: known_good,
                latest_version: latest,
                deployed_version: deployed,
                sync,
                sync_detail,
                services,
                last_run: recoveries.first().map(|r| (*r).clone()),
                last_drill,
                corrupt: corrupt.clone(),
            });
        }
        Ok(out)
    }
}
