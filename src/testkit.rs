//! Helpers for tests that need real servers: an S3-API server (moto) on a
//! loopback port the test picks. Not part of the product.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a loopback port")
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
            let child = spawn_moto(port);
            std::mem::forget(child);
            let endpoint = format!("http://127.0.0.1:{port}");
            wait_for_http(&format!("127.0.0.1:{port}"), Duration::from_secs(30));
            endpoint
        })
        .clone()
}

fn spawn_moto(port: u16) -> Child {
    // A watchdog shell stops moto when the test process (its owner) exits.
    let script = format!(
        "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         trap 'kill $m 2>/dev/null' EXIT; \
         while kill -0 {owner} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done",
        owner = std::process::id()
    );
    if Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .stdout(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        panic!(
            "moto_server is not installed: run `pip install 'moto[server]'` (or `bash .ci/run`), or set LIFEBOAT_TEST_S3_ENDPOINT to a running S3-API server"
        );
    }
    Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).spawn().expect("start moto_server")
}

fn wait_for_http(addr: &str, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the S3-API server at {addr} did not start within {limit:?}");
}

/// Sets the SDK environment for the test S3 server (dummy credentials, no
/// instance-metadata probing) and creates a fresh bucket, returning its name.
pub async fn s3_bucket(object_lock: bool) -> String {
    let endpoint = s3_endpoint();
    s3_env();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let bucket = format!("lb-{}", uuid::Uuid::new_v4().simple());
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(object_lock)
        .send()
        .await
        .expect("create test bucket");
    bucket
}

/// Environment variables the SDK needs to talk to the test server.
pub fn s3_env_vars() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ENDPOINT_URL", s3_endpoint()),
        ("LIFEBOAT_S3_PATH_STYLE", "true".into()),
    ]
}

fn s3_env() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for (k, v) in s3_env_vars() {
            // SAFETY: set once, before the SDK reads them, under a OnceLock.
            unsafe { std::env::set_var(k, v) };
        }
    });
}

/// A provider whose every step succeeds at once: for benchmarks of the
/// engine's own overhead (scheduling, journal, store). Not a product provider.
pub struct InstantProvider {
    next: std::sync::atomic::AtomicU64,
}

impl InstantProvider {
    pub fn new() -> std::sync::Arc<InstantProvider> {
        std::sync::Arc::new(InstantProvider { next: std::sync::atomic::AtomicU64::new(0) })
    }
}

#[async_trait::async_trait]
impl crate::provider::ComputeProvider for InstantProvider {
    fn name(&self) -> &'static str {
        "local"
    }
    async fn preflight(&self, _: &crate::domain::manifest::Manifest, _: &str) -> Vec<crate::domain::plan::Check> {
        Vec::new()
    }
    async fn inventory(
        &self,
        _: &str,
        _: &str,
    ) -> crate::provider::ProviderResult<Vec<crate::domain::plan::LiveInstance>> {
        Ok(Vec::new())
    }
    async fn launch(
        &self,
        spec: &crate::provider::LaunchSpec,
        _: &tokio_util::sync::CancellationToken,
    ) -> crate::provider::ProviderResult<Vec<String>> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((0..spec.replicas).map(|r| format!("{}-{n}-{r}", spec.target.service)).collect())
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
    async fn cutover(&self, _: &crate::provider::ServiceRef, _: &[String]) -> crate::provider::ProviderResult<()> {
        Ok(())
    }
    async fn terminate(&self, _: &[String]) -> crate::provider::ProviderResult<()> {
        Ok(())
    }
    async fn logs(&self, _: &str, _: usize) -> Vec<String> {
        Vec::new()
    }
}

/// A manifest of `n` services in a random DAG (each depends on up to
/// `max_deps` earlier ones), deterministic for a seed.
pub fn random_manifest_toml(n: usize, max_deps: usize, seed: u64) -> String {
    let mut state = seed.max(1);
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
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
