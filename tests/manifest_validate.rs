//! `lifeboat manifest validate` over a corpus of broken and good manifests.

mod common;

use common::{lifeboat, manifests};

#[test]
fn every_broken_manifest_exits_2_naming_the_problem() {
    let dir = manifests().join("bad");
    let expect = std::fs::read_to_string(dir.join("EXPECT.tsv")).unwrap();
    let mut cases: Vec<(std::path::PathBuf, String)> = expect
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (file, msg) = l.split_once('\t').expect("file<TAB>message");
            (dir.join(file), msg.to_string())
        })
        .collect();
    // Files too awkward to commit are made here.
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("binary.bin");
    std::fs::write(&garbage, (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    cases.push((garbage, "not UTF-8 text".into()));
    let huge = tmp.path().join("huge.toml");
    std::fs::write(&huge, format!("environment = \"shop\"\n# {}\n", "x".repeat(10 * 1024 * 1024))).unwrap();
    cases.push((huge, "larger than the 8 MiB limit".into()));
    assert!(cases.len() >= 20, "the corpus has {} broken manifests", cases.len());

    for (file, msg) in &cases {
        let out = lifeboat(None, &["manifest", "validate", file.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{}: {out:?}", file.display());
        assert!(out.stderr.contains(msg.as_str()), "{}: expected {msg:?} in stderr:\n{}", file.display(), out.stderr);
        assert!(out.stderr.lines().count() <= 40, "{}: error is not concise:\n{}", file.display(), out.stderr);
    }
}

#[test]
fn all_problems_are_listed_with_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let p = common::variant(
        tmp.path(),
        "multi.toml",
        "shop.toml",
        &[("depends_on = [\"metrics\"]", "depends_on = [\"nope\"]\nreplica = 3"), ("replicas = 2", "replicas = -1")],
    );
    let out = lifeboat(None, &["manifest", "validate", p.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("(3 problems)"), "{}", out.stderr);
    let f = p.display().to_string();
    assert!(
        out.stderr.contains(&format!("{f}:54:1: services.dashboard.replica: unknown field `replica`")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&format!("{f}:53:15: services.dashboard.depends_on[0]")), "{}", out.stderr);
    assert!(out.stderr.contains("services.api.replicas: -1 is out of range"), "{}", out.stderr);

    let json = lifeboat(None, &["--output", "json", "manifest", "validate", p.to_str().unwrap()]);
    assert_eq!(json.code, 2);
    let v = json.json();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 3);
    assert_eq!(v["problems"][0]["position"].as_str().map(|s| s.contains(':')), Some(true));
}

/// A service with a bad image is still checked for everything else (its
/// dependencies), and a `[[verify]]` naming it is not told it does not exist.
#[test]
fn a_service_with_one_problem_is_checked_for_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let p = common::variant(
        tmp.path(),
        "two-in-one.toml",
        "shop.toml",
        &[
            ("sha256:8888888888888888888888888888888888888888888888888888888888888888", "nginx:latest"),
            ("depends_on = [\"metrics\"]", "depends_on = [\"metricz\"]"),
        ],
    );
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("\n[[verify]]\nname = \"dashboard answers\"\nservice = \"dashboard\"\nhttp = \"/\"\n");
    std::fs::write(&p, text).unwrap();
    let out = lifeboat(None, &["manifest", "validate", p.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("services.dashboard.image"), "{}", out.stderr);
    assert!(out.stderr.contains("services.dashboard.depends_on[0]"), "the bad image hid nothing: {}", out.stderr);
    assert!(!out.stderr.contains("no service \"dashboard\""), "{}", out.stderr);
    assert!(out.stderr.contains("(2 problems)"), "{}", out.stderr);
}

#[test]
fn good_manifests_pass() {
    for name in ["shop.toml", "ec2-regions.json"] {
        let p = manifests().join("good").join(name);
        let out = lifeboat(None, &["manifest", "validate", p.to_str().unwrap()]).ok();
        assert!(out.stdout.contains("valid"), "{out:?}");
    }
    let p = manifests().join("good/shop.toml");
    let out = lifeboat(None, &["manifest", "validate", p.to_str().unwrap()]).ok();
    assert!(out.stdout.contains("8 services, 8 dependencies"), "{}", out.stdout);
    let v = lifeboat(None, &["--output", "json", "manifest", "validate", p.to_str().unwrap()]).ok().json();
    assert_eq!(v["valid"], true);
}

#[test]
fn missing_file_and_usage_errors_exit_2() {
    let out = lifeboat(None, &["manifest", "validate", "/nonexistent/shop.toml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot read manifest /nonexistent/shop.toml"), "{}", out.stderr);
    let out = lifeboat(None, &["manifest", "frobnicate"]);
    assert_eq!(out.code, 2);
}
