//! What a server exposes: the API only on loopback unless `--insecure`,
//! and stable addresses only on loopback unless the config allows more.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{BIN, Server};

#[test]
fn a_non_loopback_api_address_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let local = dir.path().join("local").display().to_string();
    let out = Command::new(BIN)
        .args(["server", "--listen", "0.0.0.0:0", "--store", &store, "--local-dir", &local])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve the API on 0.0.0.0:0: it is not a loopback address"), "{err}");
    assert!(err.contains("--insecure"), "{err}");
    // With --insecure it starts (bound to loopback here anyway: 0.0.0.0 is not probed from outside).
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0", "--insecure"])
        .args(["--store", &store, "--local-dir", &local])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("lifeboat server listening on 0.0.0.0:"), "{line}");
    // The HTTP side is held to the same rule.
    let out = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "0.0.0.0:0",
            "--store",
            &store,
            "--local-dir",
            &local,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to serve the API on 0.0.0.0:0"), "{out:?}");
}

fn push_with_listen(server: &Server, dir: &std::path::Path, env: &str, listen: &str) {
    let art = common::demo_artifact(dir, env);
    let image = server.run(&["image", "import", art.to_str().unwrap()]).ok().stdout.trim().to_string();
    let path = dir.join(format!("{env}.toml"));
    std::fs::write(
        &path,
        format!(
            "environment = \"{env}\"\nregion = \"local-1\"\n[services.dns]\nimage = \"{image}\"\nlaunch = {{ listen = \"{listen}\" }}\n"
        ),
    )
    .unwrap();
    server.run(&["snapshot", "push", path.to_str().unwrap()]).ok();
}

#[test]
fn stable_addresses_stay_on_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let server = Server::launch(&["--store", &p("store"), "--local-dir", &p("local")], &[]);
    push_with_listen(&server, dir.path(), "public", "8.8.8.8:53");
    let plan = server.run(&["plan", "public", "--snapshot", "latest"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("not loopback addresses: 8.8.8.8:53 (dns)"), "{plan:?}");
    assert!(plan.stdout.contains("allow_public_listen = true"), "{plan:?}");
    drop(server);

    std::fs::write(dir.path().join("open.toml"), "[provider.local]\nallow_public_listen = true\n").unwrap();
    let server =
        Server::launch(&["--store", &p("store"), "--local-dir", &p("local"), "--config", &p("open.toml")], &[]);
    let plan = server.run(&["plan", "public", "--snapshot", "latest"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stdout.contains("not addresses of this host: 8.8.8.8:53 (dns)"), "{plan:?}");
    assert!(!plan.stdout.contains("in use by another program"), "{plan:?}");
}

/// The cutover's clock rule is checked at start: a clock skew that leaves
/// the lease no time it surely holds is refused, naming both settings.
#[test]
fn a_clock_skew_the_lease_cannot_absorb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(&config, "[engine]\nlease_ttl = \"3s\"\nmax_clock_skew = \"1s\"\n").unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let out = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--config", &p("lifeboat.toml"), "--store", &p("store"), "--local-dir", &p("local")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("engine.max_clock_skew (1.0s) must be under a third of engine.lease_ttl (3.0s)"), "{err}");
}
