//! `lifeboat demo`: the main job end to end on the embedded default. An
//! in-process server (directory store, local provider) gets a sample region
//! of nine services in a DAG; it is snapshotted, promoted, brought up, failed
//! (every instance killed) and recovered from known-good, then torn down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TargetArgs;
use super::client::Client;
use super::follow::{follow, print_run, secs};
use super::recovery::start;
use super::{Failure, Output, exit};
use crate::api::pb;
use crate::provider::health::probe_http;
use crate::server;
use crate::store::{DynStore, FsStore};

/// (service, dependencies, boot delay in ms)
const SERVICES: [(&str, &[&str], u64); 9] = [
    ("db", &[], 600),
    ("cache", &["db"], 200),
    ("queue", &["db"], 300),
    ("auth", &[], 200),
    ("api", &["cache", "queue", "auth"], 400),
    ("worker", &["queue"], 200),
    ("gateway", &["api", "worker"], 200),
    ("metrics", &[], 300),
    ("dashboard", &["metrics"], 200),
];

/// Removes the demo's directory however the demo ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::FAILED, format!("demo failed: {e}"))
}

fn heading(n: usize, text: &str) {
    println!("\n==> {n}/7 {text}");
}

/// One small artifact per service: a script that runs this binary's demo service.
fn write_artifacts(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().map_err(fail)?;
    std::fs::create_dir_all(dir).map_err(fail)?;
    SERVICES
        .iter()
        .map(|(name, _, _)| {
            let path = dir.join(format!("{name}.sh"));
            let script =
                format!("#!/bin/sh\n# lifeboat demo service: {name}\nexec '{}' demo-service \"$@\"\n", exe.display());
            std::fs::write(&path, script).map_err(fail)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
            Ok(path)
        })
        .collect()
}

fn manifest(images: &[String], ports: &[u16]) -> String {
    let addr = |name: &str| {
        let i = SERVICES.iter().position(|(n, _, _)| *n == name).expect("known service");
        format!("127.0.0.1:{}", ports[i])
    };
    let mut m = String::from(
        "# The demo region: nine services in a DAG, plus an independent branch.\n\
         environment = \"shop\"\nregion = \"local-1\"\nprovider = \"local\"\nrto_objective = \"2m\"\n",
    );
    for (i, (name, deps, boot)) in SERVICES.iter().enumerate() {
        let mut args = vec![format!("\"--name\", \"{name}\""), format!("\"--boot-delay\", \"{boot}ms\"")];
        args.extend(deps.iter().map(|d| format!("\"--dep\", \"{}\"", addr(d))));
        let deps_list: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
        m.push_str(&format!(
            "\n[services.{name}]\nimage = \"{}\"\ndepends_on = [{}]\ntimeout = \"60s\"\nattempts = 2\ngrace_period = \"1s\"\n\
             health = {{ http = \"/healthz\", interval = \"100ms\", timeout = \"30s\" }}\n\
             launch = {{ listen = \"{}\", args = [{}] }}\ntags = {{ tier = \"demo\" }}\n",
            images[i],
            deps_list.join(", "),
            addr(name),
            args.join(", ")
        ));
    }
    m
}

/// Every service answers `/healthz` through its stable address.
async fn verify(ports: &[u16]) -> Vec<String> {
    let mut down = Vec::new();
    for (i, (name, _, _)) in SERVICES.iter().enumerate() {
        if probe_http(&format!("http://127.0.0.1:{}/healthz", ports[i]), Duration::from_secs(2)).await.is_err() {
            down.push(name.to_string());
        }
    }
    down
}

async fn recover_region(client: &Client) -> Result<pb::Run, Failure> {
    let target = TargetArgs {
        environment: "shop".into(),
        snapshot: "known-good".into(),
        region: None,
        force: false,
        no_prune: false,
        decommission: false,
    };
    let run = start(client, target, None, false).await?;
    println!("run {} started", run.id);
    let run = follow(client, &run.id, Output::Text).await?;
    println!();
    print_run(&run);
    if run.state != "succeeded" {
        return Err(fail(format!("run {} {}", run.id, run.state)));
    }
    Ok(run)
}

pub async fn run() -> Result<(), Failure> {
    let begun = Instant::now();
    let dir = std::env::temp_dir().join(format!("lifeboat-demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let scratch = Scratch(dir.clone());
    println!("Lifeboat demo: snapshot a region, fail it, recover it from known-good.");

    heading(1, "Starting an in-process lifeboat server (directory store, local provider)");
    let store: DynStore = Arc::new(FsStore::open(dir.join("store")).map_err(fail)?);
    let running = server::start(server::Options {
        store,
        local_dir: dir.join("local"),
        listen: "127.0.0.1:0".into(),
        lease_ttl: Duration::from_secs(15),
        proposal_timeout: crate::engine::DEFAULT_PROPOSAL_TIMEOUT,
        safety: Default::default(),
        allow_public_listen: false,
        max_unpacked_bytes: None,
        drill_network: Default::default(),
        import_idle_timeout: None,
        // The demo runs on this host only.
        ec2: None,
        drift_interval: crate::engine::drift::DEFAULT_DRIFT_INTERVAL,
        drill_sweep_interval: std::time::Duration::from_secs(60),
        schedule_interval: std::time::Duration::from_secs(15),
        http_listen: None,
        tokens: Default::default(),
        notify: Vec::new(),
        webhooks: Default::default(),
        tls: None,
        admission: Default::default(),
    })
    .await
    .map_err(fail)?;
    let url = format!("http://{}", running.addr);
    println!("gRPC on {url}, state in {}", dir.display());
    let client = Client::connect(&url).await?;
    let result = demo(&client, &running, &dir).await;

    heading(7, "Tearing everything down");
    let teardown = running.provider.teardown("shop").await;
    running.stop().await.map_err(fail)?;
    drop(scratch);
    let (recovery_ms, critical_ms, path) = result?;
    teardown.map_err(fail)?;
    println!("all instances stopped, stable addresses released, {} removed", dir.display());
    println!(
        "\nRegion recovered in {} (critical-path lower bound {}: {}); demo took {}.",
        secs(recovery_ms),
        secs(critical_ms),
        path,
        secs(begun.elapsed().as_millis() as u64)
    );
    Ok(())
}

async fn demo(client: &Client, running: &server::Running, dir: &Path) -> Result<(u64, u64, String), Failure> {
    heading(2, "Importing the demo service artifacts");
    let mut images = Vec::new();
    for path in write_artifacts(&dir.join("artifacts"))? {
        let image = super::image::import_file(client, &path).await?;
        println!("  {:<10} {}", path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default(), image.id);
        images.push(image.id);
    }

    heading(3, "Pushing the region's manifest as a snapshot and promoting it");
    let ports = crate::provider::local::pick_listen_ports(SERVICES.len()).map_err(fail)?;
    let text = manifest(&images, &ports);
    std::fs::write(dir.join("shop.toml"), &text).map_err(fail)?;
    let mut snapshots = client.snapshots();
    let req = pb::CreateSnapshotRequest {
        manifest: text,
        format: "toml".into(),
        source_name: "shop.toml".into(),
        message: "demo region".into(),
        labels: [("source".to_string(), "lifeboat demo".to_string())].into(),
        force: false,
    };
    let snap = snapshots.create(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
    println!("  snapshot {} of shop: {} services, {}", snap.version, snap.service_count, snap.digest);
    let req = pb::PromoteSnapshotRequest {
        environment: "shop".into(),
        r#ref: snap.version.to_string(),
        reason: "demo baseline".into(),
        expected_version: Some(0),
        ..Default::default()
    };
    snapshots.promote(client.request(req)).await.map_err(|e| client.fail(e))?;
    println!("  known-good -> {}", snap.version);

    heading(4, "Bringing the region up from known-good");
    recover_region(client).await?;
    let down = verify(&ports).await;
    if !down.is_empty() {
        return Err(fail(format!("after bring-up these services do not answer: {}", down.join(", "))));
    }
    println!("every service answers on its stable address");

    heading(5, "Simulating a region failure: killing every instance");
    let killed = running.provider.kill_environment("shop").await.map_err(|e| fail(e.to_string()))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let down = verify(&ports).await;
    println!("  killed {killed} instances; {}/{} services down", down.len(), SERVICES.len());
    let failed_at = Instant::now();

    heading(6, "Recovering the region from known-good");
    let run = recover_region(client).await?;
    let down = verify(&ports).await;
    if !down.is_empty() {
        return Err(fail(format!("after recovery these services do not answer: {}", down.join(", "))));
    }
    println!("every service answers again, {} after the failure", secs(failed_at.elapsed().as_millis() as u64));
    Ok((run.elapsed_ms, run.measured_critical_path_ms, run.measured_critical_path.join(" -> ")))
}
