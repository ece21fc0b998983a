//! The HTTP side faces the internet (PagerDuty calls it): slow and hostile
//! clients there must not hold the server. Against the real binary, run
//! under a 1,024 open-file limit as on a default Linux host.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PD_SECRET: &str = "pd-5ecret-for-the-hostile-probe";

/// A server whose open-file limit is 1,024, soft and hard, with `server_section` in `[server]`.
fn server_with_1024_files(dir: &Path, server_section: &str) -> Server {
    let config = dir.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n{server_section}\n\n[webhooks.pagerduty]\nsecrets = [\"{PD_SECRET}\"]\n\n\
             [[webhooks.rules]]\nname = \"shop\"\nmatch = ['service_id=\"PSHOP01\"']\nenvironment = \"shop\"\n"
        ),
    )
    .unwrap();
    let wrapper = dir.join("lifeboat-1024");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -n 1024 || exit 99\nexec '{}' \"$@\"\n", env!("CARGO_BIN_EXE_lifeboat")),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let p = |x: &str| dir.join(x).display().to_string();
    let args = [p("lifeboat.toml"), p("store"), p("local")];
    Server::launch_with(&wrapper, &["--config", &args[0], "--store", &args[1], "--local-dir", &args[2]], &[])
}

/// This test process opens more than 1,024 sockets.
fn raise_own_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(hard >= 4096, "the test needs 4,096 open files (hard limit {hard})");
}

/// A client that sends a request head one byte a second and never
/// finishes: when did the server close it (`None`: it never did)?
async fn trickle(addr: String, started: Instant, stop: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(&addr).await.ok()?;
    let connected = Instant::now();
    let head = b"POST /v1/webhooks/pagerduty HTTP/1.1\r\nHost: x\r\nX-Padding: ";
    let mut buf = [0u8; 256];
    let mut i = 0usize;
    while started.elapsed() < stop {
        let byte = [head.get(i).copied().unwrap_or(b'a')];
        i += 1;
        if s.write_all(&byte).await.is_err() {
            return Some(connected.elapsed());
        }
        // A closed connection reads EOF (or a reset); a live one times out.
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(connected.elapsed()),
            Ok(Ok(_)) => return Some(connected.elapsed()), // an error reply, then close
            Err(_) => {}
        }
    }
    None
}

/// One 1 MB delivery whose signature header carries 20,000 `v1=` entries.
async fn oversized_signature(addr: String) -> String {
    let body = vec![b'x'; 1 << 20];
    let signatures: Vec<String> = (0..20_000).map(|i| format!("v1={i:08x}")).collect();
    let head = format!(
        "POST /v1/webhooks/pagerduty HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-PagerDuty-Signature: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        signatures.join(",")
    );
    let Ok(mut s) = TcpStream::connect(&addr).await else { return "cannot connect".into() };
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[test]
fn slow_connections_and_oversized_signatures_do_not_stall_the_grpc_api() {
    raise_own_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_1024_files(dir.path(), "header_timeout = \"3s\"");
    let _cleanup = common::Instances(dir.path().join("local"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        use lifeboat::api::pb;
        let mut client = pb::recovery_service_client::RecoveryServiceClient::connect(server.url.clone()).await.unwrap();
        let started = Instant::now();
        let storm = Duration::from_secs(15);
        let slow: Vec<_> =
            (0..1000).map(|_| tokio::spawn(trickle(server.http.clone(), started, storm))).collect();
        let big: Vec<_> = (0..2).map(|_| tokio::spawn(oversized_signature(server.http.clone()))).collect();
        // A gRPC call that reads the store, every 50 ms, while the storm lasts.
        let mut latencies = Vec::new();
        while started.elapsed() < storm {
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                client.status(pb::StatusRequest { environment: String::new() }),
            )
            .await;
            let took = t.elapsed();
            assert!(matches!(r, Ok(Ok(_))), "status during the storm: {r:?} after {took:?}");
            latencies.push(took);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        latencies.sort();
        let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies[latencies.len() - 1]);
        println!(
            "gRPC Status under 1,000 slow HTTP connections and 2 oversized signatures: {} calls, p50 {p50:?}, p99 {p99:?}, max {max:?}",
            latencies.len()
        );
        assert!(max < Duration::from_secs(1), "a gRPC call took {max:?} (p99 {p99:?})");
        // Refused (401 after reading at most 8 entries, 431 for the header's
        // size) or, when it waited behind the slow clients past its
        // deadline, closed: never accepted.
        for b in big {
            let reply = b.await.unwrap();
            let status = reply.lines().next().unwrap_or_default().to_string();
            println!("an oversized signature was answered {status:?}");
            assert!(!status.contains(" 20"), "an oversized signature is never accepted: {status:?}");
            if status.contains(" 401 ") {
                assert!(reply.contains("20000 v1= signatures; at most 8 are read"), "refused for its size: {reply}");
            }
        }
        let closed: Vec<Option<Duration>> = futures::future::join_all(slow).await.into_iter().map(|r| r.unwrap()).collect();
        let cut = closed.iter().flatten().count();
        // The server closes a head that does not arrive within 3 s. Beyond
        // the cap (192 under 1,024 files) clients wait in the backlog until
        // a place frees, so the first ones are cut after about 3 s.
        assert!(cut >= 192, "only {cut} of 1,000 slow connections were closed by the server");
        let first = closed.iter().flatten().min().unwrap();
        assert!(*first >= Duration::from_secs(2) && *first < Duration::from_secs(6), "first cut after {first:?}");
    });
    // The server is whole afterwards: the HTTP side answers a real delivery.
    let body = common::webhook::incident("incident.triggered", "QHOSTILE", "PNOBODY");
    let (status, reply) = common::webhook::pagerduty(&server, PD_SECRET, &body);
    assert_eq!(status, 202, "{reply}");
    server.run(&["status"]).ok();
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_1024_files(dir.path(), "body_timeout = \"2s\"\nheader_timeout = \"2s\"");
    let _cleanup = common::Instances(dir.path().join("local"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Head complete, 10 of 100 body bytes, then nothing.
        let mut s = TcpStream::connect(&server.http).await.unwrap();
        let t = Instant::now();
        s.write_all(b"POST /v1/webhooks/pagerduty HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("the request body did not arrive within 2s"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // An idle kept-alive connection is closed after the head deadline too.
        let mut s = TcpStream::connect(&server.http).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let t = Instant::now();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&out).contains("ok\n"));
        assert!(t.elapsed() < Duration::from_secs(5), "idle for {:?}", t.elapsed());
        // A gRPC connection that sends nothing is closed too: it cannot keep a place.
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        let t = Instant::now();
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(closed.is_ok(), "an idle gRPC connection stays open");
        assert!(t.elapsed() < Duration::from_secs(5), "idle for {:?}", t.elapsed());
    });
}
