//! The local provider (the embedded default): each instance is an OS process
//! on this host running an artifact from the object store.
//!
//! State lives in a directory of its own (`records`), so instances outlive
//! the server and are re-adopted when it restarts; the stable addresses are
//! served by a router process of that directory (`router`), so they outlive
//! the server too.

mod drill;
pub mod netns;
mod ports;
mod process;
mod proxy;
mod records;
pub mod router;

pub use ports::{ephemeral_range, listen_warnings};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use self::records::{InstanceRecord, LaunchKeyRecord, Pointer, Probe, ReadyMarker};
use super::health::{probe_command, probe_http_from, probe_tcp_from};
use super::{ComputeProvider, LaunchSpec, ProviderError, ProviderResult, ServiceRef};
use crate::domain::manifest::{Check as HealthCheck, Manifest};
use crate::domain::plan::{Check, LiveInstance};
use crate::domain::snapshot::sha256_hex;
use crate::store::archive;
use crate::store::images::ArtifactKind;
use crate::store::{DynStore, ImageRepo};

pub const DEFAULT_MAX_INSTANCES: usize = 512;
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Held while a stable address's owner is checked and its pointer written.
const ADDRESSES_LOCK: &str = "addresses.lock";
const ADOPT_EVERY: Duration = Duration::from_secs(2);

pub struct LocalProvider {
    dir: PathBuf,
    images: ImageRepo,
    router: router::RouterClient,
    /// Held only to check the instance cap and record a new launch key.
    launch_lock: tokio::sync::Mutex<()>,
    /// One lock per launch key in flight: a retried launch waits for the
    /// first instead of starting a second set; other launches run in parallel.
    key_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    max_instances: usize,
    allow_public_listen: std::sync::atomic::AtomicBool,
    /// How much one tarball artifact may unpack to.
    max_unpacked_bytes: std::sync::atomic::AtomicU64,
    /// The identity of the store this provider serves: on every record it
    /// writes; the sweeper touches only its own.
    store_id: String,
    /// How drills are kept off production's addresses.
    drill_network: std::sync::Mutex<DrillNetwork>,
}

/// How a drill is kept apart from production on this host
/// (`[provider.local] drill_network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillNetwork {
    /// A network namespace per drill where the host allows it (root, with
    /// `ip`), else the rewrite, with a warning saying why.
    #[default]
    Auto,
    /// A network namespace per drill, or no drill.
    Namespace,
    /// Production's addresses rewritten to drill ones in the drill's
    /// manifest (every loopback form; what cannot be told is warned about).
    Rewrite,
}

fn backend(message: impl Into<String>) -> ProviderError {
    ProviderError::Backend { message: message.into(), retryable: false }
}

/// `n` distinct loopback ports that are free now, below the kernel's
/// ephemeral range, so that ports handed to instances (taken from that range)
/// never collide with them. For stable addresses chosen by a program (the
/// demo, tests).
pub fn pick_listen_ports(n: usize) -> std::io::Result<Vec<u16>> {
    // Never the same port twice in one process: two callers picking at once
    // (tests in parallel threads) would otherwise both see it free.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
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
        if ports.contains(&port) || given.contains(&port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    given.extend(ports.iter().copied());
    Ok(ports)
}

/// Why a program would not start, in words that point at the fix: a script
/// whose interpreter is missing is "not found" too, which reads as if the
/// script itself were missing.
fn spawn_failure(program: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound
        && let Ok(head) = std::fs::read(program).map(|b| b.into_iter().take(256).collect::<Vec<u8>>())
        && let Some(line) = head.strip_prefix(b"#!")
    {
        let line = String::from_utf8_lossy(line);
        let interpreter =
            line.lines().next().unwrap_or_default().split_whitespace().next().unwrap_or_default().to_string();
        return format!(
            "cannot start {}: its interpreter {interpreter} (from its #! line) is not installed on this host",
            program.display()
        );
    }
    format!("cannot start {}: {e}", program.display())
}

/// The only variables of the server's environment that instances and
/// their health commands see.
fn clean_env() -> Vec<(String, String)> {
    ["PATH", "HOME", "LANG", "TMPDIR", "TZ"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// Whether an address can be bound now. The probe listens for a moment, so
/// two probes of one address at once (two plans in parallel) would see each
/// other as "another program": they take turns.
fn probe_bind(addr: &str) -> std::io::Result<()> {
    static PROBING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = PROBING.lock().unwrap_or_else(|e| e.into_inner());
    std::net::TcpListener::bind(addr).map(drop)
}

/// A free port for an instance, never one handed out in the last few
/// minutes by this process (concurrent launches would otherwise race for
/// the kernel's pick between its release and the instance's bind).
fn free_port() -> std::io::Result<u16> {
    static RECENT: std::sync::Mutex<std::collections::VecDeque<u16>> =
        std::sync::Mutex::new(std::collections::VecDeque::new());
    for _ in 0..32 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        if recent.contains(&port) {
            continue;
        }
        recent.push_back(port);
        if recent.len() > 4096 {
            recent.pop_front();
        }
        return Ok(port);
    }
    Err(std::io::Error::other("no free port found in 32 tries"))
}

impl LocalProvider {
    /// Opens the provider's directory and makes sure its router serves every
    /// recorded stable address (starting or upgrading the router).
    pub async fn open(dir: impl AsRef<Path>, store: DynStore) -> anyhow::Result<Arc<LocalProvider>> {
        LocalProvider::open_with(dir, store, std::env::current_exe()?).await
    }

    /// The same, with the `lifeboat` binary that runs the router named
    /// (tests run from another executable).
    pub async fn open_with(
        dir: impl AsRef<Path>,
        store: DynStore,
        router_program: PathBuf,
    ) -> anyhow::Result<Arc<LocalProvider>> {
        let dir = std::path::absolute(dir.as_ref())?;
        let store_id = crate::store::store_id(&store).await?;
        for sub in ["images", "instances", "keys", "services"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        let p = Arc::new(LocalProvider {
            images: ImageRepo::new(store),
            router: router::RouterClient::new(&dir, router_program),
            dir,
            launch_lock: tokio::sync::Mutex::new(()),
            key_locks: std::sync::Mutex::new(HashMap::new()),
            allow_public_listen: std::sync::atomic::AtomicBool::new(false),
            max_unpacked_bytes: std::sync::atomic::AtomicU64::new(archive::DEFAULT_MAX_UNPACKED_BYTES),
            max_instances: DEFAULT_MAX_INSTANCES,
            store_id,
            drill_network: std::sync::Mutex::new(DrillNetwork::Auto),
        });
        let reply = p.router.sync().await.map_err(|e| anyhow::anyhow!(e))?;
        for (addr, e) in &reply.errors {
            tracing::warn!(address = %addr, error = %e, "cannot serve stable address yet");
        }
        tracing::info!(dir = %p.dir.display(), router = reply.pid, addresses = reply.served.len(), "local provider ready");
        // Keep a router running: one that died is restarted within seconds.
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ADOPT_EVERY).await;
                let Some(p) = weak.upgrade() else { return };
                if let Err(e) = p.router.ensure().await {
                    tracing::warn!(error = %e, "the router is not running");
                }
            }
        });
        Ok(p)
    }

    /// Whether stable addresses may be on non-loopback interfaces
    /// (`[provider.local] allow_public_listen`); refused by default.
    pub fn allow_public_listen(&self, yes: bool) {
        self.allow_public_listen.store(yes, std::sync::atomic::Ordering::SeqCst);
    }

    /// How drills are isolated (`[provider.local] drill_network`).
    pub fn drill_network(&self, how: DrillNetwork) {
        *self.drill_network.lock().unwrap_or_else(|e| e.into_inner()) = how;
    }

    /// How much one tarball artifact may unpack to (`[provider.local] max_unpacked_bytes`).
    pub fn max_unpacked_bytes(&self, bytes: u64) {
        self.max_unpacked_bytes.store(bytes, std::sync::atomic::Ordering::SeqCst);
    }

    fn unpack_limits(&self) -> archive::Limits {
        let max = self.max_unpacked_bytes.load(std::sync::atomic::Ordering::SeqCst);
        archive::Limits { max_total_bytes: max, max_entry_bytes: max, ..archive::Limits::default() }
    }

    /// Stops this directory's router (its addresses stop answering).
    pub async fn stop_router(&self) {
        self.router.stop().await;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.dir.join("instances").join(id)
    }

    /// Runs blocking file IO off the async threads.
    async fn io<T: Send + 'static>(&self, f: impl FnOnce(&Path) -> T + Send + 'static) -> T {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || f(&dir)).await.expect("a blocking IO task panicked")
    }

    async fn record(&self, id: &str) -> ProviderResult<Option<InstanceRecord>> {
        let id = id.to_string();
        self.io(move |d| records::read(&records::instance_path(d, &id))).await
    }

    async fn save(&self, r: &InstanceRecord) -> ProviderResult<()> {
        let r = r.clone();
        self.io(move |d| records::write(&records::instance_path(d, &r.id), &r))
            .await
            .map_err(|e| backend(format!("cannot record instance: {e}")))
    }

    async fn records(&self) -> ProviderResult<Vec<InstanceRecord>> {
        self.io(records::instances).await
    }

    async fn pointers(&self, env: Option<&str>) -> ProviderResult<Vec<Pointer>> {
        let env = env.map(str::to_string);
        self.io(move |d| records::pointers(d, env.as_deref())).await
    }

    /// Fetches, verifies and unpacks an image once; returns its directory.
    async fn materialise(&self, image: &str) -> ProviderResult<(PathBuf, ArtifactKind)> {
        let hex = image.strip_prefix("sha256:").unwrap_or(image);
        let dir = self.dir.join("images").join(hex);
        let ready = dir.join("ready.json");
        if let Some(m) = self.io(move |_| records::read::<ReadyMarker>(&ready)).await? {
            return Ok((dir, m.kind));
        }
        let unavailable = |message: String| ProviderError::ImageUnavailable { image: image.to_string(), message };
        // The store failing is not the image missing: only the latter is permanent.
        let store_error = |e: crate::error::Error| {
            let retryable = matches!(&e, crate::error::Error::Store(s) if s.is_retryable());
            ProviderError::Backend { message: format!("cannot read image {image}: {e}"), retryable }
        };
        let meta =
            self.images.meta(image).await.map_err(store_error)?.ok_or_else(|| {
                unavailable("it is not in the store; import it with `lifeboat image import PATH`".into())
            })?;
        let bytes = self.images.artifact(image).await.map_err(store_error)?;
        let tmp = self.dir.join("images").join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let kind = meta.kind;
        let limits = self.unpack_limits();
        let unpack = {
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || -> Result<(), archive::UnpackError> {
                // Writing is this host's part: a full disk or too many open
                // files is worth another attempt; a bad archive is not.
                let host = |e: std::io::Error| archive::UnpackError::Host(e.to_string());
                std::fs::create_dir_all(&tmp).map_err(host)?;
                match kind {
                    ArtifactKind::Executable => {
                        use std::os::unix::fs::PermissionsExt;
                        let path = tmp.join("artifact");
                        std::fs::write(&path, &bytes).map_err(host)?;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(host)?;
                    }
                    ArtifactKind::Tar | ArtifactKind::TarGz => {
                        archive::unpack(&bytes, kind, &tmp.join("root"), &limits)?
                    }
                }
                records::write(&tmp.join("ready.json"), &ReadyMarker { format_version: 1, kind }).map_err(host)
            })
        };
        let result = unpack.await.map_err(|e| unavailable(e.to_string()))?;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(match e {
                archive::UnpackError::Invalid(why) => unavailable(format!("cannot unpack it: {why}")),
                archive::UnpackError::Host(why) => ProviderError::Backend {
                    message: format!("cannot unpack image {image} on this host: {why}"),
                    retryable: true,
                },
            });
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
        // Resolved (through any symlinks), the program must still be inside the image.
        let resolved = std::fs::canonicalize(&path)
            .map_err(|e| backend(format!("entrypoint {} is not a file in the image: {e}", path.display())))?;
        let root = std::fs::canonicalize(dir).map_err(|e| backend(format!("cannot read {}: {e}", dir.display())))?;
        if !resolved.starts_with(&root) {
            return Err(backend(format!(
                "entrypoint {} resolves to {}, outside the image",
                path.display(),
                resolved.display()
            )));
        }
        if resolved.is_file() {
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

    /// Probes an instance. Only the health gate runs a health command
    /// (`execute`): read-only calls (plan, inventory) never execute anything
    /// from a manifest, and judge such an instance by its process alone.
    async fn probe(&self, r: &InstanceRecord, execute: bool) -> Result<(), String> {
        let t = Duration::from_millis(r.probe_timeout_ms);
        let net = r.netns.as_deref();
        match &r.probe {
            Some(Probe::Http(u)) => probe_http_from(net, u, t).await,
            Some(Probe::Tcp(a)) => probe_tcp_from(net, a, t).await,
            Some(Probe::Command(argv)) if execute => {
                let mut env = clean_env();
                env.extend(Self::instance_env(r));
                probe_command(net, argv, &env, &self.instance_dir(&r.id), t).await
            }
            _ if r.alive() => Ok(()),
            _ => Err(format!("instance {} is not running", r.id)),
        }
    }

    /// Starts the process for a record unless it already runs (found by PID,
    /// or by its environment after a crash before the PID was recorded; a
    /// `fresh` record, made by this call, has no process to look for).
    async fn ensure_running(&self, mut r: InstanceRecord, spec: &LaunchSpec, fresh: bool) -> ProviderResult<()> {
        if r.pid.is_some() || r.terminated {
            return Ok(()); // started once: never again (the health gate judges it)
        }
        let id = r.id.clone();
        let found = if fresh { None } else { self.io(move |_| process::find_by_instance(&id)).await };
        if let Some(pid) = found {
            r.pid = Some(pid);
            r.start_time = process::start_time(pid);
            return self.save(&r).await;
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
        cmd.env_clear().envs(clean_env());
        cmd.envs(env).envs(Self::instance_env(&r));
        cmd.args(&args)
            .current_dir(&idir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        if let Some(name) = &r.netns {
            // The drill's isolation made it; recorded (for the sweeper) and
            // made again only if a reboot lost it, not on every launch.
            if !netns::exists(name) {
                self.make_network(name, &r.environment)
                    .await
                    .map_err(|e| backend(format!("cannot make {name}: {e}")))?;
            }
            netns::enter(&mut cmd, name).map_err(|e| backend(e.to_string()))?;
        }
        // A program that cannot start will not start on a second attempt either.
        let mut child = cmd.spawn().map_err(|e| ProviderError::LaunchFailed {
            service: r.service.clone(),
            message: spawn_failure(&program, &e),
            retryable: false,
        })?;
        let pid = child.id().ok_or_else(|| backend("the new process has no PID"))?;
        r.pid = Some(pid);
        r.start_time = process::start_time(pid);
        self.save(&r).await?;
        // Reap it when it exits (while this server runs) and note how it ended.
        let path = records::instance_path(&self.dir, &r.id);
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Ok(Some(mut rec)) = records::read::<InstanceRecord>(&path) {
                        rec.exit = Some(status.to_string());
                        let _ = records::write(&path, &rec);
                    }
                })
                .await;
            }
        });
        Ok(())
    }

    /// A launch under its key's lock: the key's instances (recorded once,
    /// under the short global lock that guards the instance cap), each
    /// started unless it already runs.
    async fn launch_locked(&self, spec: &LaunchSpec) -> ProviderResult<Vec<String>> {
        let netns = Self::network_of(&spec.target)?;
        let key_path = self.dir.join("keys").join(format!("{}.json", sha256_hex(spec.launch_key.as_bytes())));
        let read_path = key_path.clone();
        // A corrupt key record fails the launch: treating it as missing
        // would start a second set of instances.
        let ids: Vec<String> = match self.io(move |_| records::read::<LaunchKeyRecord>(&read_path)).await? {
            Some(k) => k.instances,
            None => {
                let _cap = self.launch_lock.lock().await;
                let running = self.records().await?.iter().filter(|r| r.alive()).count();
                if running + spec.replicas as usize > self.max_instances {
                    return Err(ProviderError::LaunchFailed {
                        service: spec.target.service.clone(),
                        message: format!("this host's cap of {} instances is reached", self.max_instances),
                        retryable: true,
                    });
                }
                let ids: Vec<String> = (0..spec.replicas)
                    .map(|_| format!("{}-{}", spec.target.service, &uuid::Uuid::new_v4().simple().to_string()[..8]))
                    .collect();
                let record =
                    LaunchKeyRecord { format_version: 1, launch_key: spec.launch_key.clone(), instances: ids.clone() };
                self.io(move |_| records::write(&key_path, &record))
                    .await
                    .map_err(|e| backend(format!("cannot record launch: {e}")))?;
                ids
            }
        };
        let probe_timeout = spec.target.health.as_ref().map_or(Duration::from_secs(2), |h| h.probe_timeout.0);
        for id in &ids {
            let (record, fresh) = match self.record(id).await? {
                Some(r) => (r, false),
                None => {
                    let port = free_port().map_err(|e| backend(format!("no free port: {e}")))?;
                    let r = InstanceRecord {
                        format_version: records::format_for(&netns),
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
                        store: Some(self.store_id.clone()),
                        netns: netns.clone(),
                    };
                    self.save(&r).await?;
                    (r, true)
                }
            };
            self.ensure_running(record, spec, fresh).await?;
        }
        Ok(ids)
    }

    /// The network namespace a service runs in: the one its drill's
    /// isolation named, and only for that drill's environment.
    fn network_of(target: &ServiceRef) -> ProviderResult<Option<String>> {
        let Some(v) = target.settings.get(netns::LAUNCH_KEY) else { return Ok(None) };
        let name = v.as_str().unwrap_or_default();
        if netns::name_for(&target.environment).as_deref() != Some(name) {
            return Err(ProviderError::LaunchFailed {
                service: target.service.clone(),
                message: format!(
                    "launch.{} = {v} is not this drill's network namespace: Lifeboat sets it for drills only",
                    netns::LAUNCH_KEY
                ),
                retryable: false,
            });
        }
        Ok(Some(name.to_string()))
    }

    /// Simulates a region failure: kills every instance of an environment at once.
    pub async fn kill_environment(&self, env: &str) -> ProviderResult<usize> {
        let mut n = 0;
        for r in self.records().await?.into_iter().filter(|r| r.environment == env && r.alive()) {
            if let (Some(p), Some(t)) = (r.pid, r.start_time) {
                process::kill_now(p, t);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Stops every instance of an environment and stops serving its addresses.
    pub async fn teardown(&self, env: &str) -> ProviderResult<()> {
        let ids: Vec<String> =
            self.records().await?.into_iter().filter(|r| r.environment == env && !r.terminated).map(|r| r.id).collect();
        self.terminate(&ids).await?;
        for p in self.pointers(Some(env)).await? {
            let _ = std::fs::remove_file(records::pointer_path(&self.dir, env, &p.service));
        }
        self.router.sync().await.map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ComputeProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn warnings(&self, m: &Manifest) -> Vec<String> {
        listen_warnings(m, ephemeral_range())
    }

    async fn preflight(&self, m: &Manifest, region: &str, launching: &[String]) -> Vec<Check> {
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
                    crate::domain::listed(&missing)
                ),
            )
        }];
        if !no_entrypoint.is_empty() {
            checks.push(Check::fail(
                "entrypoints",
                format!("tarball images need launch.entrypoint: {}", crate::domain::listed(&no_entrypoint)),
            ));
        }
        let (pointers, instances) = match (self.pointers(None).await, self.records().await) {
            (Ok(p), Ok(i)) => (p, i),
            (Err(e), _) | (_, Err(e)) => return vec![Check::fail("provider-records", e.to_string())],
        };
        let mut taken = Vec::new();
        let mut held = Vec::new();
        let mut public = Vec::new();
        let mut foreign = Vec::new();
        let allow_public = self.allow_public_listen.load(std::sync::atomic::Ordering::SeqCst);
        for (name, s) in &m.services {
            let Some(addr) = s.launch.get("listen").and_then(|v| v.as_str()) else { continue };
            // A drill in a network namespace of its own shares no address with anyone.
            let net = s.launch.get(netns::LAUNCH_KEY).and_then(|v| v.as_str());
            let route = records::route_key(addr, net);
            match pointers.iter().find(|p| p.route().as_ref() == Some(&route)) {
                // A stable address belongs to one environment's service, in one region.
                Some(p) if p.environment != m.environment || &p.service != name => {
                    held.push(format!("{addr} ({name}) is the address of {}/{}", p.environment, p.service));
                }
                Some(p) => {
                    let other = instances
                        .iter()
                        .find(|r| p.targets.contains(&r.id) && r.alive() && r.region != region)
                        .map(|r| r.region.as_str());
                    if let Some(r) = other {
                        held.push(format!("{addr} ({name}) serves {}/{} in region {r}", p.environment, p.service));
                    }
                }
                None if !allow_public && addr.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_loopback()) => {
                    public.push(format!("{addr} ({name})"))
                }
                None => match net.map_or_else(|| probe_bind(addr), |n| netns::bind(n, addr).map(drop)) {
                    Err(e) if net.is_some() && e.kind() == std::io::ErrorKind::NotFound => {
                        taken.push(format!("{addr} ({name}): the drill's network namespace is gone"))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                        foreign.push(format!("{addr} ({name})"))
                    }
                    Err(_) => taken.push(format!("{addr} ({name})")),
                    Ok(_) => {}
                },
            }
        }
        let mut problems = Vec::new();
        if !held.is_empty() {
            problems.push(format!(
                "held by another environment or region on this host: {}; give the service another listen address, or tear the holder down first",
                crate::domain::listed(&held)
            ));
        }
        if !taken.is_empty() {
            problems.push(format!("in use by another program: {}", crate::domain::listed(&taken)));
        }
        if !public.is_empty() {
            problems.push(format!(
                "not loopback addresses: {}; the local provider serves stable addresses on loopback only, unless the server's config sets [provider.local] allow_public_listen = true",
                crate::domain::listed(&public)
            ));
        }
        if !foreign.is_empty() {
            problems.push(format!("not addresses of this host: {}", crate::domain::listed(&foreign)));
        }
        checks.push(if problems.is_empty() {
            Check::pass("stable-addresses", "every listen address is free or already this service's")
        } else {
            Check::fail("stable-addresses", problems.join("; "))
        });
        let running = instances.iter().filter(|r| r.alive()).count();
        // Only services that will be launched need room: kept ones already run.
        let wanted: usize =
            m.services.iter().filter(|(n, _)| launching.contains(n)).map(|(_, s)| s.replicas as usize).sum();
        checks.push(if wanted == 0 {
            Check::pass("capacity", format!("no new instances; {running} running, cap {}", self.max_instances))
        } else if running + wanted <= self.max_instances {
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
            self.pointers(Some(env)).await?.into_iter().flat_map(|p| p.targets).collect();
        let mut alive = Vec::new();
        for mut r in
            self.records().await?.into_iter().filter(|r| r.environment == env && r.region == region && !r.terminated)
        {
            if r.pid.is_none() {
                continue; // being launched right now
            }
            if !r.alive() {
                // Dead: sweep it so it is not mistaken for capacity.
                r.terminated = true;
                let _ = self.save(&r).await;
                continue;
            }
            alive.push(r);
        }
        let health = futures::future::join_all(alive.iter().map(|r| self.probe(r, false))).await;
        Ok(alive
            .into_iter()
            .zip(health)
            .map(|(r, h)| LiveInstance {
                serving: serving.contains(&r.id),
                address: format!("127.0.0.1:{}", r.port),
                id: r.id,
                service: r.service,
                image: r.image,
                healthy: h.is_ok(),
                run_id: r.run_id,
                fingerprint: r.fingerprint,
            })
            .collect())
    }

    async fn traffic(
        &self,
        env: &str,
        _m: &Manifest,
        _region: &str,
        inventory: &[LiveInstance],
    ) -> ProviderResult<Vec<crate::domain::plan::Traffic>> {
        // A stable address forwards to the instances its cutover record names.
        Ok(self
            .pointers(Some(env))
            .await?
            .into_iter()
            .filter_map(|p| {
                let listen = p.listen?;
                let here = !p.targets.is_empty()
                    && p.targets.iter().all(|t| inventory.iter().any(|i| &i.id == t && i.service == p.service));
                Some(crate::domain::plan::Traffic {
                    service: p.service,
                    via: format!("address {listen}"),
                    points_to: p.targets,
                    here,
                    decides: true,
                })
            })
            .collect())
    }

    async fn launch(&self, spec: &LaunchSpec, cancel: &CancellationToken) -> ProviderResult<Vec<String>> {
        if cancel.is_cancelled() {
            return Err(ProviderError::Cancelled);
        }
        // Fetch the image before taking any lock: it may be large.
        self.materialise(&spec.image).await?;
        let key_lock = self.key_locks.lock().expect("lock").entry(spec.launch_key.clone()).or_default().clone();
        let result = {
            let _key = key_lock.lock().await;
            self.launch_locked(spec).await
        };
        let mut locks = self.key_locks.lock().expect("lock");
        if Arc::strong_count(&key_lock) == 2 {
            locks.remove(&spec.launch_key);
        }
        result
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
                let r = match self.record(id).await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err(format!("instance {id} has no record")),
                    Err(e) => return Err(e.to_string()),
                };
                if !r.alive() {
                    let how = r.exit.clone().unwrap_or_else(|| "it is not running".into());
                    return Err(format!("instance {id} exited ({how})"));
                }
                match self.probe(&r, true).await {
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
        let path = records::pointer_path(&self.dir, &target.environment, &target.service);
        let netns = Self::network_of(target)?;
        let pointer = Pointer {
            format_version: records::format_for(&netns),
            environment: target.environment.clone(),
            service: target.service.clone(),
            listen: listen.clone(),
            targets: instances.to_vec(),
            store: Some(self.store_id.clone()),
            netns,
        };
        // Record first, then have the router switch: the router follows the
        // records. Who holds the address is checked and the record written
        // under one lock on the directory (servers sharing it included), so
        // two environments can never both claim an address.
        let (write_path, new) = (path.clone(), pointer.clone());
        let previous = self
            .io(move |dir| -> ProviderResult<_> {
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(ADDRESSES_LOCK))
                    .and_then(|f| f.lock().map(|()| f))
                    .map_err(|e| backend(format!("cannot lock the stable addresses: {e}")))?;
                // Another service's corrupt pointer is passed over (and reported by the router);
                // this service's own is replaced by the new one.
                let (pointers, corrupt) = records::readable_pointers(dir, None);
                for e in corrupt {
                    tracing::warn!(error = %e, "a corrupt cutover pointer, passed over in the stable-address check");
                }
                // An address inside a drill's network namespace is that drill's alone.
                if let Some(l) = &new.listen
                    && let Some(owner) = pointers.into_iter().find(|p| {
                        p.route() == new.route() && (p.environment != new.environment || p.service != new.service)
                    })
                {
                    return Err(backend(format!(
                        "the stable address {l} belongs to {}/{}; {} cannot take it over",
                        owner.environment, owner.service, new.service
                    )));
                }
                let previous = records::read::<Pointer>(&write_path);
                records::write(&write_path, &new)
                    .map_err(|e| backend(format!("cannot record cutover of {}: {e}", new.service)))?;
                drop(lock);
                Ok(previous)
            })
            .await?;
        let Some(route) = pointer.route() else { return Ok(()) };
        let failed = match self.router.sync().await {
            Ok(reply) => reply.errors.get(&route).cloned(),
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            // Traffic did not move: put the record back as it was.
            let restore = previous.ok().flatten();
            self.io(move |_| match restore {
                Some(p) => records::write(&path, &p),
                None => std::fs::remove_file(&path),
            })
            .await
            .ok();
            let _ = self.router.sync().await;
            return Err(backend(e));
        }
        Ok(())
    }

    async fn isolation(
        &self,
        m: &Manifest,
        _region: &str,
        namespace: &str,
    ) -> ProviderResult<crate::domain::drill::Isolation> {
        self.isolate(m, namespace).await
    }

    async fn tear_down(&self, namespace: &str, region: &str) -> ProviderResult<(Vec<String>, Vec<String>)> {
        self.tear_down_drill(namespace, region).await
    }

    async fn drill_leftovers(&self) -> ProviderResult<crate::provider::Leftovers> {
        self.leftovers().await
    }

    async fn retire(&self, target: &ServiceRef) -> ProviderResult<()> {
        let path = records::pointer_path(&self.dir, &target.environment, &target.service);
        self.io(move |_| records::remove(&path))
            .await
            .map_err(|e| backend(format!("cannot retire {}: {e}", target.service)))?;
        self.router.sync().await.map_err(backend)?;
        Ok(())
    }

    async fn terminate(&self, instances: &[String]) -> ProviderResult<()> {
        for id in instances {
            let Some(mut r) = self.record(id).await? else { continue };
            // Recorded before the process is stopped: the task that reaps it
            // rewrites the record when it exits, and must read this first
            // (written after, `terminated` could be lost to its stale copy).
            let was_terminated = r.terminated;
            r.terminated = true;
            if !was_terminated {
                self.save(&r).await?;
            }
            if let (Some(p), Some(t)) = (r.pid, r.start_time) {
                process::stop(p, t, STOP_GRACE).await;
            }
        }
        Ok(())
    }

    async fn logs(&self, instance: &str, lines: usize) -> Vec<String> {
        let path = self.instance_dir(instance).join("output.log");
        self.io(move |_| process::tail(&path, lines)).await
    }

    async fn read_logs(&self, instance: &str, from: super::LogFrom) -> ProviderResult<Option<super::LogRead>> {
        if self.record(instance).await?.is_none() {
            return Ok(None);
        }
        let path = self.instance_dir(instance).join("output.log");
        let read = self.io(move |_| process::read_log(&path, from)).await;
        read.map(Some).map_err(|e| backend(format!("cannot read the output of {instance}: {e}")))
    }
}
