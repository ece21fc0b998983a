//! The server's HTTP side: health, readiness and Prometheus metrics that a
//! real parser accepts and that move with a recovery.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{Backend, Instances, Region, Server, Svc};

/// `GET path` on the server's HTTP side: (status, body).
fn get(server: &Server, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(&server.http).expect("the HTTP side listens");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.http).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of one sample line (`name{labels} value`), if present.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn health_readiness_and_metrics() {
    let server = Server::start(Backend::Fs);
    let _cleanup = Instances(server.local_dir());
    assert!(!server.http.is_empty(), "the server reports its HTTP address");
    assert_eq!(get(&server, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&server, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(&server, "/nope").0, 404);

    Region::setup(&server, "shop", &[Svc::new("db", &[]), Svc::new("web", &["db"])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let (status, metrics) = get(&server, "/metrics");
    assert_eq!(status, 200);
    let runs = r#"lifeboat_runs_total{kind="recovery",environment="shop",outcome="succeeded"}"#;
    assert_eq!(sample(&metrics, runs), Some(1.0), "{metrics}");
    for step in ["launch", "health_gate", "cutover"] {
        let count = sample(&metrics, &format!("lifeboat_step_duration_seconds_count{{step=\"{step}\"}}"));
        assert_eq!(count, Some(2.0), "{step}: {metrics}");
    }
    let pushes = r#"lifeboat_operations_total{action="snapshot.push",outcome="ok"}"#;
    assert_eq!(sample(&metrics, pushes), Some(1.0), "{metrics}");
    assert!(
        sample(&metrics, r#"lifeboat_store_requests_total{operation="put"}"#).is_some_and(|n| n > 5.0),
        "{metrics}"
    );
    // At least the snapshot and the run record went through the store.
    for direction in ["read", "written"] {
        let bytes = sample(&metrics, &format!("lifeboat_store_bytes_total{{direction=\"{direction}\"}}"));
        assert!(bytes.is_some_and(|n| n > 1000.0), "{direction}: {metrics}");
    }
    assert_eq!(sample(&metrics, "lifeboat_runs_active"), Some(0.0), "{metrics}");

    // A second recovery moves the counters.
    server.run(&["recover", "shop", "--yes", "--force"]).ok();
    let (_, metrics) = get(&server, "/metrics");
    assert_eq!(sample(&metrics, runs), Some(2.0), "{metrics}");

    // A real OpenMetrics parser accepts the page.
    let file = server.dir.as_ref().unwrap().path().join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let out = Command::new(lifeboat::testkit::python())
        .args([
            "-c",
            "import sys; from prometheus_client.openmetrics.parser import text_string_to_metric_families as p; \
             fams = list(p(open(sys.argv[1]).read())); print(len(fams)); print(' '.join(sorted(f.name for f in fams)))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the parser refused it: {}", String::from_utf8_lossy(&out.stderr));
    for name in [
        "lifeboat_runs",
        "lifeboat_step_duration_seconds",
        "lifeboat_store_requests",
        "lifeboat_store_bytes",
        "lifeboat_runs_active",
    ] {
        assert!(stdout.split_whitespace().any(|n| n == name), "{name} not parsed: {stdout}");
    }
}
