//! Stable service addresses: the provider listens on each service's `listen`
//! address and forwards every connection to one of the instances traffic is
//! cut over to (round robin). Cutover is switching that target list.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::{TcpListener, TcpStream};

struct Forwarder {
    targets: Arc<RwLock<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub struct Proxies {
    by_addr: Mutex<HashMap<String, Forwarder>>,
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
        let std_listener = std::net::TcpListener::bind(listen).map_err(fail)?;
        std_listener.set_nonblocking(true).map_err(fail)?;
        let listener = TcpListener::from_std(std_listener).map_err(fail)?;
        let shared = Arc::new(RwLock::new(targets));
        let task = tokio::spawn(serve(listener, shared.clone()));
        map.insert(listen.to_string(), Forwarder { targets: shared, task });
        Ok(())
    }

    pub fn serves(&self, listen: &str) -> bool {
        self.by_addr.lock().expect("lock").contains_key(listen)
    }

    /// Stops serving an address.
    pub fn remove(&self, listen: &str) {
        if let Some(f) = self.by_addr.lock().expect("lock").remove(listen) {
            f.task.abort();
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for (_, f) in self.by_addr.lock().expect("lock").drain() {
            f.task.abort();
        }
    }
}

async fn serve(listener: TcpListener, targets: Arc<RwLock<Vec<SocketAddr>>>) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        let targets = targets.clone();
        let next = next.clone();
        tokio::spawn(async move {
            let list = targets.read().expect("lock").clone();
            if list.is_empty() {
                return; // nothing healthy to send it to: close
            }
            // Try each target once, starting at the round-robin position.
            let start = next.fetch_add(1, Ordering::Relaxed);
            for i in 0..list.len() {
                let target = list[(start + i) % list.len()];
                if let Ok(mut outbound) = TcpStream::connect(target).await {
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
}
