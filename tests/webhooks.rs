//! Pager webhooks against the real server binary: signed PagerDuty and
//! Alertmanager deliveries routed to `auto` and `propose` rules, delivered
//! concurrently, refused when wrong, and no secret written anywhere.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::webhook::{incident, incident_at, pagerduty, post};
use common::{Instances, Region, Server, Svc, instance_processes, wait_until};

const PD_SECRET: &str = "pd-current-5ecret-a1b2c3";
const PD_OLD_SECRET: &str = "pd-previous-5ecret-d4e5f6";
const PD_RETIRED: &str = "pd-retired-5ecret-999999";
const AM_SECRET: &str = "am-bearer-5ecret-778899";
const TOKEN: &str = "lbt-admin-token-0f0f0f0f0f0f0f0f";
const NOTIFY_BEARER: &str = "notify-bearer-5ecret-4242";

fn alert_group(status: &str, env: &str) -> Vec<u8> {
    serde_json::json!({"version": "4", "groupKey": format!("{{}}:{{alertname=\"RegionDown\", env=\"{env}\"}}"),
        "truncatedAlerts": 0, "status": status, "receiver": "lifeboat",
        "groupLabels": {"alertname": "RegionDown", "env": env},
        "commonLabels": {"alertname": "RegionDown", "env": env, "severity": "page"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
        "alerts": [{"status": status, "labels": {"alertname": "RegionDown", "env": env},
                    "annotations": {}, "startsAt": "2026-11-28T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "c0ffee"}]})
    .to_string()
    .into_bytes()
}

fn alertmanager(server: &Server, secret: &str, body: &[u8]) -> (u16, String) {
    post(server, "/v1/webhooks/alertmanager", &[("Authorization", format!("Bearer {secret}"))], body)
}

fn config(dir: &Path, notify: &str) -> String {
    let digest = lifeboat::api::auth::sha256_hex(TOKEN);
    let text = format!(
        r#"
[[auth.tokens]]
name = "oncall-lead"
role = "admin"
sha256 = "{digest}"

[[notify]]
url = "{notify}"
bearer = "{NOTIFY_BEARER}"

[webhooks.pagerduty]
secrets = ["{PD_SECRET}", "{PD_OLD_SECRET}"]

[webhooks.alertmanager]
secrets = ["{AM_SECRET}"]

[[webhooks.rules]]
name = "shop-auto"
source = "pagerduty"
match = ['service_id="PAUTO01"']
environment = "auto"
policy = "auto"

[[webhooks.rules]]
name = "shop-propose"
source = "pagerduty"
match = ['service_id="PPROP01"']
environment = "prop"

[[webhooks.rules]]
name = "shop-quiet"
match = ['service_id="PQUIET1"']
environment = "auto"
policy = "ignore"

[[webhooks.rules]]
name = "ghost-town"
source = "pagerduty"
match = ['service_id="PGHOST1"']
environment = "ghost"
policy = "auto"

[[webhooks.rules]]
name = "region-down"
source = "alertmanager"
match = ['alertname="RegionDown"', 'env=~"am.*"']
environment = "amenv"
policy = "auto"
"#
    );
    let path = dir.join("lifeboat.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

struct Rig {
    server: Server,
    log: std::path::PathBuf,
    notified: common::Got,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (url, notified) = common::receiver(0);
    let cfg = config(dir.path(), &url);
    let p = |x: &str| dir.path().join(x).display().to_string();
    let log = dir.path().join("server.log");
    let mut server = Server::launch_logging(
        Path::new(common::BIN),
        &["--config", &cfg, "--store", &p("store"), "--local-dir", &p("local")],
        &[("LIFEBOAT_LOG", "debug,aws=warn,hyper=warn,h2=warn,tower=warn,reqwest=warn".to_string())],
        std::fs::File::create(&log).unwrap(),
    );
    server.dir = Some(dir);
    server.token = Some(TOKEN.into());
    Rig { server, log, notified }
}

fn runs_of(server: &Server, env: &str) -> Vec<serde_json::Value> {
    let all = server.run(&["--output", "json", "run", "list"]).ok().json();
    all.as_array().unwrap().iter().filter(|r| r["environment"] == env).cloned().collect()
}

fn run_id(reply: &str) -> String {
    reply
        .split_whitespace()
        .find(|w| w.starts_with("r-"))
        .unwrap_or_else(|| panic!("no run ID in {reply:?}"))
        .to_string()
}

/// Five concurrent deliveries of one alert: one run.
fn deliver_five(f: impl Fn() -> (u16, String) + Sync) -> Vec<(u16, String)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..5).map(|_| s.spawn(&f)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn pager_webhooks_start_propose_and_refuse_without_leaking_secrets() {
    let Rig { server, log, notified } = rig();
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[]), Svc::new("api", &["db"])];
    let auto = Region::setup(&server, "auto", &svcs);
    let prop = Region::setup(&server, "prop", &svcs);
    let am = Region::setup(&server, "amenv", &svcs);

    // Refusals first: none of them changes anything.
    let body = incident("incident.triggered", "QAUTO1", "PAUTO01");
    let path = "/v1/webhooks/pagerduty";
    let (status, reply) = post(&server, path, &[("X-PagerDuty-Signature", "v1=00ff".into())], &body);
    assert_eq!(status, 401, "wrong signature: {reply}");
    assert!(reply.contains("matches none of the configured secrets"), "{reply}");
    let (status, reply) = post(&server, path, &[], &body);
    assert_eq!((status, reply.trim()), (401, "no X-PagerDuty-Signature header"));
    assert_eq!(pagerduty(&server, PD_RETIRED, &body).0, 401, "a rotated-out secret");
    let old = chrono::Utc::now() - chrono::Duration::hours(3);
    let stale = incident_at("incident.triggered", "QAUTO1", "PAUTO01", &old.to_rfc3339());
    let (status, reply) = pagerduty(&server, PD_SECRET, &stale);
    assert_eq!(status, 401, "{reply}");
    assert!(reply.contains("stale delivery"), "{reply}");
    let (status, reply) = pagerduty(&server, PD_SECRET, b"{\"event\": {\"event_type\": ");
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("not a PagerDuty v3 webhook payload"), "{reply}");
    let big = vec![b' '; 2 << 20];
    assert_eq!(pagerduty(&server, PD_SECRET, &big).0, 413);
    let (status, reply) = alertmanager(&server, "not-the-secret", &alert_group("firing", "amenv"));
    assert_eq!(status, 401, "{reply}");
    let store = Path::new(&server.store);
    let no_claims_or_runs = || !store.join("webhooks").exists() && !store.join("runs").exists();
    assert!(no_claims_or_runs(), "refused deliveries wrote nothing");
    let audited = server.run(&["--output", "json", "audit", "list", "--actor", "webhook:pagerduty"]).ok().json();
    assert_eq!(audited.as_array().unwrap().len(), 0, "unauthenticated deliveries are not audited: {audited}");

    // Authenticated but routed nowhere, or to `ignore`, or not a trigger: 202, nothing started.
    let (status, reply) = pagerduty(&server, PD_SECRET, &incident("incident.triggered", "QX", "PNOBODY"));
    assert_eq!(status, 202);
    assert!(reply.starts_with("ignored: no rule"), "{reply}");
    let (status, reply) = pagerduty(&server, PD_OLD_SECRET, &incident("incident.triggered", "QQ", "PQUIET1"));
    assert_eq!(status, 202);
    assert!(reply.contains("rule shop-quiet has policy ignore"), "{reply}");
    for quiet in ["incident.acknowledged", "incident.resolved"] {
        let (status, reply) = pagerduty(&server, PD_SECRET, &incident(quiet, "QAUTO0", "PAUTO01"));
        assert_eq!(status, 202);
        assert!(reply.contains(&format!("ignored: {quiet} for incident QAUTO0 starts nothing")), "{reply}");
    }
    assert!(no_claims_or_runs(), "ignored alerts start nothing");
    let audited = server.run(&["--output", "json", "audit", "list", "--actor", "webhook:pagerduty"]).ok().json();
    let outcomes: Vec<&str> = audited.as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), 4, "every authenticated decision is audited: {outcomes:?}");
    assert!(outcomes.iter().any(|o| o.contains("rule shop-quiet")), "{outcomes:?}");

    // A recovery that cannot start (the environment has no snapshot): 422, and the
    // claim is given up so that a retried delivery may try again.
    let ghost = incident("incident.triggered", "QGHOST", "PGHOST1");
    for _ in 0..2 {
        let (status, reply) = pagerduty(&server, PD_SECRET, &ghost);
        assert_eq!(status, 422, "{reply}");
        assert!(reply.starts_with("not started: incident QGHOST (rule ghost-town) could not recover ghost"), "{reply}");
    }
    assert!(walk(&store.join("webhooks")).is_empty(), "no claim is left");
    assert!(!store.join("runs").exists());

    // `auto`: five concurrent deliveries of one incident start exactly one recovery.
    let replies = deliver_five(|| pagerduty(&server, PD_SECRET, &body));
    assert!(replies.iter().all(|(s, _)| *s == 202), "{replies:?}");
    let started: Vec<&String> = replies.iter().map(|(_, r)| r).filter(|r| r.starts_with("started run")).collect();
    assert_eq!(started.len(), 1, "{replies:?}");
    assert!(replies.iter().filter(|(_, r)| r.starts_with("duplicate:")).count() == 4, "{replies:?}");
    let id = run_id(started[0]);
    assert!(started[0].contains("rule shop-auto") && started[0].contains("incident QAUTO1"), "{}", started[0]);
    server.run(&["run", "watch", &id]).ok();
    assert_eq!(runs_of(&server, "auto").len(), 1);
    assert!(auto.answers("api"));
    // A redelivery after the run finished is still the same incident.
    let (_, reply) = pagerduty(&server, PD_OLD_SECRET, &body);
    assert!(reply.starts_with(&format!("duplicate: run {id} (succeeded)")), "{reply}");
    assert_eq!(runs_of(&server, "auto").len(), 1);

    // `propose`: the run waits, nothing launches until it is approved.
    let (status, reply) = pagerduty(&server, PD_SECRET, &incident("incident.triggered", "QPROP1", "PPROP01"));
    assert_eq!(status, 202, "{reply}");
    assert!(reply.starts_with("proposed run"), "{reply}");
    let id = run_id(&reply);
    assert!(reply.contains(&format!("lifeboat run approve {id}")), "{reply}");
    let shown = server.run(&["--output", "json", "run", "show", &id]).ok().json();
    assert_eq!(shown["awaiting_approval"], true, "{shown}");
    // A proposal holds no lease: another incident for the same region is
    // proposed too, and waits beside it.
    let other = incident("incident.triggered", "QPROP2", "PPROP01");
    let (status, reply) = pagerduty(&server, PD_SECRET, &other);
    assert_eq!(status, 202, "{reply}");
    let second = run_id(&reply);
    assert_ne!(second, id);
    let claims = walk(&store.join("webhooks"));
    assert_eq!(claims.len(), 3, "each incident keeps its claim: {claims:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let launched = || instance_processes(&server.local_dir()).len();
    assert!(!prop.answers("db") && !prop.answers("api"), "nothing of the proposed runs is serving");
    assert_eq!(launched(), 2, "only the first region's instances run");
    server.run(&["run", "approve", &id]).ok();
    server.run(&["run", "watch", &id]).ok();
    assert!(prop.answers("api"));
    assert_eq!(launched(), 4);
    let shown = server.run(&["--output", "json", "run", "show", &id]).ok().json();
    assert_eq!(shown["state"], "succeeded", "{shown}");
    // Cancelling the second proposal gives its incident's claim up: the
    // incident firing again proposes anew instead of answering `duplicate`.
    let (_, reply) = pagerduty(&server, PD_SECRET, &other);
    assert!(reply.starts_with(&format!("duplicate: run {second} (running)")), "{reply}");
    server.run(&["run", "cancel", &second]).ok();
    // (A new delivery: the first one's event was processed, a replay of it changes nothing.)
    let (_, reply) = pagerduty(&server, PD_SECRET, &other);
    assert!(reply.starts_with("duplicate: event ev-") && reply.contains("already processed"), "{reply}");
    let other = incident("incident.triggered", "QPROP2", "PPROP01");
    let (status, reply) = pagerduty(&server, PD_SECRET, &other);
    assert_eq!(status, 202, "{reply}");
    assert!(reply.starts_with("proposed run"), "{reply}");
    let third = run_id(&reply);
    assert_ne!(third, second);
    // Approved now, it plans again against the recovered region: nothing to launch.
    server.run(&["run", "approve", &third]).ok();
    server.run(&["run", "watch", &third]).ok();
    let shown = server.run(&["--output", "json", "run", "show", &third]).ok().json();
    assert_eq!(shown["state"], "succeeded", "{shown}");
    assert!(shown["services"].as_array().unwrap().iter().all(|s| s["action"] == "keep"), "{shown}");
    assert_eq!(launched(), 4);

    // Alertmanager: a firing group the same way; resolved starts nothing.
    let firing = alert_group("firing", "amenv");
    let replies = deliver_five(|| alertmanager(&server, AM_SECRET, &firing));
    let started: Vec<&String> = replies.iter().map(|(_, r)| r).filter(|r| r.starts_with("started run")).collect();
    assert_eq!(started.len(), 1, "{replies:?}");
    let id = run_id(started[0]);
    server.run(&["run", "watch", &id]).ok();
    assert!(am.answers("api"));
    let (status, reply) = alertmanager(&server, AM_SECRET, &alert_group("resolved", "amenv"));
    assert_eq!(status, 202);
    assert!(reply.starts_with("ignored: resolved for alert group"), "{reply}");
    assert_eq!(runs_of(&server, "amenv").len(), 1, "resolved started nothing");
    // Resolved ends the alert: the same group firing again is a new alert, and a new run.
    let (status, reply) = alertmanager(&server, AM_SECRET, &firing);
    assert_eq!(status, 202, "{reply}");
    assert!(reply.starts_with("started run"), "a firing after resolved starts again: {reply}");
    let again = run_id(&reply);
    assert_ne!(again, id);
    server.run(&["run", "watch", &again]).ok();
    assert_eq!(runs_of(&server, "amenv").len(), 2);
    let (_, reply) = alertmanager(&server, AM_SECRET, &firing);
    assert!(reply.starts_with(&format!("duplicate: run {again}")), "until resolved again: {reply}");

    // Decisions are counted by source and outcome.
    let metrics = get(&server, "/metrics");
    for (source, outcome, n) in [
        ("pagerduty", "started", 1),
        ("pagerduty", "duplicate", 7),
        ("pagerduty", "unauthorized", 4),
        ("alertmanager", "started", 2),
    ] {
        let line = format!("lifeboat_webhook_decisions_total{{source=\"{source}\",outcome=\"{outcome}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // No token or secret is written anywhere: store (journals, audit, claims),
    // the server's log, the instances' directory, the notifications.
    wait_until(Duration::from_secs(20), "the notifications", || {
        notified.lock().unwrap().iter().filter(|(_, m)| m["event"] == "succeeded").count() >= 3
    });
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("webhook"), "the log has the decisions");
    let mut texts: Vec<(String, String)> = vec![("server log".into(), log_text)];
    for root in [store.to_path_buf(), server.local_dir()] {
        for f in walk(&root) {
            texts.push((f.display().to_string(), String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned()));
        }
    }
    for (i, (auth, m)) in notified.lock().unwrap().iter().enumerate() {
        // The bearer header is the receiver's own secret; the body must not repeat any.
        assert_eq!(auth, &format!("Bearer {NOTIFY_BEARER}"));
        texts.push((format!("notification {i}"), m.to_string()));
    }
    assert!(texts.len() > 20, "looked at the store, log and notifications");
    for (what, text) in &texts {
        for secret in [PD_SECRET, PD_OLD_SECRET, PD_RETIRED, AM_SECRET, TOKEN, NOTIFY_BEARER, "not-the-secret"] {
            assert!(!text.contains(secret), "{what} contains the secret {secret}");
        }
    }
}

/// Replays change nothing; one alert key routed to two environments is two
/// alerts; an incident ID is the sender's text, clipped and escaped.
#[test]
fn replays_are_refused_and_claims_belong_to_an_environment() {
    let Rig { server, log, .. } = rig();
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[])];
    Region::setup(&server, "auto", &svcs);
    Region::setup(&server, "prop", &svcs);

    // Undated or future events are refused: they could be replayed for ever.
    let mut undated: serde_json::Value =
        serde_json::from_slice(&incident("incident.triggered", "Q1", "PAUTO01")).unwrap();
    undated["event"].as_object_mut().unwrap().remove("occurred_at");
    let (status, reply) = pagerduty(&server, PD_SECRET, undated.to_string().as_bytes());
    assert_eq!(status, 401, "{reply}");
    assert!(reply.contains("has no occurred_at"), "{reply}");
    let future = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, reply) = pagerduty(&server, PD_SECRET, &incident_at("incident.triggered", "Q1", "PAUTO01", &future));
    assert_eq!(status, 401, "{reply}");
    assert!(reply.contains("in the future"), "{reply}");

    // A captured triggered + resolved pair, replayed, starts nothing new.
    let triggered = incident("incident.triggered", "QREPLAY", "PAUTO01");
    let resolved = incident("incident.resolved", "QREPLAY", "PAUTO01");
    let (_, reply) = pagerduty(&server, PD_SECRET, &triggered);
    assert!(reply.starts_with("started run"), "{reply}");
    let first = run_id(&reply);
    server.run(&["run", "watch", &first]).ok();
    let (_, reply) = pagerduty(&server, PD_SECRET, &resolved);
    assert!(reply.contains("a new firing will start a recovery again"), "{reply}");
    for _ in 0..2 {
        let (status, reply) = pagerduty(&server, PD_SECRET, &resolved);
        assert_eq!(status, 202);
        assert!(reply.starts_with("duplicate: event") && reply.contains("released the claim"), "{reply}");
        let (status, reply) = pagerduty(&server, PD_SECRET, &triggered);
        assert_eq!(status, 202);
        assert!(reply.starts_with("duplicate: event") && reply.contains(&format!("started run {first}")), "{reply}");
    }
    assert_eq!(runs_of(&server, "auto").len(), 1, "replays started nothing");
    // A real new firing of the incident (a new event) does start again.
    let (_, reply) = pagerduty(&server, PD_SECRET, &incident("incident.triggered", "QREPLAY", "PAUTO01"));
    assert!(reply.starts_with("started run"), "{reply}");
    server.run(&["run", "watch", &run_id(&reply)]).ok();

    // One incident ID routed to two environments: two alerts, two claims.
    let (_, reply) = pagerduty(&server, PD_SECRET, &incident("incident.triggered", "QSAME", "PAUTO01"));
    assert!(reply.starts_with("started run"), "{reply}");
    let in_auto = run_id(&reply);
    server.run(&["run", "watch", &in_auto]).ok();
    let (_, reply) = pagerduty(&server, PD_SECRET, &incident("incident.triggered", "QSAME", "PPROP01"));
    assert!(reply.starts_with("proposed run"), "not a duplicate of {in_auto}: {reply}");
    // Resolved through the other rule releases only that environment's claim.
    let (_, reply) = pagerduty(&server, PD_SECRET, &incident("incident.resolved", "QSAME", "PPROP01"));
    assert!(reply.contains("a new firing will start a recovery again"), "{reply}");
    let (_, reply) = pagerduty(&server, PD_SECRET, &incident("incident.triggered", "QSAME", "PAUTO01"));
    assert!(reply.starts_with(&format!("duplicate: run {in_auto}")), "auto's claim holds: {reply}");

    // A 300 KB incident ID with a newline: clipped and escaped everywhere.
    let huge = format!("Q{}\nFORGED log line{}", "x".repeat(150_000), "y".repeat(150_000));
    let (status, reply) = pagerduty(&server, PD_SECRET, &incident("incident.triggered", &huge, "PPROP01"));
    assert_eq!(status, 202, "{reply}");
    assert!(reply.len() < 1024, "the reply is {} bytes", reply.len());
    let run = run_id(&reply);
    let shown = server.run(&["--output", "json", "run", "show", &run]).ok().json();
    let by = shown["created_by"].as_str().unwrap();
    assert!(by.len() < 400 && by.contains("(300") && !by.contains('\n'), "{by}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!log_text.lines().any(|l| l.starts_with("FORGED")), "no forged log line");
    assert!(log_text.len() < 200_000, "the ID is not logged whole");
    server.run(&["run", "cancel", &run]).ok();
}

#[test]
fn a_source_that_is_not_configured_is_404() {
    let server = Server::start(common::Backend::Fs);
    let body = incident("incident.triggered", "Q1", "P1");
    let (status, reply) = pagerduty(&server, "any", &body);
    assert_eq!(status, 404, "{reply}");
    assert!(reply.contains("pagerduty webhooks are not configured on this server"), "{reply}");
    assert!(!Path::new(&server.store).join("webhooks").exists());
}

#[test]
fn a_bad_webhooks_section_stops_the_server_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        (
            "[[webhooks.rules]]\nname = \"shop\"\nenvironment = \"shop\"\nmatch = ['service_id=P1']\n",
            "webhooks.rules[0] (\"shop\"): matcher \"service_id=P1\": the value must be in double quotes",
        ),
        ("[[webhooks.rules]]\nname = \"shop\"\nenvironment = \"shop\"\npolicy = \"yes\"\n", "unknown variant `yes`"),
        ("[webhooks.pagerduty]\nsecrets = []\n", "webhooks.pagerduty.secrets is empty"),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let p = |x: &str| dir.path().join(x).display().to_string();
        let out = std::process::Command::new(common::BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--config", &p("bad.toml")])
            .args(["--store", &p("store"), "--local-dir", &p("local")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(says), "{text}: {stderr}");
        assert!(!dir.path().join("local").exists() && !dir.path().join("store").exists(), "nothing was created");
    }
}

fn get(server: &Server, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(&server.http).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.http).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}
