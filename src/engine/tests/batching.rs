//! Journal group commit: batched writes, announcements ahead, timeline steps, write depth.

use super::*;

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
