//! DR drills with real processes and the real binary: isolation from a
//! running production, verdicts, guaranteed teardown (also across a server
//! crash), reports rendered in headless Chromium, promotion on pass.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{Backend, Instances, Region, Server, Svc, http_ok, wait_until};

/// Instance processes under `dir`: (pid, LIFEBOAT_ENVIRONMENT, argv).
fn processes(dir: &Path) -> Vec<(u32, String, Vec<String>)> {
    common::processes_under(dir).into_iter().map(|p| (p.pid, p.var("LIFEBOAT_ENVIRONMENT"), p.argv)).collect()
}

fn drill_processes(dir: &Path) -> Vec<(u32, String, Vec<String>)> {
    processes(dir).into_iter().filter(|(_, env, _)| env.contains(".drill.")).collect()
}

fn region_svcs() -> Vec<Svc<'static>> {
    vec![
        Svc::new("db", &[]),
        Svc::new("cache", &["db"]),
        Svc::new("queue", &[]),
        Svc::new("api", &["db", "cache"]),
        Svc::new("worker", &["queue", "db"]),
        Svc::new("web", &["api"]),
    ]
}

/// Renders an HTML file to a PNG in headless Chromium; returns its log.
fn render(html: &Path, png: &Path) -> Option<String> {
    let chromium = lifeboat::testkit::chromium()?;
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,1400",
            &format!("--screenshot={}", png.display()),
        ])
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_drill_beside_production_passes_isolated_and_leaves_nothing() {
    // Addresses rewritten (a host without network namespaces); the test
    // below has the drill in a namespace of its own.
    let server = Server::with_config("[provider.local]\ndrill_network = \"rewrite\"\n");
    let local = server.local_dir();
    let _cleanup = Instances(local.clone());
    let region = Region::setup(&server, "shop", &region_svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    let production: BTreeSet<u32> = processes(&local).iter().map(|(p, _, _)| *p).collect();
    assert_eq!(production.len(), 6);
    let prod_addrs: BTreeSet<String> = region.ports.values().map(|p| format!("127.0.0.1:{p}")).collect();

    // Kept up for a moment, so the drill's processes can be inspected.
    let out = server.run(&["--output", "json", "drill", "run", "shop", "--keep-for", "3s"]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = out.json();
    assert_eq!(d["verdict"], "passed", "{d}");
    assert_eq!(d["kind"], "drill");
    // A drill moves no traffic, and its progress does not say it does.
    assert!(!out.stderr.contains("traffic cut over"), "{}", out.stderr);
    assert!(out.stderr.contains("production traffic is never touched"), "{}", out.stderr);
    assert!(d["rto_seconds"].as_f64().unwrap() > 0.0, "{d}");
    assert_eq!(d["rto_objective_seconds"], 60.0);
    let path: Vec<&str> = d["critical_path"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(path.len() >= 3 && path.last() == Some(&"web"), "{path:?}");
    let id = d["id"].as_str().unwrap().to_string();
    let addrs = d["addresses"].as_array().unwrap();
    assert_eq!(addrs.len(), 6, "{d}");
    let drill_addrs: BTreeSet<String> = addrs.iter().map(|a| a["drill"].as_str().unwrap().to_string()).collect();
    assert!(drill_addrs.is_disjoint(&prod_addrs), "{drill_addrs:?} {prod_addrs:?}");
    for a in &drill_addrs {
        assert!(http_ok(a, "/healthz"), "the drill answers on {a}");
    }
    let drills = drill_processes(&local);
    assert_eq!(drills.len(), 6, "{drills:?}");
    // A kept drill's instances' output, by its namespace.
    let logs = server.run(&["logs", &format!("shop.drill.{id}"), "api", "-n", "5"]).ok().stdout;
    assert!(logs.lines().all(|l| l.starts_with("api-")), "{logs}");
    for (_, env, argv) in &drills {
        assert!(env.starts_with("shop.drill.r-"), "{env}");
        for dep in argv.windows(2).filter(|w| w[0] == "--dep").map(|w| w[1].clone()) {
            assert!(drill_addrs.contains(&dep), "a drill service reached {dep}, not a drill address: {argv:?}");
        }
    }
    // Production untouched: the same processes, answering on the same addresses.
    let now: BTreeSet<u32> = processes(&local).iter().filter(|(_, e, _)| e == "shop").map(|(p, _, _)| *p).collect();
    assert_eq!(now, production);
    for s in ["db", "cache", "queue", "api", "worker", "web"] {
        assert!(region.answers(s), "production {s}");
    }
    let status = server.run(&["status", "shop"]).ok().stdout;
    assert!(status.contains("SYNCED"), "{status}");

    // After --keep-for the sweeper tears it down (here at once, by hand).
    std::thread::sleep(Duration::from_secs(3));
    let swept = server.run(&["drill", "sweep"]).ok().stdout;
    assert!(swept.contains(&format!("shop.drill.{id}")) && swept.contains("removed 6 instances"), "{swept}");
    assert!(drill_processes(&local).is_empty());
    for a in &drill_addrs {
        assert!(!http_ok(a, "/healthz"), "{a} is gone");
    }
    let shown = server.run(&["--output", "json", "drill", "show", &id]).ok().json();
    assert_eq!(shown["torn_down"], true, "{shown}");
    assert_eq!(shown["remaining"].as_array().unwrap().len(), 0);

    // A drill without --keep-for tears itself down.
    let d = server.run(&["--output", "json", "drill", "run", "shop"]).ok().json();
    assert_eq!(d["verdict"], "passed");
    assert_eq!(d["torn_down"], true);
    assert_eq!(d["instances_removed"].as_array().unwrap().len(), 6, "{d}");
    assert!(drill_processes(&local).is_empty(), "zero drill processes afterwards");
    assert_eq!(processes(&local).iter().map(|(p, _, _)| *p).collect::<BTreeSet<u32>>(), production);
    let id2 = d["id"].as_str().unwrap();

    // The report: text, JSON and a self-contained HTML page with one bar per service.
    let text = server.run(&["drill", "report", id2]).ok().stdout;
    assert!(text.contains("PASSED") && text.contains("6 instances removed by the run, none left"), "{text}");
    let doc = server.run(&["drill", "report", id2, "--json"]).ok().json();
    assert_eq!(doc["teardown"]["by"], "run");
    // The address map has the shape `drill show --output json` gives it.
    let shown = server.run(&["--output", "json", "drill", "show", id2]).ok().json();
    assert_eq!(doc["drill"]["addresses"], shown["addresses"], "{doc} {shown}");
    assert!(doc["drill"]["addresses"][0]["production"].is_string(), "{doc}");
    let dir = server.dir.as_ref().unwrap().path();
    let html = dir.join("report.html");
    server.run(&["drill", "report", id2, "--html", html.to_str().unwrap()]).ok();
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<g class=\"bar\"").count(), 6, "one bar per service");
    let critical = doc["critical_path"].as_array().unwrap().len();
    assert_eq!(page.matches("data-critical=\"true\"").count(), critical);
    assert!(page.contains("Address map") && !page.contains("<script"), "self-contained, no scripts");
    let png = dir.join("report.png");
    if let Some(log) = render(&html, &png) {
        assert!(std::fs::metadata(&png).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot: {log}");
        assert!(!log.contains("Uncaught") && !log.contains("SyntaxError"), "script errors: {log}");
    } else {
        panic!("headless Chromium is needed for the report test (the test kit installs Debian's chromium)");
    }
    // Recoveries have reports too.
    let rec = server.run(&["run", "list", "--environment", "shop", "-q"]).ok().stdout;
    let first = rec.lines().last().unwrap();
    let text = server.run(&["run", "report", first]).ok().stdout;
    assert!(text.contains("recovery") && text.contains("SUCCEEDED"), "{text}");
    // A stored page that was changed is refused, naming it; never handed out as the run's.
    let stored = Path::new(&server.store).join(format!("runs/{id2}/report.html"));
    std::fs::write(&stored, "<!doctype html><h1>all good, trust me</h1>").unwrap();
    let out = server.run(&["drill", "report", id2, "--html", html.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("runs/{id2}/report.html")) && out.stderr.contains("hashes to"), "{out:?}");
    std::fs::write(Path::new(&server.store).join(format!("runs/{id2}/report.json")), "garbage").unwrap();
    let out = server.run(&["drill", "report", id2]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("run report (object") && out.stderr.contains("is malformed"), "{out:?}");
}

#[test]
fn a_drill_with_a_service_that_never_gets_healthy_fails_naming_it_and_leaves_nothing() {
    let server = Server::start(Backend::Fs);
    let local = server.local_dir();
    let _cleanup = Instances(local.clone());
    let svcs = [
        Svc::new("db", &[]),
        Svc::new("api", &["db"]).args(&["--broken"]).gate("2s").extra("attempts = 1"),
        Svc::new("web", &["api"]),
    ];
    Region::setup(&server, "bad", &svcs);
    let out = server.run(&["--output", "json", "drill", "run", "bad"]);
    assert_eq!(out.code, 1, "{out:?}");
    let d = out.json();
    assert_eq!(d["verdict"], "failed");
    assert!(d["root_cause"].as_str().unwrap().starts_with("api failed"), "{d}");
    assert!(out.stderr.contains("drill") && out.stderr.contains("api failed"), "{}", out.stderr);
    assert_eq!(d["torn_down"], true);
    assert!(drill_processes(&local).is_empty(), "{:?}", drill_processes(&local));
}

#[test]
fn a_drill_whose_verify_check_fails_is_failed() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[]), Svc::new("web", &["db"])];
    let region = Region::setup(&server, "verified", &svcs);
    let text = std::fs::read_to_string(&region.manifest).unwrap()
        + "\n[[verify]]\nname = \"home\"\nservice = \"web\"\nhttp = \"/healthz\"\nstatus = 200\ntimeout = \"5s\"\n\n\
           [[verify]]\nname = \"missing-page\"\nservice = \"web\"\nhttp = \"/healthz\"\nbody_contains = \"checkout is open\"\ntimeout = \"1s\"\n";
    std::fs::write(&region.manifest, text).unwrap();
    server.run(&["snapshot", "push", region.manifest.to_str().unwrap()]).ok();
    let out = server.run(&["--output", "json", "drill", "run", "verified"]);
    assert_eq!(out.code, 1, "{out:?}");
    let d = out.json();
    assert_eq!(d["verdict"], "failed", "{d}");
    assert!(d["root_cause"].as_str().unwrap().contains("verify check missing-page failed"), "{d}");
    assert!(d["services"].as_array().unwrap().iter().all(|s| s["state"] == "healthy"), "{d}");
    let verify: Vec<(&str, bool)> =
        d["verify"].as_array().unwrap().iter().map(|v| (v["check"].as_str().unwrap(), v["passed"] == true)).collect();
    assert!(verify.contains(&("home", true)) && verify.contains(&("missing-page", false)), "{verify:?}");
}

/// A kept drill is torn down by the server's own sweeper once its
/// `--keep-for` has passed (`engine.drill_sweep_interval`), with nobody
/// running `drill sweep`.
#[test]
fn the_sweeper_tears_a_kept_drill_down_by_itself() {
    let server = Server::with_config("[engine]\ndrill_sweep_interval = \"1s\"\n");
    let local = server.local_dir();
    let _cleanup = Instances(local.clone());
    Region::setup(&server, "kept", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    let d = server.run(&["--output", "json", "drill", "run", "kept", "--keep-for", "2s"]).ok().json();
    assert_eq!(d["verdict"], "passed", "{d}");
    assert_eq!(drill_processes(&local).len(), 2, "kept up");
    let id = d["id"].as_str().unwrap();
    let torn_down = || server.run(&["--output", "json", "drill", "show", id]).ok().json()["torn_down"] == true;
    wait_until(Duration::from_secs(20), "the sweeper to tear the drill down", torn_down);
    assert!(drill_processes(&local).is_empty());
    let doc = server.run(&["drill", "report", id, "--json"]).ok().json();
    assert_eq!(doc["teardown"]["by"], "sweeper", "{doc}");
}

/// A drill whose services all came up, but later than the recovery time
/// objective, passes over its objective: exit 0, the verdict says so, and
/// the report names the objective and the time it took.
#[test]
fn a_drill_slower_than_its_objective_passes_over_it_with_exit_0() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[]), Svc::new("web", &["db"])];
    let region = Region::setup(&server, "slowish", &svcs);
    // Each service is ready 700 ms after it starts: two in a row take longer than 1 s.
    let text = std::fs::read_to_string(&region.manifest)
        .unwrap()
        .replace("rto_objective = \"1m\"", "rto_objective = \"1s\"")
        .replace("\"--name\", \"db\"", "\"--name\", \"db\", \"--boot-delay\", \"700ms\"")
        .replace("\"--name\", \"web\"", "\"--name\", \"web\", \"--boot-delay\", \"700ms\"");
    assert!(text.matches("--boot-delay").count() == 2, "{text}");
    std::fs::write(&region.manifest, text).unwrap();
    server.run(&["snapshot", "push", region.manifest.to_str().unwrap()]).ok();
    let out = server.run(&["--output", "json", "drill", "run", "slowish", "--snapshot", "2"]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = out.json();
    assert_eq!(d["verdict"], "passed_over_objective", "{d}");
    assert_eq!(d["state"], "succeeded", "{d}");
    let text = server.run(&["drill", "show", d["id"].as_str().unwrap()]).ok().stdout;
    assert!(text.contains("PASSED OVER OBJECTIVE") && text.contains("(objective 1.0s)"), "{text}");
    assert!(drill_processes(&server.local_dir()).is_empty(), "torn down");
}

#[test]
fn promote_on_pass_moves_known_good_only_on_a_pass_and_drill_promotion_refuses_a_manual_promote() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let svcs = [Svc::new("db", &[]), Svc::new("web", &["db"])];
    let region = Region::setup(&server, "gated", &svcs);
    server.run(&["recover", "gated", "--yes"]).ok(); // v1 runs in production
    let good = std::fs::read_to_string(&region.manifest)
        .unwrap()
        .replace("rto_objective = \"1m\"\n", "rto_objective = \"1m\"\npromotion = \"drill\"\n");
    std::fs::write(&region.manifest, &good).unwrap();
    server.run(&["snapshot", "push", region.manifest.to_str().unwrap()]).ok(); // v2
    let out = server.run(&["snapshot", "promote", "gated", "2", "--reason", "by hand"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("snapshot 2 of gated has no passed DR drill"), "{}", out.stderr);

    // A failing drill of v3 does not move known-good.
    let broken = good
        .replace("\"--name\", \"web\"", "\"--name\", \"web\", \"--broken\"")
        .replace("timeout = \"20s\"", "timeout = \"2s\"");
    let broken_path = region.manifest.with_file_name("broken.toml");
    std::fs::write(&broken_path, broken).unwrap();
    server.run(&["snapshot", "push", broken_path.to_str().unwrap()]).ok(); // v3
    let out = server.run(&["--output", "json", "drill", "run", "gated", "--snapshot", "3", "--promote-on-pass"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.json()["promotion"].as_str().unwrap().starts_with("known-good not moved"), "{}", out.stdout);
    let kg = server.run(&["--output", "json", "snapshot", "show", "gated", "known-good"]).ok().json();
    assert_eq!(kg["version"], 1);

    // A passing drill of v2 moves it, by compare-and-swap, with the drill as the reason.
    let d =
        server.run(&["--output", "json", "drill", "run", "gated", "--snapshot", "2", "--promote-on-pass"]).ok().json();
    assert_eq!(d["verdict"], "passed");
    assert!(d["promotion"].as_str().unwrap().starts_with("known-good moved to snapshot 2"), "{d}");
    // Audited like any promotion: who started the drill, the version, the drill.
    let audit = server.run(&["--output", "json", "audit", "list", "--action", "snapshot.promote"]).ok().json();
    let on_pass = &audit[0];
    assert_eq!(on_pass["target"], "gated@v2", "{audit}");
    let outcome = on_pass["outcome"].as_str().unwrap();
    assert_eq!(outcome, format!("ok (drill {} passed, --promote-on-pass)", d["id"].as_str().unwrap()));
    let kg = server.run(&["--output", "json", "snapshot", "show", "gated", "known-good"]).ok().json();
    assert_eq!(kg["version"], 2);
    // Drills never count as deployed: production still runs v1, and status shows the drill beside it.
    let status = server.run(&["status", "gated"]).ok().stdout;
    assert!(status.contains("deployed  snapshot 1 (known-good is 2)"), "{status}");
    let drill_line = format!("drill     {} of snapshot 2: succeeded", d["id"].as_str().unwrap());
    assert!(status.contains(&drill_line), "{status}");
    assert!(status.contains("last run") && status.contains("recovery succeeded"), "{status}");
    // Now that v2 passed a drill, a manual promote of it is allowed.
    server.run(&["snapshot", "promote", "gated", "2", "--reason", "again"]).ok();
}

#[test]
fn a_drill_whose_server_is_killed_mid_run_is_torn_down_after_restart_with_its_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lifeboat.toml"), "[engine]\nlease_ttl = \"2s\"\nmax_clock_skew = \"100ms\"\n")
        .unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args =
        ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::launch(&args, &[]);
    server.dir = Some(tempfile::tempdir().unwrap());
    let local = dir.path().join("local");
    let _cleanup = Instances(local.clone());
    let svcs =
        [Svc::new("db", &[]), Svc::new("slow", &["db"]).args(&["--boot-delay", "6s"]), Svc::new("web", &["slow"])];
    Region::setup_in(&server, dir.path(), "crash", &svcs);
    let id = server.run(&["drill", "run", "crash", "--detach"]).ok().stdout.trim().to_string();
    wait_until(Duration::from_secs(20), "the drill's db and slow to run", || drill_processes(&local).len() >= 2);
    server.kill();
    let server = Server::launch(&args, &[]);
    // The restarted server takes the drill over (its lease lapsed) and finishes it.
    wait_until(Duration::from_secs(60), "the drill to finish", || {
        let d = server.run(&["--output", "json", "drill", "show", &id]);
        d.code == 0 && d.json()["state"] != "running"
    });
    let d = server.run(&["--output", "json", "drill", "show", &id]).ok().json();
    assert_eq!(d["torn_down"], true, "{d}");
    assert_eq!(d["remaining"].as_array().unwrap().len(), 0, "{d}");
    assert!(d["owners"].as_array().unwrap().len() >= 2, "resumed by the new server: {d}");
    assert!(drill_processes(&local).is_empty(), "{:?}", drill_processes(&local));
    let doc = server.run(&["drill", "report", &id, "--json"]).ok().json();
    assert_eq!(doc["run_id"], id.as_str());
    assert_eq!(doc["teardown"]["remaining"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_drill_input_is_refused_naming_it_and_creates_nothing() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    let store = Path::new(&server.store);
    let runs = || std::fs::read_dir(store.join("runs")).map(|d| d.count()).unwrap_or(0);
    let before = runs();
    for (args, code, says) in [
        (&["drill", "run", "shop", "--keep-for", "25h"][..], 2, "over the limit of 24h"),
        (&["drill", "run", "shop", "--keep-for", "soon"][..], 2, "--keep-for \"soon\" is not a duration"),
        (&["drill", "run", "nowhere"][..], 3, "nowhere"),
        (&["drill", "schedule", "add", "shop", "--cron", "0 3 * *"][..], 2, "has 4 fields"),
        (&["drill", "schedule", "add", "shop", "--cron", "0 3 * * SUNDAY"][..], 2, "field 5 (day-of-week) \"SUNDAY\""),
        (&["drill", "schedule", "add", "shop", "--cron", "0 0 31 2 *"][..], 2, "never fires"),
        (
            &["drill", "schedule", "add", "shop", "--cron", "0 3 * * *", "--timezone", "Mars/Base"][..],
            2,
            "unknown time zone \"Mars/Base\"",
        ),
        (
            &["drill", "schedule", "add", "shop", "--cron", "0 3 * * *", "--region", "NOT A REGION!!"][..],
            2,
            "region \"NOT A REGION!!\" is not a valid region name",
        ),
        (&["drill", "schedule", "remove", "s-nope"][..], 3, "no schedule s-nope"),
    ] {
        let out = server.run(args);
        assert_eq!(out.code, code, "{args:?}: {out:?}");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    assert_eq!(runs(), before, "no run was created");
    let manifest = server.dir.as_ref().unwrap().path().join("shop.toml");
    server.run(&["snapshot", "push", manifest.to_str().unwrap(), "-m", "a bad build"]).ok();
    server.run(&["snapshot", "reject", "shop", "2", "--reason", "bad build"]).ok();
    let before = runs();
    let out = server.run(&["drill", "run", "shop", "--snapshot", "2"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("rejected") && out.stderr.contains("never drilled"), "{}", out.stderr);
    assert_eq!(runs(), before, "no run was created");
    assert!(!store.join("schedules").exists(), "no schedule was created");
}

#[test]
fn two_servers_sharing_a_store_fire_each_schedule_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lifeboat.toml"), "[engine]\nschedule_interval = \"300ms\"\n").unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let launch = |local: &str| {
        let args =
            ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p(local)];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::launch(&args, &[])
    };
    let a = launch("local-a");
    let b = launch("local-b");
    let _ca = Instances(dir.path().join("local-a"));
    let _cb = Instances(dir.path().join("local-b"));
    Region::setup_in(&a, dir.path(), "tick", &[Svc::new("db", &[])]);
    // Every 3 seconds (six fields: seconds first).
    let added = a.run(&["--output", "json", "drill", "schedule", "add", "tick", "--cron", "*/3 * * * * *"]).ok().json();
    let sid = added["id"].as_str().unwrap().to_string();
    assert!(!added["next_fire_at"].as_str().unwrap().is_empty());
    wait_until(Duration::from_secs(30), "three ticks", || {
        std::fs::read_dir(dir.path().join("store/schedule-ticks").join(&sid)).map(|d| d.count()).unwrap_or(0) >= 3
    });
    b.run(&["drill", "schedule", "remove", &sid]).ok();
    std::thread::sleep(Duration::from_secs(2));
    let ticks: Vec<String> = std::fs::read_dir(dir.path().join("store/schedule-ticks").join(&sid))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let drills = a.run(&["--output", "json", "drill", "list", "--environment", "tick", "--limit", "100"]).ok().json();
    let drills: Vec<&serde_json::Value> = drills.as_array().unwrap().iter().collect();
    let started: Vec<&String> = ticks.iter().filter(|t| t.starts_with("r-")).collect();
    assert_eq!(drills.len(), started.len(), "one drill per tick that started one: {ticks:?}");
    let ids: BTreeSet<&str> = drills.iter().map(|d| d["id"].as_str().unwrap()).collect();
    for t in &started {
        assert!(ids.contains(t.as_str()), "{t}");
    }
    assert!(drills.iter().all(|d| d["schedule"] == sid.as_str()));
    assert!(started.len() >= 2, "{ticks:?}");
    // Each start is audited, the schedule as its actor, with the version it drilled.
    let actor = format!("schedule:{sid}");
    let audit = a.run(&["--output", "json", "audit", "list", "--actor", &actor, "--action", "drill.start"]).ok().json();
    let audited: Vec<&serde_json::Value> = audit.as_array().unwrap().iter().collect();
    assert_eq!(audited.len(), started.len(), "{audit}");
    assert!(audited.iter().all(|r| r["target"].as_str().unwrap().starts_with("tick@v1/r-")), "{audit}");
    // Adding the same schedule again adds nothing: it is the one there.
    let again = a.run(&["--output", "json", "drill", "schedule", "add", "tick", "--cron", "0 3 * * SUN"]).ok().json();
    let same = a.run(&["drill", "schedule", "add", "tick", "--cron", "0  3 * * SUN"]).ok().stdout;
    assert!(same.starts_with(&format!("schedule {} already does this", again["id"].as_str().unwrap())), "{same}");
    let other = a.run(&["--output", "json", "drill", "schedule", "add", "tick", "--cron", "0 4 * * SUN"]).ok().json();
    assert_ne!(other["id"], again["id"]);
    b.run(&["drill", "schedule", "remove", again["id"].as_str().unwrap()]).ok();
    b.run(&["drill", "schedule", "remove", other["id"].as_str().unwrap()]).ok();
    let list = a.run(&["drill", "schedule", "list"]).ok().stdout;
    assert!(list.contains("no schedules"), "{list}");
}

/// Two servers with different stores sharing one provider directory: each
/// sweeps only its own drills (every record names the store it belongs to).
#[test]
fn a_server_of_another_store_leaves_this_stores_drills_alone() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let d = server.run(&["--output", "json", "drill", "run", "shop", "--keep-for", "1h"]).ok().json();
    assert_eq!(d["verdict"], "passed", "{d}");
    let kept = common::instance_processes(&server.local_dir()).len();
    assert_eq!(kept, 2, "production's db and the kept drill's");
    // Another deployment: its own store, the same local directory.
    let other_store = tempfile::tempdir().unwrap();
    let other = Server::launch(
        &["--store", other_store.path().to_str().unwrap(), "--local-dir", server.local_dir().to_str().unwrap()],
        &[],
    );
    let out = other.run(&["drill", "sweep"]).ok();
    assert!(out.stdout.contains("nothing to sweep"), "{out:?}");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(common::instance_processes(&server.local_dir()).len(), kept, "the kept drill still runs");
    // Its own server still sweeps it when asked to end it.
    let shown = server.run(&["--output", "json", "drill", "show", d["id"].as_str().unwrap()]).ok().json();
    assert!(shown["torn_down"] == false, "{shown}");
    drop(other);
}

/// The production of the isolation tests: db, and an api that names db in
/// every form of its address (localhost, another 127.x, [::1], 0.0.0.0, a
/// host and port split across two values, `--flag=PORT`, a name). Returns
/// db's stable port.
fn forms_region(server: &Server) -> u16 {
    let dir = server.dir.as_ref().unwrap().path();
    let image = |name: &str| {
        let p = common::demo_artifact(dir, name);
        server.run(&["image", "import", p.to_str().unwrap()]).ok().stdout.trim().to_string()
    };
    let (db_image, api_image) = (image("db"), image("api"));
    let ports = lifeboat::provider::local::pick_listen_ports(2).unwrap();
    let (db, api) = (ports[0], ports[1]);
    let manifest = format!(
        "environment = \"forms\"\nregion = \"local-1\"\n\
         [services.db]\nimage = \"{db_image}\"\nhealth = {{ http = \"/healthz\", interval = \"100ms\", timeout = \"20s\" }}\n\
         launch = {{ listen = \"127.0.0.1:{db}\", args = [\"--name\", \"db\"] }}\n\
         [services.api]\nimage = \"{api_image}\"\ndepends_on = [\"db\"]\n\
         health = {{ http = \"/healthz\", interval = \"100ms\", timeout = \"20s\" }}\n\
         launch = {{ listen = \"127.0.0.1:{api}\", args = [\"--name\", \"api\", \"--dep\", \"localhost:{db}\"], \
         env = {{ DB_HOST = \"localhost\", DB_PORT = \"{db}\", DB_URL = \"http://0.0.0.0:{db}/\", DB_V6 = \"[::1]:{db}\", \
         DB_ALT = \"127.0.0.2:{db}\", DB_FLAG = \"--db-port={db}\", REPLICA = \"db.internal:{db}\" }} }}\n"
    );
    let path = dir.join("forms.toml");
    std::fs::write(&path, manifest).unwrap();
    server.run(&["snapshot", "push", path.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "forms", "1", "--reason", "t"]).ok();
    server.run(&["recover", "forms", "--yes"]).ok();
    db
}

/// Where the host cannot give a drill a network of its own
/// (`drill_network = "rewrite"`), a drill reaches its own services through
/// every form of a production address, never production's; what the
/// rewrite cannot be sure of is named in a warning.
#[test]
fn a_drill_cannot_reach_production_through_any_form_of_its_address() {
    let server = Server::with_config("[provider.local]\ndrill_network = \"rewrite\"\n");
    let local = server.local_dir();
    let _cleanup = Instances(local.clone());
    let db = forms_region(&server);
    let out = server.run(&["--output", "json", "drill", "run", "forms", "--keep-for", "5m"]);
    let d = out.json();
    assert_eq!(d["verdict"], "passed", "the drill's api reached the drill's db: {d}");
    assert!(out.stderr.contains("WARNING: services.api.launch.env.REPLICA = \"db.internal:"), "{}", out.stderr);
    let drill_db = d["addresses"].as_array().unwrap().iter().find(|a| a["service"] == "db").unwrap()["drill"]
        .as_str()
        .unwrap()
        .to_string();
    let drill_port = drill_db.rsplit(':').next().unwrap().to_string();
    let drill_api = common::processes_under(&local)
        .into_iter()
        .find(|p| p.var("LIFEBOAT_SERVICE") == "api" && p.var("LIFEBOAT_ENVIRONMENT").contains(".drill."))
        .expect("the drill's api runs");
    let prod = db.to_string();
    // Every form now names the drill's db; none names production's port.
    for arg in drill_api.argv.iter().skip_while(|a| *a != "--name") {
        assert!(!arg.contains(&prod), "argv {arg:?} still reaches production ({:?})", drill_api.argv);
    }
    assert!(drill_api.argv.contains(&drill_db), "--dep localhost:PORT names the drill's db: {:?}", drill_api.argv);
    assert_eq!(drill_api.var("DB_PORT"), drill_port, "a split host and port: the port is the drill's");
    assert_eq!(drill_api.var("DB_URL"), format!("http://{drill_db}/"));
    assert_eq!(drill_api.var("DB_V6"), drill_db);
    assert_eq!(drill_api.var("DB_ALT"), drill_db);
    assert_eq!(drill_api.var("DB_FLAG"), format!("--db-port={drill_port}"));
    assert!(drill_api.var("REPLICA").contains(&prod), "what cannot be told is left, and warned about");
    server.run(&["drill", "sweep"]);
}

/// `GET /` from inside a network namespace: the body, or None when nothing answers.
fn get_inside(netns: &str, addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = addr.to_string();
    lifeboat::provider::local::netns::within(netns, move || {
        let target = std::net::ToSocketAddrs::to_socket_addrs(&addr)?.next().ok_or(std::io::ErrorKind::NotFound)?;
        let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .ok()
    .filter(|answer| !answer.is_empty())
}

/// On a host that allows it (root, `ip`), a drill runs in a network
/// namespace of its own: its services keep production's addresses
/// unchanged, nothing needs rewriting or warning about, and production
/// cannot be reached from inside in any form, even once the drill's own db
/// is gone. The namespace goes with the drill's teardown.
#[test]
fn a_drill_in_its_own_network_namespace_cannot_reach_production() {
    if !nix_is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let server = Server::with_config("[provider.local]\ndrill_network = \"namespace\"\n");
    let local = server.local_dir();
    let _cleanup = Instances(local.clone());
    let db = forms_region(&server);
    let out = server.run(&["--output", "json", "drill", "run", "forms", "--keep-for", "5m"]);
    let d = out.json();
    let run_id = d["id"].as_str().unwrap().to_string();
    let netns = format!("lifeboat-{run_id}");
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = lifeboat::provider::local::netns::delete(&self.0);
        }
    }
    let _netns = Gone(netns.clone());
    assert_eq!(d["verdict"], "passed", "the drill's api reached the drill's db inside: {d}");
    assert_eq!(d["network_namespace"], netns.as_str(), "{d}");
    assert_eq!(d["addresses"], serde_json::json!([]), "nothing is rewritten: {d}");
    assert_eq!(d["isolation_warnings"], serde_json::json!([]), "nothing to be unsure of: {d}");
    assert!(!out.stderr.contains("WARNING"), "{}", out.stderr);
    let shown = server.run(&["drill", "show", &run_id]).ok().stdout;
    assert!(shown.contains(&format!("network   {netns}")), "{shown}");
    // Written in the format an older Lifeboat refuses (it would run the drill
    // outside its namespace): the run record, and the drill's cutover pointers.
    let format = |path: std::path::PathBuf| {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["format_version"].as_u64().unwrap()
    };
    let store = std::path::PathBuf::from(&server.store);
    assert_eq!(format(store.join("runs").join(&run_id).join("run.json")), 2);
    assert_eq!(format(local.join("services").join(format!("forms.drill.{run_id}")).join("db.json")), 2);
    assert_eq!(format(local.join("services/forms/db.json")), 1, "production's are read by any version");

    // The drill's api runs with production's addresses, unchanged.
    let drill_api = common::processes_under(&local)
        .into_iter()
        .find(|p| p.var("LIFEBOAT_SERVICE") == "api" && p.var("LIFEBOAT_ENVIRONMENT").contains(".drill."))
        .expect("the drill's api runs");
    assert!(drill_api.argv.contains(&format!("localhost:{db}")), "{:?}", drill_api.argv);
    assert_eq!(drill_api.var("DB_PORT"), db.to_string());
    assert_eq!(drill_api.var("REPLICA"), format!("db.internal:{db}"));

    // Every form of production's address reaches the drill's db inside, or nothing.
    let forms = [
        format!("127.0.0.1:{db}"),
        format!("localhost:{db}"),
        format!("127.0.0.2:{db}"),
        format!("[::1]:{db}"),
        format!("0.0.0.0:{db}"),
    ];
    let mut answered = 0;
    for form in &forms {
        if let Some(answer) = get_inside(&netns, form) {
            assert!(answer.contains("db ok (forms.drill."), "{form} inside the drill: {answer}");
            answered += 1;
        }
    }
    assert!(answered >= 1, "the drill's db answers at its production address inside");
    let html = local.join("../drill.html");
    server.run(&["drill", "report", &run_id, "--html", html.to_str().unwrap()]).ok();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains(&format!("network namespace <code>{netns}</code>")), "the report says where it ran");
    let outside = common::http_body(&format!("127.0.0.1:{db}"), "/");
    assert!(outside.contains("db ok (forms)"), "production still answers outside: {outside}");

    // With the drill's db gone, production is still out of reach.
    for p in common::processes_under(&local) {
        if p.var("LIFEBOAT_SERVICE") == "db" && p.var("LIFEBOAT_ENVIRONMENT").contains(".drill.") {
            let _ = std::process::Command::new("kill").args(["-9", &p.pid.to_string()]).status();
        }
    }
    wait_until(Duration::from_secs(10), "the drill's db is gone", || {
        get_inside(&netns, &forms[0]).is_none_or(|a| !a.contains("db ok"))
    });
    for form in &forms {
        if let Some(answer) = get_inside(&netns, form) {
            assert!(!answer.contains("(forms)"), "{form} reached production from inside the drill: {answer}");
        }
    }

    // A drill that is not kept takes its namespace with it.
    let out = server.run(&["--output", "json", "drill", "run", "forms"]);
    let d = out.json();
    assert_eq!(d["verdict"], "passed", "{d}");
    let second = d["network_namespace"].as_str().unwrap().to_string();
    let _second = Gone(second.clone());
    assert!(second.starts_with("lifeboat-r-") && second != netns, "{second}");
    assert!(!lifeboat::provider::local::netns::exists(&second), "torn down with the drill");
    assert_eq!(std::fs::read_dir(local.join("networks")).unwrap().count(), 1, "only the kept drill's is recorded");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
