//! Stable service addresses, served by the router process: a listener per
//! service's `listen` address forwards every connection to one of the
//! instances traffic is cut over to (round robin). Cutover is switching
//! that target list. An address inside a drill's network namespace (its
//! route key says `ADDR in NETNS`) is bound there, and forwards there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

struct Forwarder {
    targets: Arc<RwLock<Vec<SocketAddr>>>,
    /// The listening socket itself, kept for handing over to a new router.
    socket: std::net::TcpListener,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub struct Proxies {
    by_addr: Mutex<HashMap<String, Forwarder>>,
    /// Connections being forwarded now (a router that handed its listeners
    /// over waits for these to finish before it exits).
    active: Arc<AtomicUsize>,
}

/// Counts one forwarded connection while it lives.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn new(count: &Arc<AtomicUsize>) -> Active {
        count.fetch_add(1, Ordering::SeqCst);
        Active(count.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Proxies {
    /// Serves `listen` and points it at `targets` (creating the listener on
    /// first use). Checks, binds and records under one lock, so concurrent
    /// callers never race for the address.
    pub fn route(&self, listen: &str, targets: Vec<SocketAddr>) -> Result<(), String> {
        let mut map = self.by_addr.lock().expect("lock");
        if let Some(f) = map.get(listen) {
            *f.targets.write().expect("lock") = targets;
            return Ok(());
        }
        let fail = |e: std::io::Error| format!("cannot serve the stable address {listen}: {e}");
        let socket = match super::records::parse_route_key(listen) {
            (addr, None) => std::net::TcpListener::bind(addr),
            (addr, Some(net)) => super::netns::bind(net, addr),
        }
        .map_err(fail)?;
        let f = Self::forwarder(listen, socket, targets, &self.active).map_err(fail)?;
        map.insert(listen.to_string(), f);
        Ok(())
    }

    /// Serves a listener handed over by another router, forwarding to
    /// `targets` from its first accepted connection: the old router may still
    /// be accepting on the same socket, so a connection taken here before the
    /// targets were known would be dropped.
    pub fn adopt(&self, listen: &str, socket: std::net::TcpListener, targets: Vec<SocketAddr>) -> std::io::Result<()> {
        let f = Self::forwarder(listen, socket, targets, &self.active)?;
        if let Some(old) = self.by_addr.lock().expect("lock").insert(listen.to_string(), f) {
            old.task.abort();
        }
        Ok(())
    }

    fn forwarder(
        key: &str,
        socket: std::net::TcpListener,
        targets: Vec<SocketAddr>,
        active: &Arc<AtomicUsize>,
    ) -> std::io::Result<Forwarder> {
        socket.set_nonblocking(true)?;
        let listener = TcpListener::from_std(socket.try_clone()?)?;
        let shared = Arc::new(RwLock::new(targets));
        let net = super::records::parse_route_key(key).1.map(str::to_string);
        let task = tokio::spawn(serve(listener, shared.clone(), net, active.clone()));
        Ok(Forwarder { targets: shared, socket, task })
    }

    /// How many connections are being forwarded now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = self.by_addr.lock().expect("lock").keys().cloned().collect();
        out.sort();
        out
    }

    /// Duplicates of the listening sockets, for a handover.
    pub fn listeners(&self) -> Vec<(String, OwnedFd)> {
        self.by_addr
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(a, f)| f.socket.try_clone().ok().map(|s| (a.clone(), OwnedFd::from(s))))
            .collect()
    }

    /// Stops accepting on every address (after a handover); connections in
    /// flight carry on.
    pub fn stop_accepting(&self) {
        for f in self.by_addr.lock().expect("lock").values() {
            f.task.abort();
        }
    }

    /// Stops serving an address.
    pub fn remove(&self, listen: &str) {
        if let Some(f) = self.by_addr.lock().expect("lock").remove(listen) {
            f.task.abort();
        }
    }

    pub fn clear(&self) {
        for (_, f) in self.by_addr.lock().expect("lock").drain() {
            f.task.abort();
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.clear();
    }
}

async fn serve(
    listener: TcpListener,
    targets: Arc<RwLock<Vec<SocketAddr>>>,
    net: Option<String>,
    active: Arc<AtomicUsize>,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut backoff = Duration::ZERO;
    loop {
        let mut inbound = match listener.accept().await {
            Ok((s, _)) => {
                backoff = Duration::ZERO;
                s
            }
            // Out of file descriptors, say: back off instead of spinning,
            // and say so once per episode.
            Err(e) => {
                if backoff.is_zero() {
                    tracing::warn!(address = ?listener.local_addr().ok(), error = %e, "cannot accept connections; backing off");
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let targets = targets.clone();
        let next = next.clone();
        let net = net.clone();
        let counted = Active::new(&active);
        tokio::spawn(async move {
            let _counted = counted;
            let list = targets.read().expect("lock").clone();
            if list.is_empty() {
                return; // nothing healthy to send it to: close
            }
            // Try each target once, starting at the round-robin position.
            let start = next.fetch_add(1, Ordering::Relaxed);
            for i in 0..list.len() {
                let target = list[(start + i) % list.len()];
                let connected = match &net {
                    None => TcpStream::connect(target).await,
                    Some(n) => super::netns::connect(n, &target.to_string()).await,
                };
                if let Ok(mut outbound) = connected {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(tag: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = s.write_all(tag.as_bytes()).await;
            }
        });
        addr
    }

    async fn read_from(addr: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn cutover_switches_the_target() {
        let (blue, green) = (echo_server("blue").await, echo_server("green").await);
        let listen = format!("127.0.0.1:{}", crate::testkit::free_port());
        let p = Proxies::default();
        p.route(&listen, vec![blue]).unwrap();
        assert_eq!(read_from(&listen).await, "blue");
        p.route(&listen, vec![green]).unwrap();
        assert_eq!(read_from(&listen).await, "green");
        p.route(&listen, vec![]).unwrap();
        assert_eq!(read_from(&listen).await, "");
    }

    #[tokio::test]
    async fn a_handed_over_listener_keeps_its_address() {
        let blue = echo_server("blue").await;
        let listen = format!("127.0.0.1:{}", crate::testkit::free_port());
        let old = Proxies::default();
        old.route(&listen, vec![blue]).unwrap();
        let new = Proxies::default();
        for (addr, fd) in old.listeners() {
            new.adopt(&addr, std::net::TcpListener::from(fd), vec![blue]).unwrap();
        }
        old.stop_accepting();
        // Served at once, before any route call (the old router stops
        // accepting while the new one is still starting).
        for _ in 0..20 {
            assert_eq!(read_from(&listen).await, "blue");
        }
    }
}
