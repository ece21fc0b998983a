//! The local provider (the embedded default): each instance is an OS process
//! on this host running an artifact from the object store.
//!
//! State lives in a directory of its own, so instances outlive the server and
//! are re-adopted when it restarts:
//! ```text
//! images/<hex>/             materialised artifacts (digest-verified when fetched)
//! instances/<id>/instance.json, output.log
//! keys/<sha256 of launch key>.json   launch key -> instance IDs (idempotent launches)
//! services/<env>/<service>.json      cutover pointer: the instances that get traffic
//! ```

mod process;
mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::health::{probe_command, probe_http, probe_tcp};
use super::{ComputeProvider, LaunchSpec, ProviderError, ProviderResult, ServiceRef};
use crate::domain::manifest::{Check as HealthCheck, Manifest};
use crate::domain::plan::{Check, LiveInstance};
use crate::domain::snapshot::sha256_hex;
use crate::store::images::ArtifactKind;
use crate::store::{DynStore, ImageRepo};

pub const DEFAULT_MAX_INSTANCES: usize = 512;
const STOP_GRACE: Duration = Duration::from_secs(5);
const ADOPT_EVERY: Duration = Duration::from_secs(2);

/// How to probe one instance, resolved at launch (its port is known then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Probe {
    Http(String),
    Tcp(String),
    Command(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct InstanceRecord {
    format_version: u32,
    id: String,
    environment: String,
    region: String,
    service: String,
    image: String,
    run_id: String,
    launch_key: String,
    port: u16,
    pid: Option<u32>,
    start_time: Option<u64>,
    created_at: String,
    probe: Option<Probe>,
    probe_timeout_ms: u64,
    terminated: bool,
    exit: Option<String>,
    #[serde(default)]
    fingerprint: String,
}

impl InstanceRecord {
    fn alive(&self) -> bool {
        match (self.pid, self.start_time) {
            (Some(p), Some(t)) => !self.terminated && process::is_alive(p, t),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pointer {
    format_version: u32,
    environment: String,
    service: String,
    listen: Option<String>,
    targets: Vec<String>,
}

pub struct LocalProvider {
    dir: PathBuf,
    images: ImageRepo,
    proxies: proxy::Proxies,
    launch_lock: tokio::sync::Mutex<()>,
    max_instances: usize,
}

fn backend(message: impl Into<String>) -> ProviderError {
    ProviderError::Backend { message: message.into(), retryable: false }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().expect("paths have parents");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).expect("records serialise"))?;
    std::fs::rename(&tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// `n` distinct loopback ports that are free now, below the kernel's
/// ephemeral range, so that ports handed to instances (taken from that range)
/// never collide with them. For stable addresses chosen by a program (the
/// demo, tests).
pub fn pick_listen_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let seed = uuid::Uuid::new_v4().as_u128();
    let mut attempt = 0u128;
    while ports.len() < n {
        attempt += 1;
        if attempt > 20_000 {
            return Err(std::io::Error::other("no free port between 20000 and 32000"));
        }
        let port = 20_000 + ((seed.wrapping_mul(attempt.wrapping_add(7919)) >> 64) % 12_000) as u16;
        if ports.contains(&port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    Ok(ports)
}

fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr().map(|a| a.port())
}

impl LocalProvider {
    /// Opens the provider's directory and re-adopts running instances: their
    /// stable addresses are served again.
    pub async fn open(dir: impl AsRef<Path>, store: DynStore) -> anyhow::Result<Arc<LocalProvider>> {
        let dir = std::path::absolute(dir.as_ref())?;
        for sub in ["images", "instances", "keys", "services"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        let p = Arc::new(LocalProvider {
            dir,
            images: ImageRepo::new(store),
            proxies: proxy::Proxies::default(),
            launch_lock: tokio::sync::Mutex::new(()),
            max_instances: DEFAULT_MAX_INSTANCES,
        });
        let (pointers, adopted) = p.adopt(true).await;
        tracing::info!(dir = %p.dir.display(), pointers, adopted, "local provider ready");
        // Keep serving every stable address recorded here: after another
        // server on this host stops, its addresses come back within seconds.
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ADOPT_EVERY).await;
                let Some(p) = weak.upgrade() else { return };
                p.adopt(false).await;
            }
        });
        Ok(p)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves every recorded stable address, forwarding to the recorded
    /// instances that still run. Returns (addresses served, instances).
    async fn adopt(&self, report: bool) -> (usize, usize) {
        let mut pointers = 0;
        let mut adopted = 0;
        for p in self.pointers(None) {
            let Some(listen) = &p.listen else { continue };
            let addrs = self.target_addrs(&p.targets);
            adopted += addrs.len();
            match self.proxies.route(listen, addrs) {
                Ok(()) => pointers += 1,
                Err(e) if report => tracing::warn!(service = %p.service, error = %e, "cannot serve stable address yet"),
                Err(_) => {}
            }
        }
        (pointers, adopted)
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.dir.join("instances").join(id)
    }

    fn record(&self, id: &str) -> Option<InstanceRecord> {
        read_json(&self.instance_dir(id).join("instance.json"))
    }

    fn save(&self, r: &InstanceRecord) -> ProviderResult<()> {
        write_json(&self.instance_dir(&r.id).join("instance.json"), r)
            .map_err(|e| backend(format!("cannot record instance {}: {e}", r.id)))
    }

    fn records(&self) -> Vec<InstanceRecord> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("instances")) else { return Vec::new() };
        let mut out: Vec<InstanceRecord> =
            entries.flatten().filter_map(|e| read_json(&e.path().join("instance.json"))).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn pointer_path(&self, env: &str, service: &str) -> PathBuf {
        self.dir.join("services").join(env).join(format!("{service}.json"))
    }

    fn pointers(&self, env: Option<&str>) -> Vec<Pointer> {
        let mut out = Vec::new();
        let Ok(envs) = std::fs::read_dir(self.dir.join("services")) else { return out };
        for e in envs.flatten() {
            if env.is_some_and(|x| e.file_name().to_str() != Some(x)) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(e.path()) else { continue };
            out.extend(files.flatten().filter_map(|f| read_json::<Pointer>(&f.path())));
        }
        out
    }

    fn target_addrs(&self, ids: &[String]) -> Vec<SocketAddr> {
        ids.iter()
            .filter_map(|id| self.record(id))
            .filter(InstanceRecord::alive)
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
            .collect()
    }

    /// Fetches, verifies and unpacks an image once; returns its directory.
    async fn materialise(&self, image: &str) -> ProviderResult<(PathBuf, ArtifactKind)> {
        let hex = image.strip_prefix("sha256:").unwrap_or(image);
        let dir = self.dir.join("images").join(hex);
        if let Some(kind) = read_json::<ArtifactKind>(&dir.join("ready.json")) {
            return Ok((dir, kind));
        }
        let unavailable = |message: String| ProviderError::ImageUnavailable { image: image.to_string(), message };
        let meta =
            self.images.meta(image).await.map_err(|e| unavailable(e.to_string()))?.ok_or_else(|| {
                unavailable("it is not in the store; import it with `lifeboat image import PATH`".into())
            })?;
        let bytes = self.images.artifact(image).await.map_err(|e| unavailable(e.to_string()))?;
        let tmp = self.dir.join("images").join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let kind = meta.kind;
        let unpack = {
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&tmp)?;
                match kind {
                    ArtifactKind::Executable => {
                        use std::os::unix::fs::PermissionsExt;
                        let path = tmp.join("artifact");
                        std::fs::write(&path, &bytes)?;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                    }
                    ArtifactKind::Tar => tar::Archive::new(&bytes[..]).unpack(tmp.join("root"))?,
                    ArtifactKind::TarGz => {
                        tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..])).unpack(tmp.join("root"))?
                    }
                }
                write_json(&tmp.join("ready.json"), &kind)
            })
        };
        let result = unpack.await.map_err(|e| unavailable(e.to_string()))?;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(unavailable(format!("cannot unpack it: {e}")));
        }
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp); // another launch won the race
        }
        Ok((dir, kind))
    }

    fn program(
        dir: &Path,
        kind: ArtifactKind,
        settings: &BTreeMap<String, serde_json::Value>,
    ) -> ProviderResult<PathBuf> {
        let entrypoint = settings.get("entrypoint").and_then(|v| v.as_str());
        let path = match (kind, entrypoint) {
            (ArtifactKind::Executable, _) => dir.join("artifact"),
            (_, Some(e)) => dir.join("root").join(e),
            (_, None) => return Err(backend("the image is a tarball: set launch.entrypoint to the program inside it")),
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(backend(format!("entrypoint {} is not a file in the image", path.display())))
        }
    }

    fn resolve_probe(target: &ServiceRef, port: u16) -> Option<Probe> {
        let h = target.health.as_ref()?;
        Some(match &h.check {
            HealthCheck::Http(p) if p.starts_with('/') => Probe::Http(format!("http://127.0.0.1:{port}{p}")),
            HealthCheck::Http(url) => Probe::Http(url.clone()),
            HealthCheck::Tcp(a) if a.is_empty() => Probe::Tcp(format!("127.0.0.1:{port}")),
            HealthCheck::Tcp(a) => Probe::Tcp(a.clone()),
            HealthCheck::Command(argv) => Probe::Command(argv.clone()),
        })
    }

    fn instance_env(r: &InstanceRecord) -> Vec<(String, String)> {
        vec![
            ("PORT".into(), r.port.to_string()),
            ("LIFEBOAT_SERVICE".into(), r.service.clone()),
            ("LIFEBOAT_INSTANCE".into(), r.id.clone()),
            ("LIFEBOAT_RUN".into(), r.run_id.clone()),
            ("LIFEBOAT_ENVIRONMENT".into(), r.environment.clone()),
        ]
    }

    async fn probe(r: &InstanceRecord) -> Result<(), String> {
        let t = Duration::from_millis(r.probe_timeout_ms);
        match &r.probe {
            Some(Probe::Http(u)) => probe_http(u, t).await,
            Some(Probe::Tcp(a)) => probe_tcp(a, t).await,
            Some(Probe::Command(argv)) => probe_command(argv, &Self::instance_env(r), t).await,
            None if r.alive() => Ok(()),
            None => Err(format!("instance {} is not running", r.id)),
        }
    }

    /// Starts the process for a record unless it already runs (found by PID,
    /// or by its environment after a crash before the PID was recorded).
    async fn ensure_running(&self, mut r: InstanceRecord, spec: &LaunchSpec) -> ProviderResult<()> {
        if r.pid.is_some() || r.terminated {
            return Ok(()); // started once: never again (the health gate judges it)
        }
        if let Some(pid) = process::find_by_instance(&r.id) {
            r.pid = Some(pid);
            r.start_time = process::start_time(pid);
            return self.save(&r);
        }
        let (dir, kind) = self.materialise(&spec.image).await?;
        let program = Self::program(&dir, kind, &spec.target.settings)?;
        let idir = self.instance_dir(&r.id);
        std::fs::create_dir_all(&idir).map_err(|e| backend(format!("cannot create {}: {e}", idir.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(idir.join("output.log"))
            .map_err(|e| backend(format!("cannot open the log of {}: {e}", r.id)))?;
        let log2 = log.try_clone().map_err(|e| backend(e.to_string()))?;
        let args: Vec<String> =
            spec.target.settings.get("args").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
        let env: BTreeMap<String, String> =
            spec.target.settings.get("env").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
        let mut cmd = tokio::process::Command::new(&program);
        // Instances get a clean environment: the server's secrets stay out.
        cmd.env_clear();
        for k in ["PATH", "HOME", "LANG", "TMPDIR", "TZ"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(env).envs(Self::instance_env(&r));
        cmd.args(&args)
            .current_dir(&idir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| ProviderError::LaunchFailed {
            service: r.service.clone(),
            message: format!("cannot start {}: {e}", program.display()),
        })?;
        let pid = child.id().ok_or_else(|| backend("the new process has no PID"))?;
        r.pid = Some(pid);
        r.start_time = process::start_time(pid);
        self.save(&r)?;
        // Reap it when it exits (while this server runs) and note how it ended.
        let path = self.instance_dir(&r.id).join("instance.json");
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await
                && let Some(mut rec) = read_json::<InstanceRecord>(&path)
            {
                rec.exit = Some(status.to_string());
                let _ = write_json(&path, &rec);
            }
        });
        Ok(())
    }

    /// Simulates a region failure: kills every instance of an environment at once.
    pub fn kill_environment(&self, env: &str) -> usize {
        let mut n = 0;
        for r in self.records().into_iter().filter(|r| r.environment == env && r.alive()) {
            if let (Some(p), Some(t)) = (r.pid, r.start_time) {
                process::kill_now(p, t);
                n += 1;
            }
        }
        n
    }

    /// Stops every instance of an environment and stops serving its addresses.
    pub async fn teardown(&self, env: &str) -> ProviderResult<()> {
        let ids: Vec<String> =
            self.records().into_iter().filter(|r| r.environment == env && !r.terminated).map(|r| r.id).collect();
        self.terminate(&ids).await?;
        for p in self.pointers(Some(env)) {
            if let Some(l) = &p.listen {
                self.proxies.remove(l);
            }
            let _ = std::fs::remove_file(self.pointer_path(env, &p.service));
        }
        Ok(())
    }
}

#[async_trait]
impl ComputeProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn preflight(&self, m: &Manifest, region: &str) -> Vec<Check> {
        let mut missing = Vec::new();
        let mut no_entrypoint = Vec::new();
        for (name, s) in &m.services {
            let Some(image) = s.image.for_region(region) else { continue };
            match self.images.meta(image).await {
                Ok(Some(meta)) => {
                    if meta.kind != ArtifactKind::Executable && !s.launch.contains_key("entrypoint") {
                        no_entrypoint.push(name.as_str());
                    }
                }
                Ok(None) => missing.push(format!("{name} ({image})")),
                Err(e) => missing.push(format!("{name} ({e})")),
            }
        }
        let mut checks = vec![if missing.is_empty() {
            Check::pass("images-in-store", format!("all {} images are in the store", m.services.len()))
        } else {
            Check::fail(
                "images-in-store",
                format!(
                    "images not in the store (import them with `lifeboat image import PATH`): {}",
                    missing.join(", ")
                ),
            )
        }];
        if !no_entrypoint.is_empty() {
            checks.push(Check::fail(
                "entrypoints",
                format!("tarball images need launch.entrypoint: {}", no_entrypoint.join(", ")),
            ));
        }
        let taken: Vec<String> = m
            .services
            .iter()
            .filter_map(|(name, s)| Some((name, s.launch.get("listen")?.as_str()?)))
            .filter(|(_, addr)| !self.proxies.serves(addr) && std::net::TcpListener::bind(addr).is_err())
            .map(|(name, addr)| format!("{addr} ({name})"))
            .collect();
        checks.push(if taken.is_empty() {
            Check::pass("stable-addresses", "every listen address is free or already served by lifeboat")
        } else {
            Check::fail("stable-addresses", format!("in use by another program: {}", taken.join(", ")))
        });
        let running = self.records().iter().filter(|r| r.alive()).count();
        let wanted: usize = m.services.values().map(|s| s.replicas as usize).sum();
        checks.push(if running + wanted <= self.max_instances {
            Check::pass("capacity", format!("{wanted} new instances, {running} running, cap {}", self.max_instances))
        } else {
            Check::fail(
                "capacity",
                format!(
                    "{wanted} new instances with {running} running would exceed this host's cap of {}",
                    self.max_instances
                ),
            )
        });
        checks
    }

    async fn inventory(&self, env: &str, region: &str) -> ProviderResult<Vec<LiveInstance>> {
        let serving: std::collections::BTreeSet<String> =
            self.pointers(Some(env)).into_iter().flat_map(|p| p.targets).collect();
        let mut alive = Vec::new();
        for mut r in self.records().into_iter().filter(|r| r.environment == env && r.region == region && !r.terminated)
        {
            if r.pid.is_none() {
                continue; // being launched right now
            }
            if !r.alive() {
                // Dead: sweep it so it is not mistaken for capacity.
                r.terminated = true;
                let _ = self.save(&r);
                continue;
            }
            alive.push(r);
        }
        let health = futures::future::join_all(alive.iter().map(Self::probe)).await;
        Ok(alive
            .into_iter()
            .zip(health)
            .map(|(r, h)| LiveInstance {
                serving: serving.contains(&r.id),
                id: r.id,
                service: r.service,
                image: r.image,
                healthy: h.is_ok(),
                run_id: r.run_id,
                fingerprint: r.fingerprint,
            })
            .collect())
    }

    async fn launch(&self, spec: &LaunchSpec, cancel: &CancellationToken) -> ProviderResult<Vec<String>> {
        if cancel.is_cancelled() {
            return Err(ProviderError::Cancelled);
        }
        // Fetch the image before taking the lock: it may be large.
        self.materialise(&spec.image).await?;
        let _guard = self.launch_lock.lock().await;
        let key_path = self.dir.join("keys").join(format!("{}.json", sha256_hex(spec.launch_key.as_bytes())));
        let ids: Vec<String> = match read_json(&key_path) {
            Some(ids) => ids,
            None => {
                let running = self.records().iter().filter(|r| r.alive()).count();
                if running + spec.replicas as usize > self.max_instances {
                    return Err(ProviderError::LaunchFailed {
                        service: spec.target.service.clone(),
                        message: format!("this host's cap of {} instances is reached", self.max_instances),
                    });
                }
                let ids: Vec<String> = (0..spec.replicas)
                    .map(|_| format!("{}-{}", spec.target.service, &uuid::Uuid::new_v4().simple().to_string()[..8]))
                    .collect();
                write_json(&key_path, &ids).map_err(|e| backend(format!("cannot record launch: {e}")))?;
                ids
            }
        };
        let probe_timeout = spec.target.health.as_ref().map_or(Duration::from_secs(2), |h| h.probe_timeout.0);
        for id in &ids {
            let record = match self.record(id) {
                Some(r) => r,
                None => {
                    let port = free_port().map_err(|e| backend(format!("no free port: {e}")))?;
                    let r = InstanceRecord {
                        format_version: 1,
                        id: id.clone(),
                        environment: spec.target.environment.clone(),
                        region: spec.target.region.clone(),
                        service: spec.target.service.clone(),
                        image: spec.image.clone(),
                        run_id: spec.run_id.clone(),
                        launch_key: spec.launch_key.clone(),
                        port,
                        pid: None,
                        start_time: None,
                        created_at: crate::store::snapshots::now_rfc3339(),
                        probe: Self::resolve_probe(&spec.target, port),
                        probe_timeout_ms: probe_timeout.as_millis() as u64,
                        terminated: false,
                        exit: None,
                        fingerprint: spec.fingerprint.clone(),
                    };
                    self.save(&r)?;
                    r
                }
            };
            self.ensure_running(record, spec).await?;
        }
        Ok(ids)
    }

    async fn wait_healthy(
        &self,
        target: &ServiceRef,
        instances: &[String],
        within: Duration,
        cancel: &CancellationToken,
    ) -> ProviderResult<()> {
        let started = tokio::time::Instant::now();
        let (interval, threshold, unhealthy_after) = target
            .health
            .as_ref()
            .map_or((Duration::from_millis(500), 2, 3), |h| (h.interval.0, h.healthy_threshold, h.unhealthy_threshold));
        let checks = instances.iter().map(|id| async move {
            let mut passes = 0;
            let mut failures = 0;
            let mut passed_once = false;
            let mut last = "no probe has run yet".to_string();
            loop {
                let Some(r) = self.record(id) else {
                    return Err(format!("instance {id} has no record"));
                };
                if !r.alive() {
                    let how = r.exit.clone().unwrap_or_else(|| "it is not running".into());
                    return Err(format!("instance {id} exited ({how})"));
                }
                match Self::probe(&r).await {
                    Ok(()) => {
                        passes += 1;
                        failures = 0;
                        passed_once = true;
                        if passes >= threshold {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        passes = 0;
                        failures += 1;
                        // It answered, then stopped: no point waiting out the gate.
                        if passed_once && failures >= unhealthy_after {
                            return Err(format!("instance {id} passed, then failed {failures} probes in a row: {e}"));
                        }
                        last = e;
                    }
                }
                let left = within.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(last);
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval.min(left)) => {}
                    _ = cancel.cancelled() => return Err(String::new()),
                }
            }
        });
        let results = futures::future::join_all(checks).await;
        if cancel.is_cancelled() {
            return Err(ProviderError::Cancelled);
        }
        match results.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(last) => {
                Err(ProviderError::Unhealthy { service: target.service.clone(), after: started.elapsed(), last })
            }
        }
    }

    async fn cutover(&self, target: &ServiceRef, instances: &[String]) -> ProviderResult<()> {
        let listen = target.settings.get("listen").and_then(|v| v.as_str()).map(str::to_string);
        let path = self.pointer_path(&target.environment, &target.service);
        let previous: Option<Pointer> = read_json(&path);
        let pointer = Pointer {
            format_version: 1,
            environment: target.environment.clone(),
            service: target.service.clone(),
            listen: listen.clone(),
            targets: instances.to_vec(),
        };
        // Record first, then switch: the periodic re-adoption reads the record.
        write_json(&path, &pointer)
            .map_err(|e| backend(format!("cannot record cutover of {}: {e}", target.service)))?;
        if let Some(l) = &listen
            && let Err(e) = self.proxies.route(l, self.target_addrs(instances))
        {
            // Traffic did not move: put the record back as it was.
            match previous {
                Some(p) => {
                    let _ = write_json(&path, &p);
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            return Err(backend(e));
        }
        Ok(())
    }

    async fn terminate(&self, instances: &[String]) -> ProviderResult<()> {
        for id in instances {
            let Some(mut r) = self.record(id) else { continue };
            if let (Some(p), Some(t)) = (r.pid, r.start_time) {
                process::stop(p, t, STOP_GRACE).await;
            }
            r.terminated = true;
            self.save(&r)?;
        }
        Ok(())
    }

    async fn logs(&self, instance: &str, lines: usize) -> Vec<String> {
        process::tail(&self.instance_dir(instance).join("output.log"), lines)
    }
}
