//! DR drills: a recovery of a snapshot into an isolated target, judged
//! against the manifest's RTO objective, then torn down. Pure: how a
//! drill's manifest is kept apart from production, and the verdict.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::manifest::{Check, Manifest, VerifyProbe};
use crate::domain::run::{RunState, RunView, ServiceState};

/// What a provider changes so that a drill never touches production.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    /// Each production stable address and the drill address that replaces it.
    #[serde(default)]
    pub addresses: Vec<AddressMap>,
    /// Launch keys dropped in a drill (traffic targets: target groups, DNS).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Launch keys set in a drill (its own subnets and security groups,
    /// its network namespace).
    #[serde(default)]
    pub set: BTreeMap<String, serde_json::Value>,
    /// The network namespace the drill runs in, where the provider made one:
    /// its services keep production's addresses, and production is out of reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// What the provider could not do to keep the drill apart (said at start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressMap {
    pub service: String,
    pub production: String,
    pub drill: String,
}

/// What a drill run was asked for; part of its `RunSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSpec {
    /// The environment name the provider sees: `ENV.drill.RUN` (a dot is
    /// never in an environment's name, so it cannot meet production).
    pub namespace: String,
    pub isolation: Isolation,
    /// The run is cancelled (and torn down) after this long.
    pub timeout_ms: u64,
    /// A passed drill stays up this long for inspection (0: torn down at once).
    #[serde(default)]
    pub keep_for_ms: u64,
    /// Move known-good to the drilled snapshot when the drill passes.
    #[serde(default)]
    pub promote_on_pass: bool,
    /// The known-good version when the drill started (the promotion's compare-and-swap).
    #[serde(default)]
    pub known_good_at_start: Option<u64>,
    pub rto_objective_ms: Option<u64>,
    /// The schedule that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Values the isolation could not be sure it rewrote (they still
    /// mention a production port), each with where it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The most a passed drill may be kept up.
pub const MAX_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Without an objective, a drill times out after this long.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

pub fn namespace(env: &str, run_id: &str) -> String {
    format!("{env}.drill.{run_id}")
}

/// `(environment, run ID)` of a drill namespace.
pub fn parse_namespace(ns: &str) -> Option<(&str, &str)> {
    let (env, run) = ns.split_once(".drill.")?;
    (!env.is_empty() && run.starts_with("r-")).then_some((env, run))
}

/// A host that means "this machine": every loopback form of an address
/// reaches the same listener.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h == "::1"
        || h == "0.0.0.0"
        || h == "::"
        || h.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` of an address, when the port is a number.
fn host_port(addr: &str) -> Option<(&str, &str)> {
    let (h, p) = addr.rsplit_once(':')?;
    (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then_some((h, p))
}

/// Whether `text` mentions `port` as a number of its own (not inside a longer one).
fn mentions_port(text: &str, port: &str) -> bool {
    let b = text.as_bytes();
    text.match_indices(port).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| b[i]);
        let after = b.get(at + port.len()).copied();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// `text` with production's loopback addresses replaced by drill ones in
/// every form: `127.0.0.1:P`, `localhost:P`, `127.x.y.z:P`, `[::1]:P`,
/// `0.0.0.0:P`, a bare port `P` (a split `DB_PORT`), and `--flag=P`.
fn rewrite_loopback(text: &str, host_chars: impl Fn(char) -> bool, port: &str, drill: &str) -> String {
    let Some((_, drill_port)) = host_port(drill) else { return text.to_string() };
    if text == port {
        return drill_port.to_string();
    }
    if let Some((flag, value)) = text.rsplit_once('=')
        && value == port
        && flag.starts_with('-')
    {
        return format!("{flag}={drill_port}");
    }
    let needle = format!(":{port}");
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(off) = text[i..].find(&needle) {
        let colon = i + off;
        let end = colon + needle.len();
        let longer = text[end..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        // The host before the colon: a bracketed IPv6 address or a name/IPv4.
        let start = if text[..colon].ends_with(']') {
            text[..colon].rfind('[').unwrap_or(colon)
        } else {
            text[..colon].char_indices().rev().take_while(|(_, c)| host_chars(*c)).last().map_or(colon, |(j, _)| j)
        };
        let host = &text[start..colon];
        if !longer && start >= i && !host.is_empty() && is_loopback(host) {
            out.push_str(&text[i..start]);
            out.push_str(drill);
        } else {
            out.push_str(&text[i..end]);
        }
        i = end;
    }
    out.push_str(&text[i..]);
    out
}

/// `text` with every occurrence of a production address replaced by its
/// drill address. A loopback address is matched in every form that reaches
/// it (`rewrite_loopback`); any other only exactly: the characters around
/// it cannot extend it (`127.0.0.1:70` does not match inside `127.0.0.1:7001`).
pub fn rewrite(text: &str, addresses: &[AddressMap]) -> String {
    let mut out = text.to_string();
    for a in addresses {
        if a.production.is_empty() {
            continue;
        }
        if let Some((host, port)) = host_port(&a.production)
            && is_loopback(host)
        {
            out = rewrite_loopback(&out, |c| c.is_ascii_alphanumeric() || c == '.' || c == '-', port, &a.drill);
            continue;
        }
        let mut result = String::with_capacity(out.len());
        let mut i = 0;
        while let Some(off) = out[i..].find(&a.production) {
            let at = i + off;
            let end = at + a.production.len();
            let extends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
            result.push_str(&out[i..at]);
            if extends(out[..at].chars().last()) || extends(out[end..].chars().next()) {
                result.push_str(&a.production);
            } else {
                result.push_str(&a.drill);
            }
            i = end;
        }
        result.push_str(&out[i..]);
        out = result;
    }
    out
}

fn rewrite_json(v: &mut serde_json::Value, addresses: &[AddressMap]) {
    match v {
        serde_json::Value::String(s) => *s = rewrite(s, addresses),
        // A port given as a number (`port = 18001`).
        serde_json::Value::Number(n) => {
            for a in addresses {
                if let (Some((host, port)), Some((_, drill_port))) = (host_port(&a.production), host_port(&a.drill))
                    && is_loopback(host)
                    && n.to_string() == port
                    && let Ok(p) = drill_port.parse::<u64>()
                {
                    *n = p.into();
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| rewrite_json(x, addresses)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| rewrite_json(x, addresses)),
        _ => {}
    }
}

/// The manifest a drill deploys: stable addresses moved to drill ones (and
/// every mention of them in arguments, environment values, health and
/// verify checks), traffic targets dropped, the drill's own settings set,
/// and every instance tagged `lifeboat:drill = RUN`.
pub fn isolate(manifest: &Manifest, drill: &DrillSpec, run_id: &str) -> Manifest {
    let mut m = manifest.clone();
    let addresses = &drill.isolation.addresses;
    for svc in m.services.values_mut() {
        for key in &drill.isolation.remove {
            svc.launch.remove(key);
        }
        for (k, v) in &drill.isolation.set {
            svc.launch.insert(k.clone(), v.clone());
        }
        for v in svc.launch.values_mut() {
            rewrite_json(v, addresses);
        }
        if let Some(h) = svc.health.as_mut() {
            match &mut h.check {
                Check::Http(s) | Check::Tcp(s) => *s = rewrite(s, addresses),
                Check::Command(argv) => argv.iter_mut().for_each(|a| *a = rewrite(a, addresses)),
            }
        }
        svc.tags.insert("lifeboat:drill".into(), run_id.to_string());
    }
    for check in &mut m.verify {
        match &mut check.probe {
            VerifyProbe::Http { http, .. } => *http = rewrite(http, addresses),
            VerifyProbe::Command { command } => command.iter_mut().for_each(|a| *a = rewrite(a, addresses)),
        }
    }
    m
}

/// What the rewrite could not be sure of: every value of the drill's
/// manifest (arguments, environment, settings, checks) that still mentions
/// a production port, named with where it is.
pub fn isolation_warnings(isolated: &Manifest, addresses: &[AddressMap]) -> Vec<String> {
    let ports: Vec<(&AddressMap, &str)> =
        addresses.iter().filter_map(|a| host_port(&a.production).map(|(_, p)| (a, p))).collect();
    let mut out = Vec::new();
    let mut check = |place: String, text: &str| {
        for (a, port) in &ports {
            if mentions_port(text, port) {
                out.push(format!(
                    "{place} = {:?} still mentions port {port} of production's {} ({}): the drill may reach production through it; use the full address {} so that it is rewritten",
                    crate::error::shown(text),
                    a.service,
                    a.production,
                    a.production
                ));
            }
        }
    };
    fn walk(v: &serde_json::Value, place: String, check: &mut dyn FnMut(String, &str)) {
        match v {
            serde_json::Value::String(s) => check(place, s),
            serde_json::Value::Number(n) => check(place, &n.to_string()),
            serde_json::Value::Array(a) => {
                a.iter().enumerate().for_each(|(i, x)| walk(x, format!("{place}[{i}]"), check))
            }
            serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, format!("{place}.{k}"), check)),
            _ => {}
        }
    }
    for (name, svc) in &isolated.services {
        for (k, v) in &svc.launch {
            walk(v, format!("services.{name}.launch.{k}"), &mut check);
        }
        if let Some(h) = &svc.health {
            match &h.check {
                Check::Http(s) | Check::Tcp(s) => check(format!("services.{name}.health"), s),
                Check::Command(argv) => argv.iter().for_each(|a| check(format!("services.{name}.health.command"), a)),
            }
        }
    }
    for v in &isolated.verify {
        match &v.probe {
            VerifyProbe::Http { http, .. } => check(format!("verify {}", v.name), http),
            VerifyProbe::Command { command } => command.iter().for_each(|a| check(format!("verify {}", v.name), a)),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    PassedOverObjective,
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::PassedOverObjective => "passed_over_objective",
            Verdict::Failed => "failed",
        }
    }
}

/// How a drill went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Start → every service healthy and verified (0 when it never got there).
    pub rto_ms: u64,
    pub rto_objective_ms: Option<u64>,
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
    /// Why it failed: the first failed service or check, a timeout, a cancel.
    pub root_cause: Option<String>,
}

/// Judges a drill whose services are all done (the run is about to finish).
pub fn judge(view: &RunView, objective_ms: Option<u64>, timed_out: Option<&str>) -> Judgement {
    let (critical_path, critical_path_ms) = view.measured_critical_path();
    let failed_service = view.spec.steps.iter().find_map(|s| {
        let p = &view.services[&s.service];
        (p.state == ServiceState::Failed)
            .then(|| format!("{} failed: {}", s.service, p.error.clone().unwrap_or_default()))
    });
    let failed_check =
        view.verify.iter().find(|(_, passed, _)| !passed).map(|(c, _, d)| format!("verify check {c} failed: {d}"));
    let not_healthy = view.spec.steps.iter().find_map(|s| {
        let p = &view.services[&s.service];
        (p.state != ServiceState::Healthy).then(|| format!("{} ended {}", s.service, p.state.as_str()))
    });
    let root_cause = timed_out
        .map(str::to_string)
        .or(failed_service)
        .or(failed_check)
        .or_else(|| view.cancel_requested.then(|| "the drill was cancelled".to_string()))
        .or(not_healthy);
    let healthy_at = view.services.values().filter_map(|s| s.finished_ms).max().unwrap_or(0);
    let verified_at = view.verified_ms.unwrap_or(0);
    let rto_ms = if root_cause.is_none() { healthy_at.max(verified_at) } else { 0 };
    let verdict = match (&root_cause, objective_ms) {
        (Some(_), _) => Verdict::Failed,
        (None, Some(o)) if rto_ms > o => Verdict::PassedOverObjective,
        (None, _) => Verdict::Passed,
    };
    Judgement { verdict, rto_ms, rto_objective_ms: objective_ms, critical_path, critical_path_ms, root_cause }
}

/// A finished run's state, from its verdict.
pub fn final_state(j: &Judgement, cancelled: bool) -> RunState {
    match j.verdict {
        Verdict::Failed if cancelled => RunState::Cancelled,
        Verdict::Failed => RunState::Failed,
        _ => RunState::Succeeded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(p: &str, d: &str) -> AddressMap {
        AddressMap { service: "db".into(), production: p.into(), drill: d.into() }
    }

    #[test]
    fn what_a_rewrite_cannot_be_sure_of_is_named() {
        let m = crate::domain::manifest::parse(
            "environment = \"shop\"\nregion = \"local-1\"\n\
             [services.api]\nimage = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n\
             launch = { env = { DB = \"localhost:7001\", DB_PORT = \"7001\", REMOTE = \"db.internal:7001\", OTHER = \"17001\" } }\n"
                .as_bytes(),
            crate::domain::source::Format::Toml,
        );
        let m = m.unwrap_or_else(|p| panic!("{p:?}"));
        let a = [map("127.0.0.1:7001", "127.0.0.1:41001")];
        let spec = DrillSpec {
            namespace: "shop.drill.r-1".into(),
            isolation: Isolation { addresses: a.to_vec(), ..Default::default() },
            timeout_ms: 1,
            keep_for_ms: 0,
            promote_on_pass: false,
            known_good_at_start: None,
            rto_objective_ms: None,
            schedule: None,
            warnings: Vec::new(),
        };
        let isolated = isolate(&m, &spec, "r-1");
        let env = &isolated.services["api"].launch["env"];
        assert_eq!(env["DB"], "127.0.0.1:41001");
        assert_eq!(env["DB_PORT"], "41001");
        let w = isolation_warnings(&isolated, &a);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("services.api.launch.env.REMOTE = \"db.internal:7001\" still mentions port 7001"),
            "{w:?}"
        );
    }

    #[test]
    fn only_exact_occurrences_of_an_address_are_rewritten() {
        let m = [map("127.0.0.1:7001", "127.0.0.1:41001")];
        assert_eq!(rewrite("127.0.0.1:7001", &m), "127.0.0.1:41001");
        assert_eq!(rewrite("--dep=127.0.0.1:7001", &m), "--dep=127.0.0.1:41001");
        assert_eq!(
            rewrite("http://127.0.0.1:7001/x?y=127.0.0.1:7001", &m),
            "http://127.0.0.1:41001/x?y=127.0.0.1:41001"
        );
        assert_eq!(rewrite("127.0.0.1:70012", &m), "127.0.0.1:70012", "a longer port is another address");
        assert_eq!(rewrite("10.127.0.0.1:7001", &m), "10.127.0.0.1:7001", "a longer host is another address");
        // Every form that reaches the same loopback listener.
        for (form, drilled) in [
            ("localhost:7001", "127.0.0.1:41001"),
            ("http://localhost:7001/x", "http://127.0.0.1:41001/x"),
            ("127.1.2.3:7001", "127.0.0.1:41001"),
            ("[::1]:7001", "127.0.0.1:41001"),
            ("0.0.0.0:7001", "127.0.0.1:41001"),
            ("7001", "41001"),
            ("--db-port=7001", "--db-port=41001"),
            ("db.internal:7001", "db.internal:7001"),
            ("localhost:70012", "localhost:70012"),
            ("17001", "17001"),
        ] {
            assert_eq!(rewrite(form, &m), drilled, "{form}");
        }
        let two = [map("127.0.0.1:7001", "127.0.0.1:41001"), map("127.0.0.1:7002", "127.0.0.1:41002")];
        assert_eq!(rewrite("127.0.0.1:7001,127.0.0.1:7002", &two), "127.0.0.1:41001,127.0.0.1:41002");
    }

    #[test]
    fn namespaces_name_their_environment_and_run() {
        let ns = namespace("shop", "r-20261128T101010101-abcdef");
        assert_eq!(parse_namespace(&ns), Some(("shop", "r-20261128T101010101-abcdef")));
        assert_eq!(parse_namespace("shop"), None);
        assert!(!crate::domain::manifest::is_valid_name(&ns), "never a production environment's name");
    }
}
