//! Decommissioning a region: every instance of an environment there
//! removed (its traffic released first), nothing launched. It is a run like
//! a recovery, planned against the manifest without services, so that the
//! planner makes every instance a `delete`; preflight refuses it while the
//! region still serves traffic, unless `--force`.

use tokio_util::sync::CancellationToken;

use super::{Engine, region_of};
use crate::domain::plan::{Check, Plan};
use crate::domain::snapshot::Snapshot;
use crate::error::Result;
use crate::provider::{CALL_LIMIT, bounded};

impl Engine {
    /// The plan of decommissioning an environment's region: every instance
    /// there removed (`delete`), nothing launched. Refused by preflight while
    /// the region serves traffic, unless `force`.
    pub async fn plan_decommission(
        &self,
        env: &str,
        reference: &str,
        region: Option<&str>,
        force: bool,
    ) -> Result<(Snapshot, Plan)> {
        let snap = self.repo.get_by_ref(env, reference).await?;
        let region = region_of(&snap, region)?;
        let full = snap.manifest.clone();
        let (snap, mut plan) = self.plan_snapshot(decommissioning(snap), env, &region, &region, false, true).await?;
        // Where traffic goes needs the services' settings, which the emptied manifest has not.
        let traffic = match self.ctx.providers.get(full.provider) {
            Ok(p) => {
                let inventory =
                    bounded("inventory", CALL_LIMIT, &CancellationToken::new(), p.inventory(env, &region)).await;
                match inventory {
                    Ok(inv) => {
                        bounded("traffic", CALL_LIMIT, &CancellationToken::new(), p.traffic(env, &full, &region, &inv))
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(why) => Err(why),
        };
        let serving: Vec<String> = match &traffic {
            Ok(t) => {
                t.iter().filter(|t| t.here && t.decides).map(|t| format!("{} ({})", t.service, t.describe())).collect()
            }
            Err(_) => Vec::new(),
        };
        // This check, made with the services' settings, replaces the plan's own.
        plan.preflight.retain(|c| c.name != "traffic");
        plan.preflight.push(match (&traffic, serving.is_empty(), force) {
            (Err(e), _, false) => Check::fail(
                "traffic",
                format!("cannot tell whether {region} serves traffic ({e}); decommission with --force if you know it does not"),
            ),
            (_, false, false) => Check::fail(
                "traffic",
                format!(
                    "{region} still serves traffic: {}; fail over (or back) first, or decommission with --force",
                    crate::domain::listed(&serving)
                ),
            ),
            (_, false, true) => Check::pass("traffic", format!("{region} serves traffic ({}); removed anyway: --force", crate::domain::listed(&serving))),
            (Err(e), true, true) => Check::pass("traffic", format!("cannot tell whether {region} serves traffic ({e}); removed anyway: --force")),
            (Ok(_), true, _) => Check::pass("traffic", format!("{region} serves no traffic of {env}")),
        });
        plan.traffic = traffic.unwrap_or_default();
        Ok((snap, plan))
    }
}

/// The snapshot a decommission plans against: its manifest without
/// services or checks, so every instance there is a `delete`.
pub(super) fn decommissioning(mut snap: Snapshot) -> Snapshot {
    let mut m = (*snap.manifest).clone();
    m.services.clear();
    m.verify.clear();
    snap.manifest = m.into();
    snap
}
