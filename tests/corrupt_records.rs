//! One bad record never hides the others: a corrupt run record, journal,
//! teardown record, known-good ref, audit record or schedule is named by
//! its key in every listing that meets it, and the rest is shown. A corrupt
//! cutover pointer never takes a live stable address down.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, Instances, Region, Server, Svc, wait_until};

const GARBAGE: &[u8] = b"\x00\x01 not json {{{";

fn corrupt(path: &Path) {
    assert!(path.exists(), "{} exists before it is corrupted", path.display());
    std::fs::write(path, GARBAGE).unwrap();
}

#[test]
fn one_corrupt_record_is_named_and_the_rest_is_listed() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let store = Path::new(&server.store).to_path_buf();
    Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    Region::setup(&server, "blog", &[Svc::new("web", &[])]);
    let first = server.run(&["--output", "json", "recover", "shop", "--yes"]).ok().json();
    let first = first["id"].as_str().unwrap().to_string();
    let second = server.run(&["--output", "json", "recover", "shop", "--yes"]).ok().json();
    let second = second["id"].as_str().unwrap().to_string();
    server.run(&["recover", "blog", "--yes"]).ok();
    let drill = server.run(&["--output", "json", "drill", "run", "blog"]).ok().json();
    let drill = drill["id"].as_str().unwrap().to_string();
    let kept = server.run(&["--output", "json", "drill", "schedule", "add", "blog", "--cron", "0 3 * * *"]).ok().json();
    let bad = server.run(&["--output", "json", "drill", "schedule", "add", "shop", "--cron", "0 4 * * *"]).ok().json();
    let (kept, bad) = (kept["id"].as_str().unwrap().to_string(), bad["id"].as_str().unwrap().to_string());

    // Damage one of each.
    corrupt(&store.join(format!("runs/{first}/run.json")));
    corrupt(&store.join(format!("runs/{drill}/teardown.json")));
    corrupt(&store.join("environments/shop/refs/known-good"));
    corrupt(&store.join(format!("schedules/{bad}.json")));
    let audit_day = std::fs::read_dir(store.join("audit")).unwrap().flatten().map(|d| d.path()).max().unwrap();
    let one_audit = std::fs::read_dir(&audit_day).unwrap().flatten().map(|d| d.path()).min().unwrap();
    corrupt(&one_audit);

    // status: both environments, shop's bad ref named, nothing else hidden.
    let out = server.run(&["status"]).ok();
    assert!(out.stdout.contains("shop in local-1") && out.stdout.contains("blog in local-1"), "{}", out.stdout);
    assert!(
        out.stdout.contains("CORRUPT") && out.stdout.contains("environments/shop/refs/known-good"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("the known-good ref cannot be read"), "{}", out.stdout);
    assert!(out.stdout.contains("is malformed"), "the problem names what is wrong: {}", out.stdout);
    let status = server.run(&["--output", "json", "status", "shop"]).ok().json();
    assert_eq!(status[0]["corrupt"][0]["key"], "environments/shop/refs/known-good", "{status}");
    assert_eq!(status[0]["last_run"]["id"], second.as_str(), "the newer run still shows: {status}");

    // run list: every readable run, the bad one named on stderr.
    let out = server.run(&["run", "list"]).ok();
    assert!(out.stdout.contains(&second) && !out.stdout.contains(&first), "{}", out.stdout);
    assert!(out.stderr.contains(&format!("runs/{first}/run.json")) && out.stderr.contains("CORRUPT"), "{}", out.stderr);
    assert!(out.stderr.contains("run record is malformed"), "{}", out.stderr);

    // drill list and drill show: the drill with its teardown UNKNOWN.
    let out = server.run(&["drill", "list"]).ok();
    assert!(out.stdout.contains(&drill) && out.stdout.contains("UNKNOWN (corrupt record)"), "{}", out.stdout);
    let shown = server.run(&["--output", "json", "drill", "show", &drill]).ok().json();
    assert_eq!(shown["teardown_corruption"]["key"], format!("runs/{drill}/teardown.json"), "{shown}");

    // audit list: the other records, the bad one named.
    let out = server.run(&["audit", "list", "--limit", "1000"]).ok();
    assert!(out.stdout.contains("recovery.start"), "{}", out.stdout);
    let key = one_audit.strip_prefix(&store).unwrap().display().to_string();
    assert!(out.stderr.contains(&key), "{key} in {}", out.stderr);

    // Schedules: listed (the corrupt one marked, whatever the filter), and it can be removed.
    let out = server.run(&["drill", "schedule", "list", "--environment", "blog"]).ok();
    assert!(
        out.stdout.contains(&kept) && out.stdout.contains(&bad) && out.stdout.contains("CORRUPT"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("never fires"), "{}", out.stderr);
    let listed = server.run(&["--output", "json", "drill", "schedule", "list"]).ok().json();
    let marked = listed.as_array().unwrap().iter().find(|s| s["id"] == bad.as_str()).unwrap();
    assert_eq!(marked["corruption"]["key"], format!("schedules/{bad}.json"), "{listed}");
    let out = server.run(&["drill", "schedule", "remove", &bad]).ok();
    assert!(out.stdout.contains(&format!("removed corrupt schedule {bad}")), "{}", out.stdout);
    assert!(!store.join(format!("schedules/{bad}.json")).exists());
    let listed = server.run(&["--output", "json", "drill", "schedule", "list"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Reading the bad run itself says which record and what is wrong.
    let out = server.run(&["run", "show", &first]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("run record (object") && out.stderr.contains("is malformed"), "{}", out.stderr);
}

#[test]
fn a_corrupt_cutover_pointer_keeps_the_last_good_route() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let port = region.ports["db"];
    let answers = || {
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
            .map(|mut s| {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out.starts_with("HTTP/1.1 200")
            })
            .unwrap_or(false)
    };
    assert!(answers(), "db answers on its stable address");
    let pointer = server.local_dir().join("services/shop/db.json");
    let good = std::fs::read(&pointer).unwrap();
    corrupt(&pointer);
    // The router re-reads the pointers every second; give it several.
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..5 {
        assert!(answers(), "the stable address stays up while its pointer is corrupt");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&pointer, good).unwrap();
    wait_until(Duration::from_secs(5), "db answers again", answers);
}
