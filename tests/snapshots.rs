//! Snapshot lifecycle through the real CLI and server, over both stores.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{Backend, Server, lifeboat, manifests, variant};

fn shop() -> String {
    manifests().join("good/shop.toml").display().to_string()
}

fn round_trip(server: &Server) {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = server.run(&["--output", "json", "snapshot", "push", &shop(), "-m", "first"]).ok().json();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["environment"], "shop");
    assert_eq!(v1["refs"], serde_json::json!(["latest"]));
    let digest1 = v1["digest"].as_str().unwrap().to_string();
    assert!(digest1.starts_with("sha256:") && digest1.len() == 71, "{digest1}");

    let changed = variant(tmp.path(), "shop2.toml", "shop.toml", &[("replicas = 2", "replicas = 4")]);
    let out = server
        .run(&["snapshot", "push", changed.to_str().unwrap(), "--label", "ticket=INC-42", "-m", "scale api"])
        .ok();
    assert!(out.stdout.starts_with("pushed shop version 2 (sha256:"), "{}", out.stdout);

    let list = server.run(&["--output", "json", "snapshot", "list", "shop"]).ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["digest"], digest1.as_str());
    assert_eq!(list[1]["labels"]["ticket"], "INC-42");
    assert_eq!(list[1]["author"].as_str().map(|a| a.starts_with("tester")), Some(true));
    assert_eq!(list[1]["parent_version"], 1);
    let text = server.run(&["snapshot", "list", "shop"]).ok().stdout;
    assert!(text.contains("VERSION") && text.contains("scale api"), "{text}");

    let show = server.run(&["--output", "json", "snapshot", "show", "shop", "1"]).ok().json();
    assert_eq!(show["digest"], digest1.as_str());
    assert_eq!(show["manifest"]["services"]["api"]["replicas"], 2);
    let by_digest = server.run(&["--output", "json", "snapshot", "show", "shop", &digest1[..20]]).ok().json();
    assert_eq!(by_digest["version"], 1);

    let diff = server.run(&["snapshot", "diff", "shop", "1", "latest"]).ok().stdout;
    assert!(diff.contains("~ service api (changed)"), "{diff}");
    assert!(diff.contains("~ replicas: 2 → 4"), "{diff}");
    let diff_json = server.run(&["--output", "json", "snapshot", "diff", "shop", "1", "2"]).ok().json();
    assert_eq!(diff_json["services"][0]["fields"][0]["path"], "replicas");
    assert_eq!(diff_json["services"][0]["fields"][0]["after"], 4);

    server.run(&["snapshot", "promote", "shop", "2", "--reason", "drill passed", "--force"]).ok();
    let kg = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(kg["version"], 2);
    let refs: BTreeSet<&str> = kg["refs"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert_eq!(refs, BTreeSet::from(["known-good", "latest"]));

    // Reject: refused for the known-good snapshot, allowed for an older one,
    // and a rejected snapshot can never be promoted.
    let out = server.run(&["snapshot", "reject", "shop", "known-good", "--reason", "bad"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("promote another snapshot first"), "{}", out.stderr);
    server.run(&["snapshot", "reject", "shop", "1", "--reason", "leaks memory"]).ok();
    let out = server.run(&["snapshot", "promote", "shop", "1", "--reason", "rollback", "--force"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("was rejected by tester"), "{}", out.stderr);

    server.run(&["snapshot", "tag", "shop", "2", "black-friday"]).ok();
    let tagged = server.run(&["--output", "json", "snapshot", "show", "shop", "black-friday"]).ok().json();
    assert_eq!(tagged["version"], 2);

    // Not found and invalid references.
    let out = server.run(&["snapshot", "show", "shop", "9"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("environment shop has no snapshot 9"), "{}", out.stderr);
    assert_eq!(server.run(&["snapshot", "list", "nosuch"]).ok().stdout.trim(), "environment nosuch has no snapshots");
    assert_eq!(server.run(&["snapshot", "show", "nosuch", "known-good"]).code, 3);
    let out = server.run(&["snapshot", "show", "shop", "Not A Ref!"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn round_trip_directory_store() {
    round_trip(&Server::start(Backend::Fs));
}

#[test]
fn round_trip_s3_store() {
    round_trip(&Server::start(Backend::S3));
}

fn concurrent_pushes(server: &Server) {
    let file = shop();
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let (url, file) = (server.url.clone(), file.clone());
            std::thread::spawn(move || {
                let msg = format!("writer {i}");
                lifeboat(Some(&url), &["--output", "json", "snapshot", "push", &file, "-m", &msg]).ok().json()
            })
        })
        .collect();
    let mut versions: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()["version"].as_u64().unwrap()).collect();
    versions.sort();
    assert_eq!(versions, (1..=16).collect::<Vec<u64>>(), "16 pushes get 16 distinct consecutive versions");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "16 pushes took {:?}", started.elapsed());
    let list = server.run(&["--output", "json", "snapshot", "list", "shop"]).ok().json();
    let messages: BTreeSet<String> =
        list.as_array().unwrap().iter().map(|s| s["message"].as_str().unwrap().to_string()).collect();
    assert_eq!(messages.len(), 16, "no push was lost or overwritten");
    let latest = server.run(&["--output", "json", "snapshot", "show", "shop", "latest"]).ok().json();
    assert_eq!(latest["version"], 16);
}

#[test]
fn concurrent_pushes_directory_store() {
    concurrent_pushes(&Server::start(Backend::Fs));
}

#[test]
fn concurrent_pushes_s3_store() {
    concurrent_pushes(&Server::start(Backend::S3));
}

/// Ceph RGW refuses quoted ETags in If-Match: before the ETag form was
/// negotiated, `latest` stuck at 1 and every push but the first hung.
#[test]
fn concurrent_pushes_ceph_rgw() {
    concurrent_pushes(&Server::start(Backend::Rgw));
}

#[test]
fn round_trip_ceph_rgw() {
    round_trip(&Server::start(Backend::Rgw));
}

#[test]
fn concurrent_promotes_ceph_rgw() {
    concurrent_promotes(&Server::start(Backend::Rgw));
}

fn concurrent_promotes(server: &Server) {
    for _ in 0..3 {
        server.run(&["snapshot", "push", &shop()]).ok();
    }
    server.run(&["snapshot", "promote", "shop", "1", "--reason", "baseline", "--force"]).ok();
    // Both saw known-good at 1; exactly one may move it.
    let handles: Vec<_> = ["2", "3"]
        .into_iter()
        .map(|v| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                lifeboat(
                    Some(&url),
                    &["snapshot", "promote", "shop", v, "--reason", "race", "--expect", "1", "--force"],
                )
            })
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let codes: BTreeSet<i32> = outs.iter().map(|o| o.code).collect();
    assert_eq!(codes, BTreeSet::from([0, 4]), "{outs:?}");
    let loser = outs.iter().find(|o| o.code == 4).unwrap();
    assert!(loser.stderr.contains("known-good of shop"), "{}", loser.stderr);
    // A stale expectation is refused too.
    let out = server.run(&["snapshot", "promote", "shop", "1", "--reason", "x", "--expect", "1", "--force"]);
    assert_eq!(out.code, 4, "{out:?}");
}

#[test]
fn concurrent_promotes_directory_store() {
    concurrent_promotes(&Server::start(Backend::Fs));
}

#[test]
fn concurrent_promotes_s3_store() {
    concurrent_promotes(&Server::start(Backend::S3));
}

#[test]
fn a_flipped_byte_is_refused_and_never_returned() {
    let server = Server::start(Backend::Fs);
    server.run(&["snapshot", "push", &shop()]).ok();
    let path = PathBuf::from(&server.store).join("environments/shop/snapshots/0000000001.json");
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.windows(8).position(|w| w == b"payments").expect("the tag is stored");
    bytes[i] ^= 0x20; // "payments" -> "Payments"
    std::fs::write(&path, &bytes).unwrap();
    for args in [&["snapshot", "show", "shop", "1"][..], &["snapshot", "show", "shop", "latest"]] {
        let out = server.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(out.stderr.contains("failed its digest check"), "{}", out.stderr);
        assert!(out.stderr.contains("environments/shop/snapshots/0000000001.json"), "{}", out.stderr);
        assert!(!out.stdout.contains("Payments") && !out.stderr.contains("Payments"), "bad data leaked");
    }
    let out = server.run(&["snapshot", "promote", "shop", "1", "--reason", "x", "--force"]);
    assert_eq!(out.code, 1, "{out:?}");
    // The list marks it and goes on, so an earlier snapshot can be chosen.
    let out = server.run(&["snapshot", "list", "shop"]).ok();
    assert!(
        out.stdout
            .contains("latest,CORRUPT  object environments/shop/snapshots/0000000001.json: failed its digest check"),
        "{out:?}"
    );
    assert!(out.stderr.contains("it can never be deployed"), "{out:?}");
    assert!(!out.stdout.contains("Payments"), "bad data leaked");
}

#[test]
fn push_refuses_bad_manifests_and_bad_flags() {
    let server = Server::start(Backend::Fs);
    let bad = manifests().join("bad/cycle.toml");
    let out = server.run(&["snapshot", "push", bad.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("dependency cycle: api -> cache -> api"), "{}", out.stderr);
    let out = server.run(&["snapshot", "push", &shop(), "--label", "novalue"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = server.run(&["snapshot", "promote", "shop", "1"]);
    assert_eq!(out.code, 2, "--reason is required: {out:?}");
    let out = server.run(&["snapshot", "tag", "shop", "1", "latest"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("\"latest\" is a reserved ref name"), "{}", out.stderr);
    let out = server.run(&["snapshot", "tag", "shop", "1", "v1"]);
    assert_eq!(out.code, 3, "nothing pushed yet: {out:?}");
}

#[test]
fn unreachable_server_exits_6() {
    let port = lifeboat::testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = lifeboat(Some(&url), &["snapshot", "list", "shop"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!("lifeboat: cannot reach lifeboat server at {url}: Connection refused (os error 111)")
    );
}

/// Escape sequences in messages, labels and reasons are shown escaped in
/// text output (never interpreted by the terminal); JSON keeps them as they are.
#[test]
fn text_output_escapes_control_characters() {
    let server = Server::start(Backend::Fs);
    let evil = "\u{1b}[31mred\u{1b}]0;pwned\u{7}\rover";
    server.run(&["snapshot", "push", &shop(), "-m", evil, "--label", &format!("k={evil}")]).ok();
    server.run(&["snapshot", "reject", "shop", "1", "--reason", evil]).ok();
    for args in [&["snapshot", "list", "shop"][..], &["snapshot", "show", "shop", "1"]] {
        let out = server.run(args).ok();
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stdout.contains('\r') && !out.stdout.contains('\u{7}'),
            "{out:?}"
        );
        assert!(out.stdout.contains("\\u{1b}[31mred"), "{}", out.stdout);
    }
    let json = server.run(&["--output", "json", "snapshot", "show", "shop", "1"]).ok().json();
    assert_eq!(json["message"], evil);
}

/// Messages that say what to do next (issue 12, item 11, in part).
#[test]
fn messages_say_what_to_do_next() {
    let server = Server::start(Backend::Fs);
    server.run(&["snapshot", "push", &shop()]).ok();
    server.run(&["snapshot", "promote", "shop", "1", "--reason", "t", "--force"]).ok();
    let out = server.run(&["snapshot", "promote", "shop", "1", "--reason", "t", "--expect", "0", "--force"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("known-good of shop points at version 1, but --expect said to be unset (--expect 0)")
            && out.stderr.contains("retry with --expect 1")
            && !out.stderr.contains("not not"),
        "{}",
        out.stderr
    );
    let out = server.run(&["snapshot", "tag", "shop", "1", "known-good"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("lifeboat snapshot promote"), "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let out = server.run(&["image", "import", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is a directory: pack it as a .tar.gz"), "{}", out.stderr);
    // host:port works.
    let out = lifeboat(Some(server.addr()), &["snapshot", "show", "shop", "1"]);
    assert_eq!(out.code, 0, "{out:?}");
    // https:// means TLS: against a plaintext server it fails, never downgrades.
    let out = lifeboat(Some(&format!("https://{}", server.addr())), &["snapshot", "show", "shop", "1"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("cannot reach lifeboat server at https://"), "{}", out.stderr);
}

/// Tags do not move silently: moving one needs --force or --expect.
#[test]
fn moving_a_tag_needs_force_or_expect() {
    let server = Server::start(Backend::Fs);
    for _ in 0..3 {
        server.run(&["snapshot", "push", &shop()]).ok();
    }
    server.run(&["snapshot", "tag", "shop", "1", "stable"]).ok();
    server.run(&["snapshot", "tag", "shop", "1", "stable"]).ok();
    let out = server.run(&["snapshot", "tag", "shop", "2", "stable"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("tag stable of shop already points at version 1; move it with --force"),
        "{}",
        out.stderr
    );
    server.run(&["snapshot", "tag", "shop", "2", "stable", "--force"]).ok();
    server.run(&["snapshot", "tag", "shop", "3", "stable", "--expect", "2"]).ok();
    let shown = server.run(&["--output", "json", "snapshot", "show", "shop", "stable"]).ok().json();
    assert_eq!(shown["version"], 3);
}

/// The CLI behaves in pipes and files: a closed stdout ends it quietly, logs
/// written to a file carry no colour codes, and conflicting output flags
/// are refused.
#[test]
fn the_cli_behaves_in_pipes_and_files() {
    let server = Server::start(Backend::Fs);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("bench.toml");
    std::fs::write(&big, lifeboat::testkit::random_manifest_toml(2000, 3, 7)).unwrap();
    server.run(&["snapshot", "push", big.to_str().unwrap()]).ok();
    let script = format!(
        "set -o pipefail; '{}' --server {} --output json snapshot show bench latest | head -c 100 >/dev/null",
        common::BIN,
        server.url
    );
    let out = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);

    let out = server.run(&["plan", "shop", "--format", "mermaid", "--output", "json"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--output json and --format mermaid ask for two formats"), "{}", out.stderr);

    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(common::BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--store"])
        .arg(dir.path().join("store"))
        .arg("--local-dir")
        .arg(dir.path().join("local"))
        .env("LIFEBOAT_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_until(std::time::Duration::from_secs(20), "the server to log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("lifeboat server started"))
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a log file: {text:?}");
}

/// A region at the service limit: push, show and plan work through the CLI
/// (replies larger than gRPC's default 4 MiB are accepted), and the stored
/// snapshot, larger than the manifest limit once every default is spelled
/// out, reads back.
#[test]
fn a_region_at_the_service_limit_pushes_shows_and_plans() {
    let server = Server::start(Backend::Fs);
    let dir = server.dir.as_ref().unwrap().path();
    let n = 20_000;
    let mut text = String::from("environment = \"huge\"\nregion = \"local-1\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "[services.s{i:05}]\nimage = \"sha256:{}\"\nlaunch = {{ args = [\"--name\", \"s{i:05}\", \"{}\"] }}\n",
            "a".repeat(64),
            "x".repeat(200)
        ));
    }
    assert!(text.len() < 8 << 20, "{} bytes", text.len());
    let path = dir.join("huge.toml");
    std::fs::write(&path, &text).unwrap();
    server.run(&["snapshot", "push", path.to_str().unwrap()]).ok();
    let shown = server.run(&["--output", "json", "snapshot", "show", "huge", "latest"]).ok().json();
    assert_eq!(shown["manifest"]["services"].as_object().unwrap().len(), n, "the whole manifest is shown");
    server.run(&["snapshot", "promote", "huge", "latest", "--reason", "test", "--force"]).ok();
    // Its images were never imported: the plan shows, preflight fails (exit 1),
    // and says so in a message a person can read, not one naming 20,000 services.
    let out = server.run(&["--output", "json", "plan", "huge"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let plan = out.json();
    assert_eq!(plan["steps"].as_array().unwrap().len(), n);
    let images = plan["preflight"].as_array().unwrap().iter().find(|c| c["name"] == "images-in-store").unwrap();
    let message = images["message"].as_str().unwrap();
    assert!(message.ends_with(" and 19990 more"), "{message}");
    assert!(message.len() < 2000, "{} bytes", message.len());
}
