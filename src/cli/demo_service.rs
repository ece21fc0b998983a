//! `lifeboat demo-service` (hidden): the small HTTP service `lifeboat demo`
//! deploys. It listens on $PORT and answers `/healthz` with 200 only when
//! every dependency given with `--dep ADDR` answers its own `/healthz`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Failure, exit};
use crate::provider::health::probe_http;

#[derive(Debug, clap::Args)]
pub struct DemoServiceArgs {
    /// The service's name, shown in responses.
    #[arg(long)]
    pub name: String,
    /// A dependency's address (host:port); repeatable.
    #[arg(long = "dep")]
    pub deps: Vec<String>,
    /// Wait this long before listening (a slow start).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub boot_delay: Duration,
    /// Never become healthy (a broken release).
    #[arg(long)]
    pub broken: bool,
    /// Turn unhealthy this long after starting (a release that degrades).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub fail_after: Option<Duration>,
}

pub async fn run(args: DemoServiceArgs) -> Result<(), Failure> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Failure::invalid("demo-service needs PORT in its environment"))?;
    tokio::time::sleep(args.boot_delay).await;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    println!("demo service {} listening on 127.0.0.1:{port} (deps: {})", args.name, args.deps.join(", "));
    let started = std::time::Instant::now();
    let args = std::sync::Arc::new(args);
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        let args = args.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let degraded = args.fail_after.is_some_and(|d| started.elapsed() >= d);
            let (status, body) = match path.as_str() {
                "/healthz" if degraded => ("503 Service Unavailable", format!("{} degraded\n", args.name)),
                "/healthz" => health(&args).await,
                // Which environment answered (production or a drill's).
                _ => match std::env::var("LIFEBOAT_ENVIRONMENT") {
                    Ok(env) => ("200 OK", format!("{} ok ({env})\n", args.name)),
                    Err(_) => ("200 OK", format!("{} ok\n", args.name)),
                },
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

async fn health(args: &DemoServiceArgs) -> (&'static str, String) {
    if args.broken {
        return ("503 Service Unavailable", format!("{} is broken\n", args.name));
    }
    for dep in &args.deps {
        if let Err(e) = probe_http(&format!("http://{dep}/healthz"), Duration::from_secs(1)).await {
            return ("503 Service Unavailable", format!("{} waits for {dep}: {e}\n", args.name));
        }
    }
    ("200 OK", format!("{} healthy\n", args.name))
}
