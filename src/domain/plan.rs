//! The planner: snapshot + target region + live inventory → the steps a run
//! will take, its dependency DAG, critical path and preflight results.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::duration::human;
use super::manifest::{Manifest, Service};
use super::run::{Action, PlannedStep};

/// An instance the provider reports as running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveInstance {
    pub id: String,
    pub service: String,
    pub image: String,
    pub healthy: bool,
    /// Receiving the service's traffic (the cutover target).
    pub serving: bool,
    pub run_id: String,
    /// `fingerprint()` of what the instance was launched with.
    pub fingerprint: String,
    /// Where the instance itself answers (`127.0.0.1:41234`), for status.
    pub address: String,
}

/// Where one of a service's traffic paths points, as the provider sees it
/// from one region: a DNS record, a target group, a stable address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub service: String,
    /// What carries it: `dns web.shop.internal`, `target group tg-web`, `address 127.0.0.1:18001`.
    pub via: String,
    /// Where it points now: addresses or instances.
    pub points_to: Vec<String>,
    /// It reaches this region's instances of the service.
    pub here: bool,
    /// What clients use to reach the service (its DNS record; a target
    /// group or stable address when it has none): where these point is
    /// where the service is served from. A region's target group behind a
    /// DNS record that points elsewhere serves nobody.
    pub decides: bool,
}

impl Traffic {
    /// `dns web.shop.internal -> 10.0.1.5, 10.0.1.6`.
    pub fn describe(&self) -> String {
        let to = if self.points_to.is_empty() { "nothing".to_string() } else { super::listed(&self.points_to) };
        format!("{} -> {to}", self.via)
    }
}

/// A digest of everything an instance is launched with (image, launch
/// settings, health check): instances whose fingerprint differs from the
/// snapshot's are replaced, never patched.
///
/// The digest is over the canonical JSON of `{"health", "image", "launch"}`;
/// its bytes must never change, or every running instance would look
/// changed and be replaced. `launch` is a sorted map of JSON values, so it is
/// written as it is; `health` goes through a JSON value to sort its keys.
pub fn fingerprint(service: &Service, image: &str) -> String {
    use sha2::Digest;
    #[derive(Serialize)]
    struct Fingerprinted<'a> {
        health: serde_json::Value,
        image: &'a str,
        launch: &'a BTreeMap<String, serde_json::Value>,
    }
    let health = serde_json::to_value(&service.health).expect("a health check always serialises");
    let v = Fingerprinted { health, image, launch: &service.launch };
    let bytes = serde_json::to_vec(&v).expect("a fingerprint always serialises");
    super::snapshot::lower_hex(&sha2::Sha256::digest(&bytes)[..8])
}

/// How a service's running instances differ from what a snapshot says, in
/// the order the planner (and drift) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    Image,
    Settings,
    Unhealthy,
    NotServing,
    Count { running: usize, want: u32 },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Image => write!(f, "image changed"),
            Difference::Settings => write!(f, "settings changed"),
            Difference::Unhealthy => write!(f, "unhealthy"),
            Difference::NotServing => write!(f, "not serving"),
            Difference::Count { running, want } => {
                write!(f, "{running} instance{}, want {want}", if *running == 1 { "" } else { "s" })
            }
        }
    }
}

/// The first way `live` (a service's running instances, not empty)
/// differs from `service` on `image`; `None` when it matches.
pub fn differs(service: &Service, image: &str, fingerprint: &str, live: &[&LiveInstance]) -> Option<Difference> {
    if live.iter().any(|x| x.image != image) {
        Some(Difference::Image)
    } else if live.iter().any(|x| x.fingerprint != fingerprint) {
        Some(Difference::Settings)
    } else if live.iter().any(|x| !x.healthy) {
        Some(Difference::Unhealthy)
    } else if live.iter().any(|x| !x.serving) {
        Some(Difference::NotServing)
    } else if live.len() != service.replicas as usize {
        Some(Difference::Count { running: live.len(), want: service.replicas })
    } else {
        None
    }
}

/// One preflight check and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub message: String,
}

impl Check {
    pub fn pass(name: &str, message: impl Into<String>) -> Check {
        Check { name: name.into(), ok: true, message: message.into() }
    }
    pub fn fail(name: &str, message: impl Into<String>) -> Check {
        Check { name: name.into(), ok: false, message: message.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub environment: String,
    pub region: String,
    pub snapshot_version: u64,
    pub snapshot_digest: String,
    /// Dependencies before dependents.
    pub steps: Vec<PlannedStep>,
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
    pub preflight: Vec<Check>,
    /// The manifest's `rto_objective`, to compare with the critical path.
    pub rto_objective_ms: Option<u64>,
    /// Things that do not stop a recovery but deserve a look (an estimate
    /// over the RTO objective, a stable address in the ephemeral range).
    pub warnings: Vec<String>,
    /// Services with `approval = true`: the run waits for an operator there.
    pub approval_gates: Vec<String>,
    /// What changed, setting by setting, for services replaced because
    /// their image or settings differ from the snapshot they run now.
    pub changes: BTreeMap<String, StepChanges>,
    /// Where each service's traffic points now, seen from the region.
    pub traffic: Vec<Traffic>,
}

/// A replaced service's changed settings, against the snapshot its
/// running instances were launched from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepChanges {
    pub from_version: u64,
    pub fields: Vec<super::snapshot::FieldChange>,
}

pub struct PlanInput<'a> {
    pub manifest: &'a Manifest,
    pub snapshot_version: u64,
    pub snapshot_digest: &'a str,
    pub region: &'a str,
    pub inventory: &'a [LiveInstance],
    /// Replace even services that already match.
    pub force: bool,
    /// Delete running services that are absent from the snapshot.
    pub prune: bool,
    /// Launch-to-healthy times measured by earlier runs.
    pub history: &'a BTreeMap<String, u64>,
    /// Where each service's traffic points now (empty: not known, or the
    /// provider has no traffic paths): a service whose traffic goes
    /// elsewhere has it moved back (`cutover`).
    pub traffic: &'a [Traffic],
}

/// A first guess at launch-to-healthy time when no run has measured it.
pub fn default_expected(s: &Service) -> Duration {
    match &s.health {
        Some(h) => h.interval.0 * h.healthy_threshold + Duration::from_millis(500),
        None => Duration::from_secs(1),
    }
}

pub fn plan(input: PlanInput<'_>) -> Plan {
    let m = input.manifest;
    let dag = m.dag();
    let mut preflight = Vec::new();
    // With a cycle the steps follow the manifest's order and there is no critical path.
    let (order, acyclic) = match dag.topo_order() {
        Some(o) => {
            preflight.push(Check::pass("dependency-graph", format!("{} services, no cycles", m.services.len())));
            (o, true)
        }
        None => {
            let cycles: Vec<String> = dag.cycles().iter().map(|c| c.join(" -> ")).collect();
            preflight.push(Check::fail("dependency-graph", format!("dependency cycle: {}", cycles.join("; "))));
            ((0..dag.len()).collect(), false)
        }
    };
    let mut by_service: BTreeMap<&str, Vec<&LiveInstance>> = BTreeMap::new();
    for i in input.inventory {
        by_service.entry(i.service.as_str()).or_default().push(i);
    }
    let mut missing_images = Vec::new();
    let mut steps = Vec::with_capacity(order.len());
    // The DAG's nodes are the services in the manifest's order.
    let services: Vec<&Service> = m.services.values().collect();
    for &i in &order {
        let name = dag.name(i);
        let svc = services[i];
        let image = match svc.image.for_region(input.region) {
            Some(id) => id.to_string(),
            None => {
                missing_images.push(name.to_string());
                String::new()
            }
        };
        let live = by_service.get(name).cloned().unwrap_or_default();
        let fp = fingerprint(svc, &image);
        let why_replace = match differs(svc, &image, &fp, &live) {
            Some(d) => Some(d.to_string()),
            None if input.force => Some("forced".to_string()),
            None => None,
        };
        let elsewhere: Vec<String> =
            input.traffic.iter().filter(|t| t.service == name && t.decides && !t.here).map(Traffic::describe).collect();
        let (action, reason) = match (live.is_empty(), why_replace) {
            (true, _) => (Action::Create, "not running".to_string()),
            (false, Some(why)) => (Action::Replace, why),
            (false, None) if !elsewhere.is_empty() => {
                (Action::Cutover, format!("traffic points elsewhere: {}", elsewhere.join("; ")))
            }
            (false, None) => (Action::Keep, "healthy on the snapshot's image and settings".to_string()),
        };
        let expected_ms = match action {
            Action::Keep => 0,
            _ => input.history.get(name).copied().unwrap_or_else(|| default_expected(svc).as_millis() as u64),
        };
        steps.push(PlannedStep {
            service: name.to_string(),
            action,
            reason,
            fingerprint: fp,
            image,
            replicas: svc.replicas,
            depends_on: svc.depends_on.clone(),
            current: live.iter().map(|x| x.id.clone()).collect(),
            expected_ms,
        });
    }
    if missing_images.is_empty() {
        preflight.push(Check::pass("images-for-region", format!("every service has an image for {}", input.region)));
    } else {
        preflight.push(Check::fail(
            "images-for-region",
            format!("no image for region {} for: {}", input.region, super::listed(&missing_images)),
        ));
    }
    // Services that are not in the snapshot are deleted once the rest is
    // healthy (prune), or with --no-prune reported and left alone.
    let strays: Vec<&str> = by_service.keys().copied().filter(|s| !m.services.contains_key(*s)).collect();
    if input.prune {
        for name in &strays {
            let live = &by_service[name];
            steps.push(PlannedStep {
                service: name.to_string(),
                action: Action::Delete,
                reason: "not in the snapshot".into(),
                fingerprint: String::new(),
                image: live.first().map(|x| x.image.clone()).unwrap_or_default(),
                replicas: 0,
                depends_on: Vec::new(),
                current: live.iter().map(|x| x.id.clone()).collect(),
                expected_ms: 0,
            });
        }
    } else if !strays.is_empty() {
        preflight.push(Check::pass(
            "unmanaged-services",
            format!("running but not in the snapshot (left alone: --no-prune): {}", super::listed(&strays)),
        ));
    }
    // Steps follow `order`; deletions come after and are not in the DAG.
    let mut expected = vec![0; dag.len()];
    for (&i, step) in order.iter().zip(&steps) {
        expected[i] = step.expected_ms;
    }
    let (path, total) = match acyclic {
        true => dag.critical_path_in(&order, |i| Duration::from_millis(expected[i])),
        false => (Vec::new(), Duration::ZERO),
    };
    let rto_objective_ms = m.rto_objective.map(|d| d.0.as_millis() as u64);
    let mut warnings = Vec::new();
    if let Some(rto) = m.rto_objective
        && total > rto.0
    {
        warnings.push(format!(
            "the critical-path estimate ({}) exceeds rto_objective ({}): {} is the slowest chain",
            human(total),
            human(rto.0),
            path.iter().map(|i| dag.name(*i)).collect::<Vec<_>>().join(" -> ")
        ));
    }
    if m.promotion == super::manifest::Promotion::Drill {
        warnings.push(DRILL_PROMOTION_NOTE.to_string());
    }
    Plan {
        environment: m.environment.clone(),
        region: input.region.to_string(),
        snapshot_version: input.snapshot_version,
        snapshot_digest: input.snapshot_digest.to_string(),
        steps,
        critical_path: path.iter().map(|i| dag.name(*i).to_string()).collect(),
        critical_path_ms: total.as_millis() as u64,
        preflight,
        rto_objective_ms,
        warnings,
        approval_gates: m.services.iter().filter(|(_, s)| s.approval).map(|(n, _)| n.clone()).collect(),
        changes: BTreeMap::new(),
        traffic: input.traffic.to_vec(),
    }
}

/// The services of `expected` (each with the instances that should serve
/// it) that the live inventory does not show healthy, with why.
pub fn unanswered(expected: &[(String, Vec<String>)], live: &[LiveInstance]) -> BTreeMap<String, String> {
    let by_id: BTreeMap<&str, &LiveInstance> = live.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut out = BTreeMap::new();
    for (service, ids) in expected {
        let mut problems = Vec::new();
        if ids.is_empty() {
            problems.push("no instance serves it".to_string());
        }
        for id in ids {
            match by_id.get(id.as_str()) {
                None => problems.push(format!("instance {id} is not running")),
                Some(i) if !i.healthy => problems.push(format!("instance {id} does not pass its health check")),
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            out.insert(service.clone(), problems.join(", "));
        }
    }
    out
}

/// A run's steps planned again (`fresh`, made against the live inventory
/// now): services the run has not acted on (`untouched`) take their fresh
/// step, the others keep the one they had. Returns the steps the run
/// executes from now on and one line per step that changed.
pub fn refresh(
    old: &[PlannedStep],
    untouched: impl Fn(&str) -> bool,
    fresh: Vec<PlannedStep>,
) -> (Vec<PlannedStep>, Vec<String>) {
    let before: BTreeMap<&str, &PlannedStep> = old.iter().map(|s| (s.service.as_str(), s)).collect();
    let mut changes = Vec::new();
    let mut steps = Vec::with_capacity(fresh.len());
    let mut seen = std::collections::BTreeSet::new();
    for step in fresh {
        seen.insert(step.service.clone());
        match before.get(step.service.as_str()) {
            Some(had) if !untouched(&step.service) => steps.push((*had).clone()),
            Some(had) => {
                if had.action != step.action {
                    changes.push(format!(
                        "{}: {} -> {} ({})",
                        step.service,
                        action_name(had.action),
                        action_name(step.action),
                        step.reason
                    ));
                } else if had.current != step.current && step.action != Action::Create {
                    changes.push(format!(
                        "{}: {} now of {} ({})",
                        step.service,
                        action_name(step.action),
                        listed_or_none(&step.current),
                        step.reason
                    ));
                }
                steps.push(step);
            }
            None => {
                changes.push(format!("{}: {} ({}), new", step.service, action_name(step.action), step.reason));
                steps.push(step);
            }
        }
    }
    for had in old.iter().filter(|s| !seen.contains(&s.service)) {
        if untouched(&had.service) {
            changes.push(format!("{}: {} dropped (no longer running)", had.service, action_name(had.action)));
        } else {
            steps.push(had.clone());
        }
    }
    (steps, changes)
}

fn listed_or_none(ids: &[String]) -> String {
    if ids.is_empty() { "no instances".into() } else { super::listed(ids) }
}

/// Said wherever a `promotion = "drill"` environment shows up, until drills exist.
pub const DRILL_PROMOTION_NOTE: &str = "promotion = \"drill\": a snapshot becomes known-good only after a DR drill of it passed: `lifeboat drill run ENV --snapshot N --promote-on-pass` (a manual `snapshot promote` of an undrilled snapshot is refused)";

impl Plan {
    pub fn preflight_ok(&self) -> bool {
        self.preflight.iter().all(|c| c.ok)
    }

    /// Graphviz: dependencies point at their dependents, critical path in bold.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", self.environment);
        for s in &self.steps {
            let bold = if self.critical_path.contains(&s.service) { ", penwidth=2" } else { "" };
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n{}\"{bold}];\n",
                s.service,
                s.service,
                action_name(s.action)
            ));
        }
        for s in &self.steps {
            for d in &s.depends_on {
                out.push_str(&format!("  \"{d}\" -> \"{}\";\n", s.service));
            }
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self) -> String {
        let id = |s: &str| s.replace('-', "_");
        let mut out = String::from("graph LR\n");
        for s in &self.steps {
            out.push_str(&format!("  {}[\"{} ({})\"]\n", id(&s.service), s.service, action_name(s.action)));
        }
        for s in &self.steps {
            for d in &s.depends_on {
                out.push_str(&format!("  {} --> {}\n", id(d), id(&s.service)));
            }
        }
        for s in &self.critical_path {
            out.push_str(&format!("  style {} stroke-width:3px\n", id(s)));
        }
        out
    }
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Replace => "replace",
        Action::Keep => "keep",
        Action::Cutover => "cutover",
        Action::Delete => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest;
    use crate::domain::source::Format;

    fn shop() -> Manifest {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/good/shop.toml")).unwrap();
        manifest::parse(text.as_bytes(), Format::Toml).unwrap()
    }

    /// The original definition: the fingerprint's bytes must never change.
    fn fingerprint_as_first_defined(service: &Service, image: &str) -> String {
        let v = serde_json::json!({
            "image": image,
            "launch": service.launch,
            "health": service.health,
        });
        crate::domain::snapshot::sha256_hex(&crate::domain::snapshot::canonical_json(&v))[..16].to_string()
    }

    #[test]
    fn fingerprints_keep_their_bytes() {
        let random = crate::testkit::random_manifest_toml(300, 3, 7);
        let random = manifest::parse(random.as_bytes(), Format::Toml).unwrap();
        // Launch settings are free-form JSON to the fingerprint: odd ones too.
        let mut hand = shop();
        for (k, s) in hand.services.values_mut().enumerate() {
            s.launch.insert("z-nested".into(), serde_json::json!({"b": [1, {"d": 2.5, "c": null}], "a": "é\"q"}));
            s.launch.insert("on".into(), serde_json::json!(k % 2 == 0));
            if k % 3 == 0 {
                s.health = None;
            }
        }
        let mut n = 0;
        for m in [shop(), random, hand] {
            for s in m.services.values() {
                for image in ["", "ami-0123", "img-\u{1F600}\"x"] {
                    assert_eq!(fingerprint(s, image), fingerprint_as_first_defined(s, image), "{image}");
                    n += 1;
                }
            }
        }
        assert!(n > 900);
        use sha2::Digest;
        assert_eq!(crate::domain::snapshot::sha256_hex(b"abc"), hex::encode(sha2::Sha256::digest(b"abc")));
    }

    fn live(m: &Manifest, service: &str, image: &str, healthy: bool) -> LiveInstance {
        LiveInstance {
            fingerprint: fingerprint(&m.services[service], image),
            id: format!("{service}-1"),
            service: service.into(),
            image: image.into(),
            healthy,
            serving: true,
            run_id: "old".into(),
            address: String::new(),
        }
    }

    #[test]
    fn actions_follow_inventory() {
        let m = shop();
        let mut changed = live(&m, "api", m.image_for("api", "eu-west-1").unwrap(), true);
        changed.fingerprint = "other".into();
        let inv = vec![
            live(&m, "db", m.image_for("db", "eu-west-1").unwrap(), true),
            live(&m, "cache", m.image_for("cache", "eu-west-1").unwrap(), false),
            live(&m, "queue", "sha256:old", true),
            changed.clone(),
            LiveInstance { id: "api-2".into(), ..changed },
        ];
        let history = BTreeMap::new();
        let p = plan(PlanInput {
            manifest: &m,
            snapshot_version: 1,
            snapshot_digest: "sha256:d",
            region: "eu-west-1",
            inventory: &inv,
            force: false,
            prune: true,
            history: &history,
            traffic: &[],
        });
        let action = |s: &str| p.steps.iter().find(|x| x.service == s).unwrap().action;
        assert_eq!(action("db"), Action::Keep);
        assert_eq!(action("cache"), Action::Replace, "unhealthy");
        assert_eq!(action("queue"), Action::Replace, "other image");
        assert_eq!(action("api"), Action::Replace, "settings changed");
        assert_eq!(p.steps.iter().find(|x| x.service == "api").unwrap().reason, "settings changed");
        assert_eq!(action("gateway"), Action::Create);
        assert!(p.preflight_ok());
        // Dependencies come before dependents.
        let pos = |s: &str| p.steps.iter().position(|x| x.service == s).unwrap();
        for s in &p.steps {
            for d in &s.depends_on {
                assert!(pos(d) < pos(&s.service));
            }
        }
        assert_eq!(p.critical_path.last().map(String::as_str), Some("gateway"));
        assert!(p.to_dot().contains("\"api\" -> \"gateway\""));
        assert!(p.to_mermaid().contains("api --> gateway"));
    }

    /// A service that runs the snapshot here but whose deciding traffic
    /// path (its DNS record) points elsewhere is moved back (`cutover`); a
    /// path that does not decide (a target group behind DNS) moves nothing.
    #[test]
    fn traffic_elsewhere_is_moved_back_without_a_launch() {
        let m = shop();
        let inv = vec![live(&m, "db", m.image_for("db", "eu-west-1").unwrap(), true)];
        let history = BTreeMap::new();
        let path = |decides: bool, here: bool| Traffic {
            service: "db".into(),
            via: if decides { "dns db.shop.internal".into() } else { "target group tg-db".into() },
            points_to: vec!["10.1.0.7".into()],
            here,
            decides,
        };
        let action_with = |traffic: &[Traffic]| {
            let p = plan(PlanInput {
                manifest: &m,
                snapshot_version: 1,
                snapshot_digest: "d",
                region: "eu-west-1",
                inventory: &inv,
                force: false,
                prune: true,
                history: &history,
                traffic,
            });
            let db = p.steps.iter().find(|x| x.service == "db").unwrap().clone();
            (db.action, db.reason)
        };
        assert_eq!(action_with(&[path(true, true)]).0, Action::Keep);
        assert_eq!(action_with(&[path(false, false), path(true, true)]).0, Action::Keep);
        assert_eq!(
            action_with(&[path(true, false)]),
            (Action::Cutover, "traffic points elsewhere: dns db.shop.internal -> 10.1.0.7".to_string())
        );
    }

    #[test]
    fn force_replaces_and_missing_region_fails_preflight() {
        let m = shop();
        let inv = vec![live(&m, "db", m.image_for("db", "eu-west-1").unwrap(), true)];
        let history = BTreeMap::new();
        let p = plan(PlanInput {
            manifest: &m,
            snapshot_version: 1,
            snapshot_digest: "d",
            region: "eu-west-1",
            inventory: &inv,
            force: true,
            prune: true,
            history: &history,
            traffic: &[],
        });
        assert_eq!(p.steps[0].action, Action::Replace);
        let mut m2 = m.clone();
        m2.services.get_mut("db").unwrap().image =
            manifest::Image::PerRegion(BTreeMap::from([("us-east-1".to_string(), "sha256:x".to_string())]));
        let p = plan(PlanInput {
            manifest: &m2,
            snapshot_version: 1,
            snapshot_digest: "d",
            region: "eu-west-1",
            inventory: &[],
            force: false,
            prune: true,
            history: &history,
            traffic: &[],
        });
        assert!(!p.preflight_ok());
        assert!(p.preflight.iter().any(|c| !c.ok && c.message.contains("db")));
    }

    #[test]
    fn an_estimate_over_the_rto_objective_is_a_warning() {
        let mut m = shop();
        let history = BTreeMap::new();
        let input = |m: &Manifest| {
            plan(PlanInput {
                manifest: m,
                snapshot_version: 1,
                snapshot_digest: "d",
                region: "eu-west-1",
                inventory: &[],
                force: false,
                prune: true,
                history: &history,
                traffic: &[],
            })
        };
        m.rto_objective = Some(crate::domain::duration::Dur::secs(3600));
        let p = input(&m);
        assert_eq!(p.rto_objective_ms, Some(3_600_000));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        m.rto_objective = Some(crate::domain::duration::Dur::millis(10));
        let p = input(&m);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("exceeds rto_objective"), "{:?}", p.warnings);
        assert!(p.warnings[0].ends_with(&format!("{} is the slowest chain", p.critical_path.join(" -> "))));
        m.promotion = manifest::Promotion::Drill;
        assert_eq!(input(&m).warnings.last().map(String::as_str), Some(DRILL_PROMOTION_NOTE));
    }
}
