//! Health probes shared by providers: TCP connect, HTTP status, a command.

use std::time::Duration;

use tokio::net::TcpStream;

/// One probe; `Err` says why it failed.
pub async fn probe_tcp(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
        Err(_) => Err(format!("tcp {addr}: no answer within {}", crate::domain::duration::human(timeout))),
    }
}

/// The one HTTP client for health probes (reqwest with rustls; the
/// system's CA certificates, and `SSL_CERT_FILE`, are trusted). Redirects
/// are not followed: a 3xx answer is healthy.
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(0)
            .build()
            .expect("the health-probe HTTP client builds")
    })
}

/// GET `url` (http or https); 2xx and 3xx are healthy.
pub async fn probe_http(url: &str, timeout: Duration) -> Result<(), String> {
    let root_cause = |e: &reqwest::Error| {
        let mut cur: &dyn std::error::Error = e;
        while let Some(next) = cur.source() {
            cur = next;
        }
        cur.to_string()
    };
    match client().get(url).timeout(timeout).send().await {
        Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
        Ok(r) => Err(format!("GET {url}: HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => {
            Err(format!("GET {url}: no answer within {}", crate::domain::duration::human(timeout)))
        }
        Err(e) => Err(format!("GET {url}: {}", root_cause(&e))),
    }
}

/// Runs a command; exit status 0 is healthy.
/// It runs in `dir` with exactly `env`: nothing of the server's own
/// environment (its secrets) reaches it.
pub async fn probe_command(
    argv: &[String],
    env: &[(String, String)],
    dir: &std::path::Path,
    timeout: Duration,
) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty health command".into());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.env_clear().current_dir(dir);
    cmd.args(args).envs(env.iter().cloned()).stdin(std::process::Stdio::null()).kill_on_drop(true);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    match tokio::time::timeout(timeout, cmd.status()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("health command {prog} exited with {s}")),
        Ok(Err(e)) => Err(format!("health command {prog}: {e}")),
        Err(_) => {
            Err(format!("health command {prog} did not finish within {}", crate::domain::duration::human(timeout)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        let here = std::env::temp_dir();
        probe_command(&["/bin/true".into()], &[], &here, t).await.unwrap();
        assert!(probe_command(&["/bin/false".into()], &[], &here, t).await.is_err());
    }
}
