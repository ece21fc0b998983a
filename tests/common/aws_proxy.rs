//! A fault-injecting HTTP proxy in front of the EC2-API test server: it
//! forwards every call, and can answer `RunInstances` with throttling, or
//! forward it and then never answer (to kill a server while its call is in
//! flight).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Faults {
    /// Answer this many `RunInstances` calls with `RequestLimitExceeded`.
    pub throttle_run_instances: u32,
    /// Forward `RunInstances`, then never answer.
    pub swallow_run_instances: bool,
    /// `RunInstances` calls that reached the server (forwarded).
    pub run_instances_forwarded: u32,
    pub throttled: u32,
}

pub struct Proxy {
    pub url: String,
    pub faults: Arc<Mutex<Faults>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Mutex::new(Faults::default()));
        let f = faults.clone();
        let upstream = upstream.trim_start_matches("http://").to_string();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                tokio::spawn(serve(conn, upstream.clone(), f.clone()));
            }
        });
        Proxy { url, faults }
    }
}

async fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// One request per connection: the proxy answers with `Connection: close`.
async fn serve(mut conn: TcpStream, upstream: String, faults: Arc<Mutex<Faults>>) {
    let Some(request) = read_request(&mut conn).await else { return };
    let run_instances = String::from_utf8_lossy(&request).contains("Action=RunInstances");
    if run_instances {
        let throttle = {
            let mut f = faults.lock().unwrap();
            if f.throttle_run_instances > 0 {
                f.throttle_run_instances -= 1;
                f.throttled += 1;
                true
            } else {
                false
            }
        };
        if throttle {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>lifeboat-test</RequestID></Response>";
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            return;
        }
    }
    // Forward with `Connection: close`, read the whole answer.
    let text = String::from_utf8_lossy(&request).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let head: Vec<&str> = head.lines().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    let forwarded = format!("{}\r\nConnection: close\r\n\r\n{body}", head.join("\r\n"));
    let Ok(mut up) = TcpStream::connect(&upstream).await else { return };
    if up.write_all(forwarded.as_bytes()).await.is_err() {
        return;
    }
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer).await;
    if run_instances {
        let swallow = {
            let mut f = faults.lock().unwrap();
            f.run_instances_forwarded += 1;
            f.swallow_run_instances
        };
        if swallow {
            // The instances exist; the caller never hears of them.
            std::future::pending::<()>().await;
        }
    }
    let _ = conn.write_all(&answer).await;
}
