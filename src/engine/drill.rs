//! DR drills in the engine: planning a snapshot into an isolated namespace,
//! the end of a drill (verdict, teardown or keep, promotion), and the
//! sweeper that removes whatever finished or unknown drills left behind.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Engine, StartRequest, region_of};
use crate::domain::drill::{self, DrillSpec, Judgement, Verdict};
use crate::domain::plan::Plan;
use crate::domain::run::RunView;
use crate::domain::snapshot::Snapshot;
use crate::error::{Error, Result};
use crate::provider::{CALL_LIMIT, ComputeProvider, bounded};
use crate::store::codec::{self, Persisted};
use crate::store::{DynStore, PutOptions, SnapshotRepo, layout};

/// What `lifeboat drill run` asks for beyond a recovery's options.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Keep a passed drill up this long, then tear it down.
    pub keep_for: Duration,
    /// Cancel (and tear down) after this long; default 2 × the RTO objective.
    pub timeout: Option<Duration>,
    pub promote_on_pass: bool,
    /// The schedule that fired it.
    pub schedule: Option<String>,
}

/// What a teardown removed: written by the run, or later by the sweeper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Teardown {
    pub format_version: u32,
    pub run_id: String,
    pub at: String,
    /// `run` (at the drill's end), `sweeper`.
    pub by: String,
    pub instances: Vec<String>,
    /// Not removed (empty: nothing is left).
    pub remaining: Vec<String>,
}

impl Persisted for Teardown {
    const KIND: &'static str = "drill teardown record";
    const FORMAT: u32 = 1;
}

/// What one sweep did, and where it could not look (it swept the rest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sweep {
    pub swept: Vec<Swept>,
    pub errors: Vec<String>,
}

/// One namespace the sweeper looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct Swept {
    pub namespace: String,
    pub region: String,
    pub run_id: String,
    /// Why it was (or was not) removed.
    pub reason: String,
    pub removed: Vec<String>,
    pub remaining: Vec<String>,
}

impl Engine {
    /// Plans a drill: the snapshot's manifest isolated by its provider into
    /// the namespace `ENV.drill.RUN`, under the lease `drill/ENV/REGION`.
    pub(super) async fn plan_drill(
        &self,
        req: &StartRequest,
        opts: &DrillOptions,
        id: &str,
    ) -> Result<(Snapshot, Plan, DrillSpec)> {
        if opts.keep_for > drill::MAX_KEEP {
            return Err(Error::InvalidArgument(format!(
                "--keep-for {} is over the limit of 24h: a drill is torn down within a day",
                crate::domain::duration::human(opts.keep_for)
            )));
        }
        if opts.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidArgument("--timeout must be longer than 0s".into()));
        }
        let snap = self.repo.get_by_ref(&req.environment, &req.reference).await?;
        let region = region_of(&snap, req.region.as_deref())?;
        if let Some(r) = self.repo.rejection(&req.environment, snap.version).await? {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {} of {} was rejected by {} ({}): a rejected snapshot is never drilled",
                snap.version, req.environment, r.by, r.reason
            )));
        }
        let provider = self.ctx.providers.get(snap.manifest.provider).map_err(|why| {
            Error::FailedPrecondition(format!("cannot drill snapshot {} of {}: {why}", snap.version, req.environment))
        })?;
        // Everything that can fail is read before the isolation makes anything.
        let known_good = self.repo.get_ref(&req.environment, "known-good").await?.map(|r| r.version);
        let namespace = drill::namespace(&req.environment, id);
        let isolation = bounded(
            "isolation",
            CALL_LIMIT,
            &CancellationToken::new(),
            provider.isolation(&snap.manifest, &region, &namespace),
        )
        .await
        .map_err(|e| Error::FailedPrecondition(format!("cannot isolate a drill of {}: {e}", req.environment)))?;
        let objective = snap.manifest.rto_objective.map(|d| d.0);
        let timeout = opts.timeout.or(objective.map(|o| o * 2)).unwrap_or(drill::DEFAULT_TIMEOUT);
        let spec = DrillSpec {
            namespace,
            isolation,
            timeout_ms: timeout.as_millis() as u64,
            keep_for_ms: opts.keep_for.as_millis() as u64,
            promote_on_pass: opts.promote_on_pass,
            known_good_at_start: known_good,
            rto_objective_ms: objective.map(|o| o.as_millis() as u64),
            schedule: opts.schedule.clone(),
            warnings: Vec::new(),
        };
        let mut spec = spec;
        let mut isolated = snap.clone();
        isolated.manifest = drill::isolate(&snap.manifest, &spec, id).into();
        spec.warnings = spec.isolation.warnings.clone();
        spec.warnings.extend(drill::isolation_warnings(&isolated.manifest, &spec.isolation.addresses));
        for w in &spec.warnings {
            tracing::warn!(run_id = %id, "drill isolation: {w}");
        }
        let lease_key = format!("drill/{}/{region}", req.environment);
        match self.plan_snapshot(isolated, &spec.namespace, &region, &lease_key, false, false).await {
            Ok((snap, plan)) => Ok((snap, plan, spec)),
            Err(e) => {
                self.undo_isolation(&snap, &spec.namespace, &region).await;
                Err(e)
            }
        }
    }

    /// What a drill's isolation made (a network namespace) goes with a
    /// drill refused before it ran; the sweeper removes it if this fails.
    pub(super) async fn undo_isolation(&self, snap: &Snapshot, namespace: &str, region: &str) {
        let Ok(provider) = self.ctx.providers.get(snap.manifest.provider) else { return };
        let gone = provider.tear_down(namespace, region);
        if let Err(e) = bounded("tear down", CALL_LIMIT, &CancellationToken::new(), gone).await {
            tracing::warn!(namespace, error = %e, "cannot undo a refused drill's isolation; the sweeper will");
        }
    }

    /// Removes what finished or unknown drills left behind (and kept drills
    /// whose time is up). Running drills are left alone.
    pub async fn sweep_drills(&self) -> Result<Sweep> {
        let mut out = Sweep::default();
        for name in self.ctx.providers.names() {
            let Ok(provider) = self.ctx.providers.get_named(name) else { continue };
            let leftovers =
                match bounded("drill leftovers", CALL_LIMIT, &CancellationToken::new(), provider.drill_leftovers())
                    .await
                {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(provider = name, error = %e, "cannot list drill leftovers");
                        out.errors.push(format!("{name}: cannot list drill leftovers: {e}"));
                        continue;
                    }
                };
            for failed in leftovers.failed {
                tracing::warn!(provider = name, "{failed}");
                out.errors.push(format!("{name}: {failed}"));
            }
            for (namespace, region) in leftovers.found {
                let Some((_, run_id)) = drill::parse_namespace(&namespace) else { continue };
                let run_id = run_id.to_string();
                // The run, read once: whether to sweep, where, and its report after.
                let (view, reason) = match self.get(&run_id).await {
                    Ok(v) if !v.state.is_finished() => continue,
                    Ok(v) => {
                        let reason = match &v.kept_until {
                            Some(until) if !kept_time_is_up(until, self.ctx.clock.now()) => continue,
                            Some(until) => format!("drill {run_id} was kept until {until}"),
                            None => format!("drill {run_id} finished ({})", v.state.as_str()),
                        };
                        (Some(v), reason)
                    }
                    Err(Error::NotFound(_)) => (None, format!("drill {run_id} is unknown to the store")),
                    // A corrupt run is named, and the other drills are still swept.
                    Err(e) if e.corruption().is_some() => {
                        out.errors.push(format!("{name}: drill {namespace} not swept: {e}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let region = match (&view, region.is_empty()) {
                    (Some(v), true) => v.spec.region.clone(),
                    _ => region,
                };
                let (removed, remaining) = tear_down(provider.as_ref(), &namespace, &region).await;
                tracing::info!(run_id = %run_id, namespace = %namespace, removed = removed.len(), remaining = remaining.len(), "drill sweeper: {reason}");
                if let Some(view) = view {
                    let record = Teardown {
                        format_version: 1,
                        run_id: run_id.clone(),
                        at: self.ctx.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        by: "sweeper".into(),
                        instances: removed.clone(),
                        remaining: remaining.clone(),
                    };
                    write_teardown(&self.ctx.store, &record).await;
                    super::report::store(&self.ctx.store, &view).await;
                }
                out.swept.push(Swept { namespace, region, run_id, reason, removed, remaining });
            }
        }
        Ok(out)
    }

    /// Sweeps drill leftovers now and then every `every`, until aborted.
    pub fn sweep_drills_every(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.sweep_drills().await {
                    tracing::warn!(error = %e, "cannot sweep drill leftovers");
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// A drill's teardown record, if it was torn down.
    pub async fn teardown_of(&self, run_id: &str) -> Result<Option<Teardown>> {
        read_teardown(&self.ctx.store, run_id).await
    }
}

fn kept_time_is_up(until: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::DateTime::parse_from_rfc3339(until).map_or(true, |t| now >= t.with_timezone(&chrono::Utc))
}

/// Tears a namespace down, a few times if the provider fails: what was
/// removed and what is still there (a failure is reported as remaining).
pub(super) async fn tear_down(
    provider: &dyn ComputeProvider,
    namespace: &str,
    region: &str,
) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut last_error = String::new();
    // Three attempts: the first at once, then two pauses.
    let pauses = std::iter::once(Duration::ZERO).chain(crate::backoff::pauses_at_most(
        Duration::from_millis(500),
        Duration::from_secs(2),
        2,
    ));
    for pause in pauses {
        tokio::time::sleep(pause).await;
        match bounded("tear down", CALL_LIMIT, &CancellationToken::new(), provider.tear_down(namespace, region)).await {
            Ok((ids, remaining)) => {
                removed.extend(ids);
                removed.sort();
                removed.dedup();
                if remaining.is_empty() {
                    return (removed, Vec::new());
                }
                last_error = format!("still there: {}", remaining.join(", "));
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    tracing::error!(namespace, region, error = %last_error, "drill teardown is incomplete; the sweeper tries again");
    (removed, vec![last_error])
}

pub(super) async fn write_teardown(store: &DynStore, t: &Teardown) {
    if let Err(e) = store.put(&layout::drill_teardown(&t.run_id), codec::encode(t), PutOptions::overwrite()).await {
        tracing::error!(run_id = %t.run_id, error = %e, "cannot write the drill's teardown record");
    }
}

pub(super) async fn read_teardown(store: &DynStore, run_id: &str) -> Result<Option<Teardown>> {
    let key = layout::drill_teardown(run_id);
    match store.get(&key).await? {
        None => Ok(None),
        Some(o) => Ok(Some(codec::decode(&o.bytes, &key, &store.describe())?)),
    }
}

/// At a passed drill's end: record the pass, and with `promote_on_pass`
/// move known-good (compare-and-swap against the one the drill started
/// from). Returns the promotion's outcome, if one was asked for.
pub(super) async fn after_pass(store: &DynStore, view: &RunView, j: &Judgement) -> Option<(bool, String)> {
    let spec = &view.spec;
    let d = spec.drill.as_ref()?;
    let repo = SnapshotRepo::new(store.clone());
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if j.verdict == Verdict::Passed
        && let Err(e) = repo.record_passed_drill(&spec.environment, spec.snapshot_version, &spec.id, &at).await
    {
        tracing::error!(run_id = %spec.id, error = %e, "cannot record the passed drill");
    }
    if !d.promote_on_pass {
        return None;
    }
    let v = spec.snapshot_version;
    if j.verdict != Verdict::Passed {
        return Some((false, format!("known-good not moved: the drill {}", j.verdict.as_str().replace('_', " "))));
    }
    if d.known_good_at_start == Some(v) {
        return Some((false, format!("known-good already is snapshot {v}")));
    }
    let moved = repo.promote_drilled(&spec.environment, v, &spec.id, d.known_good_at_start).await;
    // A promotion like any other: its audit record names who asked for it
    // (who started the drill, or its schedule) and the version.
    let outcome = match &moved {
        Ok(_) => format!("ok (drill {} passed, --promote-on-pass)", spec.id),
        Err(e) => format!("error: {e}"),
    };
    let audit = crate::store::AuditLog::new(store.clone());
    let target = format!("{}@v{v}", spec.environment);
    if let Err(e) = audit.record(&spec.created_by, "snapshot.promote", &target, &outcome).await {
        tracing::error!(run_id = %spec.id, error = %e, "cannot write the audit record of a promotion on pass");
    }
    Some(match moved {
        Ok(_) => (true, format!("known-good moved to snapshot {v} (drill {} passed)", spec.id)),
        Err(e) => (false, format!("known-good not moved to snapshot {v}: {e}")),
    })
}
