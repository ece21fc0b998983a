//! `lifeboat store check` and the start-up self-test, through the real
//! binary: a directory, moto, Ceph RGW (unversioned: honoured; versioned:
//! refused, since RGW ignores If-None-Match there).

mod common;

use common::{Backend, Server, lifeboat};
use lifeboat::testkit;

fn check_with_env(args: &[&str], env: &[(&str, String)]) -> common::Out {
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.args(args).env_remove("LIFEBOAT_SERVER").env_remove("LIFEBOAT_STORE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run lifeboat");
    common::Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_directory_store_honours_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data").display().to_string();
    let out = lifeboat(None, &["store", "check", "--store", &store]).ok();
    for guarantee in
        ["create-if-absent", "compare-and-swap", "stale compare-and-swap", "read-after-write", "list-after-write"]
    {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(guarantee))
            .unwrap_or_else(|| panic!("{guarantee}: {}", out.stdout));
        assert!(line.contains(" OK "), "{line}");
    }
    assert!(
        out.stdout.contains("versioning") && out.stdout.contains("not supported by a directory store"),
        "{}",
        out.stdout
    );
    let json = lifeboat(None, &["--output", "json", "store", "check", "--store", &store]).ok().json();
    assert_eq!(json["passed"], true);
    assert!(
        json["checks"].as_array().unwrap().iter().any(|c| c["guarantee"] == "object lock" && c["verdict"] == "info")
    );
}

#[test]
fn the_server_reports_on_its_own_store() {
    let server = Server::start(Backend::S3);
    let out = server.run(&["store", "check"]).ok();
    assert!(out.stdout.starts_with(&format!("store {}", server.store)), "{}", out.stdout);
    assert!(out.stdout.contains("versioning") && out.stdout.contains("etag form"), "{}", out.stdout);
}

#[test]
fn ceph_rgw_unversioned_passes_with_unquoted_etags() {
    let endpoint = testkit::rgw_endpoint();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(testkit::bucket_on(&endpoint, false, false));
    let url = format!("s3://{bucket}/lb");
    let out = check_with_env(&["store", "check", "--store", &url], &testkit::s3_env_vars_for(&endpoint));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&endpoint), "names the endpoint: {}", out.stdout);
    assert!(out.stdout.contains("unquoted"), "{}", out.stdout);
}

#[test]
fn ceph_rgw_versioned_is_refused_by_check_and_by_the_server() {
    let endpoint = testkit::rgw_endpoint();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(testkit::bucket_on(&endpoint, false, true));
    let url = format!("s3://{bucket}/lb");
    let env = testkit::s3_env_vars_for(&endpoint);
    let out = check_with_env(&["store", "check", "--store", &url], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.stdout.lines().find(|l| l.starts_with("create-if-absent")).unwrap();
    assert!(line.contains("FAILED") && line.contains("If-None-Match"), "{line}");
    assert!(out.stderr.contains("does not honour create-if-absent"), "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().display().to_string();
    let args =
        ["server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--store", &url, "--local-dir", &local];
    let out = check_with_env(&args, &env);
    assert_eq!(out.code, 1, "{out:?}");
    let err = out.stderr.trim();
    assert!(err.contains("does not honour create-if-absent") && err.contains(&endpoint), "{err}");
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
}
