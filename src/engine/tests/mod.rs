//! Engine tests on a paused clock with a scripted provider: ordering,
//! efficiency, failure isolation, parallelism, approvals, cancel, resume.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use super::clock::TokioClock;
use super::*;
use crate::domain::dag::Dag;
use crate::domain::duration::Dur;
use crate::domain::manifest::{Check as HealthCheck, Health, Image, Manifest, Promotion, Provider, Service};
use crate::domain::plan::LiveInstance;
use crate::domain::run::{RunState, ServiceState};
use crate::provider::{ComputeProvider, LaunchSpec, ProviderError, ProviderResult, ServiceRef};
use crate::store::memory::MemStore;
use crate::store::{DynStore, NewSnapshot, layout};

/// How one service behaves.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    launch_ms: u64,
    healthy_ms: u64,
    /// The first N attempts fail their health gate.
    failing_attempts: u32,
    /// Every launch fails with a permanent error (a missing image).
    permanent_launch_error: bool,
    /// The first N launches fail with a transient error (throttling).
    transient_launch_errors: u32,
    /// How long its cutover takes.
    cutover_ms: u64,
    /// Its cutover to new instances fails (after moving them in: part way).
    cutover_fails: bool,
}

#[derive(Default)]
struct World {
    launches: BTreeMap<String, Vec<String>>,
    launch_calls: HashMap<String, u32>,
    alive: BTreeMap<String, String>,
    in_flight: BTreeSet<String>,
    max_in_flight: usize,
    next: u64,
    /// What `inventory` reports.
    inventory: Vec<LiveInstance>,
    /// Services retired (prune), in order, with what was cut over before.
    retired: Vec<(String, usize)>,
    cut_over: usize,
    /// Provider calls in the order they were made: ("launch" | "cutover", service).
    calls: Vec<(&'static str, String)>,
    /// Each instance's environment (a drill's namespace).
    envs: BTreeMap<String, String>,
    /// Regions `drill_leftovers` reports it could not list.
    failing_regions: Vec<String>,
    /// Every cutover, in order: the service and the instances it points to.
    cutovers: Vec<(String, Vec<String>)>,
    /// Services whose health gates fail from now on.
    failing_gates: BTreeSet<String>,
    /// Launched instances `inventory` reports unhealthy (a crash after cutover).
    unhealthy: BTreeSet<String>,
    /// `traffic` cannot be read (the DNS API is down).
    traffic_fails: bool,
    /// Every drill namespace `tear_down` was called for, in order.
    torn_down: Vec<String>,
}

/// A provider whose steps take known times (on tokio's clock).
struct Scripted {
    script: BTreeMap<String, Behaviour>,
    world: Mutex<World>,
}

impl Scripted {
    fn new(script: BTreeMap<String, Behaviour>) -> Arc<Scripted> {
        Arc::new(Scripted { script, world: Mutex::new(World::default()) })
    }
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

async fn sleep_or_cancel(ms: u64, cancel: &CancellationToken) -> ProviderResult<()> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
        _ = cancel.cancelled() => Err(ProviderError::Cancelled),
    }
}

#[async_trait]
impl ComputeProvider for Scripted {
    fn name(&self) -> &'static str {
        "local"
    }
    async fn preflight(&self, _: &Manifest, _: &str, _: &[String]) -> Vec<Check> {
        vec![Check::pass("scripted", "ok")]
    }
    async fn inventory(&self, _: &str, _: &str) -> ProviderResult<Vec<LiveInstance>> {
        let w = self.world();
        // What the test set up, then the launched instances still alive,
        // tagged with their run, serving when the service's last cutover
        // points at them.
        let mut all = w.inventory.clone();
        for (key, ids) in &w.launches {
            let run = key.split('/').next().unwrap_or_default();
            for id in ids.iter().filter(|id| w.alive.contains_key(*id)) {
                let service = &w.alive[id];
                let last = w.cutovers.iter().rev().find(|(s, _)| s == service);
                let serving = last.is_some_and(|(_, to)| to.contains(id));
                let healthy = !w.unhealthy.contains(id);
                all.push(LiveInstance { run_id: run.into(), serving, healthy, ..stray(service, id) });
            }
        }
        Ok(all)
    }
    async fn traffic(
        &self,
        _: &str,
        _: &Manifest,
        _: &str,
        _: &[LiveInstance],
    ) -> ProviderResult<Vec<crate::domain::plan::Traffic>> {
        match self.world().traffic_fails {
            true => Err(ProviderError::Backend { message: "Throttling: Rate exceeded".into(), retryable: true }),
            false => Ok(Vec::new()),
        }
    }
    async fn retire(&self, t: &ServiceRef) -> ProviderResult<()> {
        let mut w = self.world();
        let before = w.cut_over;
        w.retired.push((t.service.clone(), before));
        Ok(())
    }
    async fn launch(&self, spec: &LaunchSpec, cancel: &CancellationToken) -> ProviderResult<Vec<String>> {
        let service = spec.target.service.clone();
        let b = self.script[&service];
        {
            let mut w = self.world();
            *w.launch_calls.entry(spec.launch_key.clone()).or_default() += 1;
            if b.permanent_launch_error {
                return Err(ProviderError::ImageUnavailable {
                    image: spec.image.clone(),
                    message: "no such AMI".into(),
                });
            }
            let calls: u32 =
                w.launch_calls.iter().filter(|(k, _)| k.contains(&format!("/{service}/"))).map(|(_, n)| *n).sum();
            if calls <= b.transient_launch_errors {
                return Err(ProviderError::Backend { message: "RequestLimitExceeded".into(), retryable: true });
            }
            if let Some(ids) = w.launches.get(&spec.launch_key) {
                return Ok(ids.clone());
            }
            w.in_flight.insert(service.clone());
            w.max_in_flight = w.max_in_flight.max(w.in_flight.len());
            w.calls.push(("launch", service.clone()));
        }
        sleep_or_cancel(self.script[&service].launch_ms, cancel).await?;
        let mut w = self.world();
        let ids: Vec<String> = (0..spec.replicas)
            .map(|_| {
                w.next += 1;
                format!("{service}-i{}", w.next)
            })
            .collect();
        for id in &ids {
            w.alive.insert(id.clone(), service.clone());
            w.envs.insert(id.clone(), spec.target.environment.clone());
        }
        w.launches.insert(spec.launch_key.clone(), ids.clone());
        Ok(ids)
    }
    async fn wait_healthy(
        &self,
        t: &ServiceRef,
        ids: &[String],
        within: Duration,
        cancel: &CancellationToken,
    ) -> ProviderResult<()> {
        let b = self.script[&t.service];
        let attempt =
            self.world().launches.iter().filter(|(k, _)| k.contains(&format!("/{}/", t.service))).count() as u32;
        let wait = Duration::from_millis(b.healthy_ms).min(within);
        sleep_or_cancel(wait.as_millis() as u64, cancel).await?;
        if (attempt > 0 && attempt <= b.failing_attempts) || self.world().failing_gates.contains(&t.service) {
            return Err(ProviderError::Unhealthy {
                service: t.service.clone(),
                after: wait,
                last: format!("{} refused", ids[0]),
            });
        }
        Ok(())
    }
    async fn cutover(&self, t: &ServiceRef, ids: &[String]) -> ProviderResult<()> {
        tokio::time::sleep(Duration::from_millis(self.script[&t.service].cutover_ms)).await;
        let mut w = self.world();
        w.cutovers.push((t.service.clone(), ids.to_vec()));
        if self.script[&t.service].cutover_fails && ids.iter().all(|id| w.launches.values().flatten().any(|n| n == id))
        {
            return Err(ProviderError::Backend { message: "target group update half done".into(), retryable: false });
        }
        w.in_flight.remove(&t.service);
        w.cut_over += 1;
        w.calls.push(("cutover", t.service.clone()));
        Ok(())
    }
    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        let mut w = self.world();
        for id in ids {
            if let Some(s) = w.alive.remove(id) {
                w.in_flight.remove(&s);
            }
        }
        Ok(())
    }
    async fn logs(&self, id: &str, _: usize) -> Vec<String> {
        vec![format!("{id} says goodbye")]
    }
    async fn isolation(&self, _: &Manifest, _: &str, _: &str) -> ProviderResult<crate::domain::drill::Isolation> {
        Ok(Default::default())
    }
    async fn tear_down(&self, ns: &str, _: &str) -> ProviderResult<(Vec<String>, Vec<String>)> {
        let mut w = self.world();
        w.torn_down.push(ns.to_string());
        let ids: Vec<String> = w.alive.keys().filter(|id| w.envs.get(*id).is_some_and(|e| e == ns)).cloned().collect();
        for id in &ids {
            w.alive.remove(id);
        }
        Ok((ids, Vec::new()))
    }
    async fn drill_leftovers(&self) -> ProviderResult<crate::provider::Leftovers> {
        let w = self.world();
        let mut out: Vec<(String, String)> = w
            .alive
            .keys()
            .filter_map(|id| w.envs.get(id))
            .filter(|e| crate::domain::drill::parse_namespace(e).is_some())
            .map(|e| (e.clone(), "local-1".to_string()))
            .collect();
        out.dedup();
        let failed =
            w.failing_regions.iter().map(|r| format!("cannot list drill leftovers in {r}: no such region")).collect();
        Ok(crate::provider::Leftovers { found: out, failed })
    }
    async fn read_logs(
        &self,
        id: &str,
        _: crate::provider::LogFrom,
    ) -> ProviderResult<Option<crate::provider::LogRead>> {
        Ok(Some(crate::provider::LogRead { lines: vec![format!("{id} says goodbye")], next: 1 }))
    }
}

fn service(deps: &[String], attempts: u32, approval: bool) -> Service {
    Service {
        image: Image::Single(format!("sha256:{}", "a".repeat(64))),
        replicas: 1,
        depends_on: deps.to_vec(),
        timeout: Dur::secs(300),
        attempts,
        approval,
        approval_timeout: crate::domain::manifest::DEFAULT_APPROVAL_TIMEOUT,
        health: Some(Health {
            check: HealthCheck::Tcp(String::new()),
            interval: Dur::secs(1),
            timeout: Dur::secs(60),
            probe_timeout: Dur::secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
        }),
        grace_period: Dur::secs(0),
        launch: BTreeMap::new(),
        tags: BTreeMap::new(),
    }
}

fn manifest(services: BTreeMap<String, Service>) -> Manifest {
    Manifest {
        environment: "shop".into(),
        region: "r1".into(),
        provider: Provider::Local,
        rto_objective: None,
        promotion: Promotion::Manual,
        services,
        verify: Vec::new(),
    }
}

struct Harness {
    engine: Arc<Engine>,
    provider: Arc<Scripted>,
    store: DynStore,
}

/// A push of `m` by the test author.
fn snapshot_of(m: Manifest) -> NewSnapshot {
    NewSnapshot { manifest: m, author: "t".into(), message: String::new(), labels: BTreeMap::new() }
}

async fn harness(m: Manifest, script: BTreeMap<String, Behaviour>) -> Harness {
    harness_on(Arc::new(MemStore::new()), m, script).await
}

async fn harness_on(store: DynStore, m: Manifest, script: BTreeMap<String, Behaviour>) -> Harness {
    harness_with(store, m, script, Default::default()).await
}

async fn harness_with(
    store: DynStore,
    m: Manifest,
    script: BTreeMap<String, Behaviour>,
    safety: crate::engine::Safety,
) -> Harness {
    let repo = SnapshotRepo::new(store.clone());
    repo.push(snapshot_of(m)).await.unwrap();
    let provider = Scripted::new(script);
    let engine = Engine::new(RunContext {
        store: store.clone(),
        providers: crate::provider::Providers::new().with(provider.clone()),
        clock: Arc::new(TokioClock::new()),
        owner: "test-server".into(),
        lease_ttl: Duration::from_secs(15),
        notifier: Default::default(),
        proposal_timeout: crate::engine::DEFAULT_PROPOSAL_TIMEOUT,
        safety,
    });
    Harness { engine, provider, store }
}

/// A recovery of the test environment's latest snapshot.
fn recovery_of_latest(parallelism: Option<usize>) -> StartRequest {
    StartRequest {
        prune: true,
        propose: false,
        decommission: false,
        environment: "shop".into(),
        reference: "latest".into(),
        region: None,
        parallelism,
        force: false,
        kind: RunKind::Recovery,
        actor: "t".into(),
        drill: None,
    }
}

impl Harness {
    async fn start(&self, parallelism: usize) -> String {
        self.engine.start(recovery_of_latest(Some(parallelism))).await.unwrap().spec.id.clone()
    }

    /// Another server on the same store and provider (after a crash of the first).
    fn second_engine(&self) -> Arc<Engine> {
        self.second_engine_on(self.store.clone())
    }

    fn second_engine_on(&self, store: DynStore) -> Arc<Engine> {
        Engine::new(RunContext {
            store,
            providers: crate::provider::Providers::new().with(self.provider.clone()),
            clock: Arc::new(TokioClock::new()),
            owner: "second-server".into(),
            lease_ttl: Duration::from_secs(15),
            notifier: Default::default(),
            proposal_timeout: crate::engine::DEFAULT_PROPOSAL_TIMEOUT,
            safety: Default::default(),
        })
    }

    async fn finish(&self, id: &str) -> (RunView, Vec<Entry>) {
        let (view, entries) = finish_on(&self.engine, id).await;
        self.assert_launched_after_cutovers(&view);
        (view, entries)
    }

    /// The provider saw every launch of a service after the cutover of each
    /// of its dependencies (those it replaced; a kept one has no cutover).
    fn assert_launched_after_cutovers(&self, view: &RunView) {
        let w = self.provider.world();
        let mut cut = BTreeSet::new();
        for (call, service) in &w.calls {
            if *call == "cutover" {
                cut.insert(service.as_str());
                continue;
            }
            let Some(step) = view.spec.steps.iter().find(|s| &s.service == service) else { continue };
            for d in &step.depends_on {
                let kept = view.spec.steps.iter().any(|s| &s.service == d && s.action == Action::Keep);
                assert!(kept || cut.contains(d.as_str()), "{service} was launched before {d} was cut over");
            }
        }
    }

    /// A run taken over by a second server succeeded, in order, with exactly
    /// one launch per service.
    async fn assert_taken_over(&self, second: &Arc<Engine>, id: &str, services: usize) {
        let (view, entries) = finish_on(second, id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
        assert_eq!(view.owners, ["test-server", "second-server"]);
        assert_ordering(&view, &entries);
        self.assert_launched_after_cutovers(&view);
        let w = self.provider.world();
        assert_eq!(w.launches.len(), services, "one launch per service: {:?}", w.launches);
        assert_eq!(w.alive.len(), services);
    }
}

async fn finish_on(engine: &Arc<Engine>, id: &str) -> (RunView, Vec<Entry>) {
    let entries: Vec<Entry> =
        engine.watch(id, 0, &Default::default()).await.unwrap().map(|e| e.unwrap().entry).collect().await;
    // Read at once (from the executor's final view, or the compacted journal
    // if the executor has ended), it is the fold of the journal objects.
    let view = engine.get(id).await.unwrap();
    let journal = super::journal::read_from(&engine.ctx.store, id, 0).await.unwrap();
    assert_eq!(view, RunView::replay(engine.spec(id).await.unwrap(), &journal));
    assert_compacted(engine, id).await;
    (view, entries)
}

/// The executor wrote the finished run's compacted journal (nobody has read
/// the run since it finished), and it holds exactly the journal's entries.
async fn assert_compacted(engine: &Arc<Engine>, id: &str) {
    let store = &engine.ctx.store;
    let key = layout::journal_compacted(id);
    let mut waited = Duration::ZERO;
    let obj = loop {
        if let Some(obj) = store.get(&key).await.unwrap() {
            break obj;
        }
        assert!(waited < Duration::from_secs(10), "run {id} finished and its journal was not compacted");
        tokio::time::sleep(Duration::from_millis(5)).await;
        waited += Duration::from_millis(5);
    };
    let compacted: super::journal::Compacted = crate::store::codec::decode(&obj.bytes, &key, "test").unwrap();
    assert_eq!(compacted.entries, super::journal::read_from(store, id, 0).await.unwrap());
}

impl Harness {}

/// In the journal, a service's launch is written after each of its
/// dependencies' launches (it is announced while their health gates are under
/// way) or keeps, and its instances after each dependency's cutover.
fn assert_ordering(view: &RunView, entries: &[Entry]) {
    let mut under_way_at: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut ready_at: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let after = |at: &BTreeMap<&str, (u64, u64)>, e: &Entry, service: &str, what: &str| {
        let step = view.spec.steps.iter().find(|s| s.service == service).unwrap();
        for d in &step.depends_on {
            let (seq, t) = at.get(d.as_str()).unwrap_or_else(|| panic!("{service}'s {what} before {d}'s"));
            assert!(*seq < e.seq && *t <= e.elapsed_ms, "{service}'s {what} before {d}'s");
        }
    };
    for e in entries {
        match &e.event {
            Event::CutOver { service, .. } | Event::Kept { service } => {
                under_way_at.entry(service).or_insert((e.seq, e.elapsed_ms));
                ready_at.insert(service, (e.seq, e.elapsed_ms));
            }
            Event::LaunchStarted { service, .. } => {
                after(&under_way_at, e, service, "launch");
                under_way_at.entry(service).or_insert((e.seq, e.elapsed_ms));
            }
            Event::InstancesLaunched { service, .. } => after(&ready_at, e, service, "instances"),
            _ => {}
        }
    }
}

fn random_dag(n: usize, edges: &[(usize, usize)]) -> BTreeMap<String, Service> {
    let name = |i: usize| format!("s{i:04}");
    let mut deps: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n];
    for &(a, b) in edges {
        let (a, b) = (a % n, b % n);
        if a < b {
            deps[b].insert(name(a));
        }
    }
    (0..n).map(|i| (name(i), service(&deps[i].iter().cloned().collect::<Vec<_>>(), 1, false))).collect()
}

/// The same launch and health time for every service.
fn timed(services: &BTreeMap<String, Service>, launch_ms: u64, healthy_ms: u64) -> BTreeMap<String, Behaviour> {
    services.keys().map(|k| (k.clone(), Behaviour { launch_ms, healthy_ms, ..Default::default() })).collect()
}

/// Launch and health times drawn from `from` to `from + spread` ms (seeded).
fn random_timed(
    services: &BTreeMap<String, Service>,
    seed: u64,
    from: u64,
    spread: u64,
) -> BTreeMap<String, Behaviour> {
    let mut rand = crate::testkit::xorshift(seed);
    services
        .keys()
        .map(|k| {
            let b = Behaviour {
                launch_ms: from + rand() % spread,
                healthy_ms: from + rand() % spread,
                ..Default::default()
            };
            (k.clone(), b)
        })
        .collect()
}

/// `root`, and `n` leaves that depend on it.
fn root_and_leaves(n: usize) -> BTreeMap<String, Service> {
    std::iter::once(("root".to_string(), service(&[], 1, false)))
        .chain((0..n).map(|i| (format!("leaf{i:03}"), service(&["root".to_string()], 1, false))))
        .collect()
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
}

/// A live instance of a service absent from the snapshot.
fn stray(service: &str, id: &str) -> LiveInstance {
    LiveInstance {
        id: id.into(),
        service: service.into(),
        image: "sha256:old".into(),
        healthy: true,
        serving: true,
        run_id: "r-old".into(),
        fingerprint: "f".into(),
        address: String::new(),
    }
}

/// One subscriber for the whole test process, set as the global default
/// once: what the tests that read the engine's tracing events listen with. A
/// subscriber set per test (thread-local) missed events when other tests'
/// threads registered callsites meanwhile (tracing caches each callsite's
/// interest, computed without it).
fn listening() -> &'static (crate::testkit::timeline::Recorder, DepthChanges) {
    static LISTENING: std::sync::OnceLock<(crate::testkit::timeline::Recorder, DepthChanges)> =
        std::sync::OnceLock::new();
    LISTENING.get_or_init(|| {
        use tracing_subscriber::prelude::*;
        let (recorder, depth) = (crate::testkit::timeline::Recorder::default(), DepthChanges::default());
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(recorder.clone()).with(depth.clone()),
        )
        .expect("no other global subscriber in the tests");
        tracing::callsite::rebuild_interest_cache();
        (recorder, depth)
    })
}

/// The depths that the executor's debug events "journal writes in flight
/// changed" name, per run, in order.
#[derive(Clone, Default)]
struct DepthChanges(Arc<std::sync::Mutex<Vec<(String, u64)>>>);

impl DepthChanges {
    fn of(&self, run_id: &str) -> Vec<u64> {
        self.0.lock().unwrap().iter().filter(|(r, _)| r == run_id).map(|(_, d)| *d).collect()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DepthChanges {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Change {
            run_id: String,
            depth: Option<u64>,
            named: bool,
        }
        impl tracing::field::Visit for Change {
            fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
                if f.name() == "depth" {
                    self.depth = Some(v);
                }
            }
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                match f.name() {
                    "message" => self.named = format!("{v:?}").starts_with("journal writes in flight changed"),
                    "run_id" => self.run_id = format!("{v:?}"),
                    _ => {}
                }
            }
        }
        let mut change = Change::default();
        e.record(&mut change);
        if let (true, Some(depth)) = (change.named, change.depth) {
            self.0.lock().unwrap().push((change.run_id, depth));
        }
    }
}

mod batching;
mod drills;
mod failures;
mod faults;
mod ordering;
mod proposals;
