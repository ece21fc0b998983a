//! Outbound notifications: receivers on loopback get a proposed (approval)
//! run's start, approval-needed and success messages, in order; one that
//! fails twice still gets each.

mod common;

use std::time::Duration;

use common::{Instances, Region, Server, Svc, receiver, wait_until};

#[test]
fn receivers_get_each_message_in_order_even_after_failures() {
    let (plain, plain_got) = receiver(0);
    let (flaky, flaky_got) = receiver(2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.toml"),
        format!("[[notify]]\nurl = \"{plain}\"\n\n[[notify]]\nurl = \"{flaky}\"\nbearer = \"s3cret-bearer\"\nevents = [\"started\", \"awaiting_approval\", \"succeeded\", \"failed\"]\n"),
    )
    .unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args =
        ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::launch(&args, &[]);
    server.dir = Some(dir);
    let _cleanup = Instances(server.local_dir());
    let region =
        Region::setup(&server, "gate", &[Svc::new("db", &[]), Svc::new("api", &["db"]).extra("approval = true")]);
    let id = server.run(&["recover", "gate", "--yes", "--detach"]).ok().stdout.trim().to_string();
    wait_until(Duration::from_secs(30), "the approval message", || plain_got.lock().unwrap().len() >= 2);
    server.run(&["run", "approve", &id, "api"]).ok();
    server.run(&["run", "watch", &id]).ok();
    for got in [&plain_got, &flaky_got] {
        wait_until(Duration::from_secs(30), "three messages", || got.lock().unwrap().len() >= 3);
        let got = got.lock().unwrap();
        let events: Vec<&str> = got.iter().map(|(_, m)| m["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["started", "awaiting_approval", "succeeded"], "in order");
        let approval = &got[1].1;
        assert_eq!(approval["approve_command"], format!("lifeboat run approve {id} api"));
        assert!(approval["text"].as_str().unwrap().contains("api waits for approval"), "{approval}");
        assert_eq!((got[2].1["run_id"].as_str(), got[2].1["state"].as_str()), (Some(id.as_str()), Some("succeeded")));
        assert_eq!(got[0].1["environment"], "gate");
        // The end says how long, what changed and (here) that nothing failed.
        let done = &got[2].1;
        assert_eq!(done["changes"]["create"], 2, "{done}");
        assert!(done["took_seconds"].as_f64().unwrap() > 0.0, "{done}");
        assert!(done["root_cause"].is_null() && done["failed_services"].as_array().unwrap().is_empty(), "{done}");
        let text = done["text"].as_str().unwrap();
        assert!(text.contains(" after ") && text.contains("(2 to create)"), "{text}");
    }
    // A failed run's message names its root cause and the failed service.
    let broken = region.broken_variant("db");
    server.run(&["snapshot", "push", broken.to_str().unwrap()]).ok();
    let out = server.run(&["recover", "gate", "--snapshot", "2", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    wait_until(Duration::from_secs(30), "the failure message", || {
        plain_got.lock().unwrap().iter().any(|(_, m)| m["event"] == "failed")
    });
    let failed = plain_got.lock().unwrap().iter().find(|(_, m)| m["event"] == "failed").unwrap().1.clone();
    assert_eq!(failed["failed_services"], serde_json::json!(["db"]), "{failed}");
    assert!(failed["root_cause"].as_str().unwrap().starts_with("db failed"), "{failed}");
    assert!(failed["text"].as_str().unwrap().contains("db failed"), "{failed}");
    assert!(flaky_got.lock().unwrap().iter().all(|(auth, _)| auth == "Bearer s3cret-bearer"));
    assert!(plain_got.lock().unwrap().iter().all(|(auth, _)| auth.is_empty()));
    // The secret is in no message, and nowhere in the store.
    for (_, m) in flaky_got.lock().unwrap().iter() {
        assert!(!m.to_string().contains("s3cret-bearer"));
    }
    let out = std::process::Command::new("grep")
        .args(["-r", "-l", "s3cret-bearer"])
        .arg(server.store.clone())
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A dead receiver does not hold messages for minutes: one message is
/// retried for at most 20 s, then the receiver counts as down and later
/// messages (an approval request) get one attempt each, at once.
#[test]
fn a_dead_receiver_costs_each_message_seconds_not_minutes() {
    let (dead, _) = receiver(usize::MAX);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lifeboat.toml"), format!("[[notify]]\nurl = \"{dead}\"\n")).unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let log = dir.path().join("server.log");
    let mut server = Server::launch_logging(
        std::path::Path::new(common::BIN),
        &["--config", &p("lifeboat.toml"), "--store", &p("store"), "--local-dir", &p("local")],
        &[("LIFEBOAT_LOG", "warn".to_string())],
        std::fs::File::create(&log).unwrap(),
    );
    server.dir = Some(dir);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "gate", &[Svc::new("db", &[]), Svc::new("api", &["db"]).extra("approval = true")]);
    let t0 = std::time::Instant::now();
    let id = server.run(&["recover", "gate", "--yes", "--detach"]).ok().stdout.trim().to_string();
    let dropped = || std::fs::read_to_string(&log).unwrap_or_default().matches("notification dropped").count();
    // `started` is given up after its budget, then `awaiting_approval` gets one attempt.
    wait_until(Duration::from_secs(40), "two notifications given up", || dropped() >= 2);
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());
    server.run(&["run", "cancel", &id]).ok();
}
