//! Runs: the append-only event journal and the state folded from it. A run's
//! state is never stored on its own; it is always the fold of its events, so
//! a resumed run knows exactly what happened before the crash.

mod events;
mod narrate;
mod view;

pub use events::*;
pub use narrate::*;
pub use view::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            format_version: RUN_FORMAT,
            id: "r1".into(),
            kind: RunKind::Recovery,
            environment: "shop".into(),
            region: "r".into(),
            snapshot_version: 1,
            snapshot_digest: "sha256:x".into(),
            parallelism: 4,
            created_at: "t0".into(),
            created_by: "me".into(),
            steps: ["db", "api"]
                .iter()
                .map(|s| PlannedStep {
                    service: s.to_string(),
                    action: Action::Create,
                    reason: String::new(),
                    fingerprint: String::new(),
                    image: "sha256:x".into(),
                    replicas: 1,
                    depends_on: vec![],
                    current: vec![],
                    expected_ms: 1000,
                })
                .collect(),
            critical_path: vec![],
            critical_path_ms: 0,
            proposed: false,
            rto_objective_ms: None,
            force: false,
            prune: false,
            decommission: false,
            drill: None,
        }
    }

    fn entry(seq: u64, event: Event) -> Entry {
        Entry { format_version: ENTRY_FORMAT, seq, at: format!("t{seq}"), elapsed_ms: seq * 10, event }
    }

    /// A launch written ahead of its dependencies' cutovers says what it
    /// waits for; once they are cut over (or kept), a launch is a launch.
    /// Entries a watcher skips (before its `from_seq`) still count.
    #[test]
    fn a_launch_announced_ahead_says_what_it_waits_for() {
        let mut spec = spec();
        let step = |name: &str, deps: &[&str]| PlannedStep {
            service: name.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..spec.steps[0].clone()
        };
        spec.steps = vec![step("db", &[]), step("cache", &[]), step("api", &["db", "cache"]), step("web", &["api"])];
        let mut narrator = Narrator::new(&spec);
        let launch = |s: &str| entry(1, Event::LaunchStarted { service: s.into(), attempt: 1 });
        let mut told = |e: Entry| {
            let n = narrator.tell(e, "r1");
            (n.message, n.waits_for)
        };
        assert_eq!(told(launch("db")), ("db: launching".into(), vec![]));
        assert_eq!(
            told(launch("api")),
            ("api: launch announced: it begins once db, cache are cut over".into(), vec!["db".into(), "cache".into()])
        );
        told(entry(2, Event::CutOver { service: "db".into(), instances: vec![] }));
        assert_eq!(told(launch("api")).0, "api: launch announced: it begins once cache is cut over");
        told(entry(3, Event::Kept { service: "cache".into() }));
        assert_eq!(told(launch("api")), ("api: launching".into(), vec![]));
        assert_eq!(told(launch("web")).1, vec!["api"], "web waits for api");

        let mut late = Narrator::new(&spec);
        late.note(&entry(2, Event::CutOver { service: "db".into(), instances: vec![] }));
        late.note(&entry(3, Event::Kept { service: "cache".into() }));
        assert_eq!(late.tell(launch("api"), "r1").message, "api: launching");
    }

    #[test]
    fn fold_tracks_attempts_failures_and_skips() {
        let s = |n: &str| n.to_string();
        let events = vec![
            Event::RunStarted { owner: s("a") },
            Event::LaunchStarted { service: s("db"), attempt: 1 },
            Event::InstancesLaunched { service: s("db"), attempt: 1, instances: vec![s("i1")] },
            Event::AttemptFailed { service: s("db"), attempt: 1, reason: s("unhealthy"), logs: vec![s("boom")] },
            Event::LaunchStarted { service: s("db"), attempt: 2 },
            Event::InstancesLaunched { service: s("db"), attempt: 2, instances: vec![s("i2")] },
            Event::ServiceFailed { service: s("db"), reason: s("unhealthy after 2 attempts") },
            Event::Skipped { service: s("api"), upstream: s("db") },
        ];
        let entries: Vec<Entry> = events.into_iter().enumerate().map(|(i, e)| entry(i as u64, e)).collect();
        let v = RunView::replay(spec(), &entries);
        let db = &v.services["db"];
        assert_eq!((db.state, db.attempts, db.failed_attempt), (ServiceState::Failed, 2, 1));
        assert_eq!(db.failed_instances, vec!["i1"]);
        assert_eq!(db.launched_ms, Some(10));
        assert_eq!(v.services["api"].upstream.as_deref(), Some("db"));
        let queued = |name: &str| v.queued_ms_of(v.spec.steps.iter().find(|s| s.service == name).unwrap());
        assert_eq!(queued("db"), Some(0));
        assert_eq!(queued("api"), Some(0), "api has no dependencies in this spec");
        assert_eq!(v.outcome(), RunState::Failed);
        assert_eq!(v.last_seq, Some(7));
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = Event::Skipped { service: "api".into(), upstream: "db".into() };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, r#"{"type":"skipped","service":"api","upstream":"db"}"#);
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);
        assert_eq!(e.kind(), "skipped");
    }
}
