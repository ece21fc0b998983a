//! Health probes shared by providers: TCP connect, HTTP status, a command.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One probe; `Err` says why it failed.
pub async fn probe_tcp(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
        Err(_) => Err(format!("tcp {addr}: no answer within {timeout:?}")),
    }
}

/// GET `url` (http only); 2xx and 3xx are healthy.
pub async fn probe_http(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs can be probed"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let attempt = async {
        let mut s = TcpStream::connect(hostport).await.map_err(|e| format!("GET {url}: {e}"))?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: lifeboat\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("GET {url}: {e}"))?;
        let mut buf = vec![0u8; 256];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut buf[n..]).await.map_err(|e| format!("GET {url}: {e}"))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("GET {url}: not an HTTP response"))?;
        if (200..400).contains(&code) { Ok(()) } else { Err(format!("GET {url}: HTTP {code}")) }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
    }
}

/// Runs a command; exit status 0 is healthy.
pub async fn probe_command(argv: &[String], env: &[(String, String)], timeout: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty health command".into());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args).envs(env.iter().cloned()).stdin(std::process::Stdio::null()).kill_on_drop(true);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    match tokio::time::timeout(timeout, cmd.status()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("health command {prog} exited with {s}")),
        Ok(Err(e)) => Err(format!("health command {prog}: {e}")),
        Err(_) => Err(format!("health command {prog} did not finish within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_and_tcp_probes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap();
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
                let status = if ok { "200 OK" } else { "503 Service Unavailable" };
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let t = Duration::from_secs(2);
        probe_http(&format!("http://{addr}/ok"), t).await.unwrap();
        let e = probe_http(&format!("http://{addr}/bad"), t).await.unwrap_err();
        assert!(e.contains("HTTP 503"), "{e}");
        probe_tcp(&addr, t).await.unwrap();
        let port = crate::testkit::free_port();
        assert!(probe_tcp(&format!("127.0.0.1:{port}"), t).await.is_err());
        probe_command(&["true".into()], &[], t).await.unwrap();
        assert!(probe_command(&["false".into()], &[], t).await.is_err());
    }
}
