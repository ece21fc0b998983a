//! The golden store: a store written by Lifeboat 0.1.0, committed under
//! `tests/fixtures/golden/v0.1.0/`, read with every command by every later
//! version. A change that can no longer read what an earlier Lifeboat wrote
//! fails here. A later format change adds a fixture beside it; an old one is
//! never edited (`write_golden_store` writes one, on purpose only).
//!
//! What it holds: snapshots of the local and the ec2 provider, tags, a
//! rejection, known-good; a succeeded, a failed, a cancelled (proposal) and a
//! resumed recovery; a drill with its teardown record and report; a
//! schedule; a webhook claim and a processed event; audit records; an image.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Instances, Server, instance_processes};

const VERSION: &str = "v0.1.0";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden").join(VERSION)
}

/// A service any Debian host runs: Python's HTTP server on `$PORT`.
const SERVICE: &str = "#!/bin/sh\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n";

const WEBHOOKS: &str = "[webhooks.pagerduty]\nsecrets = [\"golden-secret\"]\n\n[[webhooks.rules]]\nname = \"shop-pages\"\n\
                        source = \"pagerduty\"\nmatch = ['service_id=\"PSHOP01\"']\nenvironment = \"shop\"\n\n\
                        [engine]\nlease_ttl = \"1s\"\nmax_clock_skew = \"50ms\"\n";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// A server on `store` with the golden configuration (webhooks, a short lease).
fn server_on(dir: &Path, store: &Path) -> Server {
    std::fs::write(dir.join("lifeboat.toml"), WEBHOOKS).unwrap();
    let p = |x: &Path| x.display().to_string();
    let (config, local) = (dir.join("lifeboat.toml"), dir.join("local"));
    Server::launch(&["--config", &p(&config), "--store", &p(store), "--local-dir", &p(&local)], &[])
}

fn manifest(image: &str, ports: &[u16], web_health: &str, extra: &str) -> String {
    format!(
        "environment = \"shop\"\nregion = \"local-1\"\nrto_objective = \"1m\"\n\
         [services.db]\nimage = \"{image}\"\nhealth = {{ http = \"/\", interval = \"100ms\", timeout = \"20s\" }}\n\
         launch = {{ listen = \"127.0.0.1:{}\" }}\n\
         [services.web]\nimage = \"{image}\"\ndepends_on = [\"db\"]\n\
         health = {{ {web_health}, interval = \"100ms\" }}\n\
         launch = {{ listen = \"127.0.0.1:{}\"{extra} }}\n",
        ports[0], ports[1]
    )
}

/// Writes the fixture (run on purpose: `cargo test --test golden -- --ignored`,
/// with `LIFEBOAT_WRITE_GOLDEN=1`, only for a new format).
#[test]
#[ignore]
fn write_golden_store() {
    if std::env::var_os("LIFEBOAT_WRITE_GOLDEN").is_none() {
        eprintln!("set LIFEBOAT_WRITE_GOLDEN=1 to write {}", fixture().display());
        return;
    }
    assert!(!fixture().exists(), "{} exists: an old fixture is never edited", fixture().display());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let _cleanup = Instances(dir.path().join("local"));
    let mut server = server_on(dir.path(), &store);
    let script = dir.path().join("service.sh");
    std::fs::write(&script, SERVICE).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let image = server.run(&["image", "import", script.to_str().unwrap()]).ok().stdout.trim().to_string();
    let ports = lifeboat::provider::local::pick_listen_ports(2).unwrap();
    let push = |server: &Server, name: &str, text: &str, message: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        server.run(&["snapshot", "push", path.to_str().unwrap(), "-m", message]).ok();
    };
    // v1: known-good, deployed (a succeeded run).
    let good = "http = \"/\", timeout = \"20s\"";
    push(&server, "v1.toml", &manifest(&image, &ports, good, ""), "release 1");
    server.run(&["snapshot", "promote", "shop", "1", "--reason", "golden"]).ok();
    server.run(&["snapshot", "tag", "shop", "1", "stable"]).ok();
    server.run(&["recover", "shop", "--yes"]).ok();
    // v2: a web that never gets healthy (a failed run), then rejected.
    let broken = "http = \"/nope\", timeout = \"2s\"";
    push(&server, "v2.toml", &manifest(&image, &ports, broken, ""), "release 2");
    let failed = server.run(&["recover", "shop", "--snapshot", "2", "--yes"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    server.run(&["snapshot", "reject", "shop", "2", "--reason", "web never starts"]).ok();
    // A proposal, cancelled.
    let proposal = server.run(&["recover", "shop", "--yes", "--detach", "--propose"]).ok().stdout.trim().to_string();
    server.run(&["run", "cancel", &proposal]).ok();
    // v3 (slower web): a run whose server is killed mid-run and resumed by the next one.
    push(&server, "v3.toml", &manifest(&image, &ports, good, ", env = { RELEASE = \"3\" }"), "release 3");
    server.run(&["snapshot", "promote", "shop", "3", "--reason", "release 3"]).ok();
    let resumed = server.run(&["recover", "shop", "--yes", "--detach"]).ok().stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(150));
    server.kill();
    server = server_on(dir.path(), &store);
    server.run(&["run", "watch", &resumed]).ok();
    // A drill, torn down, with its report; a schedule.
    server.run(&["drill", "run", "shop"]).ok();
    server.run(&["drill", "schedule", "add", "shop", "--cron", "0 3 * * SUN", "--timezone", "Europe/Berlin"]).ok();
    // A page: a claim, a processed event, a proposed run (cancelled).
    let body = common::webhook::incident("incident.triggered", "Q0GOLDEN", "PSHOP01");
    let (status, reply) = common::webhook::pagerduty(&server, "golden-secret", &body);
    assert_eq!(status, 202, "{reply}");
    let paged =
        server.run(&["run", "list", "--awaiting-approval", "-q", "--limit", "1"]).ok().stdout.trim().to_string();
    server.run(&["run", "cancel", &paged]).ok();
    // An ec2 environment's snapshot (pushed only).
    let ec2 =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/good/ec2-regions.json"))
            .unwrap();
    let path = dir.path().join("cloud.json");
    std::fs::write(&path, ec2).unwrap();
    server.run(&["snapshot", "push", path.to_str().unwrap(), "-m", "cloud"]).ok();
    drop(server);
    for (pid, _) in instance_processes(&dir.path().join("local")) {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    copy_dir(&store, &fixture());
}

/// Every command reads the golden store, and a recovery from it runs.
#[test]
fn the_golden_store_reads_with_every_command() {
    assert!(fixture().join("store-id").exists(), "the fixture {} is committed", fixture().display());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(&fixture(), &store);
    let local = dir.path().join("local");
    let _cleanup = Instances(local.clone());
    let server = server_on(dir.path(), &store);
    let ok = |args: &[&str]| server.run(args).ok();

    let list = ok(&["--output", "json", "snapshot", "list", "shop"]).json();
    let versions: Vec<u64> = list.as_array().unwrap().iter().map(|s| s["version"].as_u64().unwrap()).collect();
    assert_eq!(versions.len(), 3, "{list}");
    assert!(list.as_array().unwrap().iter().all(|s| s["corruption"].is_null()), "{list}");
    let rejected = ok(&["--output", "json", "snapshot", "show", "shop", "2"]).json();
    assert_eq!(rejected["rejection"]["reason"], "web never starts", "{rejected}");
    ok(&["snapshot", "show", "shop", "stable"]);
    ok(&["snapshot", "show", "shop", "known-good"]);
    ok(&["snapshot", "diff", "shop", "1", "3"]);
    ok(&["snapshot", "list", "web"]);
    ok(&["snapshot", "show", "web", "latest"]);
    ok(&["image", "list"]);
    ok(&["audit", "list"]);
    ok(&["drill", "schedule", "list"]);
    ok(&["env", "policy", "shop"]);

    let runs = ok(&["--output", "json", "run", "list", "--limit", "50"]).json();
    let runs = runs.as_array().unwrap();
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    for want in ["succeeded", "failed", "cancelled"] {
        assert!(states.contains(&want), "a {want} run in {states:?}");
    }
    assert!(runs.iter().any(|r| r["owners"].as_array().is_some_and(|o| o.len() >= 2)), "a resumed run: {runs:?}");
    for r in runs {
        let id = r["id"].as_str().unwrap();
        ok(&["run", "show", id]);
        let watched = server.run(&["run", "watch", id]);
        assert!(watched.code == 0 || (watched.code == 1 && r["state"] != "succeeded"), "{id}: {watched:?}");
        if r["kind"] == "drill" {
            ok(&["drill", "show", id]);
            ok(&["drill", "report", id]);
            ok(&["drill", "report", id, "--json"]);
        } else if r["state"] != "cancelled" {
            ok(&["run", "report", id]);
        }
    }
    assert!(runs.iter().any(|r| r["kind"] == "drill"), "{runs:?}");
    ok(&["drill", "list"]);
    ok(&["status", "shop"]);
    // Planned and recovered as written: known-good is release 3.
    let plan = ok(&["--output", "json", "plan", "shop"]).json();
    assert_eq!(plan["snapshot_version"], 3, "{plan}");
    // Every health gate passed: the release runs.
    ok(&["recover", "shop", "--yes"]);
    assert_eq!(instance_processes(&local).len(), 2);
}
