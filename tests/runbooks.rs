//! Every runbook works when pasted: its sh blocks, up to "When things go
//! wrong", run top to bottom as one shell script against a real server,
//! with only the variables the runbook itself sets. The one edit a reader
//! makes is pointing `LIFEBOAT_SERVER` at their server.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Instances, Out, Region, Server, Svc, instance_processes};

const SERVER_LINE: &str = "export LIFEBOAT_SERVER=http://127.0.0.1:7700";

/// The runbook's sh blocks up to "When things go wrong", as one script.
/// `NAME.md#part2` is its "# Part 2" (a runbook whose second part is done
/// later, as a fail-back is); `NAME.md` stops before it. A trailing
/// `<WORDS` stops before the first command line that contains WORDS, a
/// trailing `>WORDS` starts there (after the lines that set variables), so
/// a test can look at the world halfway through.
fn script(runbook: &str) -> String {
    let (runbook, until) = match runbook.split_once('<') {
        Some((r, w)) => (r, Some(w)),
        None => (runbook, None),
    };
    let (runbook, from) = match runbook.split_once('>') {
        Some((r, w)) => (r, Some(w)),
        None => (runbook, None),
    };
    let (file, part2) = match runbook.split_once('#') {
        Some((f, _)) => (f, true),
        None => (runbook, false),
    };
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks").join(file)).unwrap();
    let text = match (text.split_once("\n# Part 2"), part2) {
        (Some((_, second)), true) => second.to_string(),
        (Some((first, _)), false) => first.to_string(),
        (None, _) => text,
    };
    let text = text.split("## When things go wrong").next().unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh {
            out.push(line.to_string());
        }
    }
    assert!(out.iter().filter(|l| l.starts_with("lifeboat ") || l.contains("$(lifeboat ")).count() >= 5, "{runbook}");
    assert_eq!(out.first().map(String::as_str), Some(SERVER_LINE), "{runbook} must start by pointing at the server");
    let at = |out: &[String], words: &str| {
        out.iter().position(|l| l.contains(words)).unwrap_or_else(|| panic!("{words:?} in {runbook}"))
    };
    if let Some(words) = until {
        let end = at(&out, words);
        out.truncate(end);
    }
    if let Some(words) = from {
        let variables = out.iter().position(|l| l.contains("lifeboat ")).unwrap_or(0);
        let start = at(&out, words);
        out = out[..variables].iter().chain(&out[start..]).cloned().collect();
    }
    out.join("\n")
}

/// Runs the script as `sh -e -x` in `cwd`, with a clean environment: no
/// variable the runbook does not set itself.
fn paste(server: &Server, runbook: &str, cwd: &Path) -> Out {
    paste_to(&server.url, runbook, cwd)
}

fn paste_to(url: &str, runbook: &str, cwd: &Path) -> Out {
    paste_as(url, runbook, cwd, true)
}

/// As pasted into an interactive shell, which goes on after a command
/// fails (no `set -e`).
fn paste_interactively(server: &Server, runbook: &str, cwd: &Path) -> Out {
    paste_as(&server.url, runbook, cwd, false)
}

fn paste_as(url: &str, runbook: &str, cwd: &Path, errexit: bool) -> Out {
    paste_script(url, runbook, cwd, errexit, &[])
}

fn paste_script(url: &str, runbook: &str, cwd: &Path, errexit: bool, edits: &[(&str, &str)]) -> Out {
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let mut script = script(runbook).replacen(SERVER_LINE, &format!("export LIFEBOAT_SERVER={url}"), 1);
    for (from, to) in edits {
        assert!(script.contains(from), "{runbook} has no {from:?}");
        script = script.replacen(from, to, 1);
    }
    let flags: &[&str] = if errexit { &["-e", "-x", "-c"] } else { &["-x", "-c"] };
    let out = Command::new("sh")
        .args(flags)
        .arg(&script)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", cwd)
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn follow_runbook(server: &Server, runbook: &str, cwd: &Path) -> Out {
    let out = paste(server, runbook, cwd);
    assert_eq!(out.code, 0, "{runbook} failed when pasted:\n{}\n{}", out.stdout, out.stderr);
    out
}

fn svcs() -> [Svc<'static>; 4] {
    [Svc::new("db", &[]), Svc::new("cache", &["db"]), Svc::new("api", &["db", "cache"]), Svc::new("web", &["api"])]
}

fn kill_region(server: &Server) {
    for (pid, _) in instance_processes(&server.local_dir()) {
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    }
}

fn latest_run(server: &Server) -> serde_json::Value {
    let runs = server.run(&["--output", "json", "run", "list", "--limit", "1"]).ok().json();
    runs[0].clone()
}

/// Release 2 changes the api's settings; it is pushed, promoted and deployed.
fn deploy_release_2(server: &Server, region: &Region) {
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let v2 = region.manifest.with_file_name("shop-v2.toml");
    std::fs::write(&v2, text.replacen("\"--name\", \"api\"", "\"--name\", \"api\", \"--boot-delay\", \"50ms\"", 1))
        .unwrap();
    server.run(&["snapshot", "push", v2.to_str().unwrap(), "-m", "release 2"]).ok();
    server.run(&["snapshot", "promote", "shop", "2", "--reason", "release 2"]).ok();
    server.run(&["recover", "shop", "--yes"]).ok();
}

#[test]
fn region_recovery_runbook() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    kill_region(&server);
    assert!(!region.answers("web"));
    let out = follow_runbook(&server, "region-recovery.md", server.dir.as_ref().unwrap().path());
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the runbook");
    }
    let run = latest_run(&server);
    assert_eq!(run["state"], "succeeded");
    assert!(out.stdout.contains(run["id"].as_str().unwrap()), "run show reported the run: {}", out.stdout);
    assert!(out.stdout.contains("sync      SYNCED: every service runs known-good, healthy"), "{}", out.stdout);
    let plan = server.run(&["plan", "shop"]).ok().stdout;
    assert!(plan.contains("4 to keep"), "{plan}");

    // The next outage, the runbook pasted into an interactive shell (no `set -e`).
    kill_region(&server);
    let out = paste_interactively(&server, "region-recovery.md", server.dir.as_ref().unwrap().path());
    assert_eq!(out.code, 0, "{out:?}");
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the interactive paste");
    }
}

#[test]
fn rollback_runbook() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    deploy_release_2(&server, &region);

    follow_runbook(&server, "rollback.md", server.dir.as_ref().unwrap().path());
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 1);
    let bad = server.run(&["--output", "json", "snapshot", "show", "shop", "2"]).ok().json();
    assert_eq!(bad["rejection"]["reason"], "rolled back");
    let run = latest_run(&server);
    assert_eq!(run["snapshot_version"], 1);
    let actions: Vec<&str> =
        run["services"].as_array().unwrap().iter().map(|s| s["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["keep", "keep", "replace", "keep"], "only the api differs between 1 and 2");
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the rollback");
    }

    // Release 3 goes bad too; this time the runbook (edited as a reader
    // would: GOOD=1 BAD=3) is pasted into an interactive shell.
    let v3 = region.manifest.with_file_name("shop-v3.toml");
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    std::fs::write(&v3, text.replacen("\"--name\", \"api\"", "\"--name\", \"api\", \"--boot-delay\", \"60ms\"", 1))
        .unwrap();
    server.run(&["snapshot", "push", v3.to_str().unwrap(), "-m", "release 3"]).ok();
    server.run(&["snapshot", "promote", "shop", "3", "--reason", "release 3"]).ok();
    server.run(&["recover", "shop", "--yes"]).ok();
    let out = paste_edited(&server, "rollback.md", cwd_of(&server), &[("BAD=2", "BAD=3")], false);
    assert_eq!(out.code, 0, "{out:?}");
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 1);
    let bad = server.run(&["--output", "json", "snapshot", "show", "shop", "3"]).ok().json();
    assert_eq!(bad["rejection"]["reason"], "rolled back");
    assert_eq!(latest_run(&server)["snapshot_version"], 1);
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the second rollback");
    }
}

/// `lifeboat ARGS` at a terminal (a pty made by `script`), answering its
/// question with `answer`: what the terminal showed.
fn in_a_terminal(server: &Server, args: &str, answer: &str) -> String {
    use std::io::Write;
    let cmd = format!("{} --server {} {args}", common::BIN, server.url);
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("LIFEBOAT_ACTOR", "tester")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils) runs");
    child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn cwd_of(server: &Server) -> &Path {
    server.dir.as_ref().unwrap().path()
}

/// Pasted after the reader's edits (`from` -> `to` in the script).
fn paste_edited(server: &Server, runbook: &str, cwd: &Path, edits: &[(&str, &str)], errexit: bool) -> Out {
    paste_script(&server.url, runbook, cwd, errexit, edits)
}

/// The digest-error path of region-recovery: known-good is corrupt in the
/// store, so step 2 refuses it, and the rollback runbook, pasted as written,
/// recovers the region from the earlier snapshot.
#[test]
fn a_corrupt_known_good_is_refused_and_the_rollback_recovers() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    deploy_release_2(&server, &region);
    // Version 2 is tampered with in the store, then the region fails.
    let object = Path::new(&server.store).join("environments/shop/snapshots/0000000002.json");
    let text = std::fs::read_to_string(&object).unwrap();
    let mut perms = std::fs::metadata(&object).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&object, perms).unwrap();
    std::fs::write(&object, text.replacen("release 2", "release 3", 1)).unwrap();
    kill_region(&server);

    let cwd = server.dir.as_ref().unwrap().path();
    let out = paste(&server, "region-recovery.md", cwd);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("+ lifeboat snapshot show shop known-good\nlifeboat: snapshot 2 of shop (object environments/shop/snapshots/0000000002.json"),
        "step 2 is where it stops, naming the object: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("+ lifeboat plan"), "nothing after step 2 ran: {}", out.stderr);
    // Pasted into an interactive shell, every later step runs and refuses
    // the corrupt snapshot too: nothing is deployed from it.
    let runs_before = server.run(&["--output", "json", "run", "list"]).ok().json().as_array().unwrap().len();
    let out = paste_interactively(&server, "region-recovery.md", cwd);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("+ lifeboat recover shop"), "the shell went on: {}", out.stderr);
    let runs_after = server.run(&["--output", "json", "run", "list"]).ok().json().as_array().unwrap().len();
    assert_eq!(runs_after, runs_before, "no run started from a corrupt snapshot: {}", out.stderr);
    assert!(!region.answers("web"), "nothing was recovered from the corrupt snapshot");

    let out = follow_runbook(&server, "rollback.md", cwd);
    if std::env::var_os("SHOW_RUNBOOK").is_some() {
        eprintln!("{}\n{}", out.stdout, out.stderr);
    }
    assert!(out.stdout.contains("CORRUPT"), "the list marks it: {}", out.stdout);
    assert!(
        out.stdout.contains("version 2 is CORRUPT (object environments/shop/snapshots/0000000002.json"),
        "{}",
        out.stdout
    );
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the rollback");
    }
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 1);
    let list = server.run(&["--output", "json", "snapshot", "list", "shop"]).ok().json();
    assert_eq!(list[1]["corruption"]["key"], "environments/shop/snapshots/0000000002.json");
    assert_eq!(list[1]["rejection"]["reason"], "rolled back", "a corrupt snapshot can be rejected");
}

#[test]
fn snapshot_promotion_runbook() {
    let server = Server::start(Backend::Fs);
    let region = Region::setup(&server, "shop", &svcs());
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    std::fs::write(&region.manifest, text.replacen("rto_objective = \"1m\"", "rto_objective = \"2m\"", 1)).unwrap();
    let out = follow_runbook(&server, "snapshot-promotion.md", region.manifest.parent().unwrap());
    assert!(out.stderr.contains("--expect 1"), "{}", out.stderr);
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 2);
    assert_eq!(kg["labels"]["ticket"], "CHG-1234");

    // Pasted into an interactive shell with a manifest that does not
    // validate, every step fails and known-good stays: nothing promotes
    // whatever `latest` happens to be.
    let v3 = region.manifest.with_file_name("v3.toml");
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    std::fs::write(&v3, text.replacen("rto_objective = \"2m\"", "rto_objective = \"3m\"", 1)).unwrap();
    server.run(&["snapshot", "push", v3.to_str().unwrap()]).ok(); // latest: pushed by someone else, unreviewed
    std::fs::write(&region.manifest, "this is not TOML = = =").unwrap();
    let out = paste_interactively(&server, "snapshot-promotion.md", region.manifest.parent().unwrap());
    assert!(out.stderr.contains("lifeboat: name the snapshot to promote, or --from-drill RUN_ID"), "{}", out.stderr);
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 2, "{}", out.stderr);
}

/// The AWS failover runbook, pasted as written, moves a 6-service
/// environment from eu-west-1 to eu-central-1 on the EC2-API test server:
/// every service runs its eu-central-1 AMI there, sits in that region's
/// target group, and the DNS record points at it.
#[tokio::test(flavor = "multi_thread")]
async fn region_failover_aws_runbook() {
    let w = common::ec2::World::create_named("shop").await;
    let server = common::ec2::ec2_server();
    common::ec2::push(&server, "shop.json", &w.manifest(|_, _| {}));
    server.run(&["snapshot", "promote", "shop", "latest", "--reason", "t"]).ok();
    server.run(&["recover", "shop", "--yes"]).ok();

    let cwd = server.dir.as_ref().unwrap().path().to_path_buf();
    let out = tokio::task::spawn_blocking({
        let server_url = server.url.clone();
        move || paste_to(&server_url, "region-failover-aws.md", &cwd)
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "the runbook failed when pasted:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("shop in eu-central-1"), "{}", out.stdout);
    let mut central_web_ips = Vec::new();
    for (s, _) in common::ec2::SERVICES {
        let found = w.instances("eu-central-1", s).await;
        let ami = &w.amis[&("eu-central-1".to_string(), s.to_string())];
        assert!(!found.is_empty() && found.iter().all(|i| i.image_id() == Some(ami.as_str())), "{s}");
        let tg = &w.target_groups[&("eu-central-1".to_string(), s.to_string())];
        assert_eq!(w.central.targets(tg).await.len(), found.len(), "{s}");
        if s == "web" {
            central_web_ips = found.iter().filter_map(|i| i.private_ip_address().map(str::to_string)).collect();
        }
    }
    central_web_ips.sort();
    assert_eq!(lifeboat::testkit::ec2::a_record(&w.zone, &w.dns_name).await, central_web_ips);
    // After the failover, eu-west-1 sees its traffic elsewhere: a plan there
    // moves it back (a change), its status says so.
    let west_before = w.all_ids("eu-west-1").await;
    let plan = server.run(&["plan", "shop", "--region", "eu-west-1", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "moving traffic back is a change: {plan:?}");
    assert!(plan.stdout.contains("traffic points elsewhere: dns web.shop.example.com ->"), "{}", plan.stdout);
    let status = server.run(&["--output", "json", "status", "shop"]).ok().json();
    let west = status.as_array().unwrap().iter().find(|e| e["region"] == "eu-west-1").unwrap().clone();
    let dns =
        west["traffic"].as_array().unwrap().iter().find(|t| t["via"].as_str().unwrap().starts_with("dns ")).unwrap();
    assert_eq!(dns["here"], false, "{west}");

    // Part 2, pasted later into an interactive shell (no `set -e`): fail
    // back; the world is checked before the decommission is pasted.
    let paste_part = |part: &'static str| {
        let (url, cwd) = (server.url.clone(), server.dir.as_ref().unwrap().path().to_path_buf());
        tokio::task::spawn_blocking(move || paste_as(&url, part, &cwd, false))
    };
    let out = paste_part("region-failover-aws.md#part2<lifeboat decommission").await.unwrap();
    assert_eq!(out.code, 0, "the fail-back failed when pasted:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("web: dns web.shop.example.com -> "), "the plan shows the traffic: {}", out.stdout);
    // The DNS record points at eu-west-1's web instances again, which were not relaunched.
    assert_eq!(w.all_ids("eu-west-1").await, west_before, "fail-back moved traffic, it launched nothing");
    let mut west_web_ips: Vec<String> = w
        .instances("eu-west-1", "web")
        .await
        .iter()
        .filter_map(|i| i.private_ip_address().map(str::to_string))
        .collect();
    west_web_ips.sort();
    assert_eq!(lifeboat::testkit::ec2::a_record(&w.zone, &w.dns_name).await, west_web_ips);
    for (s, _) in common::ec2::SERVICES {
        let west_tg = &w.target_groups[&("eu-west-1".to_string(), s.to_string())];
        let west_ids = w.instances("eu-west-1", s).await;
        assert_eq!(
            w.west.targets(west_tg).await.len(),
            west_ids.len(),
            "{s}: eu-west-1's target group after fail-back"
        );
        // eu-central-1 still runs, in its own target groups, until it is decommissioned.
        let central_tg = &w.target_groups[&("eu-central-1".to_string(), s.to_string())];
        assert!(!w.central.targets(central_tg).await.is_empty(), "{s}: eu-central-1 is not touched by the fail-back");
    }
    let status = server.run(&["--output", "json", "status", "shop"]).ok().json();
    let west = status.as_array().unwrap().iter().find(|e| e["region"] == "eu-west-1").unwrap().clone();
    let dns =
        west["traffic"].as_array().unwrap().iter().find(|t| t["via"].as_str().unwrap().starts_with("dns ")).unwrap();
    assert_eq!(dns["here"], true, "traffic is back in eu-west-1: {west}");

    let out = paste_part("region-failover-aws.md#part2>lifeboat decommission").await.unwrap();
    assert_eq!(out.code, 0, "the decommission failed when pasted:\n{}\n{}", out.stdout, out.stderr);
    assert_eq!(lifeboat::testkit::ec2::a_record(&w.zone, &w.dns_name).await, west_web_ips, "DNS stays on eu-west-1");
    for (s, _) in common::ec2::SERVICES {
        let west_ids: Vec<String> =
            w.instances("eu-west-1", s).await.iter().filter_map(|i| i.instance_id().map(str::to_string)).collect();
        let west_tg = &w.target_groups[&("eu-west-1".to_string(), s.to_string())];
        let mut members = w.west.targets(west_tg).await;
        members.sort();
        let mut want = west_ids.clone();
        want.sort();
        assert_eq!(members, want, "{s}: eu-west-1's target group holds its instances");
        let central_tg = &w.target_groups[&("eu-central-1".to_string(), s.to_string())];
        assert!(w.central.targets(central_tg).await.is_empty(), "{s}: eu-central-1's target group is empty");
    }
    assert!(w.all_ids("eu-central-1").await.is_empty(), "eu-central-1 has no instance left");
    // With everything kept, the plan checks no AMI, and shows AMI IDs whole.
    let plan = server.run(&["plan", "shop", "--region", "eu-west-1"]).ok().stdout;
    assert!(plan.contains("ec2-images          no service is launched: no AMI to check"), "{plan}");
    let ami = &w.amis[&("eu-west-1".to_string(), "web".to_string())];
    assert!(plan.contains(&format!(" {ami} ")), "{ami} whole in {plan}");
    let decommission = latest_run(&server);
    assert_eq!(
        (decommission["kind"].as_str(), decommission["state"].as_str()),
        (Some("decommission"), Some("succeeded"))
    );
    let audit = server.run(&["--output", "json", "audit", "list", "--action", "recovery.decommission"]).ok().json();
    assert!(audit[0]["target"].as_str().unwrap().contains(" in eu-central-1/"), "{audit}");
}

/// Decommissioning a region that still serves traffic is refused, naming
/// it; `--force` removes it all the same.
#[test]
fn decommission_is_refused_while_the_region_serves_traffic() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let out = server.run(&["decommission", "shop", "--region", "local-1", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("local-1 still serves traffic: ") && out.stderr.contains("db (address 127.0.0.1:"),
        "{out:?}"
    );
    assert!(out.stderr.contains("fail over (or back) first, or decommission with --force"), "{out:?}");
    assert!(region.answers("web"), "nothing was touched");
    let plan = server.run(&["decommission", "shop", "--region", "local-1", "--dry-run", "--force"]).ok().stdout;
    assert!(plan.contains("2 to delete"), "{plan}");
    // Asked at a terminal, anything but yes starts nothing.
    let said = in_a_terminal(&server, "decommission shop --region local-1 --force", "n\n");
    assert!(said.contains("Plan: decommission shop in local-1 (every instance of it removed)"), "{said}");
    assert!(said.contains("Decommission shop in local-1 (remove every instance listed) now? [y/N]"), "{said}");
    assert!(said.contains("nothing started") && region.answers("web"), "{said}");
    let said = in_a_terminal(&server, "decommission shop --region local-1 --force", "y\n");
    assert!(said.contains("Decommission shop in local-1") && !said.contains("nothing started"), "{said}");
    assert!(!region.answers("web") && !region.answers("db"));
    assert!(instance_processes(&server.local_dir()).is_empty());
    let status = server.run(&["status", "shop"]).ok().stdout;
    assert!(status.contains("deployed  no run has succeeded here"), "{status}");
}

#[test]
fn pager_recovery_runbook() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        "[webhooks.pagerduty]\nsecrets = [\"pd-runbook-secret\"]\n\n[[webhooks.rules]]\nname = \"shop-pages\"\n\
         source = \"pagerduty\"\nmatch = ['service_id=\"PSHOP01\"']\nenvironment = \"shop\"\n",
    )
    .unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let mut server =
        Server::launch(&["--config", &p("lifeboat.toml"), "--store", &p("store"), "--local-dir", &p("local")], &[]);
    server.dir = Some(dir);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    kill_region(&server);

    // The page: PagerDuty delivers the incident; the rule proposes a run.
    let body = common::webhook::incident("incident.triggered", "Q0PAGE", "PSHOP01");
    let (status, reply) = common::webhook::pagerduty(&server, "pd-runbook-secret", &body);
    assert_eq!(status, 202, "{reply}");
    assert!(reply.starts_with("proposed run"), "{reply}");
    assert!(!region.answers("web"), "nothing launches before the approval");

    let out = follow_runbook(&server, "pager-recovery.md", server.dir.as_ref().unwrap().path());
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the runbook");
    }
    let run = latest_run(&server);
    assert_eq!(run["state"], "succeeded");
    assert!(run["created_by"].as_str().unwrap().starts_with("webhook:pagerduty (rule shop-pages"), "{run}");
    assert!(out.stdout.contains("sync      SYNCED: every service runs known-good, healthy"), "{}", out.stdout);
    assert!(out.stdout.contains("webhook.pagerduty"), "the audit shows the decision: {}", out.stdout);

    // The next page comes while every service still answers (its proposal
    // keeps them all); the region dies before anyone approves. Approved
    // with the runbook pasted into an interactive shell, the run plans
    // again and relaunches everything.
    let body = common::webhook::incident("incident.triggered", "Q0PAGE2", "PSHOP01");
    let (status, reply) = common::webhook::pagerduty(&server, "pd-runbook-secret", &body);
    assert_eq!(status, 202, "{reply}");
    let proposed = latest_run(&server);
    assert!(proposed["services"].as_array().unwrap().iter().all(|s| s["action"] == "keep"), "{proposed}");
    kill_region(&server);
    let out = paste_interactively(&server, "pager-recovery.md", server.dir.as_ref().unwrap().path());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("planned again at approval against what runs now"), "{}", out.stdout);
    let run = latest_run(&server);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["final_probe"]["healthy"], 4, "{run}");
    for s in ["db", "cache", "api", "web"] {
        assert!(region.answers(s), "{s} does not answer after the interactive paste");
    }
}

#[test]
fn dr_drill_runbook() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &svcs());
    server.run(&["recover", "shop", "--yes"]).ok();
    let production: Vec<u32> = instance_processes(&server.local_dir()).iter().map(|(p, _)| *p).collect();
    // Release 2 is pushed but not yet known-good: the drill proves it first.
    deploy_release_2_push_only(&server, &region);
    let cwd = server.dir.as_ref().unwrap().path();
    let out = follow_runbook(&server, "dr-drill.md", cwd);
    let drills = server.run(&["--output", "json", "drill", "list", "--environment", "shop"]).ok().json();
    let d = &drills[0];
    assert_eq!(d["verdict"], "passed", "{d}");
    let id = d["id"].as_str().unwrap();
    assert!(cwd.join(format!("drill-{id}.html")).exists(), "the report was written where the runbook says");
    assert!(out.stdout.contains("none left"), "{}", out.stdout);
    assert!(out.stdout.contains("nothing to sweep"), "{}", out.stdout);
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 2, "the drilled snapshot was promoted");
    let schedules = server.run(&["--output", "json", "drill", "schedule", "list"]).ok().json();
    assert_eq!(schedules[0]["timezone"], "Europe/Berlin");
    assert_eq!(schedules[0]["promote_on_pass"], true);
    // Production never noticed.
    let now: Vec<u32> = instance_processes(&server.local_dir()).iter().map(|(p, _)| *p).collect();
    assert_eq!(now, production);
}

/// The drill runbook pasted into an interactive shell (no `set -e`) for a
/// release that fails its drill: `run watch` exits 1, the shell goes on,
/// and the promotion step refuses the failed drill: known-good stays. Pasted
/// again, it adds no second schedule.
#[test]
fn dr_drill_runbook_pasted_after_a_failed_drill_promotes_nothing() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    let broken = region.broken_variant("web");
    server.run(&["snapshot", "push", broken.to_str().unwrap(), "-m", "release 2"]).ok();
    let cwd = server.dir.as_ref().unwrap().path();
    for _ in 0..2 {
        let out = paste_interactively(&server, "dr-drill.md", cwd);
        assert!(out.stderr.contains("did not pass (failed: web failed"), "{}", out.stderr);
        let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
        assert_eq!(kg["version"], 1, "the failed drill's snapshot was not promoted: {}", out.stderr);
    }
    let schedules = server.run(&["--output", "json", "drill", "schedule", "list"]).ok().json();
    assert_eq!(schedules.as_array().unwrap().len(), 1, "{schedules}");
}

/// Release 2 pushed as `latest`, not promoted, not deployed.
fn deploy_release_2_push_only(server: &Server, region: &Region) {
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let next = region.manifest.with_file_name("release-2.toml");
    std::fs::write(&next, text.replace("\"--name\", \"api\"", "\"--name\", \"api\", \"--boot-delay\", \"100ms\""))
        .unwrap();
    server.run(&["snapshot", "push", next.to_str().unwrap(), "-m", "release 2"]).ok();
}
