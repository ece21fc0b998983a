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

/// When `c0` (healthy 3 s after its launch) was cut over, on a journal of
/// 200 ms writes, under these assumptions.
async fn c0_cut_over_at(safety: crate::engine::Safety) -> u64 {
    let (faulty, store) = faulty();
    let services = chain_c(1);
    let script = timed(&services, 50, 3_000);
    let h = harness_with(store, manifest(services), script, safety).await;
    faulty.add(Rule::puts("/journal/").fault(Fault::Latency(Duration::from_millis(200))));
    let id = h.start(4).await;
    let (view, entries) = h.finish(&id).await;
    assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
    let healthy = entries.iter().position(|e| matches!(&e.event, Event::Healthy { .. })).expect("healthy");
    let cut = entries.iter().position(|e| matches!(&e.event, Event::CutOver { .. })).expect("cut over");
    assert!(healthy < cut, "{entries:#?}");
    entries[cut].elapsed_ms
}

/// The cutover's safety rules, stated: `cutover = "fenced"` makes
/// `healthy` durable before every cutover (a journal write on the
/// critical path); and an owner relies on its lease (writing `healthy`
/// beside the cutover) only until `max_clock_skew` before another server,
/// whose clock may run that far ahead, could see it lapse.
#[test]
fn the_cutover_waits_for_healthy_when_fenced_or_when_the_lease_may_seem_lapsed() {
    paused_runtime().block_on(async {
        use crate::engine::{CutoverMode, Safety};
        let fast = c0_cut_over_at(Safety { max_clock_skew: Duration::ZERO, cutover: CutoverMode::Fast }).await;
        let fenced = c0_cut_over_at(Safety { max_clock_skew: Duration::ZERO, cutover: CutoverMode::Fenced }).await;
        assert!(fenced >= fast + 200, "fenced: the cutover waited for the write of healthy ({fast} -> {fenced} ms)");
        // Healthy at about 3.3 s; renewals every 7.5 s: with 9 s of skew to
        // allow for, the lease surely holds only 1 s after each renewal.
        let skewed =
            c0_cut_over_at(Safety { max_clock_skew: Duration::from_secs(9), cutover: CutoverMode::Fast }).await;
        assert!(
            skewed >= fast + 200,
            "past the time the lease surely holds, healthy is written first ({fast} -> {skewed} ms)"
        );
    });
}

fn chain_of(n: usize, ms: u64) -> (BTreeMap<String, Service>, BTreeMap<String, Behaviour>) {
    let services: BTreeMap<String, Service> = (0..n)
        .map(|i| (format!("s{i:02}"), service(&if i < 3 { vec![] } else { vec![format!("s{:02}", i - 3)] }, 1, false)))
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
            let b = Behaviour { launch_ms: 50, healthy_ms: 60 + 37 * i, cutover_ms: 7 + 11 * i, ..Default::default() };
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
        let launched =
            |s: &str| launches.iter().any(|e| matches!(&e.event, Event::LaunchStarted { service, .. } if service == s));
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
        let services: BTreeMap<String, Service> = (0..6).map(|i| (format!("n{i}"), service(&[], 1, false))).collect();
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
        store.get(&layout::digest_index("shop", snap.digest.trim_start_matches("sha256:"))).await.unwrap().is_some()
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

        // The first journal write lands but its reply is lost: the run either
        // starts (the write is found) and runs once, or its caller is told it
        // failed and it is never executed, not even by a sweep later.
        let launched_before = h.provider.world().launches.len();
        let lost = faulty.add(Rule::puts("/journal/").times(1).fault(Fault::Ambiguous));
        let started = h.engine.start(recovery_of_latest(Some(2))).await;
        assert_eq!(lost.fired(), 1, "the first journal write was the ambiguous one");
        match started {
            Ok(view) => {
                let (view, _) = h.finish(&view.spec.id).await;
                assert_eq!(view.state, RunState::Succeeded);
            }
            Err(e) => {
                tokio::time::advance(Duration::from_secs(60)).await;
                h.second_engine().sweep().await.unwrap();
                tokio::time::advance(Duration::from_secs(5)).await;
                assert_eq!(h.provider.world().launches.len(), launched_before, "told {e}, yet it ran");
            }
        }
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
