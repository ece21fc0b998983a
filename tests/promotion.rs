//! Known-good is what a recovery falls back to: promotion checks the
//! snapshot's images, honours the server's drill gate (a manifest cannot
//! lower it), `--from-drill` promotes exactly what a passed drill restored,
//! and content someone rejected does not come back unnoticed.

mod common;

use common::{Backend, Instances, Region, Server, Svc};

fn known_good(server: &Server, env: &str) -> u64 {
    server.run(&["--output", "json", "snapshot", "show", env, "known-good"]).ok().json()["version"].as_u64().unwrap()
}

/// The last audit record of an action.
fn last_audit(server: &Server, action: &str) -> serde_json::Value {
    let list = server.run(&["--output", "json", "audit", "list", "--action", action]).ok().json();
    list.as_array().unwrap().first().cloned().unwrap_or_default()
}

/// A snapshot whose image is not in the store cannot become known-good;
/// `--force` promotes it anyway, saying so on stderr, in the ref's reason
/// and in the audit record, which names the version acted on.
#[test]
fn a_snapshot_with_a_missing_image_is_not_promoted_unless_forced() {
    let server = Server::start(Backend::Fs);
    let region = Region::setup(&server, "pay", &[Svc::new("db", &[]), Svc::new("ledger", &["db"])]);
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let image = text.lines().filter(|l| l.starts_with("image = ")).nth(1).unwrap().to_string();
    let missing = format!("image = \"sha256:{}\"", "0".repeat(64));
    let bad = region.manifest.with_file_name("pay-bad.toml");
    std::fs::write(&bad, text.replacen(&image, &missing, 1)).unwrap();
    server.run(&["snapshot", "push", bad.to_str().unwrap()]).ok(); // v2
    let out = server.run(&["snapshot", "promote", "pay", "2", "--reason", "rollout"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("snapshot 2 of pay cannot become known-good: images-in-store: "), "{out:?}");
    assert!(out.stderr.contains("ledger"), "names the service: {out:?}");
    assert!(out.stderr.contains("(override with --force)"), "{out:?}");
    assert_eq!(known_good(&server, "pay"), 1);
    let refused = last_audit(&server, "snapshot.promote");
    assert_eq!(refused["target"], "pay@2", "{refused}");

    let out = server.run(&["snapshot", "promote", "pay", "2", "--reason", "rollout", "--force"]).ok();
    assert!(out.stderr.contains("warning: promoted with --force although images-in-store: "), "{out:?}");
    assert_eq!(known_good(&server, "pay"), 2);
    let done = last_audit(&server, "snapshot.promote");
    assert_eq!(done["target"], "pay@v2", "{done}");
    assert!(
        done["outcome"].as_str().unwrap().starts_with("ok: promoted with --force although images-in-store: "),
        "the audit says it was forced: {done}"
    );
    let listed = server.run(&["snapshot", "list", "pay"]).ok().stdout;
    assert!(listed.contains("known-good"), "{listed}");
}

/// The drill gate is the server's: `env policy --promotion drill` refuses a
/// plain promote of a manifest that says `promotion = "manual"`, and only
/// a passed drill (`--from-drill`) moves known-good; a failed drill never.
#[test]
fn the_servers_drill_gate_holds_and_from_drill_promotes_only_what_passed() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    let shown = server.run(&["env", "policy", "shop"]).ok().stdout;
    assert!(shown.starts_with("shop: promotion = manual"), "{shown}");
    let set = server.run(&["env", "policy", "shop", "--promotion", "drill"]).ok().stdout;
    assert!(
        set.starts_with("shop: promotion = drill (known-good moves only to a snapshot whose DR drill passed)"),
        "{set}"
    );
    let policy = server.run(&["--output", "json", "env", "policy", "shop"]).ok().json();
    assert!(policy["updated_by"].as_str().unwrap().starts_with("tester"), "{policy}");
    assert_eq!(last_audit(&server, "env.policy")["target"], "shop promotion=drill");

    // v2: the same manifest pushed again, saying promotion = "manual".
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let manual = region.manifest.with_file_name("manual.toml");
    std::fs::write(
        &manual,
        text.replace("rto_objective = \"1m\"\n", "rto_objective = \"1m\"\npromotion = \"manual\"\n"),
    )
    .unwrap();
    server.run(&["snapshot", "push", manual.to_str().unwrap()]).ok();
    let out = server.run(&["snapshot", "promote", "shop", "2", "--reason", "by hand"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("the server's policy for it (`lifeboat env policy`) says promotion = \"drill\""),
        "{out:?}"
    );

    // v3 is broken: its drill fails, and --from-drill refuses it.
    let broken = region.broken_variant("web");
    server.run(&["snapshot", "push", broken.to_str().unwrap()]).ok();
    let failed = server.run(&["--output", "json", "drill", "run", "shop", "--snapshot", "3"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    let failed = failed.json()["id"].as_str().unwrap().to_string();
    let out = server.run(&["snapshot", "promote", "shop", "--from-drill", &failed]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("drill {failed} of snapshot 3 did not pass (failed: web failed")), "{out:?}");
    assert_eq!(known_good(&server, "shop"), 1);

    // v2's drill passes: --from-drill promotes exactly v2, with the drill as the reason.
    let passed = server.run(&["--output", "json", "drill", "run", "shop", "--snapshot", "2"]).ok().json();
    let passed = passed["id"].as_str().unwrap().to_string();
    let out = server.run(&["snapshot", "promote", "shop", "3", "--from-drill", &passed]);
    assert_eq!(out.code, 2, "the snapshot named must be the drilled one: {out:?}");
    assert!(out.stderr.contains(&format!("drill {passed} restored snapshot 2, not 3")), "{out:?}");
    let out = server.run(&["snapshot", "promote", "shop", "--from-drill", &passed]).ok();
    assert!(out.stdout.contains("shop: known-good is now version 2"), "{out:?}");
    let done = last_audit(&server, "snapshot.promote");
    assert_eq!(done["target"], "shop@v2", "{done}");
    let shown = server.run(&["--output", "json", "snapshot", "show", "shop", "known-good"]).ok().json();
    assert_eq!(shown["version"], 2);
    // A recovery is not a drill.
    let rec = server.run(&["recover", "shop", "--yes", "--detach"]).ok().stdout.trim().to_string();
    server.run(&["run", "watch", &rec]).ok();
    let out = server.run(&["snapshot", "promote", "shop", "--from-drill", &rec]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is a recovery, not a drill"), "{out:?}");
}

/// Pushing exactly a rejected snapshot's manifest again is refused, naming
/// the rejected version and why; `--force` stores it.
#[test]
fn content_identical_to_a_rejected_snapshot_is_refused_unless_forced() {
    let server = Server::start(Backend::Fs);
    let region = Region::setup(&server, "shop", &[Svc::new("db", &[])]);
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let v2 = region.manifest.with_file_name("v2.toml");
    std::fs::write(&v2, text.replace("timeout = \"30s\"", "timeout = \"31s\"")).unwrap();
    server.run(&["snapshot", "push", v2.to_str().unwrap()]).ok();
    server.run(&["snapshot", "reject", "shop", "2", "--reason", "leaks connections"]).ok();
    let out = server.run(&["snapshot", "push", v2.to_str().unwrap(), "-m", "retry"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("this manifest is exactly snapshot 2 of shop, which tester"), "{out:?}");
    assert!(out.stderr.contains("leaks connections; push it again anyway with --force"), "{out:?}");
    let listed = server.run(&["--output", "json", "snapshot", "list", "shop"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "nothing stored");
    let pushed = server.run(&["--output", "json", "snapshot", "push", v2.to_str().unwrap(), "--force"]).ok().json();
    assert_eq!(pushed["version"], 3);
    // Any other content is pushed as before.
    server.run(&["snapshot", "push", region.manifest.to_str().unwrap()]).ok();
}
