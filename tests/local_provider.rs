//! The local provider passes the provider conformance suite with real
//! processes, and refuses what it cannot run.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use lifeboat::domain::duration::Dur;
use lifeboat::domain::manifest::{Check, Health};
use lifeboat::provider::ServiceRef;
use lifeboat::provider::conformance::{Fixtures, run_all};
use lifeboat::provider::local::LocalProvider;
use lifeboat::store::{DynStore, FsStore, ImageRepo};

fn target(service: &str, args: &[&str]) -> ServiceRef {
    ServiceRef {
        environment: "conf".into(),
        region: "local-1".into(),
        service: service.into(),
        settings: BTreeMap::from([("args".to_string(), serde_json::json!(args))]),
        health: Some(Health {
            check: Check::Http("/healthz".into()),
            interval: Dur::millis(100),
            timeout: Dur::secs(20),
            probe_timeout: Dur::secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
        }),
        tags: BTreeMap::new(),
    }
}

#[tokio::test]
async fn local_provider_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = common::Instances(dir.path().join("local"));
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let images = ImageRepo::new(store.clone());
    let art = common::demo_artifact(dir.path(), "conformance");
    let image = images.import(Bytes::from(std::fs::read(&art).unwrap()), "conformance.sh", "test").await.unwrap().id;
    let provider = LocalProvider::open_with(dir.path().join("local"), store, common::BIN.into()).await.unwrap();
    let fixtures = Fixtures {
        healthy: target("web", &["--name", "web"]),
        healthy_image: image.clone(),
        broken: target("broken", &["--name", "broken", "--broken"]),
        broken_image: image,
    };
    run_all(provider.as_ref(), &fixtures).await;
}

#[tokio::test]
async fn images_are_verified_and_kinds_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let images = ImageRepo::new(store.clone());
    let err = images.import(Bytes::from_static(b"just text"), "notes.txt", "t").await.unwrap_err();
    assert!(err.to_string().contains("notes.txt is not an executable"), "{err}");
    let m = images.import(Bytes::from_static(b"#!/bin/sh\necho hi\n"), "hi.sh", "t").await.unwrap();
    assert!(m.id.starts_with("sha256:"));
    let again = images.import(Bytes::from_static(b"#!/bin/sh\necho hi\n"), "other.sh", "t").await.unwrap();
    assert_eq!(again.id, m.id, "importing the same bytes is idempotent");
    // A tampered artifact is refused when read back.
    let hex = m.id.trim_start_matches("sha256:");
    let path = dir.path().join("store/images").join(hex).join("artifact");
    std::fs::write(&path, b"#!/bin/sh\necho pwned\n").unwrap();
    let err = images.artifact(&m.id).await.unwrap_err();
    assert!(err.to_string().contains("failed its digest check"), "{err}");
}

#[tokio::test]
async fn an_instance_that_degrades_fails_its_gate_at_once() {
    use lifeboat::provider::{ComputeProvider, LaunchSpec, ProviderError};
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = common::Instances(dir.path().join("local"));
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let art = common::demo_artifact(dir.path(), "degrading");
    let image =
        ImageRepo::new(store.clone()).import(Bytes::from(std::fs::read(&art).unwrap()), "d.sh", "t").await.unwrap().id;
    let provider = LocalProvider::open_with(dir.path().join("local"), store, common::BIN.into()).await.unwrap();
    let mut t = target("degrading", &["--name", "degrading", "--fail-after", "300ms"]);
    if let Some(h) = t.health.as_mut() {
        h.healthy_threshold = 50; // never reached within the gate
        h.unhealthy_threshold = 2;
    }
    let spec = LaunchSpec {
        snapshot: 1,
        target: t.clone(),
        image,
        replicas: 1,
        run_id: "r".into(),
        launch_key: "r/degrading/1".into(),
        fingerprint: String::new(),
    };
    let never = tokio_util::sync::CancellationToken::new();
    let ids = provider.launch(&spec, &never).await.unwrap();
    let started = std::time::Instant::now();
    let err = provider.wait_healthy(&t, &ids, std::time::Duration::from_secs(20), &never).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unhealthy { last, .. } if last.contains("passed, then failed 2 probes")),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "failed at once, not after the 20 s gate");
    provider.terminate(&ids).await.unwrap();
}

/// A corrupt record never reads as "missing": relaunching the same key
/// fails with an integrity error naming the file, and starts nothing.
#[tokio::test]
async fn a_corrupt_record_never_starts_a_second_instance() {
    use lifeboat::provider::{ComputeProvider, LaunchSpec, ProviderError};
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let _cleanup = common::Instances(local.clone());
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let art = common::demo_artifact(dir.path(), "corrupt");
    let image =
        ImageRepo::new(store.clone()).import(Bytes::from(std::fs::read(&art).unwrap()), "c.sh", "t").await.unwrap().id;
    let provider = LocalProvider::open_with(&local, store, common::BIN.into()).await.unwrap();
    let t = target("corrupt", &["--name", "corrupt"]);
    let spec = LaunchSpec {
        snapshot: 1,
        target: t.clone(),
        image,
        replicas: 1,
        run_id: "r".into(),
        launch_key: "r/corrupt/1".into(),
        fingerprint: String::new(),
    };
    let never = tokio_util::sync::CancellationToken::new();
    let ids = provider.launch(&spec, &never).await.unwrap();
    assert_eq!(common::instance_processes(&local).len(), 1);
    let record = local.join("instances").join(&ids[0]).join("instance.json");
    let key = std::fs::read_dir(local.join("keys")).unwrap().next().unwrap().unwrap().path();
    for (path, garbage) in [(&record, &b"{\"format_version\": 1, \"id\": 7}"[..]), (&key, b"\x00\xff")] {
        let good = std::fs::read(path).unwrap();
        std::fs::write(path, garbage).unwrap();
        let err = provider.launch(&spec, &never).await.unwrap_err();
        assert!(matches!(&err, ProviderError::Integrity { path: p, .. } if p.ends_with(".json")), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "names the file: {err}");
        assert_eq!(common::instance_processes(&local).len(), 1, "no second instance");
        std::fs::write(path, good).unwrap();
    }
    assert_eq!(provider.launch(&spec, &never).await.unwrap(), ids, "the same instance again");
    provider.terminate(&ids).await.unwrap();
}

/// A stable address belongs to one environment's service: two servers
/// sharing the directory that cut over to one address at the same moment
/// never both get it.
#[tokio::test]
async fn two_environments_never_both_claim_an_address() {
    use lifeboat::provider::{ComputeProvider, LaunchSpec};
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let _cleanup = common::Instances(local.clone());
    let store: DynStore = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let art = common::demo_artifact(dir.path(), "claim");
    let image =
        ImageRepo::new(store.clone()).import(Bytes::from(std::fs::read(&art).unwrap()), "c.sh", "t").await.unwrap().id;
    let one = LocalProvider::open_with(&local, store.clone(), common::BIN.into()).await.unwrap();
    let two = LocalProvider::open_with(&local, store, common::BIN.into()).await.unwrap();
    let never = tokio_util::sync::CancellationToken::new();
    let port = lifeboat::provider::local::pick_listen_ports(1).unwrap()[0];
    let mut launched = Vec::new();
    for (p, env) in [(&one, "left"), (&two, "right")] {
        let mut t = target("web", &["--name", env]);
        t.environment = env.into();
        t.settings.insert("listen".into(), serde_json::json!(format!("127.0.0.1:{port}")));
        let spec = LaunchSpec {
            snapshot: 1,
            target: t.clone(),
            image: image.clone(),
            replicas: 1,
            run_id: "r".into(),
            launch_key: format!("r/{env}/web/1"),
            fingerprint: String::new(),
        };
        let ids = p.launch(&spec, &never).await.unwrap();
        launched.push((t, ids));
    }
    let mut decided = 0;
    for round in 0..10 {
        let (a, b) =
            tokio::join!(one.cutover(&launched[0].0, &launched[0].1), two.cutover(&launched[1].0, &launched[1].1));
        assert!(!(a.is_ok() && b.is_ok()), "round {round}: both claimed the address");
        // (On a loaded machine the router may answer late and both give up: that is allowed.)
        let winner = match (&a, &b) {
            (Ok(()), Err(lost)) | (Err(lost), Ok(())) => {
                assert!(lost.to_string().contains("belongs to"), "{lost}");
                decided += 1;
                if a.is_ok() { Some((&one, &launched[0].0)) } else { Some((&two, &launched[1].0)) }
            }
            _ => None,
        };
        // Give it up again for the next round.
        if let Some((p, t)) = winner {
            p.retire(t).await.unwrap();
        }
    }
    assert!(decided >= 5, "only {decided} of 10 rounds had a holder");
    for (p, (_, ids)) in [(&one, &launched[0]), (&two, &launched[1])] {
        p.terminate(ids).await.unwrap();
    }
}
