//! The router: a small detached process per local-provider directory that
//! holds the stable-address listeners and forwards to the instances traffic
//! is cut over to. It lives apart from the server, so a crashed, stopped or
//! restarted server never takes the region's addresses down.
//!
//! Its truth is the directory: cutover pointers (`services/`) and instance
//! records (`instances/`). The server writes a pointer, then asks the router
//! to `sync` over `router.sock` (one JSON line each way) and learns whether
//! the address could be served. The router also resyncs every second, and
//! exits when its directory is gone. An upgraded binary replaces a running
//! router without closing a listener: the new one asks the old one for a
//! `handover`, receives the listening sockets themselves (SCM_RIGHTS),
//! serves them, and says so (`serving`); only then does the old one stop
//! accepting. The old one then gives up the directory's lock at once and
//! exits once the connections it forwards have finished (at most
//! `DRAIN_CAP`), so an upgrade cuts no connection in flight.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::proxy::Proxies;
use super::records;

const SOCKET: &str = "router.sock";
const LOCK: &str = "router.lock";
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// How long a router that handed its listeners over waits for the
/// connections it forwards to finish before it exits.
pub const DRAIN_CAP: Duration = Duration::from_secs(30);
/// What a new router answers once it serves the handed-over listeners.
const SERVING: &str = "serving";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello,
    Sync,
    Handover,
    Stop,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Which binary this router runs (see `identity`).
    pub identity: String,
    pub pid: u32,
    /// Addresses served now.
    pub served: Vec<String>,
    /// Addresses that could not be served, and why.
    pub errors: BTreeMap<String, String>,
}

/// Names a binary by version, size and modification time: a rebuilt or
/// upgraded binary has another identity, so its server replaces the router.
pub fn identity(program: &Path) -> String {
    let meta = std::fs::metadata(program).ok();
    let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{size}:{mtime}", env!("CARGO_PKG_VERSION"))
}

/// The router process: `lifeboat router --dir DIR` (started by the server).
pub async fn run(dir: PathBuf) -> anyhow::Result<()> {
    let dir = std::path::absolute(&dir)?;
    let me = identity(&std::env::current_exe()?);
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK))?;
    let proxies = Proxies::default();
    if lock.try_lock().is_err() {
        // Another router runs here: take its listeners over, then wait for
        // it to exit and release the lock.
        take_over(&dir, &proxies).await?;
        // Point the adopted listeners at their instances before anything else.
        sync(&dir, &proxies).await;
        let lock = lock.try_clone()?;
        tokio::task::spawn_blocking(move || lock.lock()).await??;
    }
    let sock = dir.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    tracing::info!(dir = %dir.display(), identity = %me, "router started");
    let mut errors = sync(&dir, &proxies).await;
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    let mut drain = false;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                match serve_request(stream, &dir, &proxies, &me, &mut errors).await {
                    Ok(Continue::Yes) => {}
                    Ok(Continue::No) => break,
                    Ok(Continue::Drain) => {
                        drain = true;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "router request failed"),
                }
            }
            _ = resync.tick() => {
                if !dir.join("services").exists() {
                    tracing::info!(dir = %dir.display(), "the provider directory is gone; router exits");
                    break;
                }
                errors = sync(&dir, &proxies).await;
            }
        }
    }
    // The directory is the next router's (or no one's) now; connections in
    // flight finish here first, up to the cap.
    drop(lock);
    drop(listener);
    let deadline = tokio::time::Instant::now() + if drain { DRAIN_CAP } else { Duration::from_millis(500) };
    while proxies.active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if drain && proxies.active() > 0 {
        tracing::warn!(connections = proxies.active(), "router exits with connections still open after the drain cap");
    }
    Ok(())
}

enum Continue {
    Yes,
    /// Stop now (connections in flight get half a second).
    No,
    /// Handed over: stop once the connections in flight finish.
    Drain,
}

async fn serve_request(
    stream: UnixStream,
    dir: &Path,
    proxies: &Proxies,
    me: &str,
    errors: &mut BTreeMap<String, String>,
) -> anyhow::Result<Continue> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await??;
    let mut stream = reader.into_inner();
    let request: Request = serde_json::from_str(line.trim())?;
    let reply = |errors: &BTreeMap<String, String>| Reply {
        identity: me.to_string(),
        pid: std::process::id(),
        served: proxies.addresses(),
        errors: errors.clone(),
    };
    match request {
        Request::Hello => {}
        Request::Sync => *errors = sync(dir, proxies).await,
        Request::Stop => {
            proxies.clear();
            write_reply(&mut stream, &reply(errors)).await?;
            return Ok(Continue::No);
        }
        Request::Handover => {
            let listeners = proxies.listeners();
            let addrs: Vec<String> = listeners.iter().map(|(a, _)| a.clone()).collect();
            let fds: Vec<RawFd> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
            let json = serde_json::to_vec(&addrs)?;
            let std_stream = stream.into_std()?;
            std_stream.set_nonblocking(false)?;
            let len = (json.len() as u32).to_be_bytes();
            sendmsg::<()>(
                std_stream.as_raw_fd(),
                &[IoSlice::new(&len), IoSlice::new(&json)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )?;
            drop(listeners);
            // Both routers accept on these sockets until the new one says it
            // serves them; only then does this one stop. Without that word
            // (it died), this one goes on serving.
            let said = tokio::task::spawn_blocking(move || {
                use std::io::BufRead;
                std_stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut line = String::new();
                std::io::BufReader::new(&std_stream).read_line(&mut line)?;
                Ok::<_, std::io::Error>(line)
            })
            .await?;
            if !said.as_ref().is_ok_and(|l| l.trim() == SERVING) {
                tracing::warn!(answer = ?said, "the new router did not say it serves the listeners; serving them here still");
                return Ok(Continue::Yes);
            }
            proxies.stop_accepting();
            tracing::info!(
                addresses = addrs.len(),
                connections = proxies.active(),
                "handed the listeners over to a new router; exiting once the open connections finish"
            );
            return Ok(Continue::Drain);
        }
    }
    write_reply(&mut stream, &reply(errors)).await?;
    Ok(Continue::Yes)
}

async fn write_reply(write: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(reply).expect("replies serialise");
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

/// Makes the served addresses match the directory's pointers. While a
/// pointer is corrupt, which address it holds cannot be told: every served
/// address without a readable pointer keeps its last good route (a live
/// address never goes down over a bad file), and the file is reported.
async fn sync(dir: &Path, proxies: &Proxies) -> BTreeMap<String, String> {
    let dir = dir.to_path_buf();
    let routes = tokio::task::spawn_blocking(move || records::routes(&dir)).await.unwrap_or_default();
    let mut errors = BTreeMap::new();
    for (listen, targets) in &routes.served {
        if let Err(e) = proxies.route(listen, targets.clone()) {
            errors.insert(listen.clone(), e);
        }
    }
    for (path, e) in &routes.corrupt {
        errors.insert(
            path.display().to_string(),
            format!("{e}; addresses without a readable pointer keep their last route"),
        );
    }
    if routes.corrupt.is_empty() {
        for listen in proxies.addresses() {
            if !routes.served.contains_key(&listen) {
                proxies.remove(&listen);
            }
        }
    }
    errors
}

/// Receives the listeners of the router running in `dir`, serves them, and
/// tells the old router so (it stops accepting then).
async fn take_over(dir: &Path, proxies: &Proxies) -> anyhow::Result<()> {
    // Where each address goes, read before the sockets are asked for: both
    // routers accept on them until the old one stops, and a connection this
    // one took without targets would be closed (a probe through an upgrade
    // once failed so).
    let owned = dir.to_path_buf();
    let wanted = tokio::task::spawn_blocking(move || records::routes(&owned)).await.unwrap_or_default().served;
    let stream = UnixStream::connect(dir.join(SOCKET)).await?;
    let mut line = serde_json::to_vec(&Request::Handover)?;
    line.push(b'\n');
    stream.writable().await?;
    let std_stream = stream.into_std()?;
    std_stream.set_nonblocking(false)?;
    let (addrs, fds, mut std_stream) =
        tokio::task::spawn_blocking(move || receive_listeners(std_stream, &line)).await??;
    for (addr, fd) in addrs.into_iter().zip(fds) {
        let listener = std::net::TcpListener::from(fd);
        let targets = wanted.get(&addr).cloned().unwrap_or_default();
        if let Err(e) = proxies.adopt(&addr, listener, targets) {
            tracing::warn!(address = %addr, error = %e, "cannot serve a handed-over listener");
        }
    }
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std_stream.write_all(format!("{SERVING}\n").as_bytes())
    })
    .await??;
    Ok(())
}

type Received = (Vec<String>, Vec<OwnedFd>, std::os::unix::net::UnixStream);

fn receive_listeners(mut stream: std::os::unix::net::UnixStream, request: &[u8]) -> anyhow::Result<Received> {
    use std::io::Write;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut len = [0u8; 4];
    let mut body = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 1024]);
    let mut iov = [IoSliceMut::new(&mut len), IoSliceMut::new(&mut body)];
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(raw.into_iter().map(own_fd));
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    let addrs: Vec<String> = serde_json::from_slice(body.get(..n).unwrap_or_default())?;
    anyhow::ensure!(
        addrs.len() == fds.len(),
        "the old router sent {} addresses but {} sockets",
        addrs.len(),
        fds.len()
    );
    Ok((addrs, fds, stream))
}

/// Takes ownership of a descriptor the kernel just installed in this process.
#[allow(unsafe_code)]
fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: SCM_RIGHTS gave this process a new descriptor that nothing
    // else owns; it is wrapped exactly once, here.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// How the server talks to (and starts) the router of its directory.
pub struct RouterClient {
    dir: PathBuf,
    program: PathBuf,
    identity: String,
}

impl RouterClient {
    pub fn new(dir: &Path, program: PathBuf) -> RouterClient {
        RouterClient { dir: dir.to_path_buf(), identity: identity(&program), program }
    }

    async fn call(&self, request: &Request) -> std::io::Result<Reply> {
        let io = |e: String| std::io::Error::other(e);
        let attempt = async {
            let mut stream = UnixStream::connect(self.dir.join(SOCKET)).await?;
            let mut line = serde_json::to_vec(request).map_err(|e| io(e.to_string()))?;
            line.push(b'\n');
            stream.write_all(&line).await?;
            let mut reply = String::new();
            BufReader::new(stream).read_line(&mut reply).await?;
            serde_json::from_str::<Reply>(reply.trim()).map_err(|e| io(format!("bad router reply {reply:?}: {e}")))
        };
        tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .map_err(|_| io("the router did not answer within 10s".into()))?
    }

    fn spawn(&self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("router.log"))?;
        let mut child = tokio::process::Command::new(&self.program)
            .arg("router")
            .arg("--dir")
            .arg(&self.dir)
            // It outlives the server: it gets none of the server's environment
            // (AWS credentials, LIFEBOAT_TOKEN), only what it needs.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LIFEBOAT_LOG", std::env::var("LIFEBOAT_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()?;
        // Reap it if it exits while this server runs.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }

    /// Makes sure a router of this binary serves the directory: starts one
    /// if none answers, replaces one of another binary (keeping its listeners).
    pub async fn ensure(&self) -> Result<Reply, String> {
        match self.call(&Request::Hello).await {
            Ok(r) if r.identity == self.identity => return Ok(r),
            Ok(r) => tracing::info!(old = %r.identity, new = %self.identity, "replacing the router with this binary's"),
            Err(_) => {}
        }
        self.spawn().map_err(|e| format!("cannot start the router ({}): {e}", self.program.display()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.call(&Request::Hello).await {
                Ok(r) if r.identity == self.identity => return Ok(r),
                Ok(r) => last = format!("an older router ({}) still answers", r.identity),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!(
            "the router for {} did not start: {last} (see {})",
            self.dir.display(),
            self.dir.join("router.log").display()
        ))
    }

    /// Applies the directory's pointers now; returns the addresses that could not be served.
    pub async fn sync(&self) -> Result<Reply, String> {
        match self.call(&Request::Sync).await {
            Ok(r) if r.identity == self.identity => Ok(r),
            _ => {
                self.ensure().await?;
                self.call(&Request::Sync).await.map_err(|e| format!("the router does not answer: {e}"))
            }
        }
    }

    /// Stops the router (tests, teardown of a whole directory).
    pub async fn stop(&self) {
        let _ = self.call(&Request::Stop).await;
    }
}
