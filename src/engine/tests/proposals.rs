//! A run acts on the region as it is when it executes: a proposal holds no
//! lease, plans again when approved (and a resumed run on resume), expires
//! unapproved, and every run ends by probing what it holds healthy.

use super::*;

/// A live instance that runs exactly what `svc` says (the plan keeps it).
fn matching(name: &str, svc: &Service, id: &str) -> LiveInstance {
    let image = match &svc.image {
        Image::Single(i) => i.clone(),
        Image::PerRegion(_) => unreachable!("the tests use one image"),
    };
    LiveInstance {
        id: id.into(),
        service: name.into(),
        fingerprint: crate::domain::plan::fingerprint(svc, &image),
        image,
        healthy: true,
        serving: true,
        run_id: "r-old".into(),
        address: String::new(),
    }
}

fn db_and_api() -> BTreeMap<String, Service> {
    BTreeMap::from([
        ("db".to_string(), service(&[], 1, false)),
        ("api".to_string(), service(&["db".to_string()], 1, false)),
    ])
}

/// db and api both up: a plan keeps them.
async fn region_up(services: &BTreeMap<String, Service>) -> Harness {
    let h = harness(manifest(services.clone()), timed(services, 100, 100)).await;
    h.provider.world().inventory =
        vec![matching("db", &services["db"], "db-old"), matching("api", &services["api"], "api-old")];
    h
}

fn proposal() -> StartRequest {
    StartRequest { propose: true, ..recovery_of_latest(Some(4)) }
}

fn replans(entries: &[Entry]) -> Vec<crate::domain::run::Replan> {
    entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::Replanned(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The incident path: a proposal made while everything was up, then db
/// dies, then the proposal is approved. The run plans again, relaunches db
/// instead of "keeping" it, and ends having probed both services healthy.
#[test]
fn an_approved_proposal_plans_again_and_relaunches_what_died_meanwhile() {
    paused_runtime().block_on(async {
        let services = db_and_api();
        let h = region_up(&services).await;
        let proposed = h.engine.start(proposal()).await.unwrap();
        let id = proposed.spec.id.clone();
        assert!(proposed.spec.steps.iter().all(|s| s.action == Action::Keep), "{:?}", proposed.spec.steps);
        assert!(proposed.awaiting_approval());
        // db dies while the proposal waits.
        tokio::time::sleep(Duration::from_secs(300)).await;
        h.provider.world().inventory.retain(|i| i.service != "db");
        let approved = h.engine.approve(&id, "", "alice").await.unwrap();
        let db = approved.spec.steps.iter().find(|s| s.service == "db").unwrap();
        assert_eq!((db.action, db.reason.as_str()), (Action::Create, "not running"));
        let (view, entries) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
        assert_eq!(view.run_approved_by.as_deref(), Some("alice"));
        let r = replans(&entries);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].at, crate::domain::run::ReplanAt::Approval);
        assert_eq!(r[0].changes, ["db: keep -> create (not running)"]);
        assert_eq!(view.services["db"].action, Action::Create);
        assert_eq!(view.services["api"].action, Action::Keep);
        assert_eq!(view.probed, Some((2, 0)), "both probed healthy as the run ended");
        let w = h.provider.world();
        assert_eq!(w.launches.len(), 1, "only db is launched: {:?}", w.launches);
        assert!(w.launches.keys().all(|k| k.contains("/db/")));
    });
}

/// A kept service that goes down while the run works on others fails the
/// run at its end, named with why; nothing calls it healthy.
#[test]
fn the_final_probe_fails_a_run_whose_kept_service_went_down() {
    paused_runtime().block_on(async {
        let services =
            BTreeMap::from([("db".to_string(), service(&[], 1, false)), ("api".to_string(), service(&[], 1, false))]);
        let h = harness(manifest(services.clone()), timed(&services, 1000, 1000)).await;
        h.provider.world().inventory = vec![matching("db", &services["db"], "db-old")];
        let id = h.start(4).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.provider.world().inventory[0].healthy = false;
        let (view, entries) = h.finish(&id).await;
        assert_eq!(view.state, RunState::Failed, "{view:#?}");
        let db = &view.services["db"];
        assert_eq!(db.state, ServiceState::Failed);
        assert_eq!(
            db.error.as_deref(),
            Some("not healthy when the run ended: instance db-old does not pass its health check")
        );
        assert_eq!(view.services["api"].state, ServiceState::Healthy);
        assert_eq!(view.probed, Some((1, 1)));
        let line = entries.iter().find(|e| matches!(e.event, Event::Probed { .. })).unwrap().event.describe(&id);
        assert_eq!(
            line,
            "final probe: NOT healthy as the run ends: db: instance db-old does not pass its health check"
        );
    });
}

/// A waiting proposal blocks no other recovery of the region; once it
/// expires it ends cancelled, and cannot be approved any more.
#[test]
fn a_proposal_holds_no_lease_and_expires_unapproved() {
    paused_runtime().block_on(async {
        let services = db_and_api();
        let h = harness(manifest(services.clone()), timed(&services, 100, 100)).await;
        let waiting = h.engine.start(proposal()).await.unwrap().spec.id.clone();
        let expires = h.engine.get(&waiting).await.unwrap().proposal_expires_at.unwrap();
        assert!(!expires.is_empty());
        // Another recovery of the region goes ahead at once.
        let other = h.start(4).await;
        let (view, _) = h.finish(&other).await;
        assert_eq!(view.state, RunState::Succeeded);
        // Approved within its time, it plans again: everything now runs, so it keeps it all.
        let second = h.engine.start(proposal()).await.unwrap().spec.id.clone();
        tokio::time::sleep(Duration::from_secs(3601)).await;
        h.engine.sweep().await.unwrap();
        for id in [&waiting, &second] {
            let v = h.engine.get(id).await.unwrap();
            assert_eq!(v.state, RunState::Cancelled, "{v:#?}");
            assert!(!v.awaiting_approval());
            let e = h.engine.approve(id, "", "alice").await.unwrap_err();
            assert!(e.to_string().contains("already finished (cancelled)"), "{e}");
        }
        let (_, entries) = finish_on(&h.engine, &waiting).await;
        let cancel = entries.iter().find_map(|e| match &e.event {
            Event::CancelRequested { by } => Some(by.clone()),
            _ => None,
        });
        assert_eq!(cancel.as_deref(), Some("proposal_timeout: nobody approved it within 1h 00m (it waited 1h 00m)"));
        assert!(h.store.list(&layout::proposals_prefix()).await.unwrap().is_empty());
    });
}

/// Approving a proposal whose time ran out (before any sweep) expires it
/// and says so; cancelling a waiting proposal ends it at once.
#[test]
fn an_expired_proposal_cannot_be_approved_and_a_cancelled_one_ends_at_once() {
    paused_runtime().block_on(async {
        let services = db_and_api();
        let h = harness(manifest(services.clone()), timed(&services, 100, 100)).await;
        let id = h.engine.start(proposal()).await.unwrap().spec.id.clone();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let e = h.engine.approve(&id, "", "alice").await.unwrap_err();
        assert!(e.to_string().contains("was a proposal that expired unapproved (proposal_timeout 1h 00m)"), "{e}");
        assert_eq!(h.engine.get(&id).await.unwrap().state, RunState::Cancelled);

        let id = h.engine.start(proposal()).await.unwrap().spec.id.clone();
        let v = h.engine.cancel(&id, "bob").await.unwrap();
        assert_eq!(v.state, RunState::Cancelled);
        finish_on(&h.engine, &id).await;
        assert!(h.provider.world().launches.is_empty(), "nothing of either proposal launched");
    });
}

/// A run taken over after its server died plans again the services it had
/// not acted on: api, kept by the plan, died while nobody ran the run.
#[test]
fn a_resumed_run_plans_again_what_it_had_not_acted_on() {
    paused_runtime().block_on(async {
        let services = db_and_api();
        let h = harness(manifest(services.clone()), timed(&services, 1000, 1000)).await;
        h.provider.world().inventory = vec![matching("api", &services["api"], "api-old")];
        let second = h.second_engine();
        let id = h.start(4).await;
        assert_eq!(h.engine.get(&id).await.unwrap().services["api"].action, Action::Keep);
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.engine.abort_all();
        h.provider.world().inventory.clear();
        tokio::time::sleep(Duration::from_secs(16)).await;
        second.resume(&id).await.unwrap();
        let (view, entries) = finish_on(&second, &id).await;
        assert_eq!(view.state, RunState::Succeeded, "{view:#?}");
        let r = replans(&entries);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].at, crate::domain::run::ReplanAt::Resume);
        assert_eq!(r[0].changes, ["api: keep -> create (not running)"]);
        assert_eq!(view.services["api"].action, Action::Create);
        assert_eq!(view.probed, Some((2, 0)));
        let w = h.provider.world();
        let launched: BTreeSet<&str> = w.launches.keys().filter_map(|k| k.split('/').nth(1)).collect();
        assert_eq!(launched, BTreeSet::from(["db", "api"]));
    });
}

/// A `cutover` step (traffic elsewhere, instances here on the snapshot)
/// launches nothing: its instances pass a health gate, traffic moves to
/// them, and nothing is decommissioned.
#[test]
fn a_cutover_step_moves_traffic_to_what_runs_and_launches_nothing() {
    paused_runtime().block_on(async {
        let services = db_and_api();
        let h = region_up(&services).await;
        let id = h.start(4).await;
        let mut view = h.engine.get(&id).await.unwrap();
        // Planned as if db's traffic pointed elsewhere (the provider's
        // traffic paths feed the planner; here the step is made so).
        assert_eq!(view.services["db"].action, Action::Keep);
        let (v, _) = h.finish(&id).await;
        assert_eq!(v.state, RunState::Succeeded);

        let mut spec = (*view.spec).clone();
        spec.id = "r-cutover".into();
        for s in spec.steps.iter_mut().filter(|s| s.service == "db") {
            s.action = Action::Cutover;
        }
        view = RunView::new(spec.clone());
        assert_eq!(view.services["db"].action, Action::Cutover);
        let snap = h.engine.run_snapshot(&spec).await.unwrap();
        h.store
            .put(&layout::run_spec(&spec.id), crate::store::codec::encode(&spec), crate::store::PutOptions::create())
            .await
            .unwrap();
        h.store
            .put(&layout::run_index(&spec.id), bytes::Bytes::from_static(b"{}"), crate::store::PutOptions::create())
            .await
            .unwrap();
        let lease = super::lease::Lease::acquire(
            &h.store,
            &spec.lease_key(),
            &spec.id,
            "test-server",
            Duration::from_secs(15),
            h.engine.ctx.clock.now(),
        )
        .await
        .unwrap();
        let journal = super::journal::Journal::new_run(h.store.clone(), &spec.id);
        h.engine.launch(snap, spec.into(), journal, Vec::new(), lease, None).await.unwrap();
        let (v, entries) = finish_on(&h.engine, "r-cutover").await;
        assert_eq!(v.state, RunState::Succeeded, "{v:#?}");
        let db = &v.services["db"];
        assert_eq!((db.state, db.instances.clone()), (ServiceState::Healthy, vec!["db-old".to_string()]));
        assert!(entries.iter().any(|e| matches!(&e.event, Event::Healthy { service, attempt: 0 } if service == "db")));
        let w = h.provider.world();
        assert!(w.launches.is_empty(), "nothing launched: {:?}", w.launches);
        assert_eq!(w.cutovers, [("db".to_string(), vec!["db-old".to_string()])]);
        assert!(w.alive.contains_key("db-old") || w.inventory.iter().any(|i| i.id == "db-old"), "nothing removed");
    });
}

/// Where traffic points cannot be read: the plan fails preflight instead of
/// assuming it is here, so no run reports a region recovered while its
/// traffic may go elsewhere.
#[test]
fn an_unreadable_traffic_path_fails_preflight() {
    paused_runtime().block_on(async {
        let services = db_and_api();
        let h = region_up(&services).await;
        h.provider.world().traffic_fails = true;
        let (_, plan) = h.engine.plan("shop", "latest", None, false, true).await.unwrap();
        let check = plan.preflight.iter().find(|c| c.name == "traffic").unwrap();
        assert!(!check.ok && check.message.contains("Throttling: Rate exceeded"), "{check:?}");
        let e = h.engine.start(recovery_of_latest(Some(4))).await.unwrap_err();
        assert!(e.to_string().contains("cannot read where the traffic of shop"), "{e}");
    });
}
