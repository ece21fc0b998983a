//! Failures, retries, approvals, cancel, leases, resume and prune.

use super::*;

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
