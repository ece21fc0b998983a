//! The runbooks work: their commands, run in order against a real server
//! (up to their "When things go wrong" section), all succeed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Instances, Region, Server, Svc, instance_processes};

/// `lifeboat …` lines of the runbook's sh blocks, in order.
fn commands(runbook: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks").join(runbook)).unwrap();
    let text = text.split("## When things go wrong").next().unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh && line.starts_with("lifeboat ") {
            out.push(line.to_string());
        }
    }
    out
}

fn latest_run(server: &Server) -> String {
    let runs = server.run(&["--output", "json", "run", "list"]).ok().json();
    runs[0]["id"].as_str().unwrap_or("none").to_string()
}

/// Runs each command as a person would paste it into a shell.
fn follow_runbook(server: &Server, runbook: &str, vars: &[(&str, &str)]) {
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let cmds = commands(runbook);
    assert!(cmds.len() >= 5, "{runbook} has only {} commands", cmds.len());
    for cmd in cmds {
        let run_id = latest_run(server);
        let out = Command::new("sh")
            .args(["-c", &cmd])
            .env("PATH", &path)
            .env("LIFEBOAT_SERVER", &server.url)
            .env("LIFEBOAT_ACTOR", "oncall")
            .env("RUN_ID", &run_id)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{runbook}: `{cmd}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn svcs() -> [Svc<'static>; 4] {
    [Svc::new("db", &[]), Svc::new("cache", &["db"]), Svc::new("api", &["db", "cache"]), Svc::new("web", &["api"])]
}

#[test]
fn region_recovery_runbook() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    // The region fails.
    for (pid, _) in instance_processes(&server.local_dir()) {
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    }
    assert!(!region.answers("web"));
    follow_runbook(&server, "region-recovery.md", &[("ENV", "shop")]);
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the runbook");
    }
    let plan = server.run(&["plan", "shop"]).ok().stdout;
    assert!(plan.contains("4 to keep"), "{plan}");
}

#[test]
fn rollback_runbook() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    // Release 2 changes the api's settings; it is promoted and deployed.
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let v2 = region.manifest.with_file_name("shop-v2.toml");
    std::fs::write(&v2, text.replacen("\"--name\", \"api\"", "\"--name\", \"api\", \"--boot-delay\", \"50ms\"", 1))
        .unwrap();
    server.run(&["snapshot", "push", v2.to_str().unwrap(), "-m", "release 2"]).ok();
    server.run(&["snapshot", "promote", "shop", "2", "--reason", "release 2"]).ok();
    server.run(&["recover", "shop", "--yes"]).ok();

    follow_runbook(&server, "rollback.md", &[("ENV", "shop"), ("GOOD", "1"), ("BAD", "2")]);
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 1);
    let bad = server.run(&["--output", "json", "snapshot", "show", "shop", "2"]).ok().json();
    assert_eq!(bad["rejection"]["reason"], "rolled back");
    let run = server.run(&["--output", "json", "run", "show", &latest_run(&server)]).ok().json();
    assert_eq!(run["snapshot_version"], 1);
    let actions: Vec<&str> =
        run["services"].as_array().unwrap().iter().map(|s| s["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["keep", "keep", "replace", "keep"], "only the api differs between 1 and 2");
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the rollback");
    }
}
