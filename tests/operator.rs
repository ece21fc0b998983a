//! Operator experience (issue 12): what the CLI says, and with which exit
//! code, where an SRE under stress would otherwise hit a dead end.

mod common;

use common::{Backend, Instances, Region, Server, Svc, instance_processes, lifeboat, manifests};

/// A valid manifest can still deserve a look: `manifest validate` and
/// `plan` warn about a stable address in the ephemeral port range, show
/// the RTO objective beside the estimate, and say plainly that a
/// drill-promoted environment has no way to known-good yet.
#[test]
fn plan_and_validate_say_what_deserves_a_look() {
    let server = Server::start(Backend::Fs);
    let dir = server.dir.as_ref().unwrap().path();
    let (lo, hi) = lifeboat::provider::local::ephemeral_range();
    let port = lo + (hi - lo) / 2;
    let art = common::demo_artifact(dir, "slow");
    let image = server.run(&["image", "import", art.to_str().unwrap()]).ok().stdout.trim().to_string();
    let file = dir.join("slow.toml");
    std::fs::write(
        &file,
        format!(
            "environment = \"slow\"\nregion = \"local-1\"\nrto_objective = \"1s\"\npromotion = \"drill\"\n\
             [services.web]\nimage = \"{image}\"\n\
             health = {{ http = \"/healthz\", interval = \"2s\" }}\n\
             launch = {{ listen = \"127.0.0.1:{port}\", args = [\"--name\", \"web\"] }}\n"
        ),
    )
    .unwrap();
    let out = lifeboat(None, &["manifest", "validate", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "warnings do not make a manifest invalid: {out:?}");
    let ephemeral =
        format!("services.web.launch.listen 127.0.0.1:{port} is in this host's ephemeral port range ({lo}-{hi})");
    assert!(out.stdout.contains(&format!("warning: {ephemeral}")), "{}", out.stdout);
    assert!(out.stdout.contains("choose a port below"), "{}", out.stdout);
    assert!(out.stdout.contains("warning: promotion = \"drill\""), "{}", out.stdout);
    let json = lifeboat(None, &["--output", "json", "manifest", "validate", file.to_str().unwrap()]).json();
    assert_eq!(json["warnings"].as_array().unwrap().len(), 2, "{json}");

    server.run(&["snapshot", "push", file.to_str().unwrap()]).ok();
    let plan = server.run(&["plan", "slow", "--snapshot", "1"]).ok().stdout;
    assert!(plan.contains("RTO objective: 1.0s (estimate OVER the objective)"), "{plan}");
    assert!(
        plan.contains("the critical-path estimate (2.5s) exceeds rto_objective (1.0s): web is the slowest chain"),
        "{plan}"
    );
    assert!(plan.contains(&ephemeral), "{plan}");
    assert!(plan.contains("only after a DR drill of it passed"), "{plan}");
    let json = server.run(&["--output", "json", "plan", "slow", "--snapshot", "1"]).ok().json();
    assert_eq!(json["rto_objective_ms"], 1000);
    assert_eq!(json["warnings"].as_array().unwrap().len(), 3, "{json}");
    let show = server.run(&["snapshot", "show", "slow", "1"]).ok().stdout;
    assert!(show.contains("rto          1s"), "{show}");
    assert!(show.contains("promotion    promotion = \"drill\""), "{show}");
    // Promotion by hand of an undrilled snapshot is refused, naming the drill to run (exit 4).
    let out = server.run(&["snapshot", "promote", "slow", "1", "--reason", "t"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("run `lifeboat drill run slow --snapshot 1 --promote-on-pass`"), "{out:?}");
}

/// With every service kept the plan needs no capacity; the estimate is
/// within an objective that allows it.
#[test]
fn a_plan_that_keeps_everything_needs_no_capacity() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let plan = server.run(&["plan", "shop"]).ok().stdout;
    assert!(plan.contains("0 to create, 0 to replace, 2 to keep."), "{plan}");
    assert!(plan.contains("capacity            no new instances; 2 running, cap"), "{plan}");
    assert!(plan.contains("RTO objective: 1m 00s (estimate within it)"), "{plan}");
    assert!(!plan.contains("Warnings:"), "{plan}");
}

/// An environment for a provider this server lacks fails preflight, saying
/// which providers the server has and what to do, with exit 1 (not a conflict).
#[test]
fn a_missing_provider_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(&config, "[provider.ec2]\nenabled = false\n").unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args =
        ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::launch(&args, &[]);
    let file = manifests().join("good/ec2-regions.json");
    let pushed = server.run(&["--output", "json", "snapshot", "push", file.to_str().unwrap()]).ok().json();
    let env = pushed["environment"].as_str().unwrap();
    let out = server.run(&["plan", env, "--snapshot", "1"]);
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.stdout.lines().find(|l| l.contains("FAIL") && l.contains("provider")).unwrap_or_default();
    assert!(
        line.contains("snapshot 1 of web uses the ec2 provider, but this server has no ec2 provider (it has: local)")
            && line.contains("enable it with [provider.ec2] in the server's configuration"),
        "{out:?}"
    );
    assert!(out.stderr.contains("preflight failed: provider: "), "{out:?}");
    let out = server.run(&["recover", env, "--snapshot", "1", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("this server has no ec2 provider"), "{out:?}");
}

/// Runs can be named the way runbooks need: `recover --detach` prints only
/// the ID, `run list --quiet` only IDs, a unique prefix is enough, and
/// `--latest ENV` picks the newest run of an environment.
#[test]
fn runs_are_found_by_detached_id_prefix_and_latest() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "shop", &[Svc::new("web", &[])]);
    let out = server.run(&["recover", "shop", "--yes", "--detach"]).ok();
    let id = out.stdout.trim().to_string();
    assert!(id.starts_with("r-") && !id.contains(' '), "only the ID on stdout: {out:?}");
    assert!(out.stderr.contains(&format!("follow it with: lifeboat run watch {id}")), "{out:?}");
    server.run(&["run", "watch", &id]).ok();
    let listed = server.run(&["run", "list", "--environment", "shop", "--limit", "1", "--quiet"]).ok().stdout;
    assert_eq!(listed.trim(), id);
    // A unique prefix: the ID without its random tail.
    let prefix = &id[..id.len() - 7];
    let shown = server.run(&["--output", "json", "run", "show", prefix]).ok().json();
    assert_eq!(shown["id"], id.as_str());
    let latest = server.run(&["--output", "json", "run", "show", "--latest", "shop"]).ok().json();
    assert_eq!(latest["id"], id.as_str());
    let watched = server.run(&["run", "watch", "--latest", "shop"]).ok();
    assert!(watched.stdout.contains(&format!("run {id}")), "{watched:?}");
    // A second run makes "r-" ambiguous; an unknown prefix is not found.
    let second = server.run(&["recover", "shop", "--yes", "--force", "--detach"]).ok().stdout.trim().to_string();
    server.run(&["run", "watch", &second]).ok();
    let out = server.run(&["run", "show", "r-"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("run ID prefix r- is ambiguous: it matches 2 runs") && out.stderr.contains(&second),
        "{out:?}"
    );
    let out = server.run(&["run", "show", "r-1999"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("no run r-1999; `lifeboat run list` shows the recent ones"), "{out:?}");
    let out = server.run(&["run", "watch", "--latest", "nosuch"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("environment nosuch has no runs yet"), "{out:?}");
    let out = server.run(&["run", "show"]);
    assert_eq!(out.code, 2, "an ID or --latest is required: {out:?}");
}

/// `snapshot diff --exit-code` answers "did anything change?" with the exit
/// code (0 no, 2 yes), as `git diff --exit-code` does; `show --quiet`
/// prints only the version.
#[test]
fn diff_exit_code_and_quiet_show() {
    let server = Server::start(Backend::Fs);
    let file = manifests().join("good/shop.toml");
    server.run(&["snapshot", "push", file.to_str().unwrap()]).ok();
    server.run(&["snapshot", "push", file.to_str().unwrap()]).ok();
    let same = server.run(&["snapshot", "diff", "shop", "1", "2", "--exit-code"]);
    assert_eq!(same.code, 0, "{same:?}");
    assert!(same.stdout.contains("no differences"), "{same:?}");
    let dir = tempfile::tempdir().unwrap();
    let v3 = common::variant(dir.path(), "shop3.toml", "shop.toml", &[("replicas = 2", "replicas = 4")]);
    server.run(&["snapshot", "push", v3.to_str().unwrap()]).ok();
    let changed = server.run(&["snapshot", "diff", "shop", "2", "3", "--exit-code"]);
    assert_eq!(changed.code, 2, "{changed:?}");
    assert!(changed.stderr.is_empty(), "the exit code is the answer: {changed:?}");
    assert_eq!(server.run(&["snapshot", "diff", "shop", "2", "3"]).code, 0, "opt-in only");
    assert_eq!(server.run(&["snapshot", "show", "shop", "latest", "--quiet"]).ok().stdout, "3\n");
}

/// `--server`/`LIFEBOAT_SERVER` belong to the client: the server's help does
/// not list them, and no usage line shows them as if they were required.
#[test]
fn help_shows_client_options_only_where_they_apply() {
    let server_help = lifeboat(None, &["server", "--help"]).ok().stdout;
    assert!(!server_help.contains("LIFEBOAT_SERVER") && !server_help.contains("--output"), "{server_help}");
    assert!(server_help.contains("LIFEBOAT_STORE"), "{server_help}");
    let plan_help = lifeboat(None, &["plan", "--help"]).ok().stdout;
    assert!(plan_help.contains("[env: LIFEBOAT_SERVER="), "{plan_help}");
    for args in [&["plan"][..], &["snapshot", "show"], &["run", "watch"]] {
        let out = lifeboat(None, args);
        assert_eq!(out.code, 2, "{out:?}");
        let usage = out.stderr.lines().find(|l| l.starts_with("Usage:")).unwrap_or_default().to_string();
        assert!(!usage.is_empty() && !usage.contains("--server"), "{args:?}: {usage}");
    }
}

/// The plan shows what changed per service, setting by setting, against the
/// snapshot that runs now; marks approval gates; and with
/// `--detailed-exitcode` answers "anything to do?" with 0 or 2.
#[test]
fn plan_shows_changes_by_attribute() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    assert_eq!(server.run(&["plan", "shop", "--detailed-exitcode"]).code, 0, "nothing to change");
    // Release 2: web gets an environment variable and an approval gate, db a second replica.
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let (db, web) = text.split_once("[services.web]\n").unwrap();
    let db = db.replacen("[services.db]\n", "[services.db]\nreplicas = 2\n", 1);
    let web = web.replacen("launch = { listen", "launch = { env = { APP_VERSION = \"2\" }, listen", 1);
    let text = format!("{db}[services.web]\napproval = true\n{web}");
    let v2 = region.manifest.with_file_name("shop-v2.toml");
    std::fs::write(&v2, text).unwrap();
    server.run(&["snapshot", "push", v2.to_str().unwrap()]).ok();
    let out = server.run(&["plan", "shop", "--snapshot", "2", "--detailed-exitcode"]);
    assert_eq!(out.code, 2, "changes: {out:?}");
    let plan = out.stdout;
    assert!(plan.contains("replace (approval)"), "{plan}");
    assert!(plan.contains("(approval): the run waits there for `lifeboat run approve RUN_ID SERVICE`"), "{plan}");
    assert!(plan.contains("Changes:\n  ~ db (running snapshot 1)\n      ~ replicas: 1 → 2\n"), "{plan}");
    assert!(plan.contains("  ~ web (running snapshot 1)\n"), "{plan}");
    assert!(plan.contains("      + launch.env.APP_VERSION: \"2\""), "{plan}");
    assert!(plan.contains("      ~ approval: false → true"), "{plan}");
    let json = server.run(&["--output", "json", "plan", "shop", "--snapshot", "2"]).ok().json();
    let web = json["steps"].as_array().unwrap().iter().find(|s| s["service"] == "web").unwrap().clone();
    assert_eq!(web["approval"], true);
    assert_eq!(web["changes_from_version"], 1);
    assert!(
        web["changes"].as_array().unwrap().iter().any(|c| c["path"] == "launch.env.APP_VERSION" && c["after"] == "2"),
        "{web}"
    );
}

/// Prune: a service running in the environment but absent from the new
/// snapshot is planned as `delete` and removed once the rest is healthy;
/// `--no-prune` keeps it; another environment's service of the same name is
/// never touched. The progress says what a grace period waits for.
#[test]
fn prune_removes_services_absent_from_the_snapshot() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let shop =
        Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"]), Svc::new("legacy", &[])]);
    let other = Region::setup(&server, "other", &[Svc::new("legacy", &[])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    server.run(&["recover", "other", "--yes"]).ok();
    // Release 2 drops legacy; web gets a new argument and a 1 s grace period.
    let text = std::fs::read_to_string(&shop.manifest).unwrap();
    let text = text.split("\n[services.legacy]").next().unwrap().to_string();
    let (db, web) = text.split_once("[services.web]").unwrap();
    let web = web.replacen("grace_period = \"0s\"", "grace_period = \"1s\"", 1).replacen(
        "\"--name\", \"web\"",
        "\"--name\", \"web\", \"--boot-delay\", \"10ms\"",
        1,
    );
    let v2 = shop.manifest.with_file_name("shop-v2.toml");
    std::fs::write(&v2, format!("{db}[services.web]{web}")).unwrap();
    server.run(&["snapshot", "push", v2.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "shop", "2", "--reason", "drop legacy"]).ok();

    let plan = server.run(&["plan", "shop"]).ok().stdout;
    let row = plan.lines().find(|l| l.starts_with("legacy ")).unwrap_or_default();
    assert!(row.contains(" delete ") && row.ends_with("not in the snapshot"), "{plan}");
    assert!(plan.contains("0 to create, 1 to replace, 1 to keep, 1 to delete (not in the snapshot; removed after the rest is healthy; --no-prune keeps them)."), "{plan}");
    assert_eq!(server.run(&["plan", "shop", "--detailed-exitcode"]).code, 2);
    let kept = server.run(&["plan", "shop", "--no-prune"]).ok().stdout;
    assert!(!kept.contains("delete") && kept.contains("(left alone: --no-prune): legacy"), "{kept}");

    let out = server.run(&["recover", "shop", "--yes"]).ok().stdout;
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in {out}"));
    assert!(
        at("web: traffic cut over") < at("legacy: not in the snapshot: traffic stopped, instances removed"),
        "{out}"
    );
    at("web: waiting grace period (1.0s) before removing old instances");
    assert!(!shop.answers("legacy"), "its stable address is released");
    assert!(shop.answers("web") && other.answers("legacy"), "the rest, and other's legacy, are untouched");
    let legacy = instance_processes(&server.local_dir()).into_iter().filter(|(_, s)| s == "legacy").count();
    assert_eq!(legacy, 1, "only other's legacy instance runs");
    let run = server.run(&["--output", "json", "run", "show", "--latest", "shop"]).ok().json();
    let state = run["services"].as_array().unwrap().iter().find(|s| s["name"] == "legacy").unwrap()["state"].clone();
    assert_eq!(state, "removed");
    let listed = server.run(&["run", "list", "--environment", "shop", "--limit", "1"]).ok().stdout;
    assert!(listed.contains("2/2 (1 removed)"), "a pruned service is not an unhealthy one: {listed}");
    let plan = server.run(&["plan", "shop", "--detailed-exitcode"]).ok().stdout;
    assert!(!plan.contains("legacy"), "{plan}");
}

/// A failure report says each distinct log line once: replicas failing the
/// same way are folded into `… N more like this`.
#[test]
fn failure_reports_collapse_repeated_lines() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    common::script_region(
        &server,
        "bad",
        "#!/bin/sh\necho \"fatal: DATABASE_URL is not set\"\nexit 1\n",
        "environment = \"bad\"\nregion = \"local-1\"\n[services.api]\nimage = \"{image}\"\nreplicas = 3\n\
         health = { http = \"/healthz\", interval = \"100ms\", timeout = \"3s\" }\n",
    );
    let out = server.run(&["recover", "bad", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    let fatal = out.stdout.lines().filter(|l| l.contains("fatal: DATABASE_URL is not set")).count();
    assert_eq!(fatal, 1, "said once: {}", out.stdout);
    // Every attempt's lines are kept (3 attempts of 3 replicas), each distinct line shown once.
    assert!(out.stdout.contains("    | … 8 more like this (api-"), "{}", out.stdout);
    // `run logs` shows the failed attempts' instances in full.
    let id = server.run(&["run", "list", "--limit", "1", "--quiet"]).ok().stdout.trim().to_string();
    let logs = server.run(&["run", "logs", &id[..id.len() - 3], "api"]).ok().stdout;
    let fatal = logs.lines().filter(|l| l.ends_with(" | fatal: DATABASE_URL is not set")).count();
    assert_eq!(fatal, 9, "3 attempts of 3 replicas: {logs}");
    let out = server.run(&["run", "logs", &id, "nosuch"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("has no service nosuch; it has: api"), "{out:?}");
}

/// A failed instance's log is read from its end: a 1.5 GB log (sparse
/// here) does not raise the server's memory, and its last line is shown.
#[test]
fn a_huge_log_is_read_from_its_end() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    common::script_region(
        &server,
        "chatty",
        "#!/bin/sh\ntruncate -s 1500M /proc/self/fd/1\necho\necho \"fatal: out of disk\"\nexit 1\n",
        "environment = \"chatty\"\nregion = \"local-1\"\n[services.api]\nimage = \"{image}\"\n\
         health = { http = \"/healthz\", interval = \"100ms\", timeout = \"3s\" }\n",
    );
    let out = server.run(&["recover", "chatty", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("fatal: out of disk"), "{}", out.stdout);
    let logs: Vec<u64> = walk_sizes(&server.local_dir().join("instances"));
    assert!(logs.iter().any(|n| *n > 1_000_000_000), "the logs were that big: {logs:?}");
    let peak_kib = common::peak_rss_kib(server.pid());
    assert!(peak_kib < 200 * 1024, "the server's peak RSS was {} MiB", peak_kib >> 10);
}

/// A `[[verify]]` check answered with 1.5 GB reads only the start of it.
#[test]
fn a_huge_verify_answer_is_read_only_in_part() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let big = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head);
            let total: u64 = 1536 << 20;
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..1536 {
                if conn.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "verified", &[Svc::new("db", &[])]);
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let file = region.manifest.with_file_name("verified-big.toml");
    std::fs::write(
        &file,
        format!("{text}\n[[verify]]\nname = \"big answer\"\nhttp = \"http://{big}/\"\nbody_contains = \"never there\"\ntimeout = \"2s\"\n"),
    )
    .unwrap();
    server.run(&["snapshot", "push", file.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "verified", "latest", "--reason", "t"]).ok();
    let out = server.run(&["recover", "verified", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("does not contain \"never there\""), "{}", out.stdout);
    let peak_kib = common::peak_rss_kib(server.pid());
    assert!(peak_kib < 200 * 1024, "the server's peak RSS was {} MiB", peak_kib >> 10);
}

fn walk_sizes(dir: &std::path::Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_sizes(&p));
        } else if p.file_name().is_some_and(|n| n == "output.log") {
            out.push(e.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    out
}

/// A forgotten approval does not hold the region for ever: after
/// `approval_timeout` the service fails, the run ends, the lease is freed.
#[test]
fn an_approval_times_out_and_frees_the_region() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let gated = Svc::new("api", &["db"]).extra("approval = true\napproval_timeout = \"1s\"");
    Region::setup(&server, "gate", &[Svc::new("db", &[]), gated]);
    let out = server.run(&["recover", "gate", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("api: FAILED: approval timed out: nobody approved it within 1.0s (approval_timeout)"),
        "{out:?}"
    );
    let plan = server.run(&["plan", "gate"]).ok().stdout;
    assert!(plan.contains("region local-1 is free"), "{plan}");
    // The setting is validated like every duration.
    let dir = server.dir.as_ref().unwrap().path();
    let text = std::fs::read_to_string(dir.join("gate.toml")).unwrap().replace("\"1s\"", "\"0s\"");
    std::fs::write(dir.join("bad.toml"), text).unwrap();
    let out = lifeboat(None, &["manifest", "validate", dir.join("bad.toml").to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("services.api.approval_timeout"), "{out:?}");
}

/// `lifeboat logs ENV SERVICE` shows the running instances' output, each
/// line prefixed with its instance; `--follow` keeps printing new lines.
#[test]
fn logs_show_and_follow_instance_output() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    common::script_region(
        &server,
        "tick",
        "#!/bin/sh\necho \"ticker starting\"\nn=0\nwhile true; do n=$((n+1)); echo \"tick $n\"; sleep 0.2; done\n",
        "environment = \"tick\"\nregion = \"local-1\"\n[services.clock]\nimage = \"{image}\"\nreplicas = 2\n",
    );
    server.run(&["recover", "tick", "--yes"]).ok();

    let out = server.run(&["logs", "tick", "clock", "--lines", "1000"]).ok().stdout;
    let starts: Vec<&str> = out.lines().filter(|l| l.ends_with(" | ticker starting")).collect();
    assert_eq!(starts.len(), 2, "each instance's output, prefixed: {out}");
    assert!(starts.iter().all(|l| l.starts_with("clock-")), "{out}");
    let last = server.run(&["logs", "tick", "clock", "-n", "1"]).ok().stdout;
    assert_eq!(last.lines().count(), 2, "one line per instance: {last}");
    let json = server.run(&["--output", "json", "logs", "tick", "clock", "-n", "1"]).ok().stdout;
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert!(
        first["instance"].as_str().unwrap().starts_with("clock-")
            && first["line"].as_str().unwrap().starts_with("tick ")
    );

    // --follow prints lines written after it started.
    let (mut child, rx) = follow_logs(&server, "tick", "clock");
    let mut ticks = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ticks.len() < 8 && std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_secs(1)) {
            ticks.insert(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ticks.len() >= 8, "new lines keep coming: {ticks:?}");

    // What is not there is named.
    let out = server.run(&["logs", "tick", "nosuch"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("no running instances of tick/nosuch in local-1"), "{out:?}");
    let out = server.run(&["logs", "tick", "clock", "-n", "0"]);
    assert_eq!(out.code, 2, "{out:?}");
}

/// `lifeboat logs ENV SERVICE --follow -n 1` running, and its lines as they come.
fn follow_logs(server: &Server, env: &str, service: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = std::process::Command::new(common::BIN)
        .args(["--server", &server.url, "logs", env, service, "--follow", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// `logs --follow` passes a line longer than a read (1 MiB), shown cut, and
/// goes on with the lines after it.
#[test]
fn logs_follow_passes_a_line_longer_than_a_read() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    common::script_region(
        &server,
        "long",
        "#!/bin/sh\necho ready\nsleep 2\nhead -c 2097152 /dev/zero | tr '\\0' x\necho\n\
         n=0\nwhile true; do n=$((n+1)); echo \"after $n\"; sleep 0.2; done\n",
        "environment = \"long\"\nregion = \"local-1\"\n[services.talker]\nimage = \"{image}\"\n",
    );
    server.run(&["recover", "long", "--yes"]).ok();
    let (mut child, rx) = follow_logs(&server, "long", "talker");
    let (mut cut, mut after) = (false, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(cut && after) && std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_secs(1)) {
            cut |= l.ends_with("(a line longer than 1 MiB, cut)") && l.len() < 20_000;
            after |= l.ends_with(" | after 3");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(cut, "the long line is shown cut");
    assert!(after, "and the lines after it follow");
}

/// `lifeboat status` shows, per environment and region, the deployed
/// snapshot, whether it matches known-good, each service's health and
/// address, and the last run.
#[test]
fn status_shows_what_runs_and_whether_it_matches_known_good() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let shop = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    let before = server.run(&["status", "shop"]).ok().stdout;
    assert!(before.starts_with("shop in local-1 (home region)\n"), "{before}");
    assert!(before.contains("deployed  no run has succeeded here"), "{before}");
    assert!(before.contains("sync      OUT OF SYNC: 2 to create"), "{before}");
    assert!(before.lines().any(|l| l.trim_start().starts_with("web ") && l.contains("DOWN")), "{before}");
    // A drift check before the run finds it drifted.
    server.run(&["drift", "shop"]);
    let drifted = server.run(&["status", "shop"]).ok().stdout;
    let line = drifted.lines().find(|l| l.trim_start().starts_with("drift ")).unwrap_or_default().to_string();
    assert!(line.contains("checked at") && !line.contains("in sync"), "{drifted}");

    server.run(&["recover", "shop", "--yes"]).ok();
    let id = server.run(&["run", "list", "--limit", "1", "-q"]).ok().stdout.trim().to_string();
    let after = server.run(&["status", "shop"]).ok().stdout;
    assert!(after.contains("deployed  snapshot 1 (known-good)"), "{after}");
    assert!(after.contains("sync      SYNCED: every service runs known-good, healthy"), "{after}");
    assert!(after.contains(&format!("last run  {id} recovery succeeded, finished at")), "{after}");
    // Drift is checked again once a run ends: the status never shows a check from before it.
    common::wait_until(std::time::Duration::from_secs(10), "a drift check after the run", || {
        server.run(&["status", "shop"]).ok().stdout.contains("drift     in sync (checked at")
    });
    assert!(!server.run(&["status", "shop"]).ok().stdout.contains("BEFORE the last run"));
    let db = after.lines().find(|l| l.trim_start().starts_with("db ")).unwrap();
    assert!(
        db.contains("HEALTHY") && db.contains("1/1") && db.contains(&format!("127.0.0.1:{}", shop.ports["db"])),
        "{after}"
    );
    assert!(db.trim_end().ends_with("keep"), "{after}");

    // web dies: the status says so, and what a recovery would do.
    let web = common::instance_processes(&server.local_dir()).into_iter().find(|(_, s)| s == "web").unwrap().0;
    std::process::Command::new("kill").args(["-9", &web.to_string()]).status().unwrap();
    common::wait_until(std::time::Duration::from_secs(10), "web to be reported down", || {
        server.run(&["status", "shop"]).ok().stdout.contains("OUT OF SYNC: 1 to create")
    });
    let json = server.run(&["--output", "json", "status"]).ok().json();
    let shop_status = json.as_array().unwrap().iter().find(|e| e["environment"] == "shop").unwrap();
    assert_eq!(shop_status["sync"], "out_of_sync");
    assert_eq!(shop_status["deployed_version"], 1);
    assert_eq!(shop_status["known_good_version"], 1);
    assert_eq!(shop_status["last_run"]["id"], id.as_str());
    let web = shop_status["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!((web["state"].as_str(), web["action"].as_str()), (Some("down"), Some("create")), "{web}");

    let out = server.run(&["status", "nosuch"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("environment nosuch has no snapshots"), "{out:?}");

    // More healthy instances than known-good wants is over-provisioned, not degraded.
    let wide = Region::setup(&server, "wide", &[Svc::new("api", &[]).extra("replicas = 2")]);
    server.run(&["recover", "wide", "--yes"]).ok();
    let text = std::fs::read_to_string(&wide.manifest).unwrap();
    let one = wide.manifest.with_file_name("wide-1.toml");
    std::fs::write(&one, text.replace("replicas = 2", "replicas = 1")).unwrap();
    server.run(&["snapshot", "push", one.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "wide", "2", "--reason", "scale down"]).ok();
    let status = server.run(&["status", "wide"]).ok().stdout;
    let api = status.lines().find(|l| l.trim_start().starts_with("api ")).unwrap();
    assert!(api.contains("OVER-PROVISIONED") && api.contains("2/1"), "{status}");
    assert!(api.contains("replace (2 instances, want 1)"), "{status}");
}

/// `lifeboat audit list` reads who did what, newest first, filtered by
/// time, actor, action and environment.
#[test]
fn audit_list_answers_who_did_what() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    server.run(&["recover", "shop", "--yes", "--detach"]).ok();
    let id = server.run(&["run", "list", "-q", "--limit", "1"]).ok().stdout.trim().to_string();
    server.run(&["run", "watch", &id]).ok();
    server.run(&["snapshot", "tag", "shop", "1", "stable"]).ok();
    let other = manifests().join("good/shop.toml");
    let pushed =
        lifeboat(Some(&server.url), &["--output", "json", "snapshot", "push", other.to_str().unwrap()]).ok().json();
    assert_eq!(pushed["environment"], "shop");
    let out = server.run(&["snapshot", "reject", "shop", "1", "--reason", "x"]);
    assert_eq!(out.code, 1, "known-good cannot be rejected: {out:?}");

    let all = server.run(&["--output", "json", "audit", "list"]).ok().json();
    let actions: Vec<&str> = all.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions[0], "snapshot.reject", "newest first: {actions:?}");
    for a in ["image.import", "snapshot.push", "snapshot.promote", "recovery.start", "snapshot.tag"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    let rejected = &all[0];
    assert!(
        rejected["outcome"].as_str().unwrap().starts_with("error: snapshot 1 is the known-good snapshot"),
        "{rejected}"
    );
    assert!(rejected["actor"].as_str().unwrap().starts_with("tester"), "{rejected}");

    let promotes = server.run(&["--output", "json", "audit", "list", "--action", "promote"]).ok().json();
    assert_eq!(promotes.as_array().unwrap().len(), 1, "{promotes}");
    assert_eq!(promotes[0]["target"], "shop@v1");
    let text = server.run(&["audit", "list", "--environment", "shop", "--action", "start"]).ok().stdout;
    assert!(
        text.starts_with("AT ") && text.contains("recovery.start") && text.contains("shop@v1 in local-1/r-"),
        "{text}"
    );
    assert_eq!(
        server.run(&["--output", "json", "audit", "list", "--actor", "nobody"]).ok().json(),
        serde_json::json!([])
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let none = server.run(&["audit", "list", "--since", &later.to_rfc3339()]).ok().stdout;
    assert_eq!(none.trim(), "no audit records match");
    let out = server.run(&["audit", "list", "--since", "yesterday-ish"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is neither a duration (2h, 7d) nor an RFC 3339 time"), "{out:?}");
}

/// `[[verify]]` smoke checks run once every service is healthy; a failing
/// one fails the run although every service is healthy; a check naming an
/// unknown service is refused at validation.
#[test]
fn verify_checks_run_after_the_services_are_healthy() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let checks = "\n[[verify]]\nname = \"web answers\"\nservice = \"web\"\nhttp = \"/healthz\"\nbody_contains = \"web healthy\"\n\n\
                  [[verify]]\nname = \"script\"\ncommand = [\"sh\", \"-c\", \"exit 0\"]\n";
    let v2 = region.manifest.with_file_name("shop-v2.toml");
    std::fs::write(&v2, format!("{text}{checks}")).unwrap();
    server.run(&["snapshot", "push", v2.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "shop", "2", "--reason", "with checks"]).ok();
    let out = server.run(&["recover", "shop", "--yes"]).ok().stdout;
    let port = region.ports["web"];
    assert!(
        out.contains(&format!("verify web answers: passed (GET http://127.0.0.1:{port}/healthz: HTTP 200)")),
        "{out}"
    );
    assert!(out.contains("verify script: passed (sh exited 0)"), "{out}");

    // A check that cannot pass fails the run, naming it.
    let bad = format!(
        "{text}\n[[verify]]\nname = \"teapot\"\nservice = \"web\"\nhttp = \"/healthz\"\nstatus = 418\ntimeout = \"1s\"\n\n\
         [[verify]]\nname = \"smoke\"\ncommand = [\"sh\", \"-c\", \"echo checkout returned 500 >&2; exit 3\"]\ntimeout = \"1s\"\n"
    );
    let v3 = region.manifest.with_file_name("shop-v3.toml");
    std::fs::write(&v3, bad).unwrap();
    server.run(&["snapshot", "push", v3.to_str().unwrap()]).ok();
    let out = server.run(&["recover", "shop", "--snapshot", "3", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("verify teapot (GET http://127.0.0.1:{port}/healthz: HTTP 200, want 418: web healthy)")),
        "{out:?}"
    );
    // A failed command says what it printed, not only its exit status.
    assert!(
        out.stderr.contains("verify smoke (command sh exited with exit status: 3: checkout returned 500)"),
        "{out:?}"
    );
    let run = server.run(&["--output", "json", "run", "show", "--latest", "shop"]).ok().json();
    assert_eq!(run["state"], "failed");
    assert_eq!(run["verify"][0]["passed"], false);
    assert!(run["services"].as_array().unwrap().iter().all(|s| s["state"] == "healthy"), "{run}");

    let unknown = region.manifest.with_file_name("shop-bad.toml");
    std::fs::write(&unknown, format!("{text}\n[[verify]]\nservice = \"nosuch\"\nhttp = \"/\"\n")).unwrap();
    let out = lifeboat(None, &["manifest", "validate", unknown.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("verify[0].service: no service \"nosuch\" in this manifest"), "{out:?}");
}

/// A run ends by probing every service of its plan, kept ones included: a
/// kept service that dies while the run replaces another fails the run,
/// named, instead of a run that reports the region recovered while it is down.
#[test]
fn a_kept_service_that_dies_during_the_run_fails_it_at_the_final_probe() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &[])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let v2 = region.slow_variant("web", "1500ms");
    server.run(&["snapshot", "push", v2.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "shop", "2", "--reason", "slow web"]).ok();
    let id = server.run(&["recover", "shop", "--yes", "--detach"]).ok().stdout.trim().to_string();
    // db is kept; it dies while web is replaced.
    let db: Vec<u32> =
        instance_processes(&server.local_dir()).into_iter().filter(|(_, s)| s == "db").map(|(p, _)| p).collect();
    std::process::Command::new("kill").args(["-9", &db[0].to_string()]).status().unwrap();
    let out = server.run(&["run", "watch", &id]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("final probe: NOT healthy as the run ends: db"), "{}", out.stdout);
    let run = server.run(&["--output", "json", "run", "show", &id]).ok().json();
    assert_eq!(run["state"], "failed", "{run}");
    let actions: Vec<&str> =
        run["services"].as_array().unwrap().iter().map(|s| s["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["keep", "replace"], "{run}");
    assert_eq!(run["final_probe"]["healthy"], 1, "{run}");
    let db = &run["services"][0];
    assert_eq!(db["state"], "failed", "{run}");
    assert!(db["error"].as_str().unwrap().starts_with("not healthy when the run ended: instance db-"), "{run}");
}

/// A proposal waits `[engine] proposal_timeout` for its approval: after
/// that, approving it is refused, saying so, and it ends cancelled.
#[test]
fn an_unapproved_proposal_expires() {
    let server = Server::with_config("[engine]\nproposal_timeout = \"2s\"\n");
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    let id = server.run(&["recover", "shop", "--yes", "--detach", "--propose"]).ok().stdout.trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let out = server.run(&["run", "approve", &id]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("expired unapproved (proposal_timeout 2.0s); propose the recovery again"), "{out:?}");
    let run = server.run(&["--output", "json", "run", "show", &id]).ok().json();
    assert_eq!(run["state"], "cancelled", "{run}");
    assert!(instance_processes(&server.local_dir()).is_empty(), "nothing was launched");
}

/// `recover --propose` records a run that launches nothing and holds no
/// lease until the whole run is approved. Approved, it plans again against
/// what runs then: a service killed while the proposal waited is relaunched,
/// not "kept", and the run ends with every service probed answering. A
/// cancelled proposal launches nothing at all.
#[test]
fn a_proposed_run_plans_again_when_approved_and_relaunches_what_died() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    assert!(region.answers("db") && region.answers("web"));
    let out = server.run(&["recover", "shop", "--yes", "--detach", "--propose"]).ok();
    let id = out.stdout.trim().to_string();
    assert!(id.starts_with("r-") && !id.contains(' ') && out.stdout.lines().count() == 1, "only the ID: {out:?}");
    assert!(
        out.stderr.contains(&format!("nothing launches until it is approved with: lifeboat run approve {id}")),
        "{out:?}"
    );
    let shown = server.run(&["run", "show", &id]).ok().stdout;
    assert!(
        shown.contains(&format!("proposed: nothing launches until approved: lifeboat run approve {id}")),
        "{shown}"
    );
    assert!(shown.contains("unapproved, it expires at "), "{shown}");
    let proposed = server.run(&["--output", "json", "run", "show", &id]).ok().json();
    let actions: Vec<&str> =
        proposed["services"].as_array().unwrap().iter().map(|s| s["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["keep", "keep"], "{proposed}");
    // The proposal holds no lease: the region plans as free.
    let plan = server.run(&["plan", "shop"]).ok().stdout;
    assert!(plan.contains("region local-1 is free"), "{plan}");

    // db dies while the proposal waits.
    let db: Vec<u32> =
        instance_processes(&server.local_dir()).into_iter().filter(|(_, s)| s == "db").map(|(p, _)| p).collect();
    assert_eq!(db.len(), 1);
    std::process::Command::new("kill").args(["-9", &db[0].to_string()]).status().unwrap();
    common::wait_until(std::time::Duration::from_secs(10), "db to be down", || !region.answers("db"));

    let out = server.run(&["run", "approve", &id, "db"]);
    assert_eq!(out.code, 1, "db has no approval gate: {out:?}");
    server.run(&["run", "approve", &id]).ok();
    let out = server.run(&["run", "approve", &id]);
    assert!(out.code == 1 && out.stderr.contains("is already approved (by tester"), "{out:?}");
    let watched = server.run(&["run", "watch", &id]).ok().stdout;
    assert!(
        watched.contains("planned again at approval against what runs now: db: keep -> create (not running)"),
        "{watched}"
    );
    assert!(watched.contains("final probe: all 2 services answer their health checks"), "{watched}");
    assert!(region.answers("db") && region.answers("web"));
    let run = server.run(&["--output", "json", "run", "show", &id]).ok().json();
    assert_eq!((run["state"].as_str(), run["awaiting_approval"].as_bool()), (Some("succeeded"), Some(false)));
    assert!(run["approved_by"].as_str().unwrap().starts_with("tester"), "{run}");
    assert_eq!(run["replans"][0]["changes"][0], "db: keep -> create (not running)", "{run}");
    assert_eq!(run["final_probe"]["healthy"], 2, "{run}");
    let db = run["services"].as_array().unwrap().iter().find(|s| s["name"] == "db").unwrap().clone();
    assert_eq!((db["action"].as_str(), db["state"].as_str()), (Some("create"), Some("healthy")), "{run}");
    let shown = server.run(&["run", "show", &id]).ok().stdout;
    assert!(
        shown.contains("planned again at approval against what runs now:\n    db: keep -> create (not running)"),
        "{shown}"
    );
    // Its report measures the recovery against the manifest's objective,
    // from its approval: the wait for it is not recovery time.
    let report = server.run(&["run", "report", &id, "--json"]).ok().json();
    assert_eq!(report["rto_objective_seconds"], 60.0, "{report}");
    let took = run["elapsed_ms"].as_f64().unwrap() / 1000.0;
    assert!(report["rto_seconds"].as_f64().unwrap() < took, "{report} vs {took}s since the proposal");
    let text = server.run(&["run", "report", &id]).ok().stdout;
    assert!(text.contains("(objective 60s)"), "{text}");

    // A proposal that is cancelled launches nothing; a run not proposed cannot be approved whole.
    let before = instance_processes(&server.local_dir()).len();
    let id =
        server.run(&["recover", "shop", "--yes", "--detach", "--propose", "--force"]).ok().stdout.trim().to_string();
    server.run(&["run", "cancel", &id]).ok();
    let out = server.run(&["run", "watch", &id]);
    assert_eq!(out.code, 1, "{out:?}");
    let run = server.run(&["--output", "json", "run", "show", &id]).ok().json();
    assert_eq!(run["state"], "cancelled");
    assert!(run["services"].as_array().unwrap().iter().all(|s| s["instances"].as_array().unwrap().is_empty()), "{run}");
    assert_eq!(instance_processes(&server.local_dir()).len(), before);
    let plain = server.run(&["recover", "shop", "--yes", "--detach", "--force"]).ok().stdout.trim().to_string();
    server.run(&["run", "watch", &plain]).ok();
    let out = server.run(&["run", "approve", &plain]);
    assert_eq!(out.code, 1, "{out:?}");
}

/// Who acted is never `unknown`: without `$USER` (cron, a container) the
/// name comes from the process's user ID; `--author` names someone else.
#[test]
fn the_actor_is_named_without_user_and_by_author() {
    let server = Server::start(Backend::Fs);
    let file = common::manifests().join("good/shop.toml");
    let bare = std::process::Command::new(common::BIN)
        .args(["--server", &server.url, "--output", "json", "snapshot", "push", file.to_str().unwrap()])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(bare.status.success(), "{bare:?}");
    let pushed: serde_json::Value = serde_json::from_slice(&bare.stdout).unwrap();
    let author = pushed["author"].as_str().unwrap();
    assert!(!author.starts_with("unknown"), "{author}");
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let name = if uid == 0 { "root".to_string() } else { author.split(['@', ' ']).next().unwrap().to_string() };
    assert!(author.starts_with(&name), "{author}");
    let by =
        server.run(&["--author", "alice", "--output", "json", "snapshot", "push", file.to_str().unwrap()]).ok().json();
    assert!(by["author"].as_str().unwrap().starts_with("alice"), "{by}");
}

/// What instances print reaches the operator's terminal escaped: a failed
/// service whose output holds terminal escapes (a title change, a screen
/// clear) is reported by `recover` and `run show` with them made visible.
#[test]
fn instance_output_cannot_drive_the_operators_terminal() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let dir = server.dir.as_ref().unwrap().path();
    let script = dir.join("hostile.sh");
    std::fs::write(&script, "#!/bin/sh\nprintf 'boom \\033]0;pwned-title\\007\\033[2J\\n'\nexit 1\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let image = server.run(&["image", "import", script.to_str().unwrap()]).ok().stdout.trim().to_string();
    let file = dir.join("hostile.toml");
    std::fs::write(
        &file,
        format!(
            "environment = \"hostile\"\nregion = \"local-1\"\n[services.api]\nimage = \"{image}\"\nattempts = 1\n\
             health = {{ http = \"/healthz\", interval = \"100ms\", timeout = \"2s\" }}\n"
        ),
    )
    .unwrap();
    server.run(&["snapshot", "push", file.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", "hostile", "1", "--reason", "t"]).ok();
    let out = server.run(&["recover", "hostile", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    let shown = server.run(&["run", "show", "--latest", "hostile"]);
    for text in [&out.stdout, &shown.stdout] {
        assert!(text.contains("boom"), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "raw escapes reached the terminal: {text:?}");
        assert!(text.contains("\\u{1b}]0;pwned-title"), "{text}");
    }
}

/// The router outlives the server and serves the stable addresses: it
/// gets none of the server's environment (cloud credentials, tokens).
#[test]
fn the_router_inherits_no_secret_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let canary = ("AWS_SECRET_ACCESS_KEY", "canary-secret-value".to_string());
    let mut server = Server::launch(&["--store", &p("store"), "--local-dir", &p("local")], &[canary]);
    server.dir = Some(dir);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let routers = common::routers(&server.local_dir());
    assert!(!routers.is_empty(), "a router serves the stable address");
    for (pid, _) in routers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(!environ.contains("canary-secret-value"), "{environ}");
        assert!(!environ.contains("AWS_SECRET_ACCESS_KEY"), "{environ}");
    }
}
