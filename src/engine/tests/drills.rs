//! Drills (timeouts, kept drills, the sweeper, promotion on pass) and schedules.

use super::*;

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

/// A drill refused after its isolation was made (here: another drill of
/// the region holds the lease) takes what the isolation made with it.
#[test]
fn a_refused_drill_undoes_its_isolation() {
    paused_runtime().block_on(async {
        let (m, script) = slow_pair();
        let h = harness(m, script).await;
        let first = h.engine.start(drill_of_latest(Some(Duration::from_secs(60)), Duration::ZERO)).await.unwrap();
        let refused = h.engine.start(drill_of_latest(Some(Duration::from_secs(60)), Duration::ZERO)).await;
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
        let torn = h.provider.world().torn_down.clone();
        assert_eq!(torn.len(), 1, "{torn:?}");
        assert!(torn[0].starts_with("shop.drill.r-") && torn[0] != first.spec.drill.clone().unwrap().namespace);
        h.engine.cancel(&first.spec.id, "t").await.unwrap();
        h.finish(&first.spec.id).await;
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
