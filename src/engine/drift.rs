//! Drift checks: the live inventory against known-good, on demand
//! (`lifeboat drift`, DriftService/Check) and every `engine.drift_interval`
//! in the server, which keeps the latest result per environment and region.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Engine;
use super::clock::rfc3339;
use crate::domain::drift::{DriftState, ServiceDrift, drift};
use crate::error::{Error, Result};
use crate::provider::{CALL_LIMIT, bounded};
use crate::store::layout;
use crate::store::snapshots::KNOWN_GOOD;

pub const DEFAULT_DRIFT_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReport {
    pub environment: String,
    pub region: String,
    /// The known-good version compared against.
    pub snapshot_version: u64,
    pub checked_at: String,
    pub services: Vec<ServiceDrift>,
}

impl DriftReport {
    pub fn in_sync(&self) -> bool {
        self.services.iter().all(|s| s.state == DriftState::InSync)
    }

    /// `in sync`, or `2 drifted: web unhealthy, api wrong_image`.
    pub fn summary(&self) -> String {
        let drifted: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.state != DriftState::InSync)
            .map(|s| format!("{} {}", s.service, s.state.as_str()))
            .collect();
        if drifted.is_empty() { "in sync".into() } else { format!("{} drifted: {}", drifted.len(), drifted.join(", ")) }
    }
}

impl Engine {
    /// Compares what runs in `region` (default: known-good's) with known-good.
    pub async fn drift(&self, env: &str, region: Option<&str>) -> Result<DriftReport> {
        let Some(kg) = self.repo.get_ref(env, KNOWN_GOOD).await? else {
            if self.repo.latest_version(env).await?.is_none() {
                return Err(Error::NotFound(format!(
                    "environment {env} has no snapshots; check the name (`lifeboat status` lists every environment)"
                )));
            }
            return Err(Error::NotFound(format!(
                "environment {env} has no known-good snapshot yet; drift is measured against known-good"
            )));
        };
        let snap = self.repo.get(env, kg.version).await?;
        let m = &snap.manifest;
        let region = region.filter(|r| !r.is_empty()).unwrap_or(&m.region).to_string();
        if !crate::domain::manifest::is_valid_name(&region) {
            return Err(Error::InvalidArgument(format!("\"{region}\" is not a valid region name")));
        }
        let provider = self.ctx.providers.get(m.provider).map_err(Error::FailedPrecondition)?;
        let inventory = bounded("inventory", CALL_LIMIT, &CancellationToken::new(), provider.inventory(env, &region))
            .await
            .map_err(|e| Error::Internal(format!("cannot read what runs of {env} in {region}: {e}")))?;
        let report = DriftReport {
            environment: env.to_string(),
            services: drift(m, &region, &inventory),
            region,
            snapshot_version: snap.version,
            checked_at: rfc3339(self.ctx.clock.now()),
        };
        let drifted = report.services.iter().filter(|s| s.state != DriftState::InSync).count();
        let l = crate::metrics::labels(&[("environment", &report.environment), ("region", &report.region)]);
        crate::metrics::get().drifted_services.get_or_create(&l).set(drifted as i64);
        self.drift.lock().expect("lock").insert((report.environment.clone(), report.region.clone()), report.clone());
        Ok(report)
    }

    /// The latest check of an environment in a region, by whichever caller.
    pub fn latest_drift(&self, env: &str, region: &str) -> Option<DriftReport> {
        self.drift.lock().expect("lock").get(&(env.to_string(), region.to_string())).cloned()
    }

    /// Checks every environment that has a known-good snapshot, in its home
    /// region, every `every`.
    pub fn check_drift_every(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                match engine.ctx.store.list(&layout::environments_prefix()).await {
                    Ok(keys) => {
                        let envs: BTreeSet<&str> = keys.iter().filter_map(|k| layout::environment_of(k)).collect();
                        for env in envs {
                            match engine.drift(env, None).await {
                                Ok(r) if !r.in_sync() => {
                                    tracing::warn!(environment = %env, region = %r.region, drift = %r.summary(), "drift from known-good")
                                }
                                Ok(_) | Err(Error::NotFound(_)) => {}
                                Err(e) => tracing::warn!(environment = %env, error = %e, "cannot check drift"),
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list environments to check drift"),
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}
