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
        Ok(r) => {
            // The start of the body often says why (a dead dependency).
            let code = r.status().as_u16();
            match one_line(&body_start(r, SHOWN_BODY).await) {
                b if b.is_empty() => Err(format!("GET {url}: HTTP {code}")),
                b => Err(format!("GET {url}: HTTP {code}: {b}")),
            }
        }
        Err(e) if e.is_timeout() => {
            Err(format!("GET {url}: no answer within {}", crate::domain::duration::human(timeout)))
        }
        Err(e) => Err(format!("GET {url}: {}", root_cause(&e))),
    }
}

/// How much of an unhealthy answer's body, or a failed command's output, a
/// failure shows.
pub const SHOWN_BODY: usize = 512;

/// Up to `max` bytes of a response's body, read no further (a body of
/// gigabytes costs nothing more).
pub async fn body_start(mut r: reqwest::Response, max: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < max {
        match r.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(max - buf.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Text shown in one line of a report: whitespace folded, control
/// characters escaped, at most `SHOWN_BODY` bytes.
pub fn one_line(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = folded.chars().flat_map(|c| c.escape_default().collect::<Vec<_>>()).collect();
    if out.len() > SHOWN_BODY {
        let mut end = SHOWN_BODY;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// Reads a stream to its end, keeping only its last `keep` bytes.
async fn tail_of(mut r: impl tokio::io::AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut tail = std::collections::VecDeque::with_capacity(keep);
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if tail.len() == keep {
                tail.pop_front();
            }
            tail.push_back(b);
        }
    }
    tail.into_iter().collect()
}

/// An HTTP probe, from inside a drill's network namespace when `net` names one.
pub async fn probe_http_from(net: Option<&str>, url: &str, timeout: Duration) -> Result<(), String> {
    let Some(name) = net else { return probe_http(url, timeout).await };
    match crate::provider::local::netns::http_get(name, url, timeout, SHOWN_BODY).await? {
        (code, _) if (200..400).contains(&code) => Ok(()),
        (code, body) => match one_line(&body) {
            b if b.is_empty() => Err(format!("GET {url} (in {name}): HTTP {code}")),
            b => Err(format!("GET {url} (in {name}): HTTP {code}: {b}")),
        },
    }
}

/// A TCP probe, from inside a drill's network namespace when `net` names one.
pub async fn probe_tcp_from(net: Option<&str>, addr: &str, timeout: Duration) -> Result<(), String> {
    let Some(name) = net else { return probe_tcp(addr, timeout).await };
    match tokio::time::timeout(timeout, crate::provider::local::netns::connect(name, addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr} (in {name}): {e}")),
        Err(_) => Err(format!("tcp {addr} (in {name}): no answer within {}", crate::domain::duration::human(timeout))),
    }
}

/// Runs a command; exit status 0 is healthy.
/// It runs in `dir` with exactly `env`: nothing of the server's own
/// environment (its secrets) reaches it; inside a drill's network
/// namespace when `net` names one.
pub async fn probe_command(
    net: Option<&str>,
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
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    if let Some(name) = net {
        crate::provider::local::netns::enter(&mut cmd, name).map_err(|e| format!("command {prog}: {e}"))?;
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Err(format!("command {prog}: {e}")),
    };
    // Its output says why it failed; only the end of it is kept.
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let ran = async {
        let (out, err, status) = tokio::join!(
            async {
                match out {
                    Some(o) => tail_of(o, SHOWN_BODY).await,
                    None => Vec::new(),
                }
            },
            async {
                match err {
                    Some(e) => tail_of(e, SHOWN_BODY).await,
                    None => Vec::new(),
                }
            },
            child.wait()
        );
        (out, err, status)
    };
    match tokio::time::timeout(timeout, ran).await {
        Ok((_, _, Ok(s))) if s.success() => Ok(()),
        Ok((out, err, Ok(s))) => {
            let said = one_line(&format!("{} {}", String::from_utf8_lossy(&err), String::from_utf8_lossy(&out)));
            match said.is_empty() {
                true => Err(format!("command {prog} exited with {s}")),
                false => Err(format!("command {prog} exited with {s}: {said}")),
            }
        }
        Ok((_, _, Err(e))) => Err(format!("command {prog}: {e}")),
        Err(_) => Err(format!("command {prog} did not finish within {}", crate::domain::duration::human(timeout))),
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
                let (status, body) = if ok { ("200 OK", "") } else { ("503 Service Unavailable", "db\tunreachable\n") };
                let head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = s.write_all(head.as_bytes()).await;
            }
        });
        let t = Duration::from_secs(2);
        probe_http(&format!("http://{addr}/ok"), t).await.unwrap();
        let e = probe_http(&format!("http://{addr}/bad"), t).await.unwrap_err();
        assert_eq!(e, format!("GET http://{addr}/bad: HTTP 503: db unreachable"));
        probe_tcp(&addr, t).await.unwrap();
        let port = crate::testkit::free_port();
        assert!(probe_tcp(&format!("127.0.0.1:{port}"), t).await.is_err());
        let here = std::env::temp_dir();
        probe_command(None, &["/bin/true".into()], &[], &here, t).await.unwrap();
        assert!(probe_command(None, &["/bin/false".into()], &[], &here, t).await.is_err());
        // A failed command says what it printed (the end of it).
        let said = [
            "/bin/sh".to_string(),
            "-c".into(),
            "yes x | head -c 100000; echo; echo 'cannot reach db' >&2; exit 3".into(),
        ];
        let e = probe_command(None, &said, &[("PATH".into(), "/usr/bin:/bin".into())], &here, t).await.unwrap_err();
        assert!(e.starts_with("command /bin/sh exited with exit status: 3: cannot reach db x x"), "{e}");
        assert!(e.len() < 700, "{e}");
    }
}
