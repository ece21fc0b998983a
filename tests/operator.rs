//! Operator experience (issue 12): what the CLI says, and with which exit
//! code, where an SRE under stress would otherwise hit a dead end.

mod common;

use common::{Backend, Instances, Region, Server, Svc, lifeboat, manifests};

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
    assert!(plan.contains("cannot run drills yet, so known-good never moves"), "{plan}");
    let json = server.run(&["--output", "json", "plan", "slow", "--snapshot", "1"]).ok().json();
    assert_eq!(json["rto_objective_ms"], 1000);
    assert_eq!(json["warnings"].as_array().unwrap().len(), 3, "{json}");
    let show = server.run(&["snapshot", "show", "slow", "1"]).ok().stdout;
    assert!(show.contains("rto          1s"), "{show}");
    assert!(show.contains("promotion    promotion = \"drill\""), "{show}");
    // Promotion by hand is refused, naming the rule (exit 1: the state forbids it).
    let out = server.run(&["snapshot", "promote", "slow", "1", "--reason", "t"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("becomes known-good only by passing a DR drill"), "{out:?}");
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

/// An environment for a provider this server lacks says which providers it
/// has and what to do, with exit 1 (not a conflict).
#[test]
fn a_missing_provider_is_named_with_what_to_do() {
    let server = Server::start(Backend::Fs);
    let file = manifests().join("good/ec2-regions.json");
    let pushed = server.run(&["--output", "json", "snapshot", "push", file.to_str().unwrap()]).ok().json();
    let env = pushed["environment"].as_str().unwrap();
    let out = server.run(&["plan", env, "--snapshot", "1"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("uses the ec2 provider, but this server has only the local provider")
            && out.stderr.contains("the ec2 provider is not in this version of lifeboat yet"),
        "{}",
        out.stderr
    );
}
