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
    lifeboat_as(server, None, args)
}

/// The same, with `LIFEBOAT_TOKEN` set when a token is given.
pub fn lifeboat_as(server: Option<&str>, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    if let Some(t) = token {
        cmd.env("LIFEBOAT_TOKEN", t);
    }
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
    /// moto
    S3,
    /// Ceph RGW, unversioned bucket
    Rgw,
}

/// A `lifeboat server` child process on a port it picked itself.
pub mod aws_proxy;
pub mod ec2;
pub mod webhook;

pub struct Server {
    child: Child,
    pub url: String,
    pub store: String,
    pub dir: Option<tempfile::TempDir>,
    /// `host:port` of the HTTP side.
    pub http: String,
    /// The token `run` passes (`LIFEBOAT_TOKEN`), for servers with `[[auth.tokens]]`.
    pub token: Option<String>,
}

impl Server {
    pub fn start(backend: Backend) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("local").display().to_string();
        let mut s = match backend {
            Backend::Fs => {
                let store = dir.path().join("store").display().to_string();
                Server::launch(&["--store", &store, "--local-dir", &local], &[])
            }
            Backend::S3 | Backend::Rgw => {
                let endpoint = match backend {
                    Backend::Rgw => lifeboat::testkit::rgw_endpoint(),
                    _ => lifeboat::testkit::s3_endpoint(),
                };
                let rt = tokio::runtime::Runtime::new().unwrap();
                let bucket = rt.block_on(lifeboat::testkit::bucket_on(&endpoint, false, false));
                let store = format!("s3://{bucket}/lifeboat");
                Server::launch(
                    &["--store", &store, "--local-dir", &local],
                    &lifeboat::testkit::s3_env_vars_for(&endpoint),
                )
            }
        };
        s.dir = Some(dir);
        s
    }

    /// `lifeboat server --listen 127.0.0.1:0 ARGS`.
    pub fn launch(args: &[&str], env: &[(&str, String)]) -> Server {
        Server::launch_with(Path::new(BIN), args, env)
    }

    /// The same with another `lifeboat` binary (an upgrade).
    pub fn launch_with(bin: &Path, args: &[&str], env: &[(&str, String)]) -> Server {
        Server::launch_logging(bin, args, env, Stdio::inherit())
    }

    /// The same, with the server's log (stderr) going to `log`.
    pub fn launch_logging(bin: &Path, args: &[&str], env: &[(&str, String)], log: impl Into<Stdio>) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
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
            for line in lines.by_ref().take(2).map_while(Result::ok) {
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
        let store = args.windows(2).find(|w| w[0] == "--store").map(|w| w[1].to_string()).unwrap_or_default();
        // The HTTP side's address follows (/healthz, /readyz, /metrics).
        let http = rx
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .and_then(|l| l.strip_prefix("lifeboat http listening on ").map(str::to_string))
            .unwrap_or_default();
        Server { child, url: format!("http://{addr}"), store, dir: None, http, token: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the server process used so far (user + system).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let rest = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).map(|x| x.parse().unwrap_or(0)).collect();
        // Clock ticks are 1/100 s on Linux.
        Duration::from_millis(f.iter().sum::<u64>() * 10)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A server on the directory store with this `lifeboat.toml` (in its
    /// own directory, beside `store` and `local`).
    pub fn with_config(config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lifeboat.toml"), config).unwrap();
        let p = |x: &str| dir.path().join(x).display().to_string();
        let args = [p("lifeboat.toml"), p("store"), p("local")];
        let mut s = Server::launch(&["--config", &args[0], "--store", &args[1], "--local-dir", &args[2]], &[]);
        s.dir = Some(dir);
        s
    }

    /// The local provider's directory of a server made by `start` or `with_config`.
    pub fn local_dir(&self) -> PathBuf {
        self.dir.as_ref().expect("made by Server::start or Server::with_config").path().join("local")
    }

    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub fn run(&self, args: &[&str]) -> Out {
        lifeboat_as(Some(&self.url), self.token.as_deref(), args)
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

/// The grpcurl binary (provisioned by the test kit when missing).
pub fn grpcurl() -> PathBuf {
    lifeboat::testkit::grpcurl()
}

/// An artifact that runs this build's demo service (distinct per name).
pub fn demo_artifact(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n# test service {name}\nexec '{BIN}' demo-service \"$@\"\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A service of a generated manifest.
pub struct Svc<'a> {
    pub name: &'a str,
    pub deps: &'a [&'a str],
    /// Extra demo-service arguments (`--broken`, `--boot-delay 2s`).
    pub args: &'a [&'a str],
    /// Extra manifest lines (`approval = true`).
    pub extra: &'a str,
    /// The health gate's limit.
    pub gate: &'a str,
}

impl<'a> Svc<'a> {
    pub fn new(name: &'a str, deps: &'a [&'a str]) -> Svc<'a> {
        Svc { name, deps, args: &[], extra: "", gate: "20s" }
    }
    pub fn args(mut self, args: &'a [&'a str]) -> Svc<'a> {
        self.args = args;
        self
    }
    pub fn extra(mut self, extra: &'a str) -> Svc<'a> {
        self.extra = extra;
        self
    }
    pub fn gate(mut self, gate: &'a str) -> Svc<'a> {
        self.gate = gate;
        self
    }
}

/// A region ready to recover: images imported, manifest pushed and promoted.
pub struct Region {
    pub env: String,
    pub manifest: PathBuf,
    pub ports: std::collections::BTreeMap<String, u16>,
}

pub fn manifest_text(
    env: &str,
    svcs: &[Svc<'_>],
    images: &[String],
    ports: &std::collections::BTreeMap<String, u16>,
) -> String {
    let mut m = format!("environment = \"{env}\"\nregion = \"local-1\"\nrto_objective = \"1m\"\n");
    for (i, s) in svcs.iter().enumerate() {
        let mut args: Vec<String> = vec!["--name".into(), s.name.into()];
        for d in s.deps {
            args.push("--dep".into());
            args.push(format!("127.0.0.1:{}", ports[*d]));
        }
        args.extend(s.args.iter().map(|a| a.to_string()));
        let q = |v: &[String]| v.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ");
        let deps: Vec<String> = s.deps.iter().map(|d| d.to_string()).collect();
        m.push_str(&format!(
            "\n[services.{}]\nimage = \"{}\"\ndepends_on = [{}]\ntimeout = \"30s\"\ngrace_period = \"0s\"\n\
             health = {{ http = \"/healthz\", interval = \"100ms\", timeout = \"{}\" }}\n\
             launch = {{ listen = \"127.0.0.1:{}\", args = [{}] }}\n{}\n",
            s.name,
            images[i],
            q(&deps),
            s.gate,
            ports[s.name],
            q(&args),
            s.extra
        ));
    }
    m
}

impl Region {
    /// Imports one artifact per service, pushes the manifest, promotes it.
    pub fn setup(server: &Server, env: &str, svcs: &[Svc<'_>]) -> Region {
        let dir = server.dir.as_ref().expect("made by Server::start or Server::with_config").path().to_path_buf();
        Region::setup_in(server, &dir, env, svcs)
    }

    /// Like `setup`, keeping artifacts and the manifest in `dir`.
    pub fn setup_in(server: &Server, dir: &Path, env: &str, svcs: &[Svc<'_>]) -> Region {
        let art = dir.join("artifacts");
        std::fs::create_dir_all(&art).unwrap();
        let images: Vec<String> = svcs
            .iter()
            .map(|s| {
                let p = demo_artifact(&art, &format!("{env}-{}", s.name));
                server.run(&["image", "import", p.to_str().unwrap()]).ok().stdout.trim().to_string()
            })
            .collect();
        let picked = lifeboat::provider::local::pick_listen_ports(svcs.len()).unwrap();
        let ports = svcs.iter().zip(picked).map(|(s, p)| (s.name.to_string(), p)).collect();
        let manifest = dir.join(format!("{env}.toml"));
        std::fs::write(&manifest, manifest_text(env, svcs, &images, &ports)).unwrap();
        server.run(&["snapshot", "push", manifest.to_str().unwrap(), "-m", "test region"]).ok();
        server.run(&["snapshot", "promote", env, "latest", "--reason", "test baseline"]).ok();
        Region { env: env.to_string(), manifest, ports }
    }

    /// The region's manifest with `service` never healthy (`--broken`, a
    /// 2 s health gate), written beside it: a release whose drill fails.
    pub fn broken_variant(&self, service: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.manifest).unwrap();
        let path = self.manifest.with_file_name(format!("broken-{service}.toml"));
        let name = format!("\"--name\", \"{service}\"");
        std::fs::write(
            &path,
            text.replace(&name, &format!("{name}, \"--broken\"")).replace("timeout = \"20s\"", "timeout = \"2s\""),
        )
        .unwrap();
        path
    }

    /// The region's manifest with `service` starting `delay` late (e.g.
    /// "1500ms"), written beside it: a release that replaces it, slowly.
    pub fn slow_variant(&self, service: &str, delay: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.manifest).unwrap();
        let path = self.manifest.with_file_name(format!("slow-{service}.toml"));
        let name = format!("\"--name\", \"{service}\"");
        std::fs::write(&path, text.replacen(&name, &format!("{name}, \"--boot-delay\", \"{delay}\""), 1)).unwrap();
        path
    }

    /// `GET /healthz` through a service's stable address.
    pub fn answers(&self, service: &str) -> bool {
        http_ok(&format!("127.0.0.1:{}", self.ports[service]), "/healthz")
    }
}

/// A plain HTTP GET; true on 2xx.
pub fn http_ok(addr: &str, path: &str) -> bool {
    http_body(addr, path).starts_with("HTTP/1.1 2")
}

/// A plain HTTP GET: the whole answer (empty when nothing answers).
pub fn http_body(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Processes whose working directory is under `dir` (the local provider's
/// instances of one test), with their LIFEBOAT_SERVICE.
pub fn instance_processes(dir: &Path) -> Vec<(u32, String)> {
    processes_under(dir).into_iter().map(|p| (p.pid, p.var("LIFEBOAT_SERVICE"))).collect()
}

/// A live process whose working directory is under a test's directory.
pub struct Proc {
    pub pid: u32,
    /// Its environment, `KEY=value`.
    pub environ: Vec<String>,
    pub argv: Vec<String>,
}

impl Proc {
    /// A variable of its environment ("" when unset).
    pub fn var(&self, key: &str) -> String {
        self.environ.iter().find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap_or_default().to_string()
    }
}

/// Live (not zombie) processes whose working directory is under `dir`.
pub fn processes_under(dir: &Path) -> Vec<Proc> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes.split(|b| *b == 0).filter(|x| !x.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else { continue };
        if !cwd.starts_with(&dir) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) {
            continue;
        }
        let environ = split(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
        let argv = split(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default());
        out.push(Proc { pid, environ, argv });
    }
    out
}

/// Kills a test's instances when it ends, however it ends.
pub struct Instances(pub PathBuf);

impl Drop for Instances {
    fn drop(&mut self) {
        for (pid, _) in instance_processes(&self.0) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // The network namespaces of this directory's drills.
        for e in std::fs::read_dir(self.0.join("networks")).into_iter().flatten().flatten() {
            if let Some(name) = e.path().file_stem().and_then(|n| n.to_str()) {
                let _ = lifeboat::provider::local::netns::delete(name);
            }
        }
    }
}

/// Router processes serving a local-provider directory: (pid, executable).
pub fn routers(local: &Path) -> Vec<(u32, PathBuf)> {
    let local = std::fs::canonicalize(local).unwrap_or_else(|_| local.to_path_buf());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.get(1).map(String::as_str) == Some("router") && args.iter().any(|a| Path::new(a) == local) {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            out.push((pid, exe));
        }
    }
    out
}

/// Polls until `f` is true (panics after `limit`).
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// What a receiver got: (authorization header, JSON body) per delivery.
pub type Got = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// An HTTP receiver that answers 503 to its first `fail_first` requests.
pub fn receiver(fail_first: usize) -> (String, Got) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Got = Default::default();
    let g = got.clone();
    std::thread::spawn(move || {
        let mut seen = 0usize;
        for conn in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut auth) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = line.split_once(':').unwrap().1.trim().to_string();
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            seen += 1;
            let status = if seen <= fail_first { "503 Service Unavailable" } else { "200 OK" };
            if seen > fail_first {
                g.lock().unwrap().push((auth, serde_json::from_slice(&body).unwrap()));
            }
            let mut conn = conn;
            let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// The peak resident memory of a process (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Imports a shell script as an image (beside the server's store) and
/// pushes and promotes `manifest` for `env`, with `{image}` replaced by its ID.
pub fn script_region(server: &Server, env: &str, script: &str, manifest: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = server.dir.as_ref().expect("made by Server::start or Server::with_config").path();
    let path = dir.join(format!("{env}.sh"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = server.run(&["image", "import", path.to_str().unwrap()]).ok().stdout.trim().to_string();
    let file = dir.join(format!("{env}.toml"));
    std::fs::write(&file, manifest.replace("{image}", &image)).unwrap();
    server.run(&["snapshot", "push", file.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", env, "latest", "--reason", "t"]).ok();
}
