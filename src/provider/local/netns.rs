//! Network namespaces for drills: on a host that allows them (root, with
//! iproute2's `ip`), each drill of the local provider runs in a network
//! namespace of its own, `lifeboat-RUN`, with only a loopback interface.
//! Its services keep production's addresses (`127.0.0.1:18001` is the
//! drill's db there), and production cannot be reached from inside in any
//! form: no rewrite has to guess.
//!
//! A socket belongs to the namespace it was created in, whichever thread
//! uses it later. So the server (probes, verify checks) and the router
//! (stable addresses) make their sockets on a short-lived thread that
//! entered the namespace, then use them as any other; instances are spawned
//! into it (`enter`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps named namespaces.
const DIR: &str = "/run/netns";

/// The launch key a drill's isolation sets to its namespace's name.
pub const LAUNCH_KEY: &str = "network_namespace";

/// The namespace of the drill whose provider environment is `namespace`
/// (`ENV.drill.RUN`).
pub fn name_for(namespace: &str) -> Option<String> {
    crate::domain::drill::parse_namespace(namespace).map(|(_, run)| format!("lifeboat-{run}"))
}

/// Whether `name` is one this provider made (`lifeboat-r-…`).
pub fn is_ours(name: &str) -> bool {
    name.strip_prefix("lifeboat-").is_some_and(|run| run.starts_with("r-"))
}

fn path(name: &str) -> PathBuf {
    // Only a plain name: never a path out of /run/netns.
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains('/');
    PathBuf::from(DIR).join(if plain { name } else { "invalid-name" })
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Makes the namespace (if it is not there yet) with its loopback up.
/// Fails, saying why, where the host does not allow it.
pub fn create(name: &str) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("network namespaces need the server to run as root".into());
    }
    let made = !exists(name);
    if made {
        ip(&["netns", "add", name])?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"]).inspect_err(|_| {
        if made {
            let _ = delete(name); // not half made
        }
    })
}

/// Removes the namespace's name (the kernel frees it once no process or
/// socket is in it). A namespace that is not there is fine.
pub fn delete(name: &str) -> Result<(), String> {
    if !exists(name) {
        return Ok(());
    }
    ip(&["netns", "delete", name])
}

/// The namespaces of drills on this host (`lifeboat-r-…`).
pub fn list() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(DIR) else { return Vec::new() };
    let mut out: Vec<String> =
        entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).filter(|n| is_ours(n)).collect();
    out.sort();
    out
}

fn open(name: &str) -> io::Result<OwnedFd> {
    std::fs::File::open(path(name))
        .map(OwnedFd::from)
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name}: {e}")))
}

/// Runs `f` on a thread of its own that entered the namespace (sockets it
/// makes stay there). Blocks the caller for as long as `f` runs.
pub fn within<T: Send>(name: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let fd = open(name)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| io::Error::other(format!("cannot enter {name}: {e}")))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("a thread in a network namespace panicked")))
    })
}

/// A listener on `addr` inside the namespace.
pub fn bind(name: &str, addr: &str) -> io::Result<std::net::TcpListener> {
    within(name, || std::net::TcpListener::bind(addr))
}

/// A TCP connection to `addr` made from inside the namespace (a name is
/// resolved on the host: `localhost` is the namespace's own loopback).
pub async fn connect(name: &str, addr: &str) -> io::Result<tokio::net::TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{addr} resolves to no address"));
    for target in tokio::net::lookup_host(addr).await? {
        let owned = name.to_string();
        let socket = tokio::task::spawn_blocking(move || {
            within(&owned, || {
                if target.is_ipv6() { tokio::net::TcpSocket::new_v6() } else { tokio::net::TcpSocket::new_v4() }
            })
        })
        .await
        .map_err(io::Error::other)??;
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Spawns the command's process inside the namespace.
#[allow(unsafe_code)]
pub fn enter(cmd: &mut tokio::process::Command, name: &str) -> io::Result<()> {
    let fd = open(name)?;
    // SAFETY: between fork and exec the closure makes one system call
    // (setns) on a descriptor opened before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || setns(&fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    Ok(())
}

/// `GET url` from inside the namespace, over HTTP/1.1: the status and up to
/// `max` bytes of the body.
pub async fn http_get(name: &str, url: &str, timeout: Duration, max: usize) -> Result<(u16, String), String> {
    let attempt = async {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// checks can be sent inside a drill's network namespace".to_string());
        }
        let host = uri.host().ok_or("the URL has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let stream = connect(name, &authority).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // The connection goes with this request, answered or timed out.
        let _conn = AbortOnDrop(tokio::spawn(conn).abort_handle());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, uri.authority().map_or(host, |a| a.as_str()))
            .header(hyper::header::USER_AGENT, concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let mut response = send.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < max {
            use http_body_util::BodyExt;
            match response.body_mut().frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(&data[..data.len().min(max - body.len())]);
                    }
                }
                _ => break,
            }
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("GET {url} (in network namespace {name}): {e}")),
        Err(_) => Err(format!(
            "GET {url} (in network namespace {name}): no answer within {}",
            crate::domain::duration::human(timeout)
        )),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_drill_namespaces_only() {
        assert_eq!(name_for("shop.drill.r-1a2b").as_deref(), Some("lifeboat-r-1a2b"));
        assert_eq!(name_for("shop"), None);
        assert!(is_ours("lifeboat-r-1a2b"));
        assert!(!is_ours("lifeboat-x") && !is_ours("docker-r-1"));
    }

    /// On a host that allows namespaces, one made here has its own
    /// loopback: a listener inside is not reachable from outside, and the
    /// other way round.
    #[tokio::test]
    async fn a_namespace_has_a_loopback_of_its_own() {
        let name = format!("lifeboat-r-unit{}", std::process::id());
        if create(&name).is_err() {
            eprintln!("skipped: this host does not allow network namespaces");
            return;
        }
        let inside = bind(&name, "127.0.0.1:0").unwrap();
        let port = inside.local_addr().unwrap().port();
        let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let outside_port = outside.local_addr().unwrap().port();
        assert!(connect(&name, &format!("127.0.0.1:{port}")).await.is_ok(), "reachable from inside");
        assert!(connect(&name, &format!("localhost:{outside_port}")).await.is_err(), "the host is out of reach");
        drop(inside);
        delete(&name).unwrap();
        assert!(!exists(&name));
    }
}
