//! Engine overhead at scale: validation, planning, and whole recoveries of
//! 1,000 and 10,000 services with a provider whose steps take no time, so
//! what is measured is Lifeboat's own work (scheduling, journal, store).
//! Run: `cargo bench --bench engine`; results go in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::domain::manifest;
use lifeboat::domain::plan::{PlanInput, plan};
use lifeboat::domain::run::RunKind;
use lifeboat::domain::source::Format;
use lifeboat::engine::clock::SystemClock;
use lifeboat::engine::{Engine, RunContext, StartRequest};
use lifeboat::store::memory::MemStore;
use lifeboat::store::{DynStore, FsStore, NewSnapshot, SnapshotRepo};
use lifeboat::testkit::{InstantProvider, random_manifest_toml};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap()
}

async fn recovery(store: DynStore, text: &str, parallelism: usize) -> (Duration, usize) {
    let m = manifest::parse(text.as_bytes(), Format::Toml).unwrap();
    SnapshotRepo::new(store.clone())
        .push(NewSnapshot { manifest: m, author: "bench".into(), message: String::new(), labels: BTreeMap::new() })
        .await
        .unwrap();
    let engine = Engine::new(RunContext {
        store: store.clone(),
        providers: lifeboat::provider::Providers::new().with(InstantProvider::new()),
        clock: Arc::new(SystemClock),
        owner: "bench".into(),
        lease_ttl: Duration::from_secs(60),
        notifier: Default::default(),
        proposal_timeout: lifeboat::engine::DEFAULT_PROPOSAL_TIMEOUT,
        safety: Default::default(),
    });
    let t = Instant::now();
    let req = StartRequest {
        prune: true,
        propose: false,
        decommission: false,
        environment: "bench".into(),
        reference: "latest".into(),
        region: None,
        parallelism: Some(parallelism),
        force: false,
        kind: RunKind::Recovery,
        actor: "bench".into(),
        drill: None,
    };
    let id = engine.start(req).await.unwrap().spec.id.clone();
    use futures::StreamExt;
    let events = engine.watch(&id, 0, &Default::default()).await.expect("watch").count().await;
    let took = t.elapsed();
    let view = engine.get(&id).await.unwrap();
    assert_eq!(view.state.as_str(), "succeeded");
    (took, events)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("| what | services | time | per service |");
    println!("|---|---|---|---|");
    for n in [1_000usize, 10_000] {
        let text = random_manifest_toml(n, 3, 42);
        let t = best_of(3, || manifest::parse(text.as_bytes(), Format::Toml).unwrap());
        println!("| validate manifest ({} KiB) | {n} | {:.1} ms | {:.1} µs |", text.len() / 1024, ms(t), us(t, n));
        let m = manifest::parse(text.as_bytes(), Format::Toml).unwrap();
        let history = BTreeMap::new();
        let t = best_of(3, || {
            plan(PlanInput {
                manifest: &m,
                snapshot_version: 1,
                snapshot_digest: "sha256:x",
                region: "local-1",
                inventory: &[],
                force: false,
                prune: true,
                history: &history,
                traffic: &[],
            })
        });
        println!("| plan (DAG, critical path) | {n} | {:.1} ms | {:.1} µs |", ms(t), us(t, n));
        let (t, events) = rt.block_on(recovery(Arc::new(MemStore::new()), &text, 1024));
        println!("| recovery, memory store ({events} events) | {n} | {:.0} ms | {:.1} µs |", ms(t), us(t, n));
        let dir = tempfile::tempdir().unwrap();
        let (t, events) = rt.block_on(recovery(Arc::new(FsStore::open(dir.path()).unwrap()), &text, 1024));
        println!(
            "| recovery, directory store, fsync per event ({events} events) | {n} | {:.0} ms | {:.1} µs |",
            ms(t),
            us(t, n)
        );
    }
    println!("\npeak RSS: {:.0} MiB", lifeboat::testkit::peak_rss_mib());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}
