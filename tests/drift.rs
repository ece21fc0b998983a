//! Drift: `lifeboat drift` and the server's periodic check compare what
//! runs with known-good, per service, against real processes.

mod common;

use std::time::Duration;

use common::{Instances, Region, Server, Svc, instance_processes, wait_until};

fn server_checking_every_second() -> Server {
    Server::with_config("[engine]\ndrift_interval = \"1s\"\n")
}

#[test]
fn drift_names_each_service_that_differs_from_known_good() {
    let server = server_checking_every_second();
    let _cleanup = Instances(server.local_dir());
    let region =
        Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("api", &["db"]), Svc::new("web", &["api"])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let out = server.run(&["drift", "shop"]).ok().stdout;
    assert!(out.starts_with("shop in local-1 against known-good (snapshot 1), checked at"), "{out}");
    assert_eq!(out.matches("IN_SYNC").count(), 3, "{out}");
    // The server's own periodic check shows in the status.
    wait_until(Duration::from_secs(10), "the periodic drift check", || {
        server.run(&["status", "shop"]).ok().stdout.contains("drift     in sync (checked at")
    });

    // An instance dies: its service is named, exit 1.
    let web = instance_processes(&server.local_dir()).into_iter().find(|(_, s)| s == "web").unwrap().0;
    std::process::Command::new("kill").args(["-9", &web.to_string()]).status().unwrap();
    wait_until(Duration::from_secs(10), "web to drift", || server.run(&["drift", "shop"]).code == 1);
    let out = server.run(&["drift", "shop"]);
    assert!(
        out.stderr.contains("shop has drifted from known-good in local-1: web missing")
            || out.stderr.contains("shop has drifted from known-good in local-1: web unhealthy"),
        "{out:?}"
    );
    assert!(out.stderr.contains("`lifeboat plan shop` shows what a recovery would change"), "{out:?}");
    server.run(&["recover", "shop", "--yes"]).ok();
    assert_eq!(server.run(&["drift", "shop"]).code, 0, "a recovery ends the drift");

    // api runs another image (release 2 recovered, known-good still 1), and
    // a service known-good does not have runs beside it.
    let dir = server.dir.as_ref().unwrap().path();
    let art = common::demo_artifact(dir, "api-v2");
    let image = server.run(&["image", "import", art.to_str().unwrap()]).ok().stdout.trim().to_string();
    let text = std::fs::read_to_string(&region.manifest).unwrap();
    let (head, api) = text.split_once("[services.api]").unwrap();
    let old_image = api.split('"').nth(1).unwrap().to_string();
    let extra_port = lifeboat::provider::local::pick_listen_ports(1).unwrap()[0];
    let v2 = format!(
        "{head}[services.api]{}\n[services.extra]\nimage = \"{image}\"\nlaunch = {{ listen = \"127.0.0.1:{extra_port}\", args = [\"--name\", \"extra\"] }}\n",
        api.replacen(&old_image, &image, 1)
    );
    let v2_path = dir.join("shop-v2.toml");
    std::fs::write(&v2_path, v2).unwrap();
    server.run(&["snapshot", "push", v2_path.to_str().unwrap()]).ok();
    server.run(&["recover", "shop", "--snapshot", "2", "--yes"]).ok();
    let out = server.run(&["drift", "shop"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("drifted from known-good in local-1: api wrong_image, extra unmanaged"), "{out:?}");
    let api_row = out.stdout.lines().find(|l| l.starts_with("api ")).unwrap_or_default().to_string();
    assert!(
        api_row.contains("WRONG_IMAGE") && api_row.contains(&format!("runs {image}, known-good has {old_image}")),
        "{out:?}"
    );
    assert!(out.stdout.lines().any(|l| l.starts_with("extra ") && l.contains("UNMANAGED")), "{out:?}");
    let json = server.run(&["--output", "json", "drift", "shop"]).json();
    assert_eq!(json["in_sync"], false);
    let states: Vec<(&str, &str)> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("api", "wrong_image"), ("db", "in_sync"), ("web", "in_sync"), ("extra", "unmanaged")]);
    let status = server.run(&["status", "shop"]).ok().stdout;
    assert!(status.contains("drift     2 drifted: api wrong_image, extra unmanaged (checked at"), "{status}");

    // Nothing to compare against: not found.
    let out = server.run(&["drift", "nosuch"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("environment nosuch has no snapshots; check the name"), "{out:?}");
    // `plan` of an environment nobody pushed says so, not "promote one".
    let out = server.run(&["plan", "nosuch"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("environment nosuch has no snapshots; push its manifest first"), "{out:?}");
    assert!(!out.stderr.contains("promote"), "{out:?}");
}
