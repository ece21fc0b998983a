//! Recovery end to end: the real binary, a real server, the local provider
//! running real processes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Backend, Instances, Region, Server, Svc, instance_processes, lifeboat, routers, wait_until};

fn run_json(server: &Server, id: &str) -> serde_json::Value {
    server.run(&["--output", "json", "run", "show", id]).ok().json()
}

fn state(run: &serde_json::Value, service: &str) -> String {
    run["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn recover_plan_keep_and_force() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[]), Svc::new("cache", &["db"]), Svc::new("api", &["cache"]), Svc::new("metrics", &[])];
    let region = Region::setup(&server, "e2e", &svcs);

    let plan = server.run(&["plan", "e2e"]).ok().stdout;
    assert!(plan.contains("4 to create, 0 to replace, 0 to keep."), "{plan}");
    assert!(plan.contains("Critical path: db -> cache -> api"), "{plan}");
    assert!(plan.contains("ok    images-in-store"), "{plan}");
    let json = server.run(&["plan", "e2e", "--format", "json"]).ok().json();
    assert_eq!(json["preflight_ok"], true);
    assert_eq!(json["steps"][0]["service"], "db");
    let dot = server.run(&["plan", "e2e", "--format", "dot"]).ok().stdout;
    assert!(dot.contains("\"db\" -> \"cache\""), "{dot}");
    let mermaid = server.run(&["plan", "e2e", "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.contains("cache --> api"), "{mermaid}");

    // --dry-run and a missing --yes change nothing.
    let dry = server.run(&["recover", "e2e", "--dry-run"]).ok().stdout;
    assert!(dry.contains("4 to create"), "{dry}");
    let out = server.run(&["recover", "e2e"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(server.run(&["run", "list"]).ok().stdout.trim(), "no runs");

    let run = server.run(&["--output", "json", "recover", "e2e", "--yes"]).ok().json();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["kind"], "recovery");
    for s in run["services"].as_array().unwrap() {
        assert_eq!(s["state"], "healthy", "{s}");
        assert_eq!(s["attempts"], 1);
        assert!(s["queued_ms"].as_u64().unwrap() <= s["launched_ms"].as_u64().unwrap(), "{s}");
        let launched = s["launched_ms"].as_u64().unwrap();
        for d in s["depends_on"].as_array().unwrap() {
            let dep = run["services"].as_array().unwrap().iter().find(|x| &x["name"] == d).unwrap();
            assert!(dep["cutover_ms"].as_u64().unwrap() <= launched, "{} launched before {d} was cut over", s["name"]);
        }
    }
    for s in ["db", "cache", "api", "metrics"] {
        assert!(region.answers(s), "{s} does not answer");
    }
    let id = run["id"].as_str().unwrap().to_string();
    let list = server.run(&["--output", "json", "run", "list"]).ok().json();
    assert_eq!(list[0]["id"], id.as_str());
    let show = server.run(&["run", "show", &id]).ok().stdout;
    assert!(show.contains("state SUCCEEDED"), "{show}");

    // The object layout (README): a run's record, its journal objects and
    // (once it finished) its compacted journal are compact JSON, other
    // records indented.
    let store = std::path::Path::new(&server.store);
    let text = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let run_dir = store.join("runs").join(&id);
    let journal: Vec<_> = std::fs::read_dir(run_dir.join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!journal.is_empty());
    for p in journal.iter().chain([&run_dir.join("run.json"), &run_dir.join("journal.json")]) {
        let t = text(p);
        assert!(!t.contains('\n') && t.starts_with("{\"format_version\":"), "{}: {t:.200}", p.display());
    }
    let latest = text(&store.join("environments/e2e/refs/latest"));
    assert!(latest.contains("\n  \"format_version\": "), "{latest}");

    // Everything already matches: a second recovery keeps it all.
    let plan = server.run(&["plan", "e2e"]).ok().stdout;
    assert!(plan.contains("0 to create, 0 to replace, 4 to keep."), "{plan}");
    let again = server.run(&["--output", "json", "recover", "e2e", "--yes"]).ok().json();
    assert!(again["services"].as_array().unwrap().iter().all(|s| s["action"] == "keep" && s["state"] == "healthy"));
    let before: Vec<u32> = instance_processes(&server.local_dir()).iter().map(|p| p.0).collect();
    assert_eq!(before.len(), 4);

    // --force replaces every service blue-green; the old instances go.
    let forced = server.run(&["--output", "json", "recover", "e2e", "--yes", "--force"]).ok().json();
    assert!(forced["services"].as_array().unwrap().iter().all(|s| s["action"] == "replace" && s["state"] == "healthy"));
    wait_until(Duration::from_secs(20), "old instances to be decommissioned", || {
        let now = instance_processes(&server.local_dir());
        now.len() == 4 && now.iter().all(|p| !before.contains(&p.0))
    });
    for s in ["db", "cache", "api", "metrics"] {
        assert!(region.answers(s), "{s} does not answer after the forced replacement");
    }

    let out = server.run(&["plan", "nosuch"]);
    assert_eq!(out.code, 3, "{out:?}");
    let out = server.run(&["run", "show", "r-nope"]);
    assert_eq!(out.code, 3, "{out:?}");
}

#[test]
fn a_failing_service_skips_its_dependents_only() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [
        Svc::new("db", &[]),
        Svc::new("api", &["db"]).args(&["--broken"]).extra("attempts = 2").gate("2s"),
        Svc::new("web", &["api"]),
        Svc::new("metrics", &[]),
    ];
    let text = std::fs::read_to_string(Region::setup(&server, "fail", &svcs).manifest).unwrap();
    assert!(text.contains("--broken"));
    // A short health gate keeps the test quick.
    let out = server.run(&["recover", "fail", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("failed: api ("), "{}", out.stderr);
    assert!(out.stdout.contains("root cause: api failed"), "{}", out.stdout);
    let id = server.run(&["--output", "json", "run", "list"]).ok().json()[0]["id"].as_str().unwrap().to_string();
    let run = run_json(&server, &id);
    assert_eq!(run["state"], "failed");
    assert_eq!(state(&run, "api"), "failed");
    assert_eq!(state(&run, "web"), "skipped");
    assert_eq!(state(&run, "db"), "healthy");
    assert_eq!(state(&run, "metrics"), "healthy");
    let api = run["services"].as_array().unwrap().iter().find(|s| s["name"] == "api").unwrap().clone();
    assert_eq!(api["attempts"], 2);
    // The start of the unhealthy answer says why.
    assert!(api["error"].as_str().unwrap().contains("HTTP 503: api is broken"), "{api}");
    assert!(
        api["logs"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("demo service api listening")),
        "{api}"
    );
    let web = run["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap().clone();
    assert_eq!(web["upstream"], "api");
    // Instances that failed their health gate were removed.
    let services: Vec<String> = instance_processes(&server.local_dir()).into_iter().map(|p| p.1).collect();
    assert!(!services.contains(&"api".to_string()), "{services:?}");
    assert_eq!(services.len(), 2, "{services:?}");
}

#[test]
fn two_recoveries_of_one_region_one_gets_exit_4() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("slow", &[]).args(&["--boot-delay", "2s"])];
    Region::setup(&server, "race", &svcs);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let url = server.url.clone();
            std::thread::spawn(move || lifeboat(Some(&url), &["recover", "race", "--yes"]))
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut codes: Vec<i32> = outs.iter().map(|o| o.code).collect();
    codes.sort();
    assert_eq!(codes, [0, 4], "{outs:?}");
    let loser = outs.iter().find(|o| o.code == 4).unwrap();
    assert!(loser.stderr.contains("region local-1 is leased by run r-"), "{}", loser.stderr);
}

#[test]
fn approval_gates_a_service_and_cancel_cleans_up() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[]), Svc::new("api", &["db"]).extra("approval = true")];
    Region::setup(&server, "gate", &svcs);
    let started = server.run(&["--output", "json", "recover", "gate", "--yes", "--detach"]).ok().json();
    let id = started["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "api to wait for approval", || {
        state(&run_json(&server, &id), "api") == "awaiting_approval"
    });
    assert_eq!(state(&run_json(&server, &id), "db"), "healthy");
    let out = server.run(&["run", "approve", &id, "db"]);
    assert_eq!(out.code, 1, "db needs no approval: {out:?}");
    server.run(&["run", "approve", &id, "api"]).ok();
    let watched = server.run(&["run", "watch", &id]).ok();
    assert!(watched.stdout.contains("api: approved by tester"), "{}", watched.stdout);
    assert_eq!(
        run_json(&server, &id)["services"][1]["approved_by"].as_str().map(|a| a.starts_with("tester")),
        Some(true)
    );

    // Cancel: a slow chain is stopped; nothing not cut over is left running.
    let svcs = [Svc::new("a", &[]), Svc::new("b", &["a"]).args(&["--boot-delay", "3s"]), Svc::new("c", &["b"])];
    Region::setup(&server, "stop", &svcs);
    let started = server.run(&["--output", "json", "recover", "stop", "--yes", "--detach"]).ok().json();
    let id = started["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "b to launch", || state(&run_json(&server, &id), "b") != "pending");
    server.run(&["run", "cancel", &id]).ok();
    let out = server.run(&["run", "watch", &id]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("was cancelled"), "{}", out.stderr);
    let run = run_json(&server, &id);
    assert_eq!(run["state"], "cancelled");
    assert_eq!(
        (state(&run, "a"), state(&run, "b"), state(&run, "c")),
        ("healthy".into(), "cancelled".into(), "cancelled".into())
    );
    wait_until(Duration::from_secs(10), "b's instance to stop", || {
        !instance_processes(&server.local_dir()).iter().any(|p| p.1 == "b")
    });
    let out = server.run(&["run", "cancel", &id]);
    assert_eq!(out.code, 1, "{out:?}");
}

/// A store, a provider directory and a config with a 1 s lease, and the
/// server arguments that use them (servers restart and share them).
fn short_lease_dir() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(&config, "[engine]\nlease_ttl = \"1s\"\nmax_clock_skew = \"50ms\"\n").unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args =
        vec!["--store".into(), p("store"), "--local-dir".into(), p("local"), "--config".into(), p("lifeboat.toml")];
    (dir, args)
}

/// SIGKILL the server at several points of a 24-service recovery; after each
/// restart it resumes the run. Every service is launched exactly once and no
/// process is left behind.
#[test]
fn a_killed_server_resumes_without_launching_twice() {
    let (dir, args) = short_lease_dir();
    let local = dir.path().join("local");
    let _cleanup = Instances(local.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::launch(&args, &[]);

    let names: Vec<String> = (0..24).map(|i| format!("s{i:02}")).collect();
    let deps: Vec<Vec<&str>> = (0..24).map(|i| if i < 4 { vec![] } else { vec![names[i - 4].as_str()] }).collect();
    let svcs: Vec<Svc<'_>> = (0..24).map(|i| Svc::new(&names[i], &deps[i]).args(&["--boot-delay", "300ms"])).collect();
    let region = Region::setup_in(&server, dir.path(), "crash", &svcs);
    let run = server.run(&["--output", "json", "recover", "crash", "--yes", "--detach"]).ok().json();
    let id = run["id"].as_str().unwrap().to_string();

    for pause in [400u64, 900, 700] {
        std::thread::sleep(Duration::from_millis(pause));
        server.kill();
        server = Server::launch(&args, &[]);
    }
    let out = server.run(&["run", "watch", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let run = run_json(&server, &id);
    assert_eq!(run["state"], "succeeded");
    assert!(run["owners"].as_array().unwrap().len() >= 2, "the run was taken over: {}", run["owners"]);
    // Times cover the whole run, from its start, across servers; the time
    // no server ran it is shown apart.
    let t = |k: &str| chrono::DateTime::parse_from_rfc3339(run[k].as_str().unwrap()).unwrap();
    let wall = (t("finished_at") - t("started_at")).num_milliseconds();
    let elapsed = run["elapsed_ms"].as_i64().unwrap();
    assert!((wall - elapsed).abs() < 1_500, "took {elapsed} ms of a {wall} ms run");
    assert!(run["stopped_ms"].as_u64().unwrap() > 0, "{run}");
    let report = server.run(&["run", "show", &id]).ok().stdout;
    assert!(report.contains("of it with no server running the run)"), "{report}");

    // Exactly one instance was ever created per service.
    let mut per_service: BTreeMap<String, usize> = BTreeMap::new();
    for e in std::fs::read_dir(local.join("instances")).unwrap().flatten() {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path().join("instance.json")).unwrap()).unwrap();
        *per_service.entry(rec["service"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_service.len(), 24);
    assert!(per_service.values().all(|n| *n == 1), "{per_service:?}");
    // No orphans: exactly the 24 instances of the run are running. (When
    // one is missing, its record and last output say why.)
    let procs = instance_processes(&local);
    if procs.len() != 24 {
        let running: std::collections::BTreeSet<&str> = procs.iter().map(|(_, s)| s.as_str()).collect();
        let mut why = String::new();
        for e in std::fs::read_dir(local.join("instances")).unwrap().flatten() {
            let rec = std::fs::read_to_string(e.path().join("instance.json")).unwrap_or_default();
            let parsed: serde_json::Value = serde_json::from_str(&rec).unwrap_or_default();
            if !running.contains(parsed["service"].as_str().unwrap_or_default()) {
                let log = std::fs::read_to_string(e.path().join("output.log")).unwrap_or_default();
                why.push_str(&format!("\n{}: {rec}\n{log}", e.path().display()));
            }
        }
        panic!("{} of 24 instances run: {procs:?}{why}", procs.len());
    }
    let running: Vec<String> = run["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().clone())
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(running.len(), 24);

    // The instances outlive the server; its stable addresses come back on restart.
    server.kill();
    assert!(instance_processes(&local).len() == 24);
    assert!(region.answers("s23"), "the router serves the addresses while no server runs");
    let server = Server::launch(&args, &[]);
    for s in &names {
        assert!(region.answers(s), "{s} does not answer after a restart");
    }
    drop(server);
}

/// A resumed run plans again against what runs then: a kept service that
/// died while no server ran the run is relaunched, and the run ends with
/// every service answering.
#[test]
fn a_resumed_run_relaunches_a_kept_service_that_died_meanwhile() {
    let (dir, args) = short_lease_dir();
    let local = dir.path().join("local");
    let _cleanup = Instances(local.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::launch(&args, &[]);
    let region = Region::setup_in(&server, dir.path(), "resume", &[Svc::new("db", &[]), Svc::new("web", &[])]);
    server.run(&["recover", "resume", "--yes"]).ok();
    let v2 = region.slow_variant("web", "1500ms");
    server.run(&["snapshot", "push", v2.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "resume", "2", "--reason", "t"]).ok();
    let id = server.run(&["recover", "resume", "--yes", "--detach"]).ok().stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    // db, kept by the run, dies while no server runs it.
    for (pid, s) in instance_processes(&local) {
        if s == "db" {
            std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        }
    }
    server = Server::launch(&args, &[]);
    let out = server.run(&["run", "watch", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("planned again on resume against what runs now: db: keep -> create"), "{}", out.stdout);
    let run = run_json(&server, &id);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["final_probe"]["healthy"], 2, "{run}");
    assert!(region.answers("db") && region.answers("web"));
}

#[test]
fn demo_exits_0() {
    let out = lifeboat(None, &["demo"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("every service answers again"), "{}", out.stdout);
    assert!(out.stdout.contains("Region recovered in"), "{}", out.stdout);
}

#[test]
fn tarball_images_run_their_entrypoint() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let work = server.dir.as_ref().unwrap().path().join("tarball");
    std::fs::create_dir_all(work.join("app/bin")).unwrap();
    common::demo_artifact(&work.join("app/bin"), "server");
    let tgz = work.join("app.tar.gz");
    let ok = std::process::Command::new("tar")
        .args(["czf", tgz.to_str().unwrap(), "-C", work.join("app").to_str().unwrap(), "."])
        .status()
        .unwrap();
    assert!(ok.success());
    let image = server.run(&["--output", "json", "image", "import", tgz.to_str().unwrap()]).ok().json();
    assert_eq!(image["kind"], "tar_gz");
    let id = image["id"].as_str().unwrap().to_string();
    let list = server.run(&["image", "list"]).ok().stdout;
    assert!(list.contains(&id) && list.contains("app.tar.gz"), "{list}");
    let out = server.run(&["image", "import", server.dir.as_ref().unwrap().path().to_str().unwrap()]);
    assert_eq!(out.code, 2, "a directory is not an artifact: {out:?}");

    let port = lifeboat::provider::local::pick_listen_ports(1).unwrap()[0];
    let manifest = work.join("tar.toml");
    let text = format!(
        "environment = \"tarball\"\nregion = \"local-1\"\n[services.web]\nimage = \"{id}\"\n\
         health = {{ http = \"/healthz\", interval = \"100ms\" }}\n\
         launch = {{ entrypoint = \"server.sh\", listen = \"127.0.0.1:{port}\", args = [\"--name\", \"web\"] }}\n"
    );
    std::fs::write(&manifest, text.replace("\"server.sh\"", "\"missing.sh\"")).unwrap();
    server.run(&["snapshot", "push", manifest.to_str().unwrap()]).ok();
    let out = server.run(&["recover", "tarball", "--snapshot", "latest", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("entrypoint") && out.stdout.contains("is not a file in the image"), "{}", out.stdout);

    std::fs::write(&manifest, text.replace("\"server.sh\"", "\"bin/server.sh\"")).unwrap();
    server.run(&["snapshot", "push", manifest.to_str().unwrap()]).ok();
    server.run(&["recover", "tarball", "--snapshot", "latest", "--yes"]).ok();
    assert!(common::http_ok(&format!("127.0.0.1:{port}"), "/healthz"));
}

#[test]
fn recovery_state_in_s3() {
    let server = Server::start(Backend::S3);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "s3env", &[Svc::new("db", &[]), Svc::new("api", &["db"])]);
    let run = server.run(&["--output", "json", "recover", "s3env", "--yes"]).ok().json();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(region.answers("api"));
    let id = run["id"].as_str().unwrap();
    let again = run_json(&server, id);
    assert_eq!(again["services"][1]["state"], "healthy");
    let out = server.run(&["run", "watch", id]).ok();
    assert!(out.stdout.contains("api: traffic cut over"), "{}", out.stdout);
}

/// Two servers share a store (and, here, a host). The one running a recovery
/// dies; the other takes the run over by itself once the lease lapses, and
/// serves the stable addresses the dead one served.
#[test]
fn a_live_replica_takes_over_a_dead_servers_run() {
    let (dir, args) = short_lease_dir();
    let local = dir.path().join("local");
    let _cleanup = Instances(local.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Server::launch(&args, &[]);
    let b = Server::launch(&args, &[]);
    let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let deps: Vec<Vec<&str>> = (0..8).map(|i| if i == 0 { vec![] } else { vec![names[i - 1].as_str()] }).collect();
    let svcs: Vec<Svc<'_>> = (0..8).map(|i| Svc::new(&names[i], &deps[i]).args(&["--boot-delay", "200ms"])).collect();
    let region = Region::setup_in(&a, dir.path(), "ha", &svcs);
    let run = a.run(&["--output", "json", "recover", "ha", "--yes", "--detach"]).ok().json();
    let id = run["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(20), "c2 to be cut over", || state(&run_json(&b, &id), "c2") == "healthy");
    a.kill();
    let out = b.run(&["run", "watch", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let run = run_json(&b, &id);
    assert_eq!(run["owners"].as_array().unwrap().len(), 2, "{}", run["owners"]);
    wait_until(Duration::from_secs(10), "every stable address to be served again", || {
        names.iter().all(|n| region.answers(n))
    });
}

/// The stable addresses are served by a router process, not by the server:
/// probed every 100 ms, they answer throughout a SIGKILL of the server, its
/// restart, and an upgrade that replaces the router, and nothing is
/// relaunched.
#[test]
fn traffic_survives_a_server_crash_restart_and_upgrade() {
    let (dir, args) = short_lease_dir();
    let local = dir.path().join("local");
    let _cleanup = Instances(local.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::launch(&args, &[]);
    let svcs = [Svc::new("db", &[]), Svc::new("api", &["db"]), Svc::new("web", &["api"])];
    let region = Region::setup_in(&server, dir.path(), "steady", &svcs);
    server.run(&["recover", "steady", "--yes"]).ok();
    let instances_before = std::fs::read_dir(local.join("instances")).unwrap().count();
    let first_router = routers(&local);
    assert_eq!(first_router.len(), 1, "one router per directory: {first_router:?}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ports = region.ports.clone();
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut probes, mut failures) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (svc, port) in &ports {
                    probes += 1;
                    if !common::http_ok(&format!("127.0.0.1:{port}"), "/healthz") {
                        failures.push(format!("{svc} at {:?}", std::time::SystemTime::now()));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (probes, failures)
        })
    };
    // When each phase began, to place a failed probe.
    let mut phases = Vec::new();
    let mut phase = |name: &str| phases.push(format!("{name} at {:?}", std::time::SystemTime::now()));
    std::thread::sleep(Duration::from_millis(500));
    phase("kill");
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    phase("restart");
    server = Server::launch(&args, &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(routers(&local), first_router, "a restarted server re-adopts the running router");
    // An upgraded binary: the new server replaces the router, keeping its listeners.
    phase("stop");
    drop(server);
    let upgraded = dir.path().join("lifeboat-upgraded");
    std::fs::copy(common::BIN, &upgraded).unwrap();
    phase("upgrade");
    let server = Server::launch_with(&upgraded, &args, &[]);
    wait_until(Duration::from_secs(15), "the upgraded router", || {
        routers(&local).iter().all(|(_, exe)| exe == &upgraded) && routers(&local).len() == 1
    });
    phase("upgraded");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (probes, failures) = prober.join().unwrap();
    assert!(probes > 60, "probed {probes} times");
    assert!(failures.is_empty(), "{} of {probes} probes failed: {failures:?}; {phases:?}", failures.len());
    assert_eq!(std::fs::read_dir(local.join("instances")).unwrap().count(), instances_before, "nothing relaunched");
    let plan = server.run(&["--output", "json", "plan", "steady"]).ok().json();
    assert!(plan["steps"].as_array().unwrap().iter().all(|s| s["action"] == "keep"), "{plan}");
    // The router exits by itself once its directory is gone.
    drop(server);
    for (pid, _) in instance_processes(&local) {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let routers_before = routers(&local);
    std::fs::remove_dir_all(&local).unwrap();
    wait_until(Duration::from_secs(10), "the router to exit", || {
        routers_before.iter().all(|(pid, _)| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    });
}

/// An echo service (python3): every line sent comes back.
const ECHO: &str = r#"#!/bin/sh
exec python3 -c '
import os, socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen(64)
def serve(c):
    with c:
        while True:
            d = c.recv(4096)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'
"#;

/// One line sent and read back on a held connection.
fn echo(conn: &mut std::net::TcpStream, line: &str) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    conn.write_all(format!("{line}\n").as_bytes())?;
    let mut back = String::new();
    std::io::BufReader::new(conn.try_clone()?).read_line(&mut back)?;
    if back.trim_end() == line { Ok(()) } else { Err(std::io::Error::other(format!("got {back:?} for {line:?}"))) }
}

/// A router upgrade cuts no connection: a 20 s stream and an idle pooled
/// connection, both opened through a stable address before the upgrade,
/// go on after it; new connections reach the new router; the old router
/// exits once they are closed.
#[test]
fn held_connections_survive_a_router_upgrade() {
    let mut server = Server::with_config("");
    let local = server.local_dir();
    let _cleanup = Instances(local.clone());
    let port = lifeboat::provider::local::pick_listen_ports(1).unwrap()[0];
    common::script_region(
        &server,
        "echo",
        ECHO,
        &format!(
            "environment = \"echo\"\nregion = \"local-1\"\n[services.echo]\nimage = \"{{image}}\"\n\
             health = {{ tcp = true, interval = \"100ms\", timeout = \"20s\" }}\n\
             launch = {{ listen = \"127.0.0.1:{port}\" }}\n"
        ),
    );
    server.run(&["recover", "echo", "--yes"]).ok();
    let addr = format!("127.0.0.1:{port}");
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo(&mut idle, "pooled").unwrap();
    let streaming = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut conn = std::net::TcpStream::connect(&addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let started = std::time::Instant::now();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(20) {
                echo(&mut conn, &format!("line {n}")).map_err(|e| format!("after {n} lines: {e}"))?;
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok::<usize, String>(n)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let old_router = routers(&local);
    assert_eq!(old_router.len(), 1, "{old_router:?}");

    // The upgrade: the server stops; another binary starts, and its server replaces the router.
    server.kill();
    let dir = server.dir.as_ref().unwrap().path().to_path_buf();
    let upgraded = dir.join("lifeboat-upgraded");
    std::fs::copy(common::BIN, &upgraded).unwrap();
    let p = |x: &str| dir.join(x).display().to_string();
    let args = [p("lifeboat.toml"), p("store"), p("local")];
    let new =
        Server::launch_with(&upgraded, &["--config", &args[0], "--store", &args[1], "--local-dir", &args[2]], &[]);
    wait_until(Duration::from_secs(15), "the upgraded router", || routers(&local).iter().any(|(_, e)| e == &upgraded));
    // New connections go to the new router at once.
    assert!(echo(&mut std::net::TcpStream::connect(&addr).unwrap(), "fresh").is_ok());
    // The pooled connection, idle through the upgrade, is used again.
    echo(&mut idle, "pooled again").expect("the idle connection survives the upgrade");
    let lines = streaming.join().unwrap().expect("the stream survives the upgrade");
    assert!(lines > 100, "{lines} lines");
    assert!(routers(&local).len() <= 2, "{:?}", routers(&local));
    drop(idle);
    wait_until(Duration::from_secs(10), "the old router to exit once its connections closed", || {
        routers(&local).iter().all(|(_, e)| e == &upgraded)
    });
    drop(new);
    drop(server);
}

/// `https://` health URLs are probed over TLS (the server trusts the
/// system's CAs and `SSL_CERT_FILE`); an untrusted certificate fails the gate.
#[test]
fn https_health_checks_work() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Instances(dir.path().join("local"));
    // A CA, and a certificate for 127.0.0.1 that it signed.
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("sh")
        .current_dir(dir.path())
        .args([
            "-c",
            "set -e; openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem; \
             openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr; \
             printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; \
             openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out cert.pem",
        ])
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let port = lifeboat::testkit::free_port();
    let script = format!(
        "import http.server, ssl\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n\
         \x20   def log_message(self, *a): pass\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), H)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{}', '{}')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        cert.display(),
        key.display()
    );
    let mut tls = std::process::Command::new("python3").args(["-c", &script]).spawn().expect("start a TLS server");
    wait_until(Duration::from_secs(10), "the TLS server", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let p = |x: &str| dir.path().join(x).display().to_string();
    let args = ["--store".to_string(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::launch(&args, &[("SSL_CERT_FILE", ca.display().to_string())]);
    let art = common::demo_artifact(dir.path(), "tls");
    let image = server.run(&["image", "import", art.to_str().unwrap()]).ok().stdout.trim().to_string();
    let manifest = |env: &str, health: &str| {
        let path = dir.path().join(format!("{env}.toml"));
        std::fs::write(
            &path,
            format!(
                "environment = \"{env}\"\nregion = \"local-1\"\n[services.web]\nimage = \"{image}\"\ntimeout = \"20s\"\nattempts = 1\n\
                 health = {{ http = \"{health}\", interval = \"100ms\", timeout = \"3s\" }}\nlaunch = {{ args = [\"--name\", \"web\"] }}\n"
            ),
        )
        .unwrap();
        server.run(&["snapshot", "push", path.to_str().unwrap()]).ok();
        server.run(&["snapshot", "promote", env, "latest", "--reason", "test"]).ok();
    };
    manifest("tls", &format!("https://127.0.0.1:{port}/healthz"));
    let out = server.run(&["recover", "tls", "--yes"]);
    assert_eq!(out.code, 0, "an https health check passes: {out:?}");
    // A name the certificate does not cover: refused.
    manifest("untrusted", &format!("https://localhost:{port}/healthz"));
    let out = server.run(&["recover", "untrusted", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("GET https://localhost") || out.stderr.contains("GET https://localhost"), "{out:?}");
    // Durations read as people write them (it once said "within 3.003694967s").
    assert!(out.stdout.contains("did not become healthy within 3.0s"), "{}", out.stdout);
    let _ = tls.kill();
    let _ = tls.wait();
}

/// A stable address belongs to one environment's service: another
/// environment claiming it is refused in preflight (plan and recover) and
/// the owner keeps its traffic, as is the same environment in another region
/// on this host. (It once took the address over.)
#[test]
fn a_stable_address_cannot_be_hijacked_by_another_environment() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let shop = Region::setup(&server, "shop", &[Svc::new("web", &[])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let port = shop.ports["web"];
    let dir = server.dir.as_ref().unwrap().path();
    let text =
        std::fs::read_to_string(&shop.manifest).unwrap().replace("environment = \"shop\"", "environment = \"zz\"");
    let zz = dir.join("zz.toml");
    std::fs::write(&zz, text).unwrap();
    server.run(&["snapshot", "push", zz.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "zz", "latest", "--reason", "t"]).ok();
    let plan = server.run(&["plan", "zz"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    let expect = format!("127.0.0.1:{port} (web) is the address of shop/web");
    assert!(plan.stdout.contains(&expect), "{plan:?}");
    // A failed preflight exits 1 from recover as from plan (4 is for conflicts).
    let out = server.run(&["recover", "zz", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&expect), "{out:?}");
    assert!(!server.local_dir().join("services/zz").exists(), "zz recorded no cutover");
    // The same environment in another region on this host is refused too.
    let out = server.run(&["recover", "shop", "--region", "eu-central-1", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("127.0.0.1:{port} (web)")) && out.stderr.contains("shop/web"), "{out:?}");
    assert_eq!(instance_processes(&server.local_dir()).len(), 1, "nothing was launched for eu-central-1");
    assert!(shop.answers("web"));
    let plan = server.run(&["--output", "json", "plan", "shop"]).ok().json();
    assert_eq!(plan["steps"][0]["action"], "keep", "{plan}");
}

/// Health commands run only in the health gate, in the instance's directory
/// with a clean environment; plan (read-only) executes nothing.
#[test]
fn health_commands_run_only_in_the_gate_with_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let _cleanup = Instances(local.clone());
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args = ["--store".to_string(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::launch(&args, &[("LIFEBOAT_TEST_SECRET", "hunter2".to_string())]);
    let art = common::demo_artifact(dir.path(), "cmd");
    let image = server.run(&["image", "import", art.to_str().unwrap()]).ok().stdout.trim().to_string();
    let manifest = dir.path().join("cmd.toml");
    std::fs::write(
        &manifest,
        format!(
            "environment = \"cmd\"\nregion = \"local-1\"\n[services.web]\nimage = \"{image}\"\n\
             health = {{ command = [\"/bin/sh\", \"-c\", \"env > probe.txt; pwd >> probe.txt\"], interval = \"100ms\" }}\n\
             launch = {{ args = [\"--name\", \"web\"] }}\n"
        ),
    )
    .unwrap();
    server.run(&["snapshot", "push", manifest.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "cmd", "latest", "--reason", "t"]).ok();
    server.run(&["recover", "cmd", "--yes"]).ok();
    let instance = std::fs::read_dir(local.join("instances")).unwrap().next().unwrap().unwrap().path();
    let probe = instance.join("probe.txt");
    let text = std::fs::read_to_string(&probe).expect("the gate ran the command in the instance's directory");
    assert!(!text.contains("hunter2"), "the server's environment leaked: {text}");
    assert!(text.contains("LIFEBOAT_INSTANCE="), "{text}");
    let canonical = std::fs::canonicalize(&instance).unwrap();
    assert_eq!(text.lines().last().unwrap(), canonical.display().to_string());
    std::fs::remove_file(&probe).unwrap();
    for _ in 0..3 {
        let plan = server.run(&["--output", "json", "plan", "cmd"]).ok().json();
        assert_eq!(plan["steps"][0]["action"], "keep", "{plan}");
    }
    assert!(!probe.exists(), "plan executed the health command");
}

/// A missing journal object with more than one after it (more than the one
/// write that can be in flight) is an integrity error naming the run and the
/// object; nothing is ever written into the gap. (A finished run reads from
/// its compacted journal, `journal.json`, while it has one.)
#[test]
fn a_gap_in_a_journal_is_reported_and_never_filled() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    // Two services: their journal has more than one object after the second.
    Region::setup(&server, "gap", &[Svc::new("db", &[]), Svc::new("api", &["db"])]);
    server.run(&["recover", "gap", "--yes"]).ok();
    let runs = server.run(&["--output", "json", "run", "list"]).ok().json();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let journal = std::path::Path::new(&server.store).join("runs").join(&id).join("journal");
    let mut objects: Vec<String> =
        std::fs::read_dir(&journal).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    objects.sort();
    let entries = objects.len();
    assert!(entries >= 4, "{objects:?}");
    // The second object: the first holds the run's start and its first launches.
    let second = objects[1].clone();
    std::fs::remove_file(journal.join(&second)).unwrap();
    let slot: u64 = second.trim_end_matches(".json").parse().unwrap();
    let show = server.run(&["run", "show", &id]).ok().stdout;
    assert!(show.contains("state SUCCEEDED"), "read from the compacted journal: {show}");
    let watched = server.run(&["run", "watch", &id]).ok().stdout;
    assert!(watched.contains("run succeeded"), "watched from the compacted journal: {watched}");
    let compacted = journal.with_file_name("journal.json");
    std::fs::remove_file(&compacted).unwrap();
    let out = server.run(&["run", "show", &id]);
    assert_eq!(out.code, 1, "{out:?}");
    let missing = format!("object {slot} is missing");
    assert!(out.stderr.contains(&id) && out.stderr.contains(&missing), "{}", out.stderr);
    let out = server.run(&["run", "watch", &id]);
    assert_eq!(out.code, 1, "{out:?}");
    let out = server.run(&["run", "cancel", &id]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(!journal.join(&second).exists(), "nothing was written into the gap");
    assert!(!compacted.exists(), "a journal with a gap is not compacted");
    assert_eq!(std::fs::read_dir(&journal).unwrap().count(), entries - 1);
}

/// Tarball artifacts are checked at import: no link out of the artifact
/// (once, `bindir -> /bin` ran the host's shell), and a bounded unpacked
/// size (a small .tar.gz of zeros once unpacked to 2 GiB).
#[test]
fn unsafe_tarballs_are_refused_at_import() {
    let dir = tempfile::tempdir().unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    std::fs::write(dir.path().join("small.toml"), "[provider.local]\nmax_unpacked_bytes = 1048576\n").unwrap();
    let server =
        Server::launch(&["--store", &p("store"), "--local-dir", &p("local"), "--config", &p("small.toml")], &[]);
    let make = |name: &str, script: &str| {
        let work = dir.path().join(name);
        std::fs::create_dir_all(&work).unwrap();
        let ok = std::process::Command::new("sh").current_dir(&work).args(["-c", script]).status().unwrap();
        assert!(ok.success(), "{script}");
        work.join("a.tar.gz")
    };
    let escape = make("escape", "ln -s /bin bindir && tar czf a.tar.gz bindir");
    let out = server.run(&["image", "import", escape.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("link bindir points outside the artifact (/bin)"), "{}", out.stderr);
    let bomb = make("bomb", "head -c 3145728 /dev/zero > zeros && tar czf a.tar.gz zeros");
    assert!(std::fs::metadata(&bomb).unwrap().len() < 64 * 1024, "a small archive");
    let out = server.run(&["image", "import", bomb.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("entry zeros unpacks to 3 MiB, more than the 1 MiB limit"), "{}", out.stderr);
    let fine = make(
        "fine",
        "printf '#!/bin/sh\\nexit 0\\n' > run.sh && chmod +x run.sh && ln -s run.sh current && tar czf a.tar.gz run.sh current",
    );
    server.run(&["image", "import", fine.to_str().unwrap()]).ok();
}

/// Ctrl-C while `recover` follows a run detaches from it, says how to
/// follow or stop it, and the run goes on.
#[test]
fn ctrl_c_detaches_and_the_run_goes_on() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("slow", &[]).args(&["--boot-delay", "2s"])];
    Region::setup(&server, "detach", &svcs);
    let child = std::process::Command::new(common::BIN)
        .args(["--server", &server.url, "recover", "detach", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("detached: the run goes on; follow it with `lifeboat run watch r-"), "{stderr}");
    let runs = server.run(&["--output", "json", "run", "list"]).ok().json();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert!(stderr.contains(&format!("lifeboat run cancel {id}")), "{stderr}");
    server.run(&["run", "watch", &id]).ok();
}

/// A script whose interpreter is missing says so, naming the interpreter,
/// and fails at once: a permanent error is not retried.
#[test]
fn a_missing_interpreter_is_named() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let dir = server.dir.as_ref().unwrap().path();
    let script = dir.join("needs-python9.sh");
    std::fs::write(&script, "#!/usr/bin/python9 -u\nprint('hi')\n").unwrap();
    let image = server.run(&["image", "import", script.to_str().unwrap()]).ok().stdout.trim().to_string();
    let manifest = dir.join("interp.toml");
    std::fs::write(
        &manifest,
        format!("environment = \"interp\"\nregion = \"local-1\"\n[services.app]\nimage = \"{image}\"\nattempts = 3\n"),
    )
    .unwrap();
    server.run(&["snapshot", "push", manifest.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "interp", "latest", "--reason", "t"]).ok();
    let out = server.run(&["recover", "interp", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("its interpreter /usr/bin/python9 (from its #! line) is not installed on this host"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("(a permanent error: not retried)"), "{}", out.stdout);
    let run = server.run(&["--output", "json", "run", "show", "--latest", "interp"]).ok().json();
    assert_eq!(run["services"][0]["attempts"], 1, "{run}");
}

/// `run list` shows healthy/total and, for a run still going, the time so
/// far (it showed 2/2 for a cancelled run and 0.0s for a running one).
#[test]
fn run_list_counts_healthy_services_and_time_so_far() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[]), Svc::new("api", &["db"]).extra("approval = true")];
    Region::setup(&server, "listed", &svcs);
    let started = server.run(&["--output", "json", "recover", "listed", "--yes", "--detach"]).ok().json();
    let id = started["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "api to wait for approval", || {
        state(&run_json(&server, &id), "api") == "awaiting_approval"
    });
    std::thread::sleep(Duration::from_millis(1200));
    let row = |server: &Server| {
        let out = server.run(&["run", "list"]).ok();
        out.stdout.lines().find(|l| l.starts_with(&id)).unwrap().to_string()
    };
    let running = row(&server);
    assert!(running.contains(" so far") && running.ends_with("1/2"), "{running}");
    assert!(!running.contains(" 0.0s so far"), "{running}");
    server.run(&["run", "cancel", &id]).ok();
    let _ = server.run(&["run", "watch", &id]);
    let cancelled = row(&server);
    assert!(
        cancelled.contains("cancelled") && cancelled.ends_with("1/2") && !cancelled.contains("so far"),
        "{cancelled}"
    );
}
