//! Ordering: dependencies first, as parallel as allowed, within the critical path, run IDs in start order.

use super::*;

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
fn run_ids_sort_by_start_time() {
    let t = chrono::Utc::now();
    let ids: Vec<String> = (0..5).map(|i| new_run_id(t + chrono::Duration::milliseconds(i))).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    check_run_id(&ids[0]).unwrap();
}
