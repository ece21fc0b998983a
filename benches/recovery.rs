//! Recovery time against its limit, the critical path, beside the schedules
//! other DR tools use. Run: `cargo bench --bench recovery` (writes the
//! results between the markers in BENCHMARKS.md); `-- --quick` runs small
//! sizes only and prints (what CI runs, so the harness never rots).
//!
//! 1. Launch overhead of the local provider (launch call → process running)
//!    at 1, 4, 8 and 16 launches at once, real processes.
//! 2. Real-process regions through the real engine and local provider:
//!    services that are ready 1 s after they start, probed every 200 ms.
//! 3. Seeded random layered DAGs of 100 to 10,000 services with a provider
//!    whose launch and health times (5–25 ms each) really elapse, through the
//!    real engine, journal and directory store; each region also under a
//!    wave-barrier schedule (every service of a topological level waits for
//!    the whole previous level, as AWS DRS launch steps, Azure Site Recovery
//!    groups or Argo CD sync waves do) and a global parallelism of 10.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lifeboat::domain::manifest::{self, Manifest};
use lifeboat::domain::plan::{Check, LiveInstance};
use lifeboat::domain::run::{RunKind, RunView};
use lifeboat::domain::source::Format;
use lifeboat::engine::clock::SystemClock;
use lifeboat::engine::{Engine, RunContext, StartRequest};
use lifeboat::provider::local::LocalProvider;
use lifeboat::provider::{ComputeProvider, LaunchSpec, LogFrom, LogRead, ProviderResult, ServiceRef};
use lifeboat::store::{DynStore, FsStore, ImageRepo, NewSnapshot, ObjectStore, SnapshotRepo};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A counter's total over its labels, from the metrics.
fn counter(name: &str) -> f64 {
    lifeboat::metrics::render()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Object-store requests so far (all operations).
fn store_requests() -> f64 {
    counter("lifeboat_store_requests_total")
}

/// Object bytes read and written so far.
fn store_bytes() -> f64 {
    counter("lifeboat_store_bytes_total")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn push(store: &DynStore, text: &str) -> Manifest {
    let m = manifest::parse(text.as_bytes(), Format::Toml).unwrap_or_else(|e| panic!("{e:?}"));
    SnapshotRepo::new(store.clone())
        .push(NewSnapshot {
            manifest: m.clone(),
            author: "bench".into(),
            message: String::new(),
            labels: BTreeMap::new(),
        })
        .await
        .unwrap();
    m
}

fn engine(store: &DynStore, provider: Arc<dyn ComputeProvider>) -> Arc<Engine> {
    Engine::new(RunContext {
        store: store.clone(),
        providers: lifeboat::provider::Providers::new().with(provider),
        clock: Arc::new(SystemClock),
        owner: "bench".into(),
        lease_ttl: Duration::from_secs(60),
        notifier: Default::default(),
        proposal_timeout: lifeboat::engine::DEFAULT_PROPOSAL_TIMEOUT,
        safety: Default::default(),
    })
}

/// A recovery of `env`'s latest snapshot to its end: wall time, how much of
/// it went to starting the run (snapshot read, plan, lease, run record)
/// before the first launch could begin, and the finished run.
async fn recover(engine: &Arc<Engine>, env: &str, parallelism: usize) -> (Duration, Duration, RunView) {
    let t = Instant::now();
    let req = StartRequest {
        environment: env.into(),
        reference: "latest".into(),
        region: None,
        parallelism: Some(parallelism),
        force: true,
        prune: false,
        propose: false,
        decommission: false,
        kind: RunKind::Recovery,
        actor: "bench".into(),
        drill: None,
    };
    let id = engine.start(req).await.unwrap().spec.id.clone();
    let started = t.elapsed();
    engine.watch(&id, 0, &Default::default()).await.expect("watch").count().await;
    let took = t.elapsed();
    let view = engine.get(&id).await.unwrap();
    assert_eq!(view.state.as_str(), "succeeded", "{id}");
    (took, started, view)
}

/// Where the time of the run's own critical path went, from its recorded
/// times: launching, the health gate, cutting over (`Healthy` to `CutOver`
/// written), and waiting to launch after the last dependency was cut over.
fn critical_path_phases(view: &RunView) -> String {
    let (path, total) = view.measured_critical_path();
    let (mut launch, mut gate, mut cutover, mut waiting) = (0, 0, 0, 0);
    for name in &path {
        let step = view.spec.steps.iter().find(|s| &s.service == name).expect("a step per service");
        let p = &view.services[name];
        let (Some(began), Some(running), Some(healthy), Some(cut)) =
            (view.launch_began_ms(step), p.running_ms, p.healthy_ms, p.cutover_ms)
        else {
            continue;
        };
        launch += running.saturating_sub(began);
        gate += healthy.saturating_sub(running);
        cutover += cut.saturating_sub(healthy);
        waiting += began.saturating_sub(view.queued_ms_of(step).unwrap_or(began));
    }
    format!(
        "critical path as run: {} services, {total} ms launch to cutover (launch {launch} ms, health gate {gate} ms, cutover {cutover} ms), {waiting} ms ready but not launched",
        path.len()
    )
}

// ---------------------------------------------------------------- 1. launch overhead

async fn sleeper_image(store: &DynStore, dir: &std::path::Path) -> String {
    let path = dir.join("sleeper.sh");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 120\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    ImageRepo::new(store.clone()).import_file(&path, "sleeper.sh", "bench").await.unwrap().id
}

fn spec(image: &str, service: &str, key: &str) -> LaunchSpec {
    LaunchSpec {
        target: ServiceRef {
            environment: "bench".into(),
            region: "local-1".into(),
            service: service.into(),
            settings: BTreeMap::new(),
            health: None,
            tags: BTreeMap::new(),
        },
        image: image.into(),
        replicas: 1,
        run_id: "r-bench".into(),
        snapshot: 1,
        launch_key: key.into(),
        fingerprint: String::new(),
    }
}

async fn launch_overhead(levels: &[usize], rounds: usize) -> Vec<(usize, Duration, Duration, Duration)> {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let image = sleeper_image(&store, dir.path()).await;
    let provider = LocalProvider::open_with(dir.path().join("local"), store.clone(), BIN.into()).await.unwrap();
    let mut out = Vec::new();
    let mut n = 0;
    for &c in levels {
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let calls = (0..c).map(|_| {
                n += 1;
                let s = spec(&image, &format!("s{n}"), &format!("bench/{n}"));
                let p = provider.clone();
                async move {
                    let t = Instant::now();
                    let ids = p.launch(&s, &CancellationToken::new()).await.unwrap();
                    (t.elapsed(), ids)
                }
            });
            let done = futures::future::join_all(calls).await;
            let ids: Vec<String> = done.iter().flat_map(|(_, ids)| ids.clone()).collect();
            samples.extend(done.into_iter().map(|(d, _)| d));
            provider.terminate(&ids).await.unwrap();
        }
        samples.sort();
        out.push((c, percentile(&samples, 0.5), percentile(&samples, 0.99), *samples.last().unwrap()));
    }
    out
}

// ---------------------------------------------------------------- 2. real processes

/// Services named s0…: `deps[i]` are i's dependencies; depth = longest chain.
struct Shape {
    name: &'static str,
    deps: Vec<Vec<usize>>,
}

fn depth(deps: &[Vec<usize>]) -> usize {
    let mut d = vec![1usize; deps.len()];
    for i in 0..deps.len() {
        for &j in &deps[i] {
            d[i] = d[i].max(d[j] + 1);
        }
    }
    d.into_iter().max().unwrap_or(0)
}

fn binary_tree(depth: usize) -> Vec<Vec<usize>> {
    // A tree of `depth` levels (the root first), children depend on their parent;
    // 40 services at depth 6 as in the measurement: full levels, then a partial one.
    let n = if depth == 6 { 40 } else { (1 << depth) - 1 };
    (0..n).map(|i| if i == 0 { vec![] } else { vec![(i - 1) / 2] }).collect()
}

/// The demo service (`lifeboat demo-service`, ready after `--boot-delay`) as an image.
async fn demo_service_image(store: &DynStore, dir: &std::path::Path) -> String {
    let script = dir.join("svc.sh");
    std::fs::write(&script, format!("#!/bin/sh\nexec '{BIN}' demo-service \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    ImageRepo::new(store.clone()).import_file(&script, "svc.sh", "bench").await.unwrap().id
}

async fn real_region(shape: &Shape, parallelism: usize, ready_after: Duration) -> (Duration, Duration, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let image = demo_service_image(&store, dir.path()).await;
    let provider = LocalProvider::open_with(dir.path().join("local"), store.clone(), BIN.into()).await.unwrap();
    let n = shape.deps.len();
    let mut text = String::from("environment = \"real\"\nregion = \"local-1\"\n");
    let boot = format!("{}ms", ready_after.as_millis());
    for (i, deps) in shape.deps.iter().enumerate() {
        let d: Vec<String> = deps.iter().map(|j| format!("\"s{j}\"")).collect();
        text.push_str(&format!(
            "[services.s{i}]\nimage = \"{image}\"\ndepends_on = [{}]\ngrace_period = \"0s\"\ntimeout = \"60s\"\n\
             health = {{ http = \"/healthz\", interval = \"200ms\", timeout = \"60s\" }}\n\
             launch = {{ args = [\"--name\", \"s{i}\", \"--boot-delay\", \"{boot}\"] }}\n",
            d.join(", ")
        ));
    }
    push(&store, &text).await;
    let e = engine(&store, provider.clone());
    let cpu = cpu_seconds();
    let (took, _, _) = recover(&e, "real", parallelism).await;
    let cpu = cpu_seconds() - cpu;
    provider.teardown("real").await.unwrap();
    let bound = ready_after * depth(&shape.deps) as u32;
    let _ = n;
    (took, bound, cpu)
}

/// A SIGKILL of the server in the middle of a real-process recovery, then a
/// restart: the time from the kill to the restarted server's first journal
/// entry for the run (it takes the run over once the lease lapses).
async fn crash_to_resume(lease_ttl: Duration) -> Duration {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let image = demo_service_image(&store, dir.path()).await;
    let mut text = String::from("environment = \"crash\"\nregion = \"local-1\"\n");
    for (i, deps) in binary_tree(4).iter().enumerate() {
        let d: Vec<String> = deps.iter().map(|j| format!("\"s{j}\"")).collect();
        text.push_str(&format!(
            "[services.s{i}]\nimage = \"{image}\"\ndepends_on = [{}]\ngrace_period = \"0s\"\n\
             health = {{ http = \"/healthz\", interval = \"200ms\" }}\n\
             launch = {{ args = [\"--name\", \"s{i}\", \"--boot-delay\", \"1s\"] }}\n",
            d.join(", ")
        ));
    }
    push(&store, &text).await;
    SnapshotRepo::new(store.clone()).promote("crash", "latest", "bench", "bench", None).await.unwrap();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!("[engine]\nlease_ttl = \"{}ms\"\nmax_clock_skew = \"50ms\"\n", lease_ttl.as_millis()),
    )
    .unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let start = || {
        let mut child = std::process::Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--config"])
            .args([p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")])
            .env("LIFEBOAT_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Keep reading its stdout: a closed pipe would kill it at its next line.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the server reports its address");
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        (child, format!("http://{addr}"))
    };
    let (mut first, url) = start();
    let out = std::process::Command::new(BIN)
        .args(["--server", &url, "recover", "crash", "--yes", "--detach"])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && id.starts_with("r-"), "recover: {}", String::from_utf8_lossy(&out.stderr));
    // Mid-run: the first two levels are up, the rest still starting.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.kill().unwrap();
    let killed = Instant::now();
    first.wait().unwrap();
    let (mut second, _) = start();
    let resumed = loop {
        let entries = lifeboat::engine::journal::read_from(&store, &id, 0).await.unwrap();
        if entries.iter().any(|e| matches!(e.event, lifeboat::domain::run::Event::RunResumed { .. })) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(120), "run {id} was not resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        let entries = lifeboat::engine::journal::read_from(&store, &id, 0).await.unwrap();
        if entries.iter().any(|e| matches!(e.event, lifeboat::domain::run::Event::RunFinished { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let provider = LocalProvider::open_with(dir.path().join("local"), store.clone(), BIN.into()).await.unwrap();
    provider.teardown("crash").await.unwrap();
    let _ = std::process::Command::new("pkill").args(["-f", &format!("router --dir {}", p("local"))]).status();
    resumed
}

// ---------------------------------------------------------------- 3. scale

/// Sleeps that end when they should: tokio's timer has a resolution of
/// 1 ms and fires on the tick after the deadline, which would add 0–1 ms to
/// every scripted launch and health time (two per link of the critical path)
/// and count the harness's timer against the engine. One thread keeps the
/// deadlines and sleeps on the OS's high-resolution timer until the next.
mod precise {
    use std::collections::BinaryHeap;
    use std::sync::{OnceLock, mpsc};
    use std::time::{Duration, Instant};
    use tokio::sync::oneshot;

    struct Due(Instant, u64, oneshot::Sender<()>);
    impl PartialEq for Due {
        fn eq(&self, o: &Self) -> bool {
            (self.0, self.1) == (o.0, o.1)
        }
    }
    impl Eq for Due {}
    impl PartialOrd for Due {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Due {
        // The earliest deadline first (BinaryHeap is a max-heap).
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            (o.0, o.1).cmp(&(self.0, self.1))
        }
    }

    /// A deadline and whom to wake at it.
    type Wake = (Instant, oneshot::Sender<()>);

    fn timer() -> &'static std::sync::Mutex<mpsc::Sender<Wake>> {
        static TX: OnceLock<std::sync::Mutex<mpsc::Sender<Wake>>> = OnceLock::new();
        TX.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Wake>();
            std::thread::spawn(move || {
                let mut heap = BinaryHeap::new();
                let mut n = 0u64;
                loop {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|d: &Due| d.0 <= now) {
                        let _ = heap.pop().expect("peeked").2.send(());
                    }
                    let next = match heap.peek() {
                        Some(d) => rx.recv_timeout(d.0 - now).ok(),
                        None => match rx.recv() {
                            Ok(v) => Some(v),
                            Err(_) => return,
                        },
                    };
                    if let Some((at, tx)) = next {
                        n += 1;
                        heap.push(Due(at, n, tx));
                    }
                }
            });
            std::sync::Mutex::new(tx)
        })
    }

    pub async fn sleep(d: Duration) {
        if d.is_zero() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let _ = timer().lock().unwrap().send((Instant::now() + d, tx));
        let _ = rx.await;
    }
}

/// A provider whose launch and health gate take each service's scripted
/// time on the wall clock; everything else is instant.
struct Timed {
    times: BTreeMap<String, (u64, u64)>,
    next: std::sync::atomic::AtomicU64,
    live: lifeboat::testkit::Live,
}

#[async_trait]
impl ComputeProvider for Timed {
    fn name(&self) -> &'static str {
        "local"
    }
    async fn preflight(&self, _: &Manifest, _: &str, _: &[String]) -> Vec<Check> {
        Vec::new()
    }
    async fn inventory(&self, _: &str, _: &str) -> ProviderResult<Vec<LiveInstance>> {
        Ok(self.live.inventory())
    }
    async fn launch(&self, spec: &LaunchSpec, _: &CancellationToken) -> ProviderResult<Vec<String>> {
        let (l, _) = self.times.get(&spec.target.service).copied().unwrap_or((0, 0));
        precise::sleep(Duration::from_millis(l)).await;
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids = vec![format!("{}-{n}", spec.target.service)];
        self.live.launched(spec, &ids);
        Ok(ids)
    }
    async fn wait_healthy(
        &self,
        t: &ServiceRef,
        _: &[String],
        _: Duration,
        _: &CancellationToken,
    ) -> ProviderResult<()> {
        let (_, h) = self.times.get(&t.service).copied().unwrap_or((0, 0));
        precise::sleep(Duration::from_millis(h)).await;
        Ok(())
    }
    async fn cutover(&self, _: &ServiceRef, ids: &[String]) -> ProviderResult<()> {
        self.live.cut_over(ids);
        Ok(())
    }
    async fn retire(&self, _: &ServiceRef) -> ProviderResult<()> {
        Ok(())
    }
    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        self.live.terminated(ids);
        Ok(())
    }
    async fn logs(&self, _: &str, _: usize) -> Vec<String> {
        Vec::new()
    }
    async fn read_logs(&self, _: &str, _: LogFrom) -> ProviderResult<Option<LogRead>> {
        Ok(None)
    }
    async fn isolation(&self, _: &Manifest, _: &str, _: &str) -> ProviderResult<lifeboat::domain::drill::Isolation> {
        Ok(Default::default())
    }
    async fn tear_down(&self, _: &str, _: &str) -> ProviderResult<(Vec<String>, Vec<String>)> {
        Ok((Vec::new(), Vec::new()))
    }
    async fn drill_leftovers(&self) -> ProviderResult<lifeboat::provider::Leftovers> {
        Ok(Default::default())
    }
}

struct Layered {
    /// Per level, its services' indices.
    levels: Vec<Vec<usize>>,
    deps: Vec<Vec<usize>>,
    /// (launch ms, health ms) per service.
    times: Vec<(u64, u64)>,
}

/// `n` services in ~√n/2 levels; each depends on 1–3 services of the level
/// above and sometimes one further up (fan-in), so popular services fan out.
fn layered(n: usize, seed: u64) -> Layered {
    let mut rand = lifeboat::testkit::xorshift(seed);
    let level_count = ((n as f64).sqrt() / 2.0).ceil().max(2.0) as usize;
    let mut levels: Vec<Vec<usize>> = vec![Vec::new(); level_count];
    for i in 0..n {
        // The first services make the first level; the rest spread evenly.
        let l = if i < level_count { i } else { (rand() as usize) % level_count };
        levels[l].push(i);
    }
    levels.iter_mut().for_each(|l| l.sort_unstable());
    let mut deps = vec![Vec::new(); n];
    for l in 1..level_count {
        for &i in &levels[l] {
            let above = &levels[l - 1];
            let k = 1 + (rand() as usize) % 3;
            let mut d: Vec<usize> = (0..k).map(|_| above[(rand() as usize) % above.len()]).collect();
            if l >= 2 && rand().is_multiple_of(4) {
                let far = &levels[(rand() as usize) % (l - 1)];
                d.push(far[(rand() as usize) % far.len()]);
            }
            d.sort_unstable();
            d.dedup();
            deps[i] = d;
        }
    }
    let times = (0..n).map(|_| (5 + rand() % 21, 5 + rand() % 21)).collect();
    Layered { levels, deps, times }
}

impl Layered {
    /// The longest chain of launch + health time: no schedule finishes sooner.
    fn bound_ms(&self) -> u64 {
        let mut finish = vec![0u64; self.deps.len()];
        for level in &self.levels {
            for &i in level {
                let start = self.deps[i].iter().map(|&d| finish[d]).max().unwrap_or(0);
                finish[i] = start + self.times[i].0 + self.times[i].1;
            }
        }
        finish.into_iter().max().unwrap_or(0)
    }

    /// The manifest: as the DAG is, or as waves (each level waits for all
    /// of the previous one, through a zero-time barrier service per level).
    fn manifest(&self, env: &str, waves: bool) -> (String, BTreeMap<String, (u64, u64)>) {
        let image = format!("sha256:{}", "a".repeat(64));
        let mut text = format!("environment = \"{env}\"\nregion = \"local-1\"\n");
        let mut times = BTreeMap::new();
        let q = |v: Vec<String>| v.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ");
        for (l, level) in self.levels.iter().enumerate() {
            if waves && l > 0 {
                let prev: Vec<String> = self.levels[l - 1].iter().map(|i| format!("s{i:05}")).collect();
                text.push_str(&format!(
                    "[services.wave{l:03}]\nimage = \"{image}\"\ndepends_on = [{}]\ngrace_period = \"0s\"\n",
                    q(prev)
                ));
                times.insert(format!("wave{l:03}"), (0, 0));
            }
            for &i in level {
                let deps: Vec<String> = if waves {
                    if l > 0 { vec![format!("wave{l:03}")] } else { vec![] }
                } else {
                    self.deps[i].iter().map(|d| format!("s{d:05}")).collect()
                };
                text.push_str(&format!(
                    "[services.s{i:05}]\nimage = \"{image}\"\ndepends_on = [{}]\ngrace_period = \"0s\"\n",
                    q(deps)
                ));
                times.insert(format!("s{i:05}"), self.times[i]);
            }
        }
        (text, times)
    }
}

/// `--timeline`: where each link of the critical path spent its time, from
/// the engine's `lifeboat::timeline` TRACE events (a service's health gate,
/// its cutover and the loop hearing of it, the dependent's task and its
/// launch call), summed over the links of the run's critical path as run, and
/// how many links found their dependent's announced launch not yet durable
/// when the cutover was done (they wait for that write). Recording the events
/// costs the run some CPU, so it is off in the tables above.
mod timeline {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::OnceLock;
    use std::time::Instant;

    use lifeboat::testkit::timeline::Recorder;
    use tracing_subscriber::prelude::*;

    static RECORDER: OnceLock<Recorder> = OnceLock::new();

    pub fn install() {
        let recorder = RECORDER.get_or_init(Recorder::default).clone();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder))
            .expect("no other subscriber in the harness");
    }

    /// Whether `install` ran (`--timeline`).
    pub fn on() -> bool {
        RECORDER.get().is_some()
    }

    /// The segments of each link `path[k]` → `path[k + 1]`, summed, as one line.
    pub fn links(path: &[String], drawn: &BTreeMap<String, (u64, u64)>) -> String {
        let mut seen: HashMap<(String, String), Instant> = HashMap::new();
        for s in RECORDER.get().map(Recorder::take).unwrap_or_default() {
            seen.entry((s.service, s.step)).or_insert(s.at);
        }
        let at = |service: &str, step: &str| seen.get(&(service.to_string(), step.to_string())).copied();
        const SEGMENTS: [&str; 5] = [
            "health gate → cut over (the cutover call)",
            "cutover → loop",
            "loop → dependent's task",
            "task → launch call",
            "provider's launch and health gate beyond the drawn times",
        ];
        let mut sums = [0f64; 5];
        let (mut counted, mut waited) = (0, 0);
        for link in path.windows(2) {
            let (d, s) = (link[0].as_str(), link[1].as_str());
            let points = [
                at(d, "gate passed"),
                at(d, "cut over"),
                at(d, "cutover received"),
                at(s, "task started"),
                at(s, "launch called"),
                at(s, "gate passed"),
            ];
            let Some(points) = points.into_iter().collect::<Option<Vec<Instant>>>() else { continue };
            let ms = |a: Instant, b: Instant| {
                if b >= a { (b - a).as_secs_f64() * 1e3 } else { -(a - b).as_secs_f64() * 1e3 }
            };
            for (k, sum) in sums.iter_mut().enumerate().take(4) {
                *sum += ms(points[k], points[k + 1]);
            }
            let (l, h) = drawn.get(s).copied().unwrap_or_default();
            sums[4] += ms(points[4], points[5]) - (l + h) as f64;
            // Announced in a write made after the cutover (or with the dependency's gate).
            if at(s, "launch durable").is_none_or(|t| t > points[2]) {
                waited += 1;
            }
            counted += 1;
        }
        let parts: Vec<String> = SEGMENTS.iter().zip(sums).map(|(n, v)| format!("{n} {v:.1}")).collect();
        format!(
            "where the {counted} links of the critical path spent their time (ms, summed): {}; {waited} of them waited for their dependent's launch to be written",
            parts.join(", ")
        )
    }
}

struct ScaleRow {
    n: usize,
    store: &'static str,
    schedule: &'static str,
    wall: Duration,
    bound_ms: u64,
    cpu: f64,
    requests_per_service: f64,
    bytes_per_service: f64,
    /// `critical_path_phases` of the run.
    phases: String,
    /// Of the wall time: starting the run, before the first launch.
    start: Duration,
    /// `JournalWrites::summary` of the run.
    writes: String,
    /// `timeline::links` of the run, with `--timeline`.
    timeline: Option<String>,
    /// `read_costs` of a Lifeboat-scheduled run.
    read: Option<String>,
    /// The process's peak RSS when the run finished (before `read_costs`).
    rss_mib: f64,
}

/// Reading the finished run as `lifeboat run show` does on a server that did
/// not run it (`Engine::get` from its compacted journal, once the executor has
/// written it), against reading it from its journal objects (a listing and a
/// read per object, as every read did before compaction).
async fn read_costs(store: &DynStore, engine: &Arc<Engine>, view: &RunView) -> String {
    let id = &view.spec.id;
    let key = lifeboat::store::layout::journal_compacted(id);
    let waiting = Instant::now();
    while store.get(&key).await.unwrap().is_none() {
        assert!(waiting.elapsed() < Duration::from_secs(60), "run {id} was not compacted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let got = engine.get(id).await.unwrap();
    let compacted = t.elapsed();
    let t = Instant::now();
    let entries = lifeboat::engine::journal::read_from(store, id, 0).await.unwrap();
    let replayed = RunView::replay(view.spec.clone(), &entries);
    let objects = t.elapsed();
    assert_eq!(got.last_seq, replayed.last_seq);
    let count = store.list(&lifeboat::store::layout::journal_prefix(id)).await.unwrap().len();
    format!(
        "reading the finished run (`run show`): {:.0} ms from its compacted journal, {:.0} ms from its {count} journal objects",
        ms(compacted),
        ms(objects)
    )
}

/// Times a store's journal writes (puts under `/journal/`). A link of the
/// critical path waits for none when its dependent's launch was announced in
/// time (`--timeline` counts those that waited), so what the writes cost the
/// run shows as how busy the journal was and in the timeline's waits.
/// `--journal-latency-ms N`: every journal write waits this long first, as
/// over a network to a store that serves writes in parallel.
static JOURNAL_LATENCY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

struct JournalWrites {
    inner: DynStore,
    took: std::sync::Mutex<Vec<Duration>>,
    /// Journal writes in progress, and how many started beside another.
    busy: std::sync::atomic::AtomicUsize,
    beside: std::sync::atomic::AtomicUsize,
}

impl JournalWrites {
    fn new(inner: DynStore) -> JournalWrites {
        JournalWrites { inner, took: Default::default(), busy: Default::default(), beside: Default::default() }
    }

    /// "journal writes: N (… % made beside another), p50 …, p99 …, busy … % of the run".
    fn summary(&self, wall: Duration) -> String {
        let mut took = std::mem::take(&mut *self.took.lock().unwrap());
        took.sort();
        let total: Duration = took.iter().sum();
        format!(
            "journal writes: {} ({:.0} % made beside another), p50 {:.2} ms, p99 {:.2} ms, {:.0} ms in all ({:.0} % of the wall time)",
            took.len(),
            100.0 * self.beside.swap(0, std::sync::atomic::Ordering::SeqCst) as f64 / took.len().max(1) as f64,
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.99)),
            ms(total),
            100.0 * total.as_secs_f64() / wall.as_secs_f64().max(1e-9)
        )
    }
}

#[async_trait]
impl ObjectStore for JournalWrites {
    async fn get(&self, key: &str) -> lifeboat::store::StoreResult<Option<lifeboat::store::Object>> {
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> lifeboat::store::StoreResult<Vec<Option<lifeboat::store::Object>>> {
        self.inner.get_many(keys).await
    }
    async fn put(
        &self,
        key: &str,
        bytes: bytes::Bytes,
        opts: lifeboat::store::PutOptions,
    ) -> lifeboat::store::StoreResult<String> {
        use std::sync::atomic::Ordering::SeqCst;
        let journal = key.contains("/journal/");
        if journal && self.busy.fetch_add(1, SeqCst) > 0 {
            self.beside.fetch_add(1, SeqCst);
        }
        let t = Instant::now();
        if journal && let Some(d) = JOURNAL_LATENCY.get() {
            tokio::time::sleep(*d).await;
        }
        let put = self.inner.put(key, bytes, opts).await;
        if journal {
            self.took.lock().unwrap().push(t.elapsed());
            self.busy.fetch_sub(1, SeqCst);
        }
        put
    }
    async fn list(&self, prefix: &str) -> lifeboat::store::StoreResult<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> lifeboat::store::StoreResult<()> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A store as a server opens it (with the retry layer that also counts
/// requests): a fresh directory, or a fresh bucket on the S3-API test server
/// (moto) or on Ceph RGW (checked first, as a server does: RGW's ETag form is
/// negotiated).
async fn open_store(kind: &str, dir: &std::path::Path) -> DynStore {
    match kind {
        RGW => {
            let endpoint = lifeboat::testkit::rgw_endpoint();
            let bucket = lifeboat::testkit::bucket_on(&endpoint, false, false).await;
            lifeboat::store::open(&format!("s3://{bucket}/bench"), &lifeboat::testkit::s3_config(&endpoint))
                .await
                .unwrap()
        }
        "s3" => {
            let endpoint = lifeboat::testkit::s3_endpoint();
            let bucket = lifeboat::testkit::bucket_on(&endpoint, false, false).await;
            lifeboat::store::open_unchecked(&format!("s3://{bucket}/bench"), &lifeboat::testkit::s3_config(&endpoint))
                .await
                .unwrap()
        }
        _ => lifeboat::store::open_unchecked(dir.to_str().unwrap(), &Default::default()).await.unwrap(),
    }
}

/// The store kind for the directory store on tmpfs (`/dev/shm`).
const TMPFS: &str = "directory on tmpfs";
/// The store kind for S3 on Ceph RGW, which serves requests in parallel.
const RGW: &str = "S3 on Ceph RGW";

/// The scale runs' store directories, removed when the harness ends: removing
/// tens of thousands of files between runs made the next run's file creation
/// slow on this machine's ext4 (it has no journal, so a new inode skips every
/// recently deleted one), which measured the harness's cleanup, not Lifeboat.
static SCALE_DIRS: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

async fn scale(n: usize, store_kind: &'static str, schedules: &[&'static str]) -> Vec<ScaleRow> {
    let region = layered(n, 7 + n as u64);
    let bound_ms = region.bound_ms();
    let mut rows = Vec::new();
    for &schedule in schedules {
        // The directory store on tmpfs: the engine without this VM's disk.
        let dir = match store_kind {
            TMPFS => tempfile::tempdir_in("/dev/shm").unwrap(),
            _ => tempfile::tempdir().unwrap(),
        };
        let writes = Arc::new(JournalWrites::new(open_store(store_kind, dir.path()).await));
        let store: DynStore = writes.clone();
        let env = format!("scale{n}");
        let (text, times) = region.manifest(&env, schedule == "waves");
        push(&store, &text).await;
        let provider = Arc::new(Timed { times: times.clone(), next: Default::default(), live: Default::default() });
        let e = engine(&store, provider);
        let parallelism = if schedule == "parallelism 10" { 10 } else { lifeboat::engine::MAX_PARALLELISM };
        let (cpu, requests, bytes) = (cpu_seconds(), store_requests(), store_bytes());
        let (wall, start, view) = recover(&e, &env, parallelism).await;
        let (cpu, requests, bytes) = (cpu_seconds() - cpu, store_requests() - requests, store_bytes() - bytes);
        let rss_mib = lifeboat::testkit::peak_rss_mib();
        let read = match schedule {
            "lifeboat" => {
                let other = engine(
                    &store,
                    Arc::new(Timed { times: times.clone(), next: Default::default(), live: Default::default() }),
                );
                Some(read_costs(&store, &other, &view).await)
            }
            _ => None,
        };
        rows.push(ScaleRow {
            n,
            store: store_kind,
            schedule,
            wall,
            bound_ms,
            cpu,
            requests_per_service: requests / n as f64,
            bytes_per_service: bytes / n as f64,
            phases: critical_path_phases(&view),
            start,
            writes: writes.summary(wall),
            timeline: timeline::on().then(|| timeline::links(&view.measured_critical_path().0, &times)),
            read,
            rss_mib,
        });
        SCALE_DIRS.lock().unwrap().push(dir);
    }
    rows
}

// ---------------------------------------------------------------- 4. snapshots and the API

/// Push and `show known-good` of an `n`-service manifest, against a raw PUT
/// and GET of the same bytes on the same store: (push, raw put, show, first
/// show after a server start, raw get).
async fn snapshot_costs(n: usize) -> (Duration, Duration, Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let store = lifeboat::store::open_unchecked(dir.path().to_str().unwrap(), &Default::default()).await.unwrap();
    let text = lifeboat::testkit::random_manifest_toml(n, 3, 11);
    let repo = SnapshotRepo::new(store.clone());
    let m = manifest::parse(text.as_bytes(), Format::Toml).unwrap();
    let t = Instant::now();
    let snap = repo
        .push(NewSnapshot { manifest: m, author: "bench".into(), message: String::new(), labels: BTreeMap::new() })
        .await
        .unwrap();
    let push = t.elapsed();
    repo.promote("bench", "latest", "bench", "bench", None).await.unwrap();
    let bytes = bytes::Bytes::from(serde_json::to_vec(&snap).unwrap());
    let t = Instant::now();
    store.put("raw/object.json", bytes, lifeboat::store::PutOptions::create()).await.unwrap();
    let put = t.elapsed();
    let t = Instant::now();
    repo.get_by_ref("bench", "known-good").await.unwrap();
    let show = t.elapsed();
    lifeboat::store::snapshots::forget_decoded();
    let t = Instant::now();
    repo.get_by_ref("bench", "known-good").await.unwrap();
    let cold = t.elapsed();
    let t = Instant::now();
    store.get("raw/object.json").await.unwrap().unwrap();
    (push, put, show, cold, t.elapsed())
}

/// `SnapshotService/Get` from `clients` concurrent gRPC clients on loopback
/// for `run`: (requests per second, p50, p99).
async fn api_throughput(clients: usize, run: Duration) -> (f64, Duration, Duration) {
    use lifeboat::api::pb;
    let dir = tempfile::tempdir().unwrap();
    let store =
        lifeboat::store::open_unchecked(dir.path().join("store").to_str().unwrap(), &Default::default()).await.unwrap();
    push(&store, &lifeboat::testkit::random_manifest_toml(20, 2, 3)).await;
    SnapshotRepo::new(store.clone()).promote("bench", "latest", "bench", "bench", None).await.unwrap();
    // The gRPC API as a server assembles it (no local provider: nothing is launched).
    let provider = Arc::new(Timed { times: BTreeMap::new(), next: Default::default(), live: Default::default() });
    let ctx = lifeboat::api::Ctx::new(store.clone(), engine(&store, provider), Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lifeboat::api::serve(
        listener,
        ctx,
        Arc::new(Default::default()),
        None,
        lifeboat::api::admission::Admission::for_this_process(Default::default()),
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{addr}");
    let deadline = Instant::now() + run;
    let tasks = (0..clients).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
            let mut c = pb::snapshot_service_client::SnapshotServiceClient::new(channel);
            let mut took = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let req = pb::GetSnapshotRequest { environment: "bench".into(), r#ref: "known-good".into() };
                c.get(req).await.unwrap();
                took.push(t.elapsed());
            }
            took
        })
    });
    let mut all: Vec<Duration> = Vec::new();
    for t in futures::future::join_all(tasks).await {
        all.extend(t.unwrap());
    }
    let _ = stop.send(());
    let _ = server.await;
    all.sort();
    (all.len() as f64 / run.as_secs_f64(), percentile(&all, 0.5), percentile(&all, 0.99))
}

/// Wall time and orchestrator CPU against service count, per schedule (SVG).
fn scaling_svg(rows: &[ScaleRow]) -> String {
    let (w, h, left, bottom) = (760.0, 420.0, 70.0, 50.0);
    let ns: Vec<usize> = {
        let mut v: Vec<usize> = rows.iter().map(|r| r.n).collect();
        v.dedup();
        v
    };
    let max_wall = rows.iter().map(|r| r.wall.as_secs_f64().max(r.cpu)).fold(0.1, f64::max);
    let x = |n: usize| {
        let (lo, hi) = ((ns[0] as f64).log10(), (ns[ns.len() - 1] as f64).log10().max((ns[0] as f64).log10() + 1.0));
        left + ((n as f64).log10() - lo) / (hi - lo) * (w - left - 30.0)
    };
    let y = |v: f64| (h - bottom) - (v.max(0.01).log10() + 2.0) / (max_wall.log10() + 2.2) * (h - bottom - 30.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">Recovery wall time (solid) and orchestrator CPU (dashed) against services, log-log</text>\n"
    );
    for &n in &ns {
        s.push_str(&format!("<text x=\"{:.0}\" y=\"{}\" text-anchor=\"middle\">{n}</text>\n", x(n), h - bottom + 18.0));
    }
    for v in [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0] {
        if v <= max_wall * 2.0 {
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{:.0}\" text-anchor=\"end\">{v} s</text><line x1=\"{left}\" x2=\"{}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"#eee\"/>\n",
                left - 6.0,
                y(v) + 4.0,
                w - 30.0,
                y(v),
                y(v)
            ));
        }
    }
    for (i, (schedule, colour)) in
        [("lifeboat", "#1f77b4"), ("waves", "#d62728"), ("parallelism 10", "#2ca02c")].iter().enumerate()
    {
        let pts: Vec<&ScaleRow> = rows.iter().filter(|r| r.schedule == *schedule).collect();
        let line = |f: &dyn Fn(&ScaleRow) -> f64| {
            pts.iter().map(|r| format!("{:.1},{:.1}", x(r.n), y(f(r)))).collect::<Vec<_>>().join(" ")
        };
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n<polyline fill=\"none\" stroke=\"{colour}\" stroke-dasharray=\"5 4\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{schedule}</text>\n",
            line(&|r| r.wall.as_secs_f64()),
            line(&|r| r.cpu),
            left + 10.0,
            40.0 + 16.0 * i as f64
        ));
    }
    let bound: Vec<String> = ns
        .iter()
        .filter_map(|&n| rows.iter().find(|r| r.n == n))
        .map(|r| format!("{:.1},{:.1}", x(r.n), y(r.bound_ms as f64 / 1000.0)))
        .collect();
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#777\" stroke-dasharray=\"2 3\" points=\"{}\"/>\n<text x=\"{}\" y=\"88\" fill=\"#777\">critical-path bound</text>\n</svg>\n",
        bound.join(" "),
        left + 10.0
    ));
    s
}

// ---------------------------------------------------------------- report

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {mem:.0} GiB RAM, {}", std::env::consts::OS)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--launch-only`: just the launch-overhead table (for before/after comparisons).
    let launch_only = std::env::args().any(|a| a == "--launch-only");
    // `--scale-only N [--s3 | --rgw | --tmpfs] [--timeline]`: one Lifeboat recovery of N services on the directory
    // store, on S3 (moto or Ceph RGW), or on the directory store on tmpfs (for profiling); `--timeline` adds where
    // each link of its critical path spent its time.
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args.iter().position(|a| a == "--scale-only").and_then(|i| args.get(i + 1)?.parse::<usize>().ok())
    {
        if args.iter().any(|a| a == "--timeline") {
            timeline::install();
        }
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        if let Some(ms) =
            args.iter().position(|a| a == "--journal-latency-ms").and_then(|i| args.get(i + 1)?.parse().ok())
        {
            JOURNAL_LATENCY.set(Duration::from_millis(ms)).unwrap();
        }
        let store = if args.iter().any(|a| a == "--s3") {
            "s3"
        } else if args.iter().any(|a| a == "--rgw") {
            RGW
        } else if args.iter().any(|a| a == "--tmpfs") {
            TMPFS
        } else {
            "directory"
        };
        // `--schedule waves` or `--schedule parallelism-10`: that schedule instead of Lifeboat's own.
        let schedule =
            match args.iter().position(|a| a == "--schedule").and_then(|i| args.get(i + 1)).map(String::as_str) {
                Some("waves") => "waves",
                Some("parallelism-10") => "parallelism 10",
                None => "lifeboat",
                Some(other) => panic!("--schedule {other}: waves or parallelism-10"),
            };
        for r in rt.block_on(scale(n, store, &[schedule])) {
            println!(
                "{} services: {:.2} s (of which start {:.0} ms; bound {:.2} s), CPU {:.1} s, {:.2} store requests and {:.1} KiB per service, peak RSS {:.0} MiB (at the run's end; {:.0} MiB after reading it back)",
                r.n,
                r.wall.as_secs_f64(),
                ms(r.start),
                r.bound_ms as f64 / 1000.0,
                r.cpu,
                r.requests_per_service,
                r.bytes_per_service / 1024.0,
                r.rss_mib,
                lifeboat::testkit::peak_rss_mib()
            );
            println!("{}", r.phases);
            println!("{}", r.writes);
            if let Some(t) = r.timeline {
                println!("{t}");
            }
            if let Some(t) = r.read {
                println!("{t}");
            }
        }
        SCALE_DIRS.lock().unwrap().clear();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut out = String::new();
    let mut line = |s: String| {
        println!("{s}");
        out.push_str(&s);
        out.push('\n');
    };
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let command = if quick { "cargo bench --bench recovery -- --quick" } else { "cargo bench --bench recovery" };
    line(format!("Command: `{command}`. Machine: {}; {date}.", machine()));
    line(String::new());

    line("### Launch overhead of the local provider (launch call → process running)".into());
    line(String::new());
    line("| launches at once | p50 | p99 | max |".into());
    line("|---|---|---|---|".into());
    let levels: &[usize] = if quick && !launch_only { &[1, 4] } else { &[1, 4, 8, 16] };
    for (c, p50, p99, max) in rt.block_on(launch_overhead(levels, if quick { 2 } else { 10 })) {
        line(format!("| {c} | {:.0} ms | {:.0} ms | {:.0} ms |", ms(p50), ms(p99), ms(max)));
    }
    line(String::new());
    if launch_only {
        return;
    }

    line("### Real processes (ready 1 s after start, probed every 200 ms, parallelism 256)".into());
    line(String::new());
    line("| region | services | wall time | critical-path bound | ratio | orchestrator CPU |".into());
    line("|---|---|---|---|---|---|".into());
    let shapes = if quick {
        vec![
            Shape { name: "binary tree, depth 3", deps: binary_tree(3) },
            Shape { name: "wide", deps: vec![vec![]; 8] },
            Shape { name: "chain", deps: (0..4).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect() },
        ]
    } else {
        vec![
            Shape { name: "binary tree, depth 6", deps: binary_tree(6) },
            Shape { name: "wide", deps: vec![vec![]; 200] },
            Shape { name: "chain", deps: (0..30).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect() },
        ]
    };
    let ready = Duration::from_secs(1);
    for s in &shapes {
        // Parallelism above every level's width: the bound is the critical path.
        let (wall, bound, cpu) = rt.block_on(real_region(s, 256, ready));
        line(format!(
            "| {} | {} | {:.2} s | {:.2} s | {:.2} | {cpu:.1} s |",
            s.name,
            s.deps.len(),
            wall.as_secs_f64(),
            bound.as_secs_f64(),
            wall.as_secs_f64() / bound.as_secs_f64()
        ));
    }
    line(String::new());

    let ttl = Duration::from_secs(2);
    let resumed = rt.block_on(crash_to_resume(ttl));
    line(format!(
        "A server SIGKILLed in the middle of a 15-service real-process recovery and restarted at once resumes the run {:.2} s after the kill (`engine.lease_ttl = \"2s\"`: the restarted server waits for the dead one's lease to lapse; with the default 15 s lease it is about 15 s).",
        resumed.as_secs_f64()
    ));
    let _ = ttl;
    line(String::new());

    line("### Scale: seeded layered DAGs, 5–25 ms launch + 5–25 ms health per service".into());
    line(String::new());
    line("| services | store | schedule | wall time | of which start | critical-path bound | ratio | orchestrator CPU | store requests per service | store KiB per service |".into());
    line("|---|---|---|---|---|---|---|---|---|---|".into());
    let sizes: &[usize] = if quick { &[100] } else { &[100, 1_000, 10_000] };
    let mut all_rows = Vec::new();
    let mut largest = Vec::new();
    for &n in sizes {
        let mut rows = rt.block_on(scale(n, "directory", &["lifeboat", "waves", "parallelism 10"]));
        // On S3 (moto on loopback): Lifeboat's own schedule; at the largest
        // size also on tmpfs, which shows the engine apart from the disk.
        let mut others = rt.block_on(scale(n, "s3", &["lifeboat"]));
        if n == 10_000 && std::path::Path::new("/dev/shm").is_dir() {
            others.extend(rt.block_on(scale(n, TMPFS, &["lifeboat"])));
        }
        for r in rows.iter().chain(&others) {
            line(format!(
                "| {} | {} | {} | {:.2} s | {:.0} ms | {:.2} s | {:.2} | {:.1} s | {:.1} | {:.1} |",
                r.n,
                r.store,
                r.schedule,
                r.wall.as_secs_f64(),
                ms(r.start),
                r.bound_ms as f64 / 1000.0,
                r.wall.as_secs_f64() * 1000.0 / r.bound_ms as f64,
                r.cpu,
                r.requests_per_service,
                r.bytes_per_service / 1024.0
            ));
        }
        if Some(&n) == sizes.last() {
            largest = rows
                .iter()
                .chain(&others)
                .filter(|r| r.schedule == "lifeboat")
                .map(|r| {
                    let read = r.read.as_deref().map(|t| format!("; {t}")).unwrap_or_default();
                    format!(
                        "- {} services, {}: {}; {}{read}; the harness's peak RSS when it finished {:.0} MiB.",
                        r.n, r.store, r.phases, r.writes, r.rss_mib
                    )
                })
                .collect();
        }
        rows.retain(|r| r.store == "directory");
        all_rows.extend(rows);
    }
    line(String::new());
    line("Where the time of each Lifeboat run's own critical path went, and its journal writes:".into());
    line(String::new());
    for l in largest {
        line(l);
    }
    line(String::new());
    if !quick {
        let svg = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/scaling.svg");
        std::fs::create_dir_all(std::path::Path::new(svg).parent().unwrap()).unwrap();
        std::fs::write(svg, scaling_svg(&all_rows)).unwrap();
        line("The scaling curve: `benches/results/scaling.svg`.".into());
        line(String::new());
    }

    line("### Snapshots and the API".into());
    line(String::new());
    let n = if quick { 200 } else { 5_000 };
    let (push_t, put_t, show_t, cold_t, get_t) = rt.block_on(snapshot_costs(n));
    line("| what | time | raw store operation on the same bytes | ratio |".into());
    line("|---|---|---|---|".into());
    line(format!(
        "| push a {n}-service manifest (validated, canonical JSON, digest, create-if-absent, refs) | {:.1} ms | PUT {:.1} ms | {:.1} |",
        ms(push_t),
        ms(put_t),
        ms(push_t) / ms(put_t).max(0.001)
    ));
    line(format!(
        "| show known-good of it (ref, read, bytes hashed and found decoded) | {:.1} ms | GET {:.1} ms | {:.1} |",
        ms(show_t),
        ms(get_t),
        ms(show_t) / ms(get_t).max(0.001)
    ));
    line(format!(
        "| the same, first read after a server start (digest over the canonical form, manifest validated) | {:.1} ms | GET {:.1} ms | {:.1} |",
        ms(cold_t),
        ms(get_t),
        ms(cold_t) / ms(get_t).max(0.001)
    ));
    let (clients, secs) = if quick { (4, 1) } else { (32, 5) };
    let (rps, p50, p99) = rt.block_on(api_throughput(clients, Duration::from_secs(secs)));
    line(String::new());
    line(format!(
        "`SnapshotService/Get` (20-service snapshot) from {clients} concurrent gRPC clients on loopback for {secs} s: {rps:.0} requests/s, p50 {:.1} ms, p99 {:.1} ms.",
        ms(p50),
        ms(p99)
    ));
    line(String::new());
    line(format!(
        "Peak RSS of the harness (engine, store and provider in one process): {:.0} MiB.",
        lifeboat::testkit::peak_rss_mib()
    ));

    if !quick {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let (start, end) = ("<!-- recovery-bench:start -->", "<!-- recovery-bench:end -->");
        let new = match (text.find(start), text.find(end)) {
            (Some(a), Some(b)) if a < b => format!("{}{start}\n{out}{}", &text[..a], &text[b..]),
            _ => format!("{text}\n## Recovery time against the critical path\n\n{start}\n{out}{end}\n"),
        };
        std::fs::write(path, new).unwrap();
        println!("\nwritten to BENCHMARKS.md");
    }
    SCALE_DIRS.lock().unwrap().clear();
}
