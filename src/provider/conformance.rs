//! The contract every `ComputeProvider` adapter must meet, run by each
//! adapter's tests against its real backend.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ComputeProvider, LaunchSpec, LogFrom, ProviderError, ServiceRef};

/// What an adapter's test supplies: a target whose image becomes healthy,
/// and one whose image never does.
pub struct Fixtures {
    pub healthy: ServiceRef,
    pub healthy_image: String,
    pub broken: ServiceRef,
    pub broken_image: String,
}

fn spec(target: &ServiceRef, image: &str, key: &str, replicas: u32) -> LaunchSpec {
    LaunchSpec {
        target: target.clone(),
        image: image.to_string(),
        replicas,
        run_id: "conformance".into(),
        snapshot: 1,
        launch_key: key.to_string(),
        fingerprint: "conformance".into(),
    }
}

pub async fn run_all(p: &dyn ComputeProvider, f: &Fixtures) {
    let never = CancellationToken::new();
    let key = format!("conformance/{}/1", uuid::Uuid::new_v4().simple());

    // Launch is idempotent per key.
    let ids = p.launch(&spec(&f.healthy, &f.healthy_image, &key, 2), &never).await.expect("launch");
    assert_eq!(ids.len(), 2);
    let again = p.launch(&spec(&f.healthy, &f.healthy_image, &key, 2), &never).await.expect("launch again");
    assert_eq!(again, ids, "a second launch with the same key returns the same instances");

    p.wait_healthy(&f.healthy, &ids, Duration::from_secs(30), &never).await.expect("healthy");
    p.cutover(&f.healthy, &ids).await.expect("cutover");
    let inv = p.inventory(&f.healthy.environment, &f.healthy.region).await.expect("inventory");
    for id in &ids {
        let i = inv.iter().find(|i| &i.id == id).unwrap_or_else(|| panic!("{id} not in inventory {inv:?}"));
        assert!(i.healthy && i.serving, "{i:?}");
        assert_eq!(i.image, f.healthy_image);
        assert_eq!(i.run_id, "conformance");
        assert_eq!(i.fingerprint, "conformance");
    }

    // An instance that never becomes healthy: reported within the limit,
    // with its output kept for the report.
    let bkey = format!("conformance/{}/1", uuid::Uuid::new_v4().simple());
    let bad = p.launch(&spec(&f.broken, &f.broken_image, &bkey, 1), &never).await.expect("launch broken");
    let started = tokio::time::Instant::now();
    let err = p.wait_healthy(&f.broken, &bad, Duration::from_secs(2), &never).await.expect_err("never healthy");
    assert!(matches!(err, ProviderError::Unhealthy { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "the health gate respects its limit");
    // The inventory probes its health check too: running is not healthy.
    let inv = p.inventory(&f.broken.environment, &f.broken.region).await.expect("inventory");
    let listed = inv.iter().find(|i| i.id == bad[0]).expect("the broken instance is listed");
    assert!(!listed.healthy, "an instance failing its health check is not healthy in the inventory: {listed:?}");
    assert!(!p.logs(&bad[0], 20).await.is_empty(), "logs of a failed instance are kept");
    let read = p.read_logs(&bad[0], LogFrom::Tail(20)).await.expect("read logs").expect("a known instance");
    assert!(!read.lines.is_empty() && read.lines.len() <= 20, "{read:?}");
    let more = p.read_logs(&bad[0], LogFrom::Cursor(read.next)).await.expect("read on").expect("a known instance");
    assert!(more.next >= read.next, "the cursor only moves on");
    assert!(p.read_logs("no-such-instance", LogFrom::Tail(5)).await.expect("read unknown").is_none());

    // Cancellation is honoured.
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let err = p.wait_healthy(&f.broken, &bad, Duration::from_secs(30), &cancelled).await.expect_err("cancelled");
    assert!(matches!(err, ProviderError::Cancelled), "{err}");
    let ckey = format!("conformance/{}/1", uuid::Uuid::new_v4().simple());
    let err = p.launch(&spec(&f.healthy, &f.healthy_image, &ckey, 1), &cancelled).await.expect_err("cancelled");
    assert!(matches!(err, ProviderError::Cancelled), "{err}");

    // Retire (prune) stops the service's traffic; it is idempotent.
    p.retire(&f.healthy).await.expect("retire");
    p.retire(&f.healthy).await.expect("retire again");
    let inv = p.inventory(&f.healthy.environment, &f.healthy.region).await.expect("inventory");
    assert!(inv.iter().filter(|i| ids.contains(&i.id)).all(|i| !i.serving), "retired: nothing serves {inv:?}");

    // Terminate is idempotent and accepts unknown instances.
    let mut all = ids.clone();
    all.extend(bad);
    p.terminate(&all).await.expect("terminate");
    p.terminate(&all).await.expect("terminate again");
    p.terminate(&["no-such-instance".to_string()]).await.expect("terminate unknown");
    let inv = p.inventory(&f.healthy.environment, &f.healthy.region).await.expect("inventory");
    assert!(inv.iter().all(|i| !all.contains(&i.id)), "terminated instances are gone: {inv:?}");
}
