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
    async fn isolation(&self, _: &Manifest, _: &str) -> ProviderResult<crate::domain::drill::Isolation> {
        Ok(Default::default())
    }
    async fn tear_down(&self, ns: &str, _: &str) -> ProviderResult<(Vec<String>, Vec<String>)> {
        let mut w = self.world();
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn launches_wait_for_dependencies(
        n in 1usize..30,
        edges in proptest::collection::vec((0usize..30, 0usize..30), 0..80),
        times in proptest::collection::vec((1u64..500, 1u64..500), 30),
        parallelism in 1usize..8,
    ) {
        paused_runtime().block_on(async {
            let services = random_dag(n, &edges);
            let script = services.keys().enumerate().map(|(i, k)| (k.clone(), Behaviour { launch_ms: times[i].0, healthy_ms: times[i].1, failing_attempts: 0, ..Default::default() })).collect();
            let h = harness(manifest(services), script).await;
            let id = h.start(parallelism).await;
            let (view, entries) = h.finish(&id).await;
            assert_eq!(view.state, RunState::Succeeded);
            assert_ordering(&view, &entries);
            assert!(h.provider.world().max_in_flight <= parallelism);
        });
    }
}

#[test]
fn diamond_chain_and_fan_out_orderings() {
    paused_runtime().block_on(async {
        let s = |d: &[&str]| service(&d.iter().map(|x| x.to_string()).collect::<Vec<_>>(), 1, false);
        let shapes: Vec<BTreeMap<String, Service>> = vec![
            // diamond
            [("a", s(&[])), ("b", s(&["a"])), ("c", s(&["a"])), ("d", s(&["b", "c"]))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            // chain
            (0..10).map(|i| (format!("c{i}"), if i == 0 { s(&[]) } else { s(&[&format!("c{}", i - 1)]) })).collect(),
            // wide fan-out
            std::iter::once(("root".to_string(), s(&[])))
                .chain((0..50).map(|i| (format!("leaf{i}"), s(&["root"]))))
                .collect(),
        ];
        for services in shapes {
            let script = services
                .keys()
                .map(|k| {
                    (
                        k.clone(),
                        Behaviour { launch_ms: 100, healthy_ms: 200, failing_attempts: 0, ..Default::default() },
                    )
                })
                .collect();
            let h = harness(manifest(services), script).await;
            let id = h.start(64).await;
            let (view, entries) = h.finish(&id).await;
            assert_eq!(view.state, RunState::Succeeded);
            assert_ordering(&view, &entries);
        }
    });
}

/// A new run's first journal write announces the launches it can start at
/// once (up to its parallelism), so its first launches wait for one write.
#[test]
fn a_new_run_announces_its_first_launches_in_its_first_write() {
    paused_runtime().block_on(async {
        let mut services: BTreeMap<String, Service> =
            (0..3).map(|i| (format!("root{i}"), service(&[], 1, false))).collect();
        services.insert("app".into(), service(&["root0".to_string()], 1, false));
        let h = harness(manifest(services.clone()), timed(&services, 50, 50)).await;
        let id = h.start(2).await;
        let first = h.store.get(&layout::journal_object(&id, 0)).await.unwrap().expect("the first write");
        let text = String::from_utf8(first.bytes.to_vec()).unwrap();
        assert!(text.contains("\"run_started\""), "{text}");
        assert_eq!(text.matches("\"launch_started\"").count(), 2, "as many as the parallelism: {text}");
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
        let w = h.provider.world();
        assert_eq!(w.launch_calls.len(), 4, "one launch each: {:?}", w.launch_calls);
        assert!(w.launch_calls.values().all(|&n| n == 1), "{:?}", w.launch_calls);
    });
}

#[test]
fn thousand_services_finish_within_five_percent_of_the_critical_path() {
    paused_runtime().block_on(async {
        let mut rng_state = 42u64;
        let mut rand = move || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let n = 1000;
        let edges: Vec<(usize, usize)> =
            (0..3000).map(|_| ((rand() % n as u64) as usize, (rand() % n as u64) as usize)).collect();
        let services = random_dag(n, &edges);
        let script: BTreeMap<String, Behaviour> = services
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    Behaviour {
                        launch_ms: 100 + rand() % 900,
                        healthy_ms: 100 + rand() % 1900,
                        failing_attempts: 0,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let m = manifest(services);
        let dag: Dag = m.dag();
        let (_, critical) = dag.critical_path(|i| {
            let b = script[dag.name(i)];
            Duration::from_millis(b.launch_ms + b.healthy_ms)
        });
        let h = harness(m, script).await;
        let start = tokio::time::Instant::now();
        let id = h.start(1024).await;
        let (view, entries) = h.finish(&id).await;
        let took = start.elapsed();
        assert_eq!(view.state, RunState::Succeeded);
        assert_ordering(&view, &entries);
        let limit = critical.mul_f64(1.05) + Duration::from_millis(50);
        assert!(took <= limit, "took {took:?}, critical path {critical:?}");
        assert!(took >= critical, "faster than the critical path is impossible: {took:?} < {critical:?}");
    });
}

#[test]
fn a_failure_skips_dependents_only_and_cleans_up() {
    paused_runtime().block_on(async {
        let s = |d: &[&str], attempts| service(&d.iter().map(|x| x.to_string()).collect::<Vec<_>>(), attempts, false);
        let services: BTreeMap<String, Service> = [
            ("db", s(&[], 1)),
            ("api", s(&["db"], 2)),
            ("web", s(&["api"], 1)),
            ("edge", s(&["web"], 1)),
            ("metrics", s(&[], 1)),
            ("dash", s(&["metrics"], 1)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut script = timed(&services, 50, 100);
        script.get_mut("api").unwrap().failing_attempts = 99;
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Failed);
        let st = |n: &str| view.services[n].state;
        assert_eq!(st("api"), ServiceState::Failed);
        assert_eq!(view.services["api"].attempts, 2);
        assert!(view.services["api"].error.as_deref().unwrap().contains("gave up after 2 attempts"));
        assert!(view.services["api"].logs.iter().any(|l| l.contains("says goodbye")));
        assert_eq!((st("web"), st("edge")), (ServiceState::Skipped, ServiceState::Skipped));
        assert_eq!(view.services["edge"].upstream.as_deref(), Some("api"));
        for ok in ["db", "metrics", "dash"] {
            assert_eq!(st(ok), ServiceState::Healthy, "{ok}");
        }
        let failed: Vec<&str> =
            view.services.values().filter(|s| s.state == ServiceState::Failed).map(|s| s.name.as_str()).collect();
        assert_eq!(failed, ["api"], "only the root cause failed; its dependents were skipped");
        let w = h.provider.world();
        assert!(w.alive.values().all(|s| s != "api"), "failed instances were terminated: {:?}", w.alive);
    });
}

#[test]
fn retries_then_succeeds() {
    paused_runtime().block_on(async {
        let services = BTreeMap::from([("db".to_string(), service(&[], 3, false))]);
        let script = BTreeMap::from([(
            "db".to_string(),
            Behaviour { launch_ms: 10, healthy_ms: 10, failing_attempts: 2, ..Default::default() },
        )]);
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded);
        assert_eq!(view.services["db"].attempts, 3);
        assert_eq!(view.services["db"].failed_instances.len(), 2);
        assert_eq!(h.provider.world().alive.len(), 1);
    });
}

/// A permanent provider error (a missing image) fails the service on its
/// first attempt; a transient one (throttling) is retried and succeeds.
#[test]
fn permanent_errors_fail_at_once_and_transient_ones_are_retried() {
    paused_runtime().block_on(async {
        let services = BTreeMap::from([
            ("db".to_string(), service(&[], 3, false)),
            ("cache".to_string(), service(&[], 3, false)),
        ]);
        let script = BTreeMap::from([
            ("db".to_string(), Behaviour { launch_ms: 10, healthy_ms: 10, permanent_launch_error: true, ..Default::default() }),
            ("cache".to_string(), Behaviour { launch_ms: 10, healthy_ms: 10, transient_launch_errors: 2, ..Default::default() }),
        ]);
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        let (view, _) = h.finish(&id).await;
        let db = &view.services["db"];
        assert_eq!((db.state, db.attempts), (ServiceState::Failed, 1), "{db:?}");
        assert_eq!(
            db.error.as_deref(),
            Some("image sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa is not available: no such AMI (a permanent error: not retried)")
        );
        let cache = &view.services["cache"];
        assert_eq!((cache.state, cache.attempts), (ServiceState::Healthy, 3), "{cache:?}");
    });
}

#[test]
fn approval_pauses_until_approved() {
    paused_runtime().block_on(async {
        let services = BTreeMap::from([
            ("db".to_string(), service(&[], 1, false)),
            ("api".to_string(), service(&["db".to_string()], 1, true)),
        ]);
        let script = timed(&services, 10, 10);
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let v = h.engine.get(&id).await.unwrap();
        assert_eq!(v.services["api"].state, ServiceState::AwaitingApproval);
        assert_eq!(v.services["db"].state, ServiceState::Healthy);
        let e = h.engine.approve(&id, "db", "alice").await.unwrap_err();
        assert!(e.to_string().contains("does not need approval"), "{e}");
        h.engine.approve(&id, "api", "alice").await.unwrap();
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded);
        assert_eq!(view.services["api"].approved_by.as_deref(), Some("alice"));
    });
}

/// A forgotten approval fails the service after `approval_timeout`
/// (counted from when the wait began, across a takeover), the run ends and
/// the region lease is freed.
#[test]
fn an_approval_that_never_comes_times_out_and_frees_the_region() {
    paused_runtime().block_on(async {
        let mut api = service(&["db".to_string()], 1, true);
        api.approval_timeout = Dur::secs(30);
        let services = BTreeMap::from([
            ("db".to_string(), service(&[], 1, false)),
            ("api".to_string(), api),
            ("web".to_string(), service(&["api".to_string()], 1, false)),
        ]);
        let script = timed(&services, 10, 10);
        let h = harness(manifest(services), script).await;
        // (Made now so that both servers' test clocks agree.)
        let second = h.second_engine();
        let id = h.start(4).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The server dies while api waits; another takes over after the lease.
        h.engine.abort_all();
        tokio::time::sleep(Duration::from_secs(16)).await;
        second.resume(&id).await.unwrap();
        let started = tokio::time::Instant::now();
        let (view, _) = finish_on(&second, &id).await;
        assert!(started.elapsed() < Duration::from_secs(10), "the wait before the takeover counts");
        assert_eq!(view.state, RunState::Failed);
        let api = &view.services["api"];
        assert_eq!(api.state, ServiceState::Failed);
        assert_eq!(
            api.error.as_deref(),
            Some("approval timed out: nobody approved it within 30.0s (approval_timeout)")
        );
        assert_eq!(view.services["web"].state, ServiceState::Skipped);
        // The region is free again.
        let next = second.start(recovery_of_latest(Some(4))).await;
        assert!(next.is_ok(), "{:?}", next.err());
    });
}

#[test]
fn cancel_stops_launching_and_cleans_up() {
    paused_runtime().block_on(async {
        let chain: BTreeMap<String, Service> = (0..5)
            .map(|i| (format!("c{i}"), service(&if i == 0 { vec![] } else { vec![format!("c{}", i - 1)] }, 1, false)))
            .collect();
        let script = timed(&chain, 1000, 1000);
        let h = harness(manifest(chain), script).await;
        let id = h.start(4).await;
        tokio::time::sleep(Duration::from_millis(2500)).await; // c0 done, c1 launching
        h.engine.cancel(&id, "bob").await.unwrap();
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Cancelled);
        assert_eq!(view.services["c0"].state, ServiceState::Healthy);
        for i in 1..5 {
            assert_eq!(view.services[&format!("c{i}")].state, ServiceState::Cancelled);
        }
        let alive: Vec<String> = h.provider.world().alive.values().cloned().collect();
        assert_eq!(alive, ["c0"], "only the cut-over service keeps instances");
        let e = h.engine.cancel(&id, "bob").await.unwrap_err();
        assert!(e.to_string().contains("already finished"));
    });
}

#[test]
fn a_second_run_for_a_leased_region_is_refused() {
    paused_runtime().block_on(async {
        let services = BTreeMap::from([("db".to_string(), service(&[], 1, false))]);
        let script = BTreeMap::from([(
            "db".to_string(),
            Behaviour { launch_ms: 1000, healthy_ms: 1000, failing_attempts: 0, ..Default::default() },
        )]);
        let h = harness(manifest(services), script).await;
        let first = h.start(4).await;
        let err = h.engine.start(recovery_of_latest(None)).await.unwrap_err();
        assert!(matches!(&err, Error::Conflict(m) if m.contains(&first)), "{err}");
        h.finish(&first).await;
    });
}

#[test]
fn a_resumed_run_launches_nothing_twice() {
    paused_runtime().block_on(async {
        let services: BTreeMap<String, Service> = (0..6)
            .map(|i| (format!("s{i}"), service(&if i < 2 { vec![] } else { vec![format!("s{}", i - 2)] }, 1, false)))
            .collect();
        let script = timed(&services, 300, 300);
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        // The server dies mid-run: its executors stop where they are.
        h.engine.abort_all();
        let second = h.second_engine();
        let err = second.resume(&id).await.unwrap_err();
        assert!(matches!(&err, Error::Conflict(m) if m.contains("is leased by run")), "{err}");
        tokio::time::sleep(Duration::from_secs(16)).await;
        second.resume(&id).await.unwrap();
        h.assert_taken_over(&second, &id, 6).await;
        // Times run on from the run's start; the time stopped is counted apart.
        let (view, entries) = finish_on(&second, &id).await;
        let resumed = entries.iter().find(|e| matches!(e.event, Event::RunResumed { .. })).unwrap();
        // (Each test server's clock starts when it does: ±0.9 s here.)
        assert!(resumed.elapsed_ms >= 16_000, "{resumed:?}");
        assert!(view.stopped_ms >= 15_000 && view.stopped_ms <= 16_900, "{}", view.stopped_ms);
        assert!(view.elapsed_ms >= 16_000 + 600, "{}", view.elapsed_ms);
    });
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

/// Prune: a running service absent from the snapshot is planned as delete
/// and removed after every other service is healthy; if one of them fails,
/// it stays.
#[test]
fn services_absent_from_the_snapshot_are_removed_after_the_rest_is_healthy() {
    paused_runtime().block_on(async {
        let services = BTreeMap::from([
            ("db".to_string(), service(&[], 1, false)),
            ("web".to_string(), service(&["db".to_string()], 1, false)),
        ]);
        let script = timed(&services, 100, 100);
        let h = harness(manifest(services.clone()), script.clone()).await;
        {
            let mut w = h.provider.world();
            w.inventory = vec![stray("legacy", "legacy-1"), stray("legacy", "legacy-2")];
            w.alive.insert("legacy-1".into(), "legacy".into());
            w.alive.insert("legacy-2".into(), "legacy".into());
        }
        let (_, plan) = h.engine.plan("shop", "latest", None, false, true).await.unwrap();
        let legacy = plan.steps.iter().find(|s| s.service == "legacy").unwrap();
        assert_eq!((legacy.action, legacy.current.len()), (Action::Delete, 2));
        assert_eq!(plan.critical_path, ["db", "web"], "deletions are off the critical path");
        let (_, kept) = h.engine.plan("shop", "latest", None, false, false).await.unwrap();
        assert!(kept.steps.iter().all(|s| s.service != "legacy"), "--no-prune leaves it alone");
        assert!(kept.preflight.iter().any(|c| c.message.contains("left alone: --no-prune): legacy")));

        let id = h.start(4).await;
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
        assert_eq!(view.services["legacy"].state, ServiceState::Removed);
        {
            let w = h.provider.world();
            assert_eq!(w.retired, [("legacy".to_string(), 2)], "retired after both cutovers");
            assert!(!w.alive.contains_key("legacy-1") && !w.alive.contains_key("legacy-2"), "{:?}", w.alive);
        }

        // When another service fails, the stray is kept.
        let mut script = script;
        script.get_mut("web").unwrap().failing_attempts = 9;
        let h = harness(manifest(services), script).await;
        h.provider.world().inventory = vec![stray("legacy", "legacy-1")];
        let id = h.start(4).await;
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Failed);
        assert_eq!(view.services["legacy"].state, ServiceState::Skipped);
        assert_eq!(view.services["legacy"].upstream.as_deref(), Some("web"));
        assert!(h.provider.world().retired.is_empty());
    });
}

#[test]
fn a_run_resumed_after_a_failed_attempt_moves_to_the_next_attempt() {
    paused_runtime().block_on(async {
        let services = BTreeMap::from([("db".to_string(), service(&[], 3, false))]);
        let script = BTreeMap::from([(
            "db".to_string(),
            Behaviour { launch_ms: 100, healthy_ms: 100, failing_attempts: 1, ..Default::default() },
        )]);
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        // Attempt 1 fails at ~200ms; the retry waits at least 1s: crash in between.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(h.engine.get(&id).await.unwrap().services["db"].failed_attempt, 1);
        h.engine.abort_all();
        let second = h.second_engine();
        tokio::time::sleep(Duration::from_secs(16)).await;
        second.resume(&id).await.unwrap();
        let entries: Vec<Entry> =
            second.watch(&id, 0, &Default::default()).await.unwrap().map(|e| e.unwrap().entry).collect().await;
        let view = second.get(&id).await.unwrap();
        assert_eq!(view.state, RunState::Succeeded);
        assert_eq!(view.services["db"].attempts, 2);
        let failures = entries.iter().filter(|e| matches!(e.event, Event::AttemptFailed { .. })).count();
        assert_eq!(failures, 1, "attempt 1 is not retried under the same key");
        assert_eq!(h.provider.world().launches.len(), 2);
    });
}

mod faults {
    //! The engine over a store that fails on purpose (`store::faults`):
    //! outages, lost replies, a lease that cannot be renewed, garbage.

    use super::*;
    use crate::store::faults::{Fault, FaultyStore, Rule};
    use crate::store::{PutOptions, RetryPolicy, Retrying, layout};
    use bytes::Bytes;

    fn faulty() -> (Arc<FaultyStore<MemStore>>, DynStore) {
        let faulty = Arc::new(FaultyStore::new(MemStore::new()));
        let store: DynStore = Arc::new(Retrying::new(faulty.clone(), RetryPolicy::default()));
        (faulty, store)
    }

    /// `c0` ← `c1` ← … ← `c{n-1}`.
    fn chain_c(n: usize) -> BTreeMap<String, Service> {
        (0..n)
            .map(|i| (format!("c{i}"), service(&if i == 0 { vec![] } else { vec![format!("c{}", i - 1)] }, 1, false)))
            .collect()
    }

    /// Runs a region on a store whose journal writes take 30 ms; it succeeds,
    /// in order. Its journal.
    async fn succeed_with_slow_journal(
        services: BTreeMap<String, Service>,
        script: BTreeMap<String, Behaviour>,
        parallelism: usize,
    ) -> Vec<Entry> {
        let (faulty, store) = faulty();
        let h = harness_on(store, manifest(services), script).await;
        faulty.add(Rule::puts("/journal/").fault(Fault::Latency(Duration::from_millis(30))));
        let id = h.start(parallelism).await;
        let (view, entries) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
        assert_ordering(&view, &entries);
        entries
    }

    fn chain_of(n: usize, ms: u64) -> (BTreeMap<String, Service>, BTreeMap<String, Behaviour>) {
        let services: BTreeMap<String, Service> = (0..n)
            .map(|i| {
                (format!("s{i:02}"), service(&if i < 3 { vec![] } else { vec![format!("s{:02}", i - 3)] }, 1, false))
            })
            .collect();
        let script = timed(&services, ms, ms);
        (services, script)
    }

    /// One set of instances per service, and one `instances_launched` each in the journal.
    async fn assert_launched_once(h: &Harness, id: &str, n: usize) {
        {
            let w = h.provider.world();
            assert_eq!(w.launches.len(), n, "one launch per service: {:?}", w.launches);
            assert_eq!(w.alive.len(), n);
        }
        let entries = journal::read_from(&h.store, id, 0).await.unwrap();
        let launched = entries.iter().filter(|e| matches!(e.event, Event::InstancesLaunched { .. })).count();
        assert_eq!(launched, n, "one instances_launched per service");
        assert!(entries.iter().enumerate().all(|(i, e)| e.seq == i as u64), "no gap and no duplicate");
    }

    #[test]
    fn a_recovery_rides_out_a_store_outage() {
        paused_runtime().block_on(async {
            let (faulty, store) = faulty();
            let (services, script) = chain_of(12, 400);
            let h = harness_on(store, manifest(services), script).await;
            let id = h.start(4).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Every call fails for 5 s, then the store is back.
            let outage = faulty.add(Rule::any("").fault(Fault::Transient));
            tokio::time::sleep(Duration::from_secs(5)).await;
            outage.disable();
            assert!(outage.fired() > 10, "the outage was felt: {} calls failed", outage.fired());
            let (view, entries) = h.finish(&id).await;
            assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
            assert_ordering(&view, &entries);
            assert_launched_once(&h, &id, 12).await;
        });
    }

    /// No link of the critical path waits for a journal write when the
    /// health gates take longer than a write: each dependent's launch is
    /// durable before its dependency's gate passes (announced once that
    /// dependency's task runs), and the cutover does not wait for `Healthy`.
    /// A chain of 4 (launch 50 ms, health 50 ms) on a store whose journal
    /// writes take 30 ms finishes in RunStarted with the first LaunchStarted
    /// (30) + 4 × (launch + health) (400) + the last CutOver and RunFinished
    /// (60) = 490 ms. Waiting for one write per link took 640 ms.
    #[test]
    fn no_link_of_the_critical_path_waits_for_a_journal_write() {
        paused_runtime().block_on(async {
            let services = chain_c(4);
            let script = timed(&services, 50, 50);
            let entries = succeed_with_slow_journal(services, script, 4).await;
            let finished = entries.last().unwrap();
            assert!(matches!(finished.event, Event::RunFinished { .. }));
            assert!(finished.elapsed_ms <= 500, "took {} ms: {entries:#?}", finished.elapsed_ms);
            // Each dependent's launch was written before its dependency's gate passed.
            let seq = |f: &dyn Fn(&Event) -> bool| entries.iter().find(|e| f(&e.event)).map(|e| e.seq).unwrap();
            for i in 1..4 {
                let (d, s) = (format!("c{}", i - 1), format!("c{i}"));
                let launch = seq(&|e| matches!(e, Event::LaunchStarted { service, .. } if *service == s));
                let gate = seq(&|e| matches!(e, Event::Healthy { service, .. } if *service == d));
                assert!(launch < gate, "{s} announced after {d}'s gate: {entries:#?}");
            }
        });
    }

    /// A `Healthy` does not wait behind a write already in flight: its
    /// write starts at once and is acted on right after the one before.
    /// The chain of 4 above beside 12 independent services whose events
    /// keep the journal busy (30 ms writes): c3 is cut over at 630 ms. With
    /// one write in flight at a time it was 670 ms, and 820 ms when the loop
    /// also waited for each write before taking the next message.
    #[test]
    fn a_health_gate_is_written_beside_the_write_in_flight() {
        paused_runtime().block_on(async {
            let mut services = chain_c(4);
            let mut script = timed(&services, 50, 50);
            for i in 0..12u64 {
                services.insert(format!("n{i:02}"), service(&[], 1, false));
                let b =
                    Behaviour { launch_ms: 50, healthy_ms: 60 + 37 * i, cutover_ms: 7 + 11 * i, ..Default::default() };
                script.insert(format!("n{i:02}"), b);
            }
            let entries = succeed_with_slow_journal(services, script, 16).await;
            let cut = entries.iter().find(|e| matches!(&e.event, Event::CutOver { service, .. } if service == "c3"));
            let at = cut.expect("c3 cut over").elapsed_ms;
            assert!(at <= 660, "c3 cut over at {at} ms: {entries:#?}");
        });
    }

    /// On a store that makes one journal write at a time, a run finds out
    /// and keeps one write in flight (`engine::depth`): a second would only
    /// queue behind the first. 40 chains of 10 services keep the journal busy
    /// for about 4 s of 30 ms writes; with two in flight throughout, nearly
    /// every write queued behind another.
    #[test]
    fn a_store_that_makes_one_write_at_a_time_gets_one_write_in_flight() {
        paused_runtime().block_on(async {
            let (faulty, store) = faulty();
            let services: BTreeMap<String, Service> = (0..400)
                .map(|i| {
                    let deps = if i >= 40 { vec![format!("s{:03}", i - 40)] } else { vec![] };
                    (format!("s{i:03}"), service(&deps, 1, false))
                })
                .collect();
            let script = random_timed(&services, 11, 100, 200);
            let h = harness_on(store, manifest(services), script).await;
            faulty.add(Rule::puts("/journal/").fault(Fault::Serial(Duration::from_millis(30))));
            // The server's debug log names each change of depth (README).
            let changes = &listening().1;
            let id = h.start(64).await;
            let (view, _) = h.finish(&id).await;
            assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
            let writes = h.store.list(&layout::journal_prefix(&id)).await.unwrap().len() as u64;
            let queued = faulty.queued();
            assert!(writes > 100, "{writes} writes: the journal was not kept busy");
            assert!(queued * 4 < writes, "{queued} of {writes} journal writes queued behind another");
            let logged = changes.of(&id);
            assert_eq!(logged.first(), Some(&1), "the change to one write in flight is logged: {logged:?}");
        });
    }

    /// A finished service task gives its slot back as soon as the loop
    /// turns, not when the loop happens to pick it over the next journal
    /// write. 2,000 independent services (5–24 ms launch and health each)
    /// at parallelism 256, on a store whose journal writes take 1 ms: 300 ms.
    /// Joined one per turn of the loop, finished tasks held their slots
    /// while events kept arriving, and the same run took 420–460 ms (the
    /// loop picks among ready branches at random).
    #[test]
    fn finished_tasks_give_their_slots_back_while_the_journal_is_busy() {
        paused_runtime().block_on(async {
            let (faulty, store) = faulty();
            let services: BTreeMap<String, Service> =
                (0..2000).map(|i| (format!("s{i:04}"), service(&[], 1, false))).collect();
            let script = random_timed(&services, 7, 5, 20);
            let h = harness_on(store, manifest(services), script).await;
            faulty.add(Rule::puts("/journal/").fault(Fault::Latency(Duration::from_millis(1))));
            let id = h.start(256).await;
            let (view, entries) = h.finish(&id).await;
            assert_eq!(view.state, RunState::Succeeded);
            assert!(h.provider.world().max_in_flight <= 256);
            let took = entries.last().unwrap().elapsed_ms;
            assert!(took <= 340, "took {took} ms");
        });
    }

    /// A server dies after a dependent was launched, while its dependency's
    /// `CutOver` was still being written: the next owner finds the
    /// dependency at its health gate and cuts it over again, and the
    /// dependent's relaunch (same key) finds the instances already there.
    #[test]
    fn a_crash_while_a_cutover_is_written_after_its_dependent_launched_resumes() {
        paused_runtime().block_on(async {
            let shared: DynStore = Arc::new(MemStore::new());
            let faulty = Arc::new(FaultyStore::new(shared.clone()));
            let services = BTreeMap::from([
                ("a".to_string(), service(&[], 1, false)),
                ("b".to_string(), service(&["a".to_string()], 1, false)),
            ]);
            let mut script = timed(&services, 100, 100);
            script.get_mut("a").unwrap().cutover_ms = 1_000;
            script.get_mut("b").unwrap().launch_ms = 10;
            let h = harness_on(faulty.clone(), manifest(services), script).await;
            let second = h.second_engine_on(shared.clone());
            let id = h.start(4).await;
            // a passed its gate (written, with b's launch); its cutover takes 1 s.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let entries = journal::read_from(&shared, &id, 0).await.unwrap();
            assert!(entries.iter().any(|e| matches!(&e.event, Event::LaunchStarted { service, .. } if service == "b")));
            // From now on journal writes are slow: a's CutOver is still in flight when b has launched.
            faulty.add(Rule::puts("/journal/").fault(Fault::Latency(Duration::from_secs(5))));
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(h.provider.world().launches.keys().any(|k| k.contains("/b/")), "b launched");
            h.engine.abort_all();
            let entries = journal::read_from(&shared, &id, 0).await.unwrap();
            assert!(
                !entries.iter().any(|e| matches!(&e.event, Event::CutOver { .. })),
                "a's cutover is not durable: {entries:#?}"
            );
            tokio::time::sleep(Duration::from_secs(16)).await;
            second.sweep().await.unwrap();
            h.assert_taken_over(&second, &id, 2).await;
        });
    }

    /// A server dies after cutting a service over, before its `CutOver` is
    /// durable (the cutover does not wait for `Healthy` to be written). The
    /// next owner resumes the attempt as possibly cut over: when its health
    /// gate now fails, traffic goes back to the instance it was to replace
    /// before the new ones are removed.
    #[test]
    fn a_resumed_attempt_that_fails_its_gate_points_traffic_back_first() {
        paused_runtime().block_on(async {
            let shared: DynStore = Arc::new(MemStore::new());
            let faulty = Arc::new(FaultyStore::new(shared.clone()));
            let services = BTreeMap::from([("db".to_string(), service(&[], 1, false))]);
            let h = harness_on(faulty.clone(), manifest(services.clone()), timed(&services, 100, 100)).await;
            {
                let mut w = h.provider.world();
                w.inventory = vec![stray("db", "db-old")];
                w.alive.insert("db-old".into(), "db".into());
            }
            let second = h.second_engine_on(shared.clone());
            let id = h.start(4).await;
            assert_eq!(h.engine.get(&id).await.unwrap().spec.steps[0].action, Action::Replace);
            // The first write (db's launch) is made; from now on journal writes are slow.
            faulty.add(Rule::puts("/journal/").fault(Fault::Latency(Duration::from_secs(5))));
            tokio::time::sleep(Duration::from_millis(400)).await;
            let new = h.provider.world().launches.values().next().cloned().expect("db launched");
            assert_eq!(h.provider.world().cutovers, [("db".to_string(), new.clone())], "cut over at once");
            h.engine.abort_all();
            let entries = journal::read_from(&shared, &id, 0).await.unwrap();
            assert!(!entries.iter().any(|e| matches!(&e.event, Event::CutOver { .. } | Event::Healthy { .. })));
            h.provider.world().failing_gates.insert("db".into());
            tokio::time::sleep(Duration::from_secs(16)).await;
            second.resume(&id).await.unwrap();
            let (view, _) = finish_on(&second, &id).await;
            assert_eq!(view.state, RunState::Failed, "{view:#?}");
            let w = h.provider.world();
            assert_eq!(w.cutovers.last(), Some(&("db".to_string(), vec!["db-old".to_string()])), "traffic is back");
            assert!(w.alive.contains_key("db-old"), "the old instance stays: {:?}", w.alive);
            assert!(new.iter().all(|i| !w.alive.contains_key(i)), "the new ones are removed: {:?}", w.alive);
            assert_eq!(w.launches.len(), 1, "the resumed attempt relaunched under its key: {:?}", w.launches);
        });
    }

    /// A server dies after its dependent's launch was durable and both
    /// services were launched and cut over (no `CutOver` durable). The next
    /// owner is cancelled before the dependent's task resumes: the
    /// dependent's instances, found by the run's tag, are removed too,
    /// traffic pointed back first. Nothing of the run is left.
    #[test]
    fn a_cancelled_resumed_run_removes_what_the_owner_before_launched() {
        paused_runtime().block_on(async {
            let shared: DynStore = Arc::new(MemStore::new());
            let faulty = Arc::new(FaultyStore::new(shared.clone()));
            let services = BTreeMap::from([
                ("db".to_string(), service(&[], 1, false)),
                ("api".to_string(), service(&["db".to_string()], 1, false)),
            ]);
            let h = harness_on(faulty.clone(), manifest(services.clone()), timed(&services, 100, 100)).await;
            {
                let mut w = h.provider.world();
                w.inventory = vec![stray("db", "db-old"), stray("api", "api-old")];
                w.alive.insert("db-old".into(), "db".into());
                w.alive.insert("api-old".into(), "api".into());
            }
            let second = h.second_engine_on(shared.clone());
            let id = h.start(4).await;
            // db's launch and api's, announced ahead, are durable; then writes are slow.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let launches = journal::read_from(&shared, &id, 0).await.unwrap();
            let launched = |s: &str| {
                launches.iter().any(|e| matches!(&e.event, Event::LaunchStarted { service, .. } if service == s))
            };
            assert!(launched("db") && launched("api"), "{launches:#?}");
            faulty.add(Rule::puts("/journal/").fault(Fault::Latency(Duration::from_secs(5))));
            tokio::time::sleep(Duration::from_millis(400)).await;
            let new: Vec<String> = h.provider.world().launches.values().flatten().cloned().collect();
            assert_eq!(new.len(), 2, "db and api launched: {new:?}");
            assert_eq!(h.provider.world().cutovers.len(), 2, "both cut over");
            h.engine.abort_all();

            tokio::time::sleep(Duration::from_secs(16)).await;
            second.resume(&id).await.unwrap();
            second.cancel(&id, "alice").await.unwrap();
            let (view, _) = finish_on(&second, &id).await;
            assert_eq!(view.state, RunState::Cancelled, "{view:#?}");
            assert_eq!(view.services["api"].state, ServiceState::Cancelled);
            let w = h.provider.world();
            assert!(new.iter().all(|i| !w.alive.contains_key(i)), "the run's instances are removed: {:?}", w.alive);
            assert!(w.alive.contains_key("db-old") && w.alive.contains_key("api-old"), "{:?}", w.alive);
            for s in ["db", "api"] {
                let last = w.cutovers.iter().rev().find(|(c, _)| c == s).map(|(_, to)| to.clone());
                assert_eq!(last, Some(vec![format!("{s}-old")]), "{s}'s traffic is back: {:?}", w.cutovers);
            }
        });
    }

    /// A cutover that fails part way is undone: traffic goes back to the
    /// instance being replaced before the new ones are removed.
    #[test]
    fn a_cutover_that_fails_part_way_points_traffic_back() {
        paused_runtime().block_on(async {
            let services = BTreeMap::from([("db".to_string(), service(&[], 1, false))]);
            let mut script = timed(&services, 100, 100);
            script.get_mut("db").unwrap().cutover_fails = true;
            let h = harness(manifest(services), script).await;
            {
                let mut w = h.provider.world();
                w.inventory = vec![stray("db", "db-old")];
                w.alive.insert("db-old".into(), "db".into());
            }
            let id = h.start(4).await;
            let (view, _) = h.finish(&id).await;
            assert_eq!(view.state, RunState::Failed, "{view:#?}");
            assert!(view.services["db"].error.as_deref().unwrap_or_default().contains("cutover failed"), "{view:#?}");
            let w = h.provider.world();
            let new = w.launches.values().next().cloned().unwrap();
            assert_eq!(w.cutovers, [("db".to_string(), new.clone()), ("db".to_string(), vec!["db-old".to_string()])]);
            assert!(w.alive.contains_key("db-old") && new.iter().all(|i| !w.alive.contains_key(i)), "{:?}", w.alive);
        });
    }

    #[test]
    fn a_lost_reply_to_a_journal_write_is_resolved() {
        paused_runtime().block_on(async {
            let (faulty, store) = faulty();
            let (services, script) = chain_of(4, 100);
            let h = harness_on(store, manifest(services), script).await;
            let lost = faulty.add(Rule::puts("/journal/").after(3).times(2).fault(Fault::Ambiguous));
            let id = h.start(4).await;
            let (view, _) = h.finish(&id).await;
            assert_eq!(lost.fired(), 2);
            assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
            assert_launched_once(&h, &id, 4).await;
        });
    }

    #[tokio::test(start_paused = true)]
    async fn lost_replies_to_a_snapshot_create_and_a_ref_swap_are_resolved() {
        let (faulty, store) = faulty();
        let repo = SnapshotRepo::new(store.clone());
        let new = || snapshot_of(manifest(chain_of(2, 1).0));
        let create = faulty.add(Rule::puts("/snapshots/").times(1).fault(Fault::Ambiguous));
        assert_eq!(repo.push(new()).await.unwrap().version, 1);
        assert_eq!(create.fired(), 1);
        assert_eq!(store.list(&layout::snapshots_prefix("shop")).await.unwrap().len(), 1, "no second version");
        assert_eq!(repo.get_ref("shop", "latest").await.unwrap().unwrap().version, 1);
        repo.push(new()).await.unwrap();
        let swap = faulty.add(Rule::puts("/refs/latest").times(1).fault(Fault::Ambiguous));
        assert_eq!(repo.push(new()).await.unwrap().version, 3);
        assert_eq!(swap.fired(), 1);
        assert_eq!(repo.get_ref("shop", "latest").await.unwrap().unwrap().version, 3);
        let promote = faulty.add(Rule::puts("/refs/known-good").times(1).fault(Fault::Ambiguous));
        repo.promote("shop", "2", "t", "ok", Some(0)).await.unwrap();
        assert_eq!(promote.fired(), 1);
        let kg = repo.get_ref("shop", "known-good").await.unwrap().unwrap();
        assert_eq!((kg.version, kg.previous), (2, 0));
    }

    /// Two journal writes in flight, and a crash with the second made and
    /// the first not: nobody acted on either (they are acknowledged in
    /// order), the second is not read, and the server that resumes the run
    /// fences at the missing slot and finishes it, launching nothing twice.
    #[test]
    fn a_crash_with_the_second_of_two_writes_made_and_the_first_not_resumes() {
        paused_runtime().block_on(async {
            let shared: DynStore = Arc::new(MemStore::new());
            let faulty = Arc::new(FaultyStore::new(shared.clone()));
            let services: BTreeMap<String, Service> =
                (0..6).map(|i| (format!("n{i}"), service(&[], 1, false))).collect();
            let script = services
                .keys()
                .enumerate()
                .map(|(i, k)| {
                    (k.clone(), Behaviour { launch_ms: 50, healthy_ms: 40 + 30 * i as u64, ..Default::default() })
                })
                .collect();
            let h = harness_on(faulty.clone(), manifest(services), script).await;
            let second = h.second_engine_on(shared.clone());
            // RunStarted with the launches, then the launched instances are written; the next write hangs.
            let hang =
                faulty.add(Rule::puts("/journal/").after(2).times(1).fault(Fault::Latency(Duration::from_secs(600))));
            let id = h.start(6).await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            assert_eq!(hang.fired(), 1);
            h.engine.abort_all();
            let keys = shared.list(&layout::journal_prefix(&id)).await.unwrap();
            assert_eq!(keys.len(), 3, "two objects, a missing one, and one made after it: {keys:?}");
            let entries = journal::read_from(&shared, &id, 0).await.unwrap();
            assert!(!entries.iter().any(|e| matches!(e.event, Event::Healthy { .. })), "{entries:#?}");
            assert!(entries.iter().any(|e| matches!(e.event, Event::InstancesLaunched { .. })), "{entries:#?}");
            tokio::time::sleep(Duration::from_secs(16)).await;
            second.sweep().await.unwrap();
            h.assert_taken_over(&second, &id, 6).await;
        });
    }

    #[test]
    fn an_owner_that_cannot_renew_its_lease_stops_and_another_takes_over() {
        paused_runtime().block_on(async {
            let shared: DynStore = Arc::new(MemStore::new());
            // The first server's view of the store: its lease writes fail.
            let faulty = Arc::new(FaultyStore::new(shared.clone()));
            let (services, script) = chain_of(6, 3000);
            let h = harness_on(faulty.clone(), manifest(services), script).await;
            // Created now: engines' clocks follow tokio's paused clock from their creation.
            let second = h.second_engine_on(shared.clone());
            let id = h.start(6).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            faulty.add(Rule::puts("leases/").fault(Fault::Permanent));
            // Past the TTL the first owner must have stopped acting.
            tokio::time::sleep(Duration::from_secs(16)).await;
            let before = journal::read_from(&shared, &id, 0).await.unwrap().len();
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(
                journal::read_from(&shared, &id, 0).await.unwrap().len(),
                before,
                "the fenced owner wrote nothing more"
            );
            second.sweep().await.unwrap();
            h.assert_taken_over(&second, &id, 6).await;
        });
    }

    /// The snapshot object commits a push: when its digest index and `latest`
    /// cannot be written, the push still succeeds and readers repair them.
    #[tokio::test(start_paused = true)]
    async fn a_push_is_committed_by_its_snapshot_object() {
        let (faulty, store) = faulty();
        let repo = SnapshotRepo::new(store.clone());
        let new = || snapshot_of(manifest(chain_of(2, 1).0));
        let index = faulty.add(Rule::puts("/digests/").fault(Fault::Permanent));
        let latest = faulty.add(Rule::puts("/refs/latest").fault(Fault::Permanent));
        let snap = repo.push(new()).await.unwrap();
        assert_eq!(snap.version, 1);
        assert!(index.fired() > 0 && latest.fired() > 0);
        index.disable();
        latest.disable();
        assert_eq!(repo.resolve("shop", "latest").await.unwrap(), 1);
        assert_eq!(repo.resolve("shop", &snap.digest).await.unwrap(), 1, "found by a scan, and the index repaired");
        assert!(
            store
                .get(&layout::digest_index("shop", snap.digest.trim_start_matches("sha256:")))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(repo.push(new()).await.unwrap().version, 2);
        assert_eq!(repo.get_ref("shop", "latest").await.unwrap().unwrap().version, 2);
    }

    /// A run that could not be registered leaves nothing a sweep would
    /// execute: its record is written while the executor prepares, and the
    /// first journal write waits for it.
    #[test]
    fn a_run_that_fails_to_register_leaves_nothing_behind() {
        paused_runtime().block_on(async {
            let (faulty, store) = faulty();
            let (services, script) = chain_of(2, 100);
            let h = harness_on(store.clone(), manifest(services), script).await;
            for pattern in ["run-index/", "/run.json"] {
                let rule = faulty.add(Rule::puts(pattern).fault(Fault::Permanent));
                assert!(h.engine.start(recovery_of_latest(None)).await.is_err(), "{pattern}");
                rule.disable();
                let (lease, _) = lease::read(&store, "r1").await.unwrap().unwrap();
                assert!(lease.released, "{pattern}: the lease is released");
                assert!(h.engine.list(None, false, 10).await.unwrap().runs.is_empty(), "{pattern}: no run is listed");
                let written = store.list("runs/").await.unwrap();
                assert!(!written.iter().any(|k| k.contains("/journal/")), "{pattern}: no journal: {written:?}");
                h.second_engine().sweep().await.unwrap();
                assert!(h.provider.world().launches.is_empty(), "{pattern}: nothing was executed");
            }
            // The record is written but the run's first journal entry is not:
            // the caller is told it failed, and it never runs, not even when resumed.
            let rule = faulty.add(Rule::puts("/journal/").fault(Fault::Permanent));
            assert!(h.engine.start(recovery_of_latest(None)).await.is_err());
            rule.disable();
            let (lease, _) = lease::read(&store, "r1").await.unwrap().unwrap();
            assert!(lease.released, "the lease is released");
            let listed = h.engine.list(None, false, 10).await.unwrap().runs;
            assert_eq!(listed.len(), 1);
            let abandoned = listed[0].spec.id.clone();
            tokio::time::advance(Duration::from_secs(60)).await;
            // The sweep ends it as abandoned: never executed, never left "running".
            h.second_engine().sweep().await.unwrap();
            assert!(h.provider.world().launches.is_empty(), "nothing was executed");
            let view = h.engine.get(&abandoned).await.unwrap();
            assert_eq!(view.state, RunState::Cancelled);
            assert!(h.engine.resume(&abandoned).await.is_err(), "a finished run is not resumed");
            // The region is free for the next recovery.
            let id = h.start(2).await;
            assert_eq!(h.finish(&id).await.0.state, RunState::Succeeded);
        });
    }

    /// Garbage in every kind of persisted object gives the integrity error
    /// naming its key: never a panic, a default, or an action.
    #[test]
    fn garbage_in_any_persisted_object_is_an_integrity_error() {
        paused_runtime().block_on(async {
            let (faulty, store) = faulty();
            let (services, script) = chain_of(2, 100);
            let h = harness_on(store.clone(), manifest(services), script).await;
            let id = h.start(2).await;
            h.finish(&id).await;
            let repo = SnapshotRepo::new(store.clone());
            repo.promote("shop", "1", "t", "ok", None).await.unwrap();
            repo.push(snapshot_of(manifest(chain_of(2, 1).0))).await.unwrap();
            repo.reject("shop", "2", "t", "bad").await.unwrap();
            h.engine.request(&id, Control::Cancel { by: "t".into() }).await.unwrap();
            crate::store::ImageRepo::new(store.clone())
                .import(Bytes::from_static(b"#!/bin/sh\ntrue\n"), "x", "t")
                .await
                .unwrap();
            let image = crate::store::ImageRepo::new(store.clone()).list().await.unwrap()[0].id.clone();
            let garbage = [&b"\x00\xffnot json"[..], b"{}", br#"{"format_version": 99}"#, b"[]"];
            for bytes in garbage {
                let g = || Fault::Garbage(Bytes::from_static(bytes));
                let patterns = [
                    "/snapshots/",
                    "/refs/known-good",
                    "/rejections/",
                    "leases/",
                    "/journal/",
                    "/run.json",
                    "/requests/",
                    "images/",
                ];
                for pattern in patterns {
                    let rule = faulty.add(Rule::gets(pattern).fault(g()));
                    let err = match pattern {
                        "/snapshots/" => repo.get("shop", 1).await.unwrap_err(),
                        "/refs/known-good" => repo.get_by_ref("shop", "known-good").await.unwrap_err(),
                        "/rejections/" => repo.rejection("shop", 2).await.unwrap_err(),
                        "leases/" => lease::read(&store, "r1").await.unwrap_err(),
                        // A finished run reads from its compacted journal (one
                        // that fails its checks is passed over for this read).
                        "/journal/" => super::journal::read_from(&store, &id, 0).await.unwrap_err(),
                        "/run.json" => h.engine.get(&id).await.unwrap_err(),
                        "/requests/" => read_requests(&store, &id).await.unwrap_err(),
                        _ => crate::store::ImageRepo::new(store.clone()).meta(&image).await.unwrap_err(),
                    };
                    rule.disable();
                    match &err {
                        Error::Integrity { key, .. } => assert!(key.contains(pattern), "{pattern}: {err}"),
                        other => panic!("{pattern} with {bytes:?}: not an integrity error: {other}"),
                    }
                    assert_eq!(crate::api::status::to_status(err).code(), tonic::Code::DataLoss);
                }
            }
            // A lease whose expiry does not parse is corrupt, never free.
            let key = layout::lease("r1");
            let mut lease: serde_json::Value =
                serde_json::from_slice(&store.get(&key).await.unwrap().unwrap().bytes).unwrap();
            lease["expires_at"] = "soon".into();
            store.put(&key, Bytes::from(lease.to_string()), PutOptions::overwrite()).await.unwrap();
            assert!(matches!(lease::read(&store, "r1").await, Err(Error::Integrity { .. })));
            let err = h.engine.start(recovery_of_latest(None)).await.unwrap_err();
            assert!(matches!(err, Error::Integrity { .. }), "a corrupt lease is not taken: {err}");
            // Timings only inform estimates: garbage is ignored, and plans still work.
            store.put(&layout::timings("shop"), Bytes::from_static(b"garbage"), PutOptions::overwrite()).await.unwrap();
            assert!(read_timings(&store, "shop").await.services.is_empty());
        });
    }
}

#[test]
fn run_ids_sort_by_start_time() {
    let t = chrono::Utc::now();
    let ids: Vec<String> = (0..5).map(|i| new_run_id(t + chrono::Duration::milliseconds(i))).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    check_run_id(&ids[0]).unwrap();
}

/// A region of one service, `db`, launched and healthy in 10 ms each.
async fn one_quick_service() -> Harness {
    let mut services = BTreeMap::new();
    services.insert("db".to_string(), service(&[], 1, false));
    let script = [("db".to_string(), Behaviour { launch_ms: 10, healthy_ms: 10, ..Default::default() })].into();
    harness(manifest(services), script).await
}

fn drill_of_latest(timeout: Option<Duration>, keep_for: Duration) -> StartRequest {
    StartRequest {
        kind: RunKind::Drill,
        prune: false,
        drill: Some(super::drill::DrillOptions { keep_for, timeout, promote_on_pass: false, schedule: None }),
        ..recovery_of_latest(None)
    }
}

fn slow_pair() -> (Manifest, BTreeMap<String, Behaviour>) {
    let mut services = BTreeMap::new();
    services.insert("db".to_string(), service(&[], 1, false));
    services.insert("api".to_string(), service(&["db".to_string()], 1, false));
    let script = [
        ("db".to_string(), Behaviour { launch_ms: 100, healthy_ms: 100, ..Default::default() }),
        ("api".to_string(), Behaviour { launch_ms: 100, healthy_ms: 50_000, ..Default::default() }),
    ]
    .into_iter()
    .collect();
    (manifest(services), script)
}

#[test]
fn a_drill_that_times_out_fails_and_is_torn_down() {
    paused_runtime().block_on(async {
        let (m, script) = slow_pair();
        let h = harness(m, script).await;
        let view = h.engine.start(drill_of_latest(Some(Duration::from_secs(5)), Duration::ZERO)).await.unwrap();
        let ns = view.spec.drill.clone().unwrap().namespace;
        assert!(ns.starts_with("shop.drill.r-"), "{ns}");
        assert_eq!(view.spec.lease_key(), "drill/shop/r1");
        let (view, _) = h.finish(&view.spec.id).await;
        assert_eq!(view.state, RunState::Failed);
        let j = view.judgement.clone().unwrap();
        assert_eq!(j.verdict, crate::domain::drill::Verdict::Failed);
        assert_eq!(j.root_cause.as_deref(), Some("the drill timed out after 5.0s"));
        let (removed, remaining) = view.torn_down.clone().unwrap();
        // api's task removed its own instances when it was cancelled; the teardown the rest.
        assert_eq!(removed, ["db-i1"], "{removed:?}");
        assert!(remaining.is_empty());
        assert!(h.provider.world().alive.is_empty(), "nothing of the drill is left");
        // Every instance ran in the drill's namespace, never the environment's.
        assert!(h.provider.world().envs.values().all(|e| e == &ns));
        let record = h.engine.teardown_of(&view.spec.id).await.unwrap().unwrap();
        assert_eq!((record.by.as_str(), record.instances.len()), ("run", 1));
        let (json, html) = h.engine.report(&view.spec.id).await.unwrap();
        assert!(json.contains("\"verdict\": \"failed\"") && html.contains("timed out"), "{json}");
    });
}

#[test]
fn a_drill_never_waits_for_or_blocks_a_recovery_of_its_region() {
    paused_runtime().block_on(async {
        let (m, script) = slow_pair();
        let h = harness(m, script).await;
        let drill = h.engine.start(drill_of_latest(Some(Duration::from_secs(60)), Duration::ZERO)).await.unwrap();
        // The region's lease is free for a recovery while the drill runs.
        let rec = h.engine.start(recovery_of_latest(None)).await.unwrap();
        h.engine.cancel(&drill.spec.id, "t").await.unwrap();
        let (d, _) = h.finish(&drill.spec.id).await;
        assert_eq!(d.state, RunState::Cancelled);
        assert_eq!(d.judgement.unwrap().root_cause.as_deref(), Some("the drill was cancelled"));
        assert!(d.torn_down.is_some());
        h.engine.cancel(&rec.spec.id, "t").await.unwrap();
        h.finish(&rec.spec.id).await;
    });
}

#[test]
fn a_passed_drill_kept_for_inspection_is_swept_once_its_time_is_up() {
    paused_runtime().block_on(async {
        let h = one_quick_service().await;
        let view = h.engine.start(drill_of_latest(None, Duration::from_secs(600))).await.unwrap();
        let (view, _) = h.finish(&view.spec.id).await;
        assert_eq!(view.judgement.as_ref().unwrap().verdict, crate::domain::drill::Verdict::Passed);
        assert!(view.kept_until.is_some() && view.torn_down.is_none());
        assert_eq!(h.provider.world().alive.len(), 1, "kept up");
        assert!(h.engine.sweep_drills().await.unwrap().swept.is_empty(), "not before its time");
        tokio::time::advance(Duration::from_secs(601)).await;
        // A region that cannot be listed is reported, and the rest is swept.
        h.provider.world().failing_regions.push("xx-fake-1".into());
        let sweep = h.engine.sweep_drills().await.unwrap();
        assert_eq!(sweep.errors, vec!["local: cannot list drill leftovers in xx-fake-1: no such region".to_string()]);
        let swept = sweep.swept;
        assert_eq!(swept.len(), 1, "{swept:?}");
        assert!(swept[0].reason.contains("was kept until"), "{swept:?}");
        assert!(h.provider.world().alive.is_empty());
        assert_eq!(h.engine.teardown_of(&view.spec.id).await.unwrap().unwrap().by, "sweeper");
    });
}

/// A schedule of the one-service harness's environment.
fn every_minute_schedule(cron: &str) -> super::schedule::NewSchedule {
    super::schedule::NewSchedule {
        environment: "shop".into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        snapshot: "latest".into(),
        region: None,
        promote_on_pass: false,
        actor: "t".into(),
    }
}

#[test]
fn a_corrupt_schedule_stops_only_itself() {
    paused_runtime().block_on(async {
        let h = one_quick_service().await;
        let new = every_minute_schedule;
        let good = h.engine.create_schedule(new("0 * * * * *")).await.unwrap();
        let bad = h.engine.create_schedule(new("30 * * * * *")).await.unwrap();
        let key = layout::schedule(&bad.schedule.id);
        h.engine
            .ctx
            .store
            .put(&key, bytes::Bytes::from_static(b"{oops"), crate::store::PutOptions::overwrite())
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let fired = h.engine.fire_due_schedules().await.unwrap();
        assert_eq!(fired.len(), 1, "the good schedule fires: {fired:?}");
        h.finish(&fired[0]).await;
        let listed = h.engine.list_schedules(Some("other")).await.unwrap();
        assert_eq!(listed.len(), 1, "a corrupt schedule shows under every filter");
        assert_eq!(listed[0].corruption.as_ref().unwrap().key, key);
        let removed = h.engine.delete_schedule(&bad.schedule.id).await.unwrap();
        assert!(removed.corruption.is_some());
        let left = h.engine.list_schedules(None).await.unwrap();
        assert_eq!(left.iter().map(|s| s.schedule.id.clone()).collect::<Vec<_>>(), vec![good.schedule.id]);
    });
}

#[test]
fn schedules_fire_each_tick_once_and_a_missed_tick_once() {
    paused_runtime().block_on(async {
        let h = one_quick_service().await;
        let second = h.second_engine();
        let new = every_minute_schedule;
        // Start just after a minute turns, so that the check below cannot straddle one.
        let second_of_minute = chrono::Timelike::second(&h.engine.ctx.clock.now()) as u64;
        tokio::time::advance(Duration::from_secs(61 - second_of_minute)).await;
        let s = h.engine.create_schedule(new("0 * * * * *")).await.unwrap();
        assert!(s.next.is_some());
        // The tick before the schedule existed is not a missed tick.
        assert!(h.engine.fire_due_schedules().await.unwrap().is_empty());
        let drills =
            |e: Arc<Engine>| async move { e.list_of(None, Some(RunKind::Drill), false, 100).await.unwrap().runs };
        // The next minute: two servers, one drill.
        tokio::time::advance(Duration::from_secs(61)).await;
        let (a, b) = tokio::join!(h.engine.fire_due_schedules(), second.fire_due_schedules());
        assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
        let first = drills(h.engine.clone()).await;
        assert_eq!(first.len(), 1);
        h.finish(&first[0].spec.id).await;
        assert!(h.engine.fire_due_schedules().await.unwrap().is_empty(), "a tick fires once");
        // Every server down for ten minutes: the ten missed ticks run once.
        tokio::time::advance(Duration::from_secs(600)).await;
        let fired = h.engine.fire_due_schedules().await.unwrap();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(second.fire_due_schedules().await.unwrap().is_empty());
        h.finish(&fired[0]).await;
        assert_eq!(drills(h.engine.clone()).await.len(), 2);
        let listed = h.engine.list_schedules(None).await.unwrap();
        assert_eq!(listed[0].last.as_ref().map(|(_, run)| run.as_str()), Some(fired[0].as_str()));
        h.engine.delete_schedule(&s.schedule.id).await.unwrap();
        assert!(h.engine.list_schedules(None).await.unwrap().is_empty());
    });
}

#[test]
fn events_that_arrive_together_share_one_journal_write() {
    paused_runtime().block_on(async {
        let services = root_and_leaves(50);
        let script = timed(&services, 100, 200);
        let h = harness(manifest(services), script).await;
        let id = h.start(64).await;
        let (view, entries) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded);
        assert_ordering(&view, &entries);
        let objects = h.store.list(&crate::store::layout::journal_prefix(&id)).await.unwrap().len();
        assert_eq!(entries.len(), journal::read_from(&h.store, &id, 0).await.unwrap().len());
        // 51 services × 4 events (+ start and finish) in far fewer writes: the
        // leaves' launches, health gates and cutovers happen together.
        assert!(objects * 4 < entries.len(), "{objects} objects for {} entries", entries.len());
    });
}

/// One cutover that makes more services ready than a journal write holds:
/// the announcements stop at the batch limit, the rest announce themselves.
/// (A batch past the limit once stopped the executor at 10,000 services.)
#[test]
fn a_cutover_that_readies_more_services_than_a_batch_holds() {
    paused_runtime().block_on(async {
        let n = journal::MAX_BATCH + 50;
        let services = root_and_leaves(n);
        let script = timed(&services, 10, 10);
        let h = harness(manifest(services), script).await;
        let id = h.start(1024).await;
        let finished = tokio::time::timeout(Duration::from_secs(3600), h.finish(&id)).await;
        let (view, entries) = finished.expect("the run finishes (its executor did not stop)");
        assert_eq!(view.state, RunState::Succeeded);
        assert_ordering(&view, &entries);
        let started = entries.iter().filter(|e| matches!(e.event, Event::LaunchStarted { .. })).count();
        assert_eq!(started, n + 1, "every service's launch recorded once");
    });
}

/// A dependent's launch is announced in a journal write made while its
/// dependency's health gate is under way (after that dependency's launch), so
/// that no link of the critical path waits for a write; the provider still
/// sees the launch after the cutover (`Harness::finish` checks it, and a's
/// cutover takes 100 ms). A service that waits for approval is not
/// announced, and every service is launched once.
#[test]
fn a_dependent_launch_is_announced_while_its_dependency_health_gate_is_under_way() {
    paused_runtime().block_on(async {
        let services = BTreeMap::from([
            ("a".to_string(), service(&[], 1, false)),
            ("b".to_string(), service(&["a".to_string()], 1, false)),
            ("gated".to_string(), service(&["b".to_string()], 1, true)),
        ]);
        let mut script = timed(&services, 10, 10);
        script.get_mut("a").unwrap().cutover_ms = 100;
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        h.engine.approve(&id, "gated", "alice").await.unwrap();
        let (view, entries) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded);
        assert_ordering(&view, &entries);
        // Which journal object holds each entry.
        let mut object_of = BTreeMap::new();
        for key in h.store.list(&crate::store::layout::journal_prefix(&id)).await.unwrap() {
            let bytes = h.store.get(&key).await.unwrap().unwrap().bytes;
            for e in journal::decode_object(&bytes, &key, "test").unwrap() {
                object_of.insert(e.seq, key.clone());
            }
        }
        let seq = |f: &dyn Fn(&Event) -> bool| entries.iter().find(|e| f(&e.event)).map(|e| e.seq).unwrap();
        let start_a = seq(&|e| matches!(e, Event::LaunchStarted { service, .. } if service == "a"));
        let gate_a = seq(&|e| matches!(e, Event::Healthy { service, .. } if service == "a"));
        let start_b = seq(&|e| matches!(e, Event::LaunchStarted { service, .. } if service == "b"));
        assert!(start_a < start_b && start_b < gate_a, "b's launch is written after a's, before a's gate");
        assert_ne!(object_of[&gate_a], object_of[&start_b], "b's launch is written ahead of a's gate");
        let cut_b = seq(&|e| matches!(e, Event::CutOver { service, .. } if service == "b"));
        let asked = seq(&|e| matches!(e, Event::ApprovalRequested { service } if service == "gated"));
        assert!(asked > cut_b, "gated asks for approval after b is cut over");
        assert!(
            !entries
                .iter()
                .any(|e| e.seq <= asked
                    && matches!(&e.event, Event::LaunchStarted { service, .. } if service == "gated")),
            "a service waiting for approval is not announced"
        );
        let launches = h.provider.world().launches.clone();
        for s in ["a", "b", "gated"] {
            let n = launches.keys().filter(|k| k.contains(&format!("/{s}/"))).count();
            assert_eq!(n, 1, "{s} launched once: {launches:?}");
        }
        let launched = entries
            .iter()
            .filter(|e| matches!(&e.event, Event::LaunchStarted { service, .. } if service == "b"))
            .count();
        assert_eq!(launched, 1, "b's launch is recorded once");
        // Reports count b's launch from a's cutover, which it waited for.
        let step_b = view.spec.steps.iter().find(|s| s.service == "b").unwrap();
        assert!(view.services["b"].launched_ms < view.queued_ms_of(step_b));
        assert_eq!(view.launch_began_ms(step_b), view.queued_ms_of(step_b));
        // Watchers (gRPC `Watch`, `lifeboat run watch`) read that b waits for a.
        let told: Vec<_> =
            h.engine.watch(&id, 0, &Default::default()).await.unwrap().map(|n| n.unwrap()).collect().await;
        let b_told = told.iter().find(|n| n.entry.seq == start_b).unwrap();
        assert_eq!(b_told.message, "b: launch announced: it begins once a is cut over");
        assert_eq!(b_told.waits_for, vec!["a"]);
        // A watcher that starts at gated's launch did not see b's cutover
        // streamed, and still words it as a launch.
        let start_gated = seq(&|e| matches!(e, Event::LaunchStarted { service, .. } if service == "gated"));
        let late: Vec<_> =
            h.engine.watch(&id, start_gated, &Default::default()).await.unwrap().map(|n| n.unwrap()).collect().await;
        assert_eq!((late[0].message.as_str(), late[0].waits_for.len()), ("gated: launching", 0));
        let a_told = told.iter().find(|n| n.entry.seq == start_a).unwrap();
        assert_eq!((a_told.message.as_str(), a_told.waits_for.len()), ("a: launching", 0));
    });
}

/// `--promote-on-pass` is a compare-and-swap against the known-good the
/// drill started with: a promotion made while the drill ran wins, and the
/// drill says why it did not move known-good.
#[test]
fn promote_on_pass_loses_to_a_promotion_made_while_the_drill_ran() {
    paused_runtime().block_on(async {
        let (m, mut script) = slow_pair();
        script.get_mut("api").unwrap().healthy_ms = 2_000;
        let h = harness(m.clone(), script).await;
        let repo = SnapshotRepo::new(h.store.clone());
        repo.promote("shop", "1", "t", "first", None).await.unwrap();
        let mut changed = m.clone();
        changed.services.get_mut("db").unwrap().replicas = 2;
        let v2 = repo.push(snapshot_of(changed.clone())).await.unwrap().version;
        let mut req = drill_of_latest(Some(Duration::from_secs(60)), Duration::ZERO);
        req.drill.as_mut().unwrap().promote_on_pass = true;
        let drill = h.engine.start(req).await.unwrap();
        assert_eq!(drill.spec.snapshot_version, v2);
        // While the drill runs, someone promotes a newer snapshot.
        tokio::time::sleep(Duration::from_millis(500)).await;
        changed.services.get_mut("db").unwrap().replicas = 3;
        let v3 = repo.push(snapshot_of(changed)).await.unwrap().version;
        repo.promote("shop", &v3.to_string(), "alice", "hotfix", None).await.unwrap();
        let (view, _) = h.finish(&drill.spec.id).await;
        assert_eq!(view.judgement.as_ref().unwrap().verdict, crate::domain::drill::Verdict::Passed);
        let (promoted, detail) = view.promotion.clone().unwrap();
        assert!(!promoted, "{detail}");
        assert!(detail.starts_with(&format!("known-good not moved to snapshot {v2}")), "{detail}");
        assert_eq!(repo.get_by_ref("shop", "known-good").await.unwrap().version, v3, "the newer promotion stands");
    });
}

/// The steps a link of the critical path reports (`lifeboat::timeline`, what
/// the benchmark harness's `--timeline` sums) come in the order it reads them.
#[test]
fn a_link_reports_its_timeline_steps_in_order() {
    let recorder = &listening().0;
    paused_runtime().block_on(async {
        let mut services = BTreeMap::new();
        services.insert("timeline-db".to_string(), service(&[], 1, false));
        services.insert("timeline-api".to_string(), service(&["timeline-db".to_string()], 1, false));
        let h = harness(manifest(services.clone()), timed(&services, 50, 50)).await;
        let id = h.start(4).await;
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
    });
    // Other tests' steps are recorded too: only this run's services count.
    let steps: Vec<_> = recorder.take().into_iter().filter(|s| s.service.starts_with("timeline-")).collect();
    let of = |service: &str| steps.iter().filter(|s| s.service == service).map(|s| s.step.as_str()).collect::<Vec<_>>();
    let link = ["task started", "launch called", "gate passed", "cut over", "cutover received"];
    // The root's launch is in the run's first write; api's is announced while db's gate is under way.
    assert_eq!(of("timeline-db"), link);
    assert_eq!(of("timeline-api")[0], "launch durable");
    assert_eq!(of("timeline-api")[1..], link);
    let at = |service: &str, step: &str| {
        steps.iter().position(|s| s.service == service && s.step == step).expect("every step is reported")
    };
    assert!(at("timeline-api", "launch durable") < at("timeline-db", "gate passed"), "{steps:#?}");
    assert!(at("timeline-db", "cutover received") < at("timeline-api", "task started"), "{steps:#?}");
    assert!(steps.windows(2).all(|w| w[0].at <= w[1].at));
}

/// The instances a launch made are recorded without anyone waiting for them:
/// they share the write of the `Healthy` that follows soon enough, and are
/// written on their own once they have lingered `LINGER` (20 ms) without one.
#[test]
fn instances_launched_linger_for_a_write_somebody_waits_for() {
    paused_runtime().block_on(async {
        let mut services = BTreeMap::new();
        services.insert("quick".to_string(), service(&[], 1, false));
        services.insert("slow".to_string(), service(&[], 1, false));
        let mut script = timed(&services, 50, 10);
        script.get_mut("slow").unwrap().launch_ms = 100;
        script.get_mut("slow").unwrap().healthy_ms = 500;
        let h = harness(manifest(services), script).await;
        let id = h.start(4).await;
        let (view, _) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
        let mut objects = Vec::new();
        for key in h.store.list(&layout::journal_prefix(&id)).await.unwrap() {
            let o = h.store.get(&key).await.unwrap().unwrap();
            objects.push(String::from_utf8(o.bytes.to_vec()).unwrap());
        }
        let holding = |service: &str, kind: &str| {
            let needle = format!("\"type\":\"{kind}\",\"service\":\"{service}\"");
            objects
                .iter()
                .find(|o| o.contains(&needle))
                .unwrap_or_else(|| panic!("no {kind} of {service}: {objects:#?}"))
        };
        // quick: launched at 50 ms, healthy at 60 ms: one write.
        let launched = holding("quick", "instances_launched");
        assert!(launched.contains("\"type\":\"healthy\",\"service\":\"quick\""), "{launched}");
        // slow: launched at 100 ms, nothing else until 600 ms: written at 120 ms.
        let launched = holding("slow", "instances_launched");
        assert!(!launched.contains("\"type\":\"healthy\""), "{launched}");
        assert!(launched.contains("\"elapsed_ms\":120"), "{launched}");
    });
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

mod proposals;
