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
