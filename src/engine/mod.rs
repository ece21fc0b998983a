//! The recovery engine: plans, starts, resumes, cancels and observes runs.
//! Runs live in the object store (spec, journal, lease, requests), so any
//! server can pick up a run another one started.

pub mod clock;
mod decommission;
mod depth;
pub mod drift;
pub mod drill;
mod executor;
pub mod journal;
pub mod lease;
pub mod logs;
pub mod notify;
mod promotion;
mod proposal;
pub use promotion::{PromoteRequest, Promoted};
pub use proposal::DEFAULT_PROPOSAL_TIMEOUT;
pub mod report;
pub mod schedule;
pub mod status;
pub mod streams;
pub mod verify;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use self::clock::{Clock, rfc3339};
use self::executor::Executor;
use self::journal::Journal;
use self::lease::Lease;
use crate::domain::duration::human;
use crate::domain::manifest;
use crate::domain::plan::{self, Check, LiveInstance, Plan, PlanInput, StepChanges};
use crate::domain::run::RunState;
use crate::domain::run::{Action, Entry, Event, Narrated, Narrator, RUN_FORMAT, ReplanAt, RunKind, RunSpec, RunView};
use crate::domain::snapshot::Snapshot;
use crate::error::{Error, Result};
use crate::provider::{CALL_LIMIT, Providers, bounded};
use crate::store::codec::{self, Persisted};
use crate::store::{DynStore, PutOptions, SnapshotRepo, layout};
use tokio_util::sync::CancellationToken;

/// What every run of this server shares.
pub struct RunContext {
    pub store: DynStore,
    /// Every provider this server has; each snapshot names the one it needs.
    pub providers: Providers,
    pub clock: Arc<dyn Clock>,
    /// This server process, as recorded in leases and journals.
    pub owner: String,
    pub lease_ttl: Duration,
    /// Where run notifications go (`[[notify]]`); the default sends none.
    pub notifier: notify::Notifier,
    /// How long a proposed run waits for its approval before it expires.
    pub proposal_timeout: Duration,
    /// What the cutover's safety rests on (clock skew, fencing).
    pub safety: Safety,
}

/// The assumptions the cutover rests on, stated (`[engine] max_clock_skew`,
/// `cutover`). Another server judges a lease lapsed by its own wall clock;
/// this owner acts without a journal write only while the lease surely
/// holds: its last renewal plus the TTL, less a third of the TTL for pauses,
/// less the most two servers' clocks may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Safety {
    /// How far apart two servers' clocks may be (default 1s).
    pub max_clock_skew: Duration,
    /// `Fenced`: `healthy` is durable before every cutover (one journal
    /// write more on each service's critical path; no reliance on clocks).
    pub cutover: CutoverMode,
}

impl Default for Safety {
    fn default() -> Safety {
        Safety { max_clock_skew: DEFAULT_MAX_CLOCK_SKEW, cutover: CutoverMode::Fast }
    }
}

pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);

/// `[engine] cutover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutoverMode {
    /// While the lease surely holds, `healthy` is written beside the cutover, not before it.
    #[default]
    Fast,
    /// `healthy` is durable before every cutover.
    Fenced,
}

/// A request to a running executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    Cancel { by: String },
    Approve { service: String, by: String },
}

pub struct StartRequest {
    pub environment: String,
    pub reference: String,
    pub region: Option<String>,
    pub parallelism: Option<usize>,
    pub force: bool,
    /// Delete running services absent from the snapshot (after the rest is healthy).
    pub prune: bool,
    /// Wait for `run approve ID` before anything launches.
    pub propose: bool,
    /// Remove every instance of the environment in the region, launching nothing.
    pub decommission: bool,
    pub kind: RunKind,
    pub actor: String,
    /// For `kind: Drill`.
    pub drill: Option<drill::DrillOptions>,
}

struct Active {
    control: mpsc::Sender<Control>,
    events: broadcast::Sender<Entry>,
    task: Option<tokio::task::AbortHandle>,
    /// The run's final view, once it finished (`Executor::finished`).
    finished: Arc<std::sync::OnceLock<RunView>>,
}

pub struct Engine {
    ctx: Arc<RunContext>,
    repo: SnapshotRepo,
    active: Arc<Mutex<HashMap<String, Active>>>,
    default_parallelism: usize,
    /// Bounds the `watch` streams served at once.
    watchers: Arc<streams::StreamSlots>,
    /// The latest drift check per (environment, region).
    drift: Mutex<BTreeMap<(String, String), drift::DriftReport>>,
}

/// How many `watch` streams one server serves at once.
pub use streams::MAX_WATCHES;

pub const DEFAULT_PARALLELISM: usize = 16;
pub const MAX_PARALLELISM: usize = 1024;

/// The region a run of a snapshot goes to: the one asked for, or the manifest's.
fn region_of(snap: &Snapshot, region: Option<&str>) -> Result<String> {
    let region = region.filter(|r| !r.is_empty()).unwrap_or(&snap.manifest.region).to_string();
    if !manifest::is_valid_name(&region) {
        return Err(Error::InvalidArgument(format!("\"{region}\" is not a valid region name")));
    }
    Ok(region)
}

/// `r-<UTC time to the millisecond>-<random>`: IDs sort by start time.
fn new_run_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("r-{}-{}", now.format("%Y%m%dT%H%M%S%3f"), &rand[..6])
}

fn check_run_id(id: &str) -> Result<()> {
    let ok = id.len() <= 64 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "\"{}\" is not a run ID (e.g. r-20261127T152300123-1a2b3c)",
            crate::error::shown(id)
        )))
    }
}

/// A cancel or approve request, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    pub format_version: u32,
    #[serde(flatten)]
    pub control: Control,
}

impl Persisted for RequestRecord {
    const KIND: &'static str = "run request";
    const FORMAT: u32 = 1;
}

impl Persisted for RunSpec {
    const KIND: &'static str = "run record";
    /// 2: a drill in a network namespace of its own (an older server, which
    /// would run it without one, refuses it); every other run is written as 1.
    const FORMAT: u32 = 2;
    const OLDEST: u32 = RUN_FORMAT;
}

/// Measured launch-to-healthy times per service, for plan estimates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Timings {
    pub format_version: u32,
    pub services: BTreeMap<String, u64>,
}

impl Persisted for Timings {
    const KIND: &'static str = "service timings";
    const FORMAT: u32 = 1;
}

/// Pending cancel/approve requests of a run, by request ID. A request that
/// does not decode is an integrity error: acting on half of it, or
/// silently dropping a cancel, would both be wrong.
pub(crate) async fn read_requests(store: &DynStore, run_id: &str) -> Result<Vec<(String, Control)>> {
    let mut out = Vec::new();
    for key in store.list(&layout::run_requests_prefix(run_id)).await? {
        let Some(obj) = store.get(&key).await? else { continue };
        let r: RequestRecord = codec::decode(&obj.bytes, &key, &store.describe())?;
        out.push((key, r.control));
    }
    Ok(out)
}

/// The recorded timings of an environment. They only inform estimates, so
/// a corrupt record is reported and ignored rather than blocking a recovery.
pub(crate) async fn read_timings(store: &DynStore, env: &str) -> Timings {
    let key = layout::timings(env);
    match store.get(&key).await {
        Ok(Some(obj)) => match codec::decode::<Timings>(&obj.bytes, &key, &store.describe()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring service timings; the next successful run rewrites them");
                Timings { format_version: 1, ..Timings::default() }
            }
        },
        Ok(None) => Timings { format_version: 1, ..Timings::default() },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read service timings; estimating without them");
            Timings { format_version: 1, ..Timings::default() }
        }
    }
}

/// Remembers how long each service took, for the next plan's estimates.
pub(crate) async fn record_timings(store: &DynStore, view: &RunView) {
    let key = layout::timings(&view.spec.environment);
    let mut timings = read_timings(store, &view.spec.environment).await;
    for step in &view.spec.steps {
        let s = &view.services[&step.service];
        if let (Some(a), Some(b)) = (view.launch_began_ms(step), s.healthy_ms) {
            timings.services.insert(s.name.clone(), b.saturating_sub(a));
        }
    }
    if let Err(e) = store.put(&key, codec::encode(&timings), PutOptions::overwrite()).await {
        tracing::warn!(error = %e, "cannot record service timings");
    }
}

/// Runs, newest first, and the records among them that could not be read.
#[derive(Debug, Default)]
pub struct RunList {
    pub runs: Vec<RunView>,
    pub corrupt: Vec<CorruptRun>,
}

/// A run whose record or journal fails its checks.
#[derive(Debug, Clone)]
pub struct CorruptRun {
    /// Known when only the journal is bad.
    pub environment: Option<String>,
    pub corruption: crate::error::Corruption,
}

impl Engine {
    pub fn new(ctx: RunContext) -> Arc<Engine> {
        Arc::new(Engine {
            repo: SnapshotRepo::new(ctx.store.clone()),
            ctx: Arc::new(ctx),
            active: Arc::new(Mutex::new(HashMap::new())),
            default_parallelism: DEFAULT_PARALLELISM,
            watchers: Arc::new(streams::StreamSlots::default()),
            drift: Mutex::new(BTreeMap::new()),
        })
    }

    async fn timings(&self, env: &str) -> BTreeMap<String, u64> {
        read_timings(&self.ctx.store, env).await.services
    }

    /// The plan a recovery would follow, with preflight results. `prune`:
    /// running services absent from the snapshot are deleted.
    pub async fn plan(
        &self,
        env: &str,
        reference: &str,
        region: Option<&str>,
        force: bool,
        prune: bool,
    ) -> Result<(Snapshot, Plan)> {
        let snap = self.repo.get_by_ref(env, reference).await?;
        let region = region_of(&snap, region)?;
        self.plan_snapshot(snap, env, &region, &region, force, prune).await
    }

    /// The plan of a snapshot's manifest (a drill's is isolated) for what
    /// runs as `target` (the environment, or a drill's namespace) in a region.
    async fn plan_snapshot(
        &self,
        snap: Snapshot,
        target: &str,
        region: &str,
        lease_key: &str,
        force: bool,
        prune: bool,
    ) -> Result<(Snapshot, Plan)> {
        let env = snap.environment.clone();
        let env = env.as_str();
        let m = &snap.manifest;
        let region = region.to_string();
        // A provider this server lacks fails preflight (the plan still shows).
        let provider = self.ctx.providers.get(m.provider);
        // An inventory that cannot be read fails preflight too: the plan
        // shows, and says why nothing can be recovered yet.
        let mut inventory_failure = None;
        let inventory = async {
            match &provider {
                Ok(p) => {
                    bounded("inventory", CALL_LIMIT, &CancellationToken::new(), p.inventory(target, &region)).await
                }
                Err(_) => Ok(Vec::new()),
            }
        };
        // Independent reads at once: on S3 each is a round trip before the first launch.
        let (inventory, history, rejection, lease) = tokio::join!(
            inventory,
            self.timings(env),
            self.repo.rejection(env, snap.version),
            self.lease_check(lease_key)
        );
        let inventory = inventory.unwrap_or_else(|e| {
            inventory_failure = Some(format!("cannot read what runs of {env} in {region}: {e}"));
            Vec::new()
        });
        // Where traffic points is part of what runs: a service whose traffic
        // goes elsewhere (after a failover) has it moved back.
        let mut traffic_failure = None;
        let traffic = match &provider {
            Ok(p) => {
                let read = p.traffic(target, m, &region, &inventory);
                bounded("traffic", CALL_LIMIT, &CancellationToken::new(), read).await.unwrap_or_else(|e| {
                    // Unknown is not "here": a run that assumed it could
                    // report a region recovered while its traffic goes elsewhere.
                    traffic_failure = Some(format!("cannot read where the traffic of {env} in {region} points: {e}"));
                    Vec::new()
                })
            }
            Err(_) => Vec::new(),
        };
        let mut plan = plan::plan(PlanInput {
            manifest: m,
            snapshot_version: snap.version,
            snapshot_digest: &snap.digest,
            region: &region,
            inventory: &inventory,
            force,
            prune,
            history: &history,
            traffic: &traffic,
        });
        if let Some(why) = traffic_failure {
            plan.preflight.push(Check::fail("traffic", why));
        }
        plan.traffic = traffic;
        let launching: Vec<String> = plan
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::Create | Action::Replace))
            .map(|s| s.service.clone())
            .collect();
        if let Some(why) = inventory_failure {
            plan.preflight.push(Check::fail("inventory", why));
        }
        match &provider {
            Ok(p) => {
                match tokio::time::timeout(CALL_LIMIT, p.preflight(m, &region, &launching)).await {
                    Ok(checks) => plan.preflight.extend(checks),
                    Err(_) => plan.preflight.push(Check::fail(
                        "provider",
                        format!("the {} provider's checks did not finish within {}", p.name(), human(CALL_LIMIT)),
                    )),
                }
                plan.warnings.extend(p.warnings(m));
            }
            Err(why) => plan.preflight.push(Check::fail(
                "provider",
                format!("snapshot {} of {env} uses the {} provider, but {why}", snap.version, m.provider.as_str()),
            )),
        }
        plan.preflight.push(match rejection? {
            Some(r) => Check::fail(
                "snapshot-status",
                format!("snapshot {} was rejected by {} at {}: {}", snap.version, r.by, r.at, r.reason),
            ),
            None => Check::pass("snapshot-status", format!("snapshot {} ({}) verified", snap.version, snap.digest)),
        });
        plan.preflight.push(lease?);
        plan.changes = self.changes(&snap, &plan, &inventory).await;
        Ok((snap, plan))
    }

    /// For each replaced service: the settings that differ from the snapshot
    /// its instances were launched from (found through the run that launched
    /// them). Best effort: a run or snapshot that cannot be read leaves the
    /// service's reason alone.
    async fn changes(&self, snap: &Snapshot, plan: &Plan, inventory: &[LiveInstance]) -> BTreeMap<String, StepChanges> {
        let mut out = BTreeMap::new();
        let mut snapshots: BTreeMap<String, Option<Snapshot>> = BTreeMap::new();
        for step in plan.steps.iter().filter(|s| s.action == Action::Replace) {
            // An instance that differs tells most; any tells replicas changes.
            let mut live: Vec<&LiveInstance> = inventory.iter().filter(|i| i.service == step.service).collect();
            live.sort_by_key(|i| i.image == step.image && i.fingerprint == step.fingerprint);
            let Some(old) = live.first() else { continue };
            if !snapshots.contains_key(&old.run_id) {
                let from = match self.spec(&old.run_id).await {
                    Ok(spec) if spec.environment == snap.environment => {
                        self.repo.get(&spec.environment, spec.snapshot_version).await.ok()
                    }
                    _ => None,
                };
                snapshots.insert(old.run_id.clone(), from);
            }
            let Some(Some(from)) = snapshots.get(&old.run_id) else { continue };
            let d = crate::domain::snapshot::diff(&from.manifest, &snap.manifest);
            if let Some(sd) = d.services.into_iter().find(|s| s.service == step.service) {
                out.insert(step.service.clone(), StepChanges { from_version: from.version, fields: sd.fields });
            }
        }
        out
    }

    async fn lease_check(&self, region: &str) -> Result<Check> {
        let now = self.ctx.clock.now();
        Ok(match lease::read(&self.ctx.store, region).await? {
            Some((r, _)) if !r.is_free(now) => Check::fail(
                "region-lease",
                format!("region {region} is leased by run {} until {}", r.run_id, r.expires_at),
            ),
            Some((r, _)) if !r.released && !self.is_finished_or_waiting(&r.run_id).await? => Check::fail(
                "region-lease",
                format!(
                    "run {} on region {region} did not finish (its server stopped): resume it with `lifeboat run resume {}` or cancel it with `lifeboat run cancel {}`",
                    r.run_id, r.run_id, r.run_id
                ),
            ),
            _ => Check::pass("region-lease", format!("region {region} is free")),
        })
    }

    async fn is_finished(&self, run_id: &str) -> Result<bool> {
        match self.get(run_id).await {
            Ok(v) => Ok(v.state.is_finished()),
            Err(Error::NotFound(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Finished, or a proposal waiting for approval (which runs nowhere and
    /// needs no lease: one left by an older server's waiting proposal is free).
    async fn is_finished_or_waiting(&self, run_id: &str) -> Result<bool> {
        match self.get(run_id).await {
            Ok(v) => Ok(v.state.is_finished() || v.awaiting_approval()),
            Err(Error::NotFound(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The snapshot a run deploys (a drill's isolated), checked against the
    /// digest the run was planned with.
    async fn run_snapshot(&self, spec: &RunSpec) -> Result<Snapshot> {
        let mut snap = self.repo.get(&spec.environment, spec.snapshot_version).await?;
        if snap.digest != spec.snapshot_digest {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {} of {} no longer has the digest run {} started with",
                spec.snapshot_version, spec.environment, spec.id
            )));
        }
        if let Some(d) = &spec.drill {
            snap.manifest = crate::domain::drill::isolate(&snap.manifest, d, &spec.id).into();
        }
        if spec.decommission {
            snap = decommission::decommissioning(snap);
        }
        Ok(snap)
    }

    /// Plans, takes the region's lease, records the run and starts it.
    pub async fn start(self: &Arc<Self>, req: StartRequest) -> Result<RunView> {
        let parallelism = req.parallelism.unwrap_or(self.default_parallelism);
        if parallelism == 0 || parallelism > MAX_PARALLELISM {
            return Err(Error::InvalidArgument(format!("parallelism must be 1 to {MAX_PARALLELISM}")));
        }
        let now = self.ctx.clock.now();
        let id = new_run_id(now);
        let (snap, plan, drill) = match (&req.kind, &req.drill) {
            (RunKind::Drill, Some(opts)) => {
                let (snap, plan, drill) = self.plan_drill(&req, opts, &id).await?;
                (snap, plan, Some(drill))
            }
            (RunKind::Drill, None) => return Err(Error::InvalidArgument("a drill needs its drill options".into())),
            (RunKind::Recovery, _) if req.decommission => {
                let (snap, plan) =
                    self.plan_decommission(&req.environment, &req.reference, req.region.as_deref(), req.force).await?;
                (snap, plan, None)
            }
            (RunKind::Recovery, _) => {
                let (snap, plan) =
                    self.plan(&req.environment, &req.reference, req.region.as_deref(), req.force, req.prune).await?;
                (snap, plan, None)
            }
        };
        let namespace = drill.as_ref().map(|d| (d.namespace.clone(), plan.region.clone()));
        let undo = namespace.as_ref().map(|_| snap.clone());
        let started = self.start_planned(req, id, now, parallelism, snap, plan, drill).await;
        if let (Err(_), Some((ns, region)), Some(snap)) = (&started, namespace, undo) {
            self.undo_isolation(&snap, &ns, &region).await;
        }
        started
    }

    /// The rest of `start`, once planned: preflight, then the run proposed,
    /// or recorded and started under its lease.
    #[allow(clippy::too_many_arguments)]
    async fn start_planned(
        self: &Arc<Self>,
        req: StartRequest,
        id: String,
        now: chrono::DateTime<chrono::Utc>,
        parallelism: usize,
        snap: Snapshot,
        plan: Plan,
        drill: Option<crate::domain::drill::DrillSpec>,
    ) -> Result<RunView> {
        if let Some(c) = plan.preflight.iter().find(|c| c.name == "region-lease" && !c.ok) {
            return Err(Error::Conflict(c.message.clone()));
        }
        let failed: Vec<String> = plan.preflight.iter().filter(|c| !c.ok).map(|c| c.message.clone()).collect();
        if !failed.is_empty() {
            return Err(Error::FailedPrecondition(format!("preflight failed: {}", failed.join("; "))));
        }
        let in_netns = drill.as_ref().is_some_and(|d| d.isolation.network.is_some());
        let spec = RunSpec {
            format_version: if in_netns { 2 } else { RUN_FORMAT },
            id: id.clone(),
            kind: req.kind,
            environment: req.environment.clone(),
            region: plan.region.clone(),
            snapshot_version: snap.version,
            snapshot_digest: snap.digest.clone(),
            parallelism,
            created_at: rfc3339(now),
            created_by: req.actor.clone(),
            steps: plan.steps,
            critical_path: plan.critical_path,
            critical_path_ms: plan.critical_path_ms,
            proposed: req.propose,
            rto_objective_ms: snap.manifest.rto_objective.map(|d| d.0.as_millis() as u64),
            force: req.force,
            prune: req.prune || req.decommission,
            decommission: req.decommission,
            drill,
        };
        if spec.proposed {
            // It waits without the lease; approving it plans again.
            return self.propose(spec).await;
        }
        let lease =
            Lease::acquire(&self.ctx.store, &spec.lease_key(), &id, &self.ctx.owner, self.ctx.lease_ttl, now).await?;
        let spec = Arc::new(spec);
        // `run.json` commits the run: the index marker goes first (an orphan
        // marker is skipped by `list`). Both are written while the executor
        // prepares (at 10,000 services each takes about 10 ms), and the run's
        // first journal write waits for them: if either fails, the lease is
        // released and nothing is left that a sweep would execute.
        let registration = {
            let (store, spec) = (self.ctx.store.clone(), spec.clone());
            tokio::spawn(async move {
                let bytes = codec::encode_compact(&*spec);
                store.put(&layout::run_index(&spec.id), Bytes::from_static(b"{}"), PutOptions::create()).await?;
                store.put(&layout::run_spec(&spec.id), bytes, PutOptions::create()).await?;
                Ok(())
            })
        };
        let journal = Journal::new_run(self.ctx.store.clone(), &id);
        self.launch(snap, spec, journal, Vec::new(), lease, Some(registration)).await
    }

    /// Runs a run: `registration`, for a new run, writes its record (the
    /// run's first journal write waits for it).
    async fn launch(
        self: &Arc<Self>,
        snap: Snapshot,
        spec: Arc<RunSpec>,
        journal: Journal,
        entries: Vec<Entry>,
        lease: Lease,
        registration: Option<executor::Registration>,
    ) -> Result<RunView> {
        let id = spec.id.clone();
        let (events, _) = broadcast::channel(4096);
        let (control_tx, control_rx) = mpsc::channel(64);
        let ex = Executor::begin(
            self.ctx.clone(),
            snap.manifest,
            spec,
            journal,
            &entries,
            lease,
            events.clone(),
            control_rx,
            registration,
        )
        .await?;
        let view = ex.view().clone();
        let mut active = self.active.lock().expect("lock");
        active.insert(id.clone(), Active { control: control_tx, events, task: None, finished: ex.finished() });
        let registry = self.active.clone();
        let run_id = id.clone();
        let engine = self.clone();
        let handle = tokio::spawn(async move {
            match ex.run().await {
                Ok(v) => {
                    tracing::info!(run_id = %run_id, state = v.state.as_str(), "run finished");
                    registry.lock().expect("lock").remove(&run_id);
                    // What `status` says about drift must not predate the run.
                    if v.spec.kind == RunKind::Recovery
                        && let Err(e) = engine.drift(&v.spec.environment, Some(&v.spec.region)).await
                    {
                        tracing::debug!(run_id = %run_id, error = %e, "no drift check after the run");
                    }
                }
                Err(e) => {
                    tracing::error!(run_id = %run_id, error = %e, "run stopped; it can be resumed");
                    registry.lock().expect("lock").remove(&run_id);
                }
            }
        });
        if let Some(a) = active.get_mut(&id) {
            a.task = Some(handle.abort_handle());
        }
        Ok(view)
    }

    /// Stops every run of this server where it is, without cleaning up and
    /// without releasing leases: the runs stay resumable (at shutdown, and
    /// in tests that simulate a crash).
    pub fn abort_all(&self) {
        let mut active = self.active.lock().expect("lock");
        for (_, a) in active.drain() {
            if let Some(t) = a.task {
                t.abort();
            }
        }
    }

    /// Takes over a run that is not running anywhere (its server stopped).
    /// The services it has not acted on yet are planned again against what
    /// runs now (the region may have changed while nobody ran it). A
    /// proposal waiting for approval is left waiting: it runs nowhere.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<RunView> {
        check_run_id(id)?;
        if self.active.lock().expect("lock").contains_key(id) {
            return self.get(id).await;
        }
        let spec = self.spec(id).await?;
        let (_, entries) = Journal::open(self.ctx.store.clone(), id).await?;
        let view = RunView::replay(spec.clone(), &entries);
        if view.state.is_finished() {
            return Err(Error::FailedPrecondition(format!("run {id} already finished ({})", view.state.as_str())));
        }
        if view.awaiting_approval() && !view.cancel_requested {
            return Ok(view);
        }
        let now = self.ctx.clock.now();
        let lease =
            Lease::acquire(&self.ctx.store, &spec.lease_key(), id, &self.ctx.owner, self.ctx.lease_ttl, now).await?;
        // Read after taking the lease, so no entry written meanwhile is missed.
        let resumed = async {
            let (mut journal, mut entries) = Journal::open(self.ctx.store.clone(), id).await?;
            if entries.is_empty() {
                // Its start failed before its first entry: whoever started it
                // was told so. It is abandoned, never executed.
                self.abandon(&mut journal).await?;
                return Err(Error::FailedPrecondition(format!(
                    "run {id} never started (its start failed before its first journal entry): it is abandoned, not executed"
                )));
            }
            let view = RunView::replay(spec.clone(), &entries);
            if !view.cancel_requested && !view.awaiting_approval() {
                let replan = self.replan(&view, ReplanAt::Resume).await?;
                if !replan.changes.is_empty() && replan.failed.is_empty() {
                    let (at, elapsed) = (rfc3339(self.ctx.clock.now()), self.elapsed_since_created(&spec));
                    let owner = self.ctx.owner.clone();
                    let events = vec![Event::RunResumed { owner }, Event::Replanned(replan)];
                    entries.extend(journal.append_all(at, elapsed, events).await?);
                }
            }
            let spec = RunView::replay(spec.clone(), &entries).spec;
            let snap = self.run_snapshot(&spec).await?;
            Ok::<_, Error>((snap, spec, journal, entries))
        }
        .await;
        match resumed {
            Ok((snap, spec, journal, entries)) => self.launch(snap, spec, journal, entries, lease, None).await,
            Err(e) => {
                let _ = lease.release().await;
                Err(e)
            }
        }
    }

    /// Ends a run whose start failed (its caller was told so): cancelled,
    /// as abandoned, so that nothing ever executes it.
    async fn abandon(&self, journal: &mut Journal) -> Result<()> {
        let at = rfc3339(self.ctx.clock.now());
        let by = "lifeboat: the run's start failed; it is abandoned, not executed";
        let events =
            vec![Event::CancelRequested { by: by.to_string() }, Event::RunFinished { state: RunState::Cancelled }];
        journal.append_all(at, 0, events).await?;
        Ok(())
    }

    /// Takes over every unfinished run whose region lease has lapsed (its
    /// server stopped): at start-up and then periodically, so that any live
    /// replica picks up the runs of one that died. A run whose lease was
    /// given back unfinished failed to start: it is ended as abandoned.
    pub async fn sweep(self: &Arc<Self>) -> Result<()> {
        if let Err(e) = self.expire_proposals().await {
            tracing::warn!(error = %e, "cannot look for proposals to expire");
        }
        for key in self.ctx.store.list(&layout::leases_prefix()).await? {
            let region = key.trim_start_matches(&layout::leases_prefix()).to_string();
            let Some((rec, _)) = lease::read(&self.ctx.store, &region).await? else { continue };
            let here = self.active.lock().expect("lock").contains_key(&rec.run_id);
            if here || !rec.is_free(self.ctx.clock.now()) {
                continue;
            }
            match self.is_finished(&rec.run_id).await {
                Ok(true) => continue,
                Ok(false) => {}
                // One unreadable run must not stop the takeover of the others.
                Err(e) => {
                    tracing::error!(run_id = %rec.run_id, error = %e, "cannot tell whether a run finished");
                    continue;
                }
            }
            if rec.released {
                // Only a run that failed to start gives its lease back unfinished.
                match Journal::open(self.ctx.store.clone(), &rec.run_id).await {
                    Ok((mut journal, _)) => match self.abandon(&mut journal).await {
                        Ok(()) => {
                            tracing::warn!(run_id = %rec.run_id, "a run whose start failed is ended as abandoned")
                        }
                        Err(e) => {
                            tracing::warn!(run_id = %rec.run_id, error = %e, "cannot end a run whose start failed")
                        }
                    },
                    Err(Error::NotFound(_)) => {}
                    Err(e) => tracing::debug!(run_id = %rec.run_id, error = %e, "cannot read a released run"),
                }
                continue;
            }
            match self.resume(&rec.run_id).await {
                Ok(_) => tracing::info!(run_id = %rec.run_id, region = %rec.region, "took over run"),
                Err(Error::Conflict(msg)) => tracing::debug!(run_id = %rec.run_id, "not taken over: {msg}"),
                Err(e) => tracing::error!(run_id = %rec.run_id, error = %e, "cannot take over run"),
            }
        }
        Ok(())
    }

    /// Sweeps now and then every half lease period, until aborted.
    pub fn supervise(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        let every = (self.ctx.lease_ttl / 2).max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.sweep().await {
                    tracing::warn!(error = %e, "cannot look for runs to take over");
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// A finished run's report: (JSON, HTML). Made (and stored) now when
    /// it is missing (a report write that failed).
    pub async fn report(&self, id: &str) -> Result<(String, String)> {
        let view = self.get(id).await?;
        if !view.state.is_finished() {
            return Err(Error::FailedPrecondition(format!(
                "run {id} is still {}; its report is written when it finishes (`lifeboat run watch {id}`)",
                view.state.as_str()
            )));
        }
        let read = |file: &'static str| async move {
            self.ctx.store.get(&layout::run_report(id, file)).await.map(|o| o.map(|o| o.bytes))
        };
        if let (Some(json), Some(html)) = (read("report.json").await?, read("report.html").await?) {
            // Both are checked: a changed report is refused, naming it, never handed out as the run's.
            let store = self.ctx.store.describe();
            let key = layout::run_report(id, "report.json");
            let doc: report::Report = codec::decode(&json, &key, &store)?;
            let integrity = |key: String, problem: String| Error::Integrity {
                what: "run report".into(),
                key,
                store: store.clone(),
                source: Box::new(crate::domain::snapshot::IntegrityError::Malformed(problem)),
            };
            if doc.run_id != id {
                return Err(integrity(key, format!("it is the report of run {}", crate::error::shown(&doc.run_id))));
            }
            let html_key = layout::run_report(id, "report.html");
            let digest = crate::domain::snapshot::sha256_hex(&html);
            let page_ok = if doc.html_sha256.is_empty() {
                html.starts_with(b"<!doctype html>") || html.starts_with(b"<!DOCTYPE html>")
            } else {
                doc.html_sha256 == digest
            };
            if !page_ok {
                return Err(integrity(
                    html_key,
                    format!(
                        "the page hashes to {digest}, not to the {} its report.json records; delete both to have them written again",
                        if doc.html_sha256.is_empty() { "HTML page" } else { &doc.html_sha256 }
                    ),
                ));
            }
            return Ok((String::from_utf8_lossy(&json).into_owned(), String::from_utf8_lossy(&html).into_owned()));
        }
        Ok(report::store(&self.ctx.store, &view).await)
    }

    async fn spec(&self, id: &str) -> Result<RunSpec> {
        check_run_id(id)?;
        let obj =
            self.ctx.store.get(&layout::run_spec(id)).await?.ok_or_else(|| Error::NotFound(format!("no run {id}")))?;
        codec::decode(&obj.bytes, &layout::run_spec(id), &self.ctx.store.describe())
    }

    /// A run's state: the fold of its journal (a finished run's compacted
    /// journal is one read).
    pub async fn get(&self, id: &str) -> Result<RunView> {
        // A run that just finished here: its executor is still writing the
        // compacted journal, and has the final view.
        let finished = self.active.lock().expect("lock").get(id).and_then(|a| a.finished.get().cloned());
        if let Some(view) = finished {
            return Ok(view);
        }
        let spec = self.spec(id).await?;
        let entries = journal::read_run(&self.ctx.store, id).await?;
        Ok(RunView::replay(spec, &entries))
    }

    /// The environment a run belongs to (`ENV/RUN_ID` in audit records).
    pub async fn run_target(&self, id: &str) -> Result<String> {
        Ok(format!("{}/{id}", self.spec(id).await?.environment))
    }

    /// A run ID from the ID itself or a unique prefix of it (as git takes
    /// commit hashes): `r-20261127T1523` is enough when no other run started
    /// in that minute.
    pub async fn resolve(&self, id_or_prefix: &str) -> Result<String> {
        check_run_id(id_or_prefix)?;
        // A whole ID (the common case, on every get and watch) is one read;
        // only a prefix lists the run index.
        if self.ctx.store.get(&layout::run_index(id_or_prefix)).await?.is_some() {
            return Ok(id_or_prefix.to_string());
        }
        let keys = self.ctx.store.list(&layout::run_index_prefix()).await?;
        let ids: Vec<&str> = keys.iter().filter_map(|k| layout::run_id_from_index(k)).collect();
        let matching: Vec<&str> = ids.iter().copied().filter(|id| id.starts_with(id_or_prefix)).collect();
        match matching.as_slice() {
            [] => Err(Error::NotFound(format!("no run {id_or_prefix}; `lifeboat run list` shows the recent ones"))),
            [one] => Ok(one.to_string()),
            many => {
                let shown: Vec<&str> = many.iter().rev().take(5).copied().collect();
                Err(Error::InvalidArgument(format!(
                    "run ID prefix {id_or_prefix} is ambiguous: it matches {} runs ({}{}); give more of the ID",
                    many.len(),
                    shown.join(", "),
                    if many.len() > shown.len() { ", …" } else { "" }
                )))
            }
        }
    }

    /// The newest runs first, optionally of one environment.
    /// Newest first; with `awaiting_approval`, only runs waiting for an approval.
    pub async fn list(&self, environment: Option<&str>, awaiting_approval: bool, limit: usize) -> Result<RunList> {
        self.list_of(environment, None, awaiting_approval, limit).await
    }

    /// The same, of one kind only (drills).
    pub async fn list_of(
        &self,
        environment: Option<&str>,
        kind: Option<RunKind>,
        awaiting_approval: bool,
        limit: usize,
    ) -> Result<RunList> {
        let mut keys = self.ctx.store.list(&layout::run_index_prefix()).await?;
        keys.reverse();
        let mut out = RunList::default();
        for key in keys {
            let Some(id) = layout::run_id_from_index(&key) else { continue };
            // A record that fails its checks is named and passed over: one
            // bad run must not hide every other (or the status of every environment).
            let spec = match self.spec(id).await {
                Ok(s) => s,
                Err(Error::NotFound(_)) => continue,
                Err(e) => match e.corruption() {
                    Some(c) => {
                        tracing::warn!(key = %c.key, problem = %c.problem, "skipping a corrupt run record");
                        out.corrupt.push(CorruptRun { environment: None, corruption: c });
                        continue;
                    }
                    None => return Err(e),
                },
            };
            if environment.is_some_and(|e| e != spec.environment) || kind.is_some_and(|k| k != spec.kind) {
                continue;
            }
            let entries = match journal::read_run(&self.ctx.store, id).await {
                Ok(entries) => entries,
                Err(e) => match e.corruption() {
                    Some(c) => {
                        tracing::warn!(key = %c.key, problem = %c.problem, "skipping a run with a corrupt journal");
                        out.corrupt.push(CorruptRun { environment: Some(spec.environment), corruption: c });
                        continue;
                    }
                    None => return Err(e),
                },
            };
            let view = RunView::replay(spec, &entries);
            if awaiting_approval && !view.needs_approval() {
                continue;
            }
            out.runs.push(view);
            if out.runs.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Records a request for whichever server runs the run, and tells it
    /// directly when that is this one.
    async fn request(self: &Arc<Self>, id: &str, control: Control) -> Result<()> {
        let bytes = codec::encode(&RequestRecord { format_version: 1, control: control.clone() });
        let key = layout::run_request(
            id,
            &format!("{}-{}", self.ctx.clock.now().timestamp_millis(), uuid::Uuid::new_v4().simple()),
        );
        self.ctx.store.put(&key, bytes, PutOptions::create()).await?;
        let sender = self.active.lock().expect("lock").get(id).map(|a| a.control.clone());
        if let Some(tx) = sender {
            let _ = tx.send(control).await;
        }
        Ok(())
    }

    pub async fn cancel(self: &Arc<Self>, id: &str, by: &str) -> Result<RunView> {
        let view = self.get(id).await?;
        if view.state.is_finished() {
            return Err(Error::FailedPrecondition(format!("run {id} already finished ({})", view.state.as_str())));
        }
        if view.awaiting_approval() && !self.active.lock().expect("lock").contains_key(id) {
            self.cancel_proposal(&view, by).await?;
            return self.get(id).await;
        }
        self.request(id, Control::Cancel { by: by.into() }).await?;
        if !self.active.lock().expect("lock").contains_key(id) {
            // Not running here: take it over if nobody runs it, so the cancel happens.
            match self.resume(id).await {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.get(id).await
    }

    pub async fn approve(self: &Arc<Self>, id: &str, service: &str, by: &str) -> Result<RunView> {
        let view = self.get(id).await?;
        if view.state.is_finished() {
            return Err(Error::FailedPrecondition(format!("run {id} already finished ({})", view.state.as_str())));
        }
        if service.is_empty() {
            // The whole run (proposed).
            if !view.spec.proposed {
                return Err(Error::FailedPrecondition(format!(
                    "run {id} was not proposed; approve a service of it (`lifeboat run approve {id} SERVICE`)"
                )));
            }
            if let Some(by) = &view.run_approved_by {
                return Err(Error::FailedPrecondition(format!("run {id} is already approved (by {by})")));
            }
            return self.approve_proposal(view, by).await;
        }
        let snap = self.repo.get(&view.spec.environment, view.spec.snapshot_version).await?;
        match snap.manifest.services.get(service) {
            None => return Err(Error::NotFound(format!("run {id} has no service {service}"))),
            Some(s) if !s.approval => {
                return Err(Error::FailedPrecondition(format!(
                    "service {service} does not need approval (approval = false)"
                )));
            }
            Some(_) => {}
        }
        if view.services[service].approved_by.is_some() {
            return Err(Error::FailedPrecondition(format!("service {service} of run {id} is already approved")));
        }
        self.request(id, Control::Approve { service: service.into(), by: by.into() }).await?;
        self.get(id).await
    }

    /// The run's entries from `from_seq` on, each with its line for people
    /// (`Narrator`), then new ones as they happen, ending after the run
    /// finishes. A finished run's stream ends
    /// after its last entry; a `from_seq` past the end is refused. The work
    /// behind a stream stops when its client goes away, and at most
    /// `MAX_WATCHES` streams run at once, a caller's share of them (streams.rs).
    pub async fn watch(
        self: &Arc<Self>,
        id: &str,
        from_seq: u64,
        caller: &streams::StreamCaller,
    ) -> Result<impl Stream<Item = Result<Narrated>> + Send + 'static> {
        let permit = self.watchers.acquire(caller, &format!("use `lifeboat run show {id}`"))?;
        let mut narrator = Narrator::new(&self.spec(id).await?);
        let so_far = journal::read_run(&self.ctx.store, id).await?;
        let last = so_far.last().map(|e| e.seq);
        if from_seq > last.map_or(0, |l| l + 1) {
            return Err(Error::InvalidArgument(format!(
                "from_seq {from_seq} is past the end of run {id}, whose last entry is {}",
                last.map_or("none yet".to_string(), |l| l.to_string())
            )));
        }
        let finished = so_far.iter().any(|e| matches!(e.event, Event::RunFinished { .. }));
        let engine = self.clone();
        let id = id.to_string();
        Ok(async_stream(move |tx: mpsc::Sender<Result<Narrated>>| async move {
            let _permit = permit;
            let (before, shown): (Vec<Entry>, Vec<Entry>) = so_far.into_iter().partition(|e| e.seq < from_seq);
            before.iter().for_each(|e| narrator.note(e));
            if finished {
                for e in shown {
                    if tx.send(Ok(narrator.tell(e, &id))).await.is_err() {
                        return;
                    }
                }
                return;
            }
            let mut next = from_seq;
            loop {
                let live = engine.active.lock().expect("lock").get(&id).map(|a| a.events.subscribe());
                let entries = match journal::read_from(&engine.ctx.store, &id, next).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for e in entries {
                    next = e.seq + 1;
                    let done = matches!(e.event, Event::RunFinished { .. });
                    if tx.send(Ok(narrator.tell(e, &id))).await.is_err() || done {
                        return;
                    }
                }
                match live {
                    Some(mut rx) => loop {
                        let received = tokio::select! {
                            r = rx.recv() => r,
                            _ = tx.closed() => return,
                        };
                        match received {
                            Ok(e) if e.seq < next => continue,
                            Ok(e) if e.seq == next => {
                                next += 1;
                                let done = matches!(e.event, Event::RunFinished { .. });
                                if tx.send(Ok(narrator.tell(e, &id))).await.is_err() || done {
                                    return;
                                }
                            }
                            // A gap, a lag or the run stopped here: catch up from the store.
                            _ => break,
                        }
                    },
                    None => tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = tx.closed() => return,
                    },
                }
            }
        }))
    }
}

/// A stream fed by a task through a channel (no extra crate needed).
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
