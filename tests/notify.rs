//! Outbound notifications: receivers on loopback get a proposed (approval)
//! run's start, approval-needed and success messages, in order; one that
//! fails twice still gets each.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Instances, Region, Server, Svc, wait_until};

/// What a receiver got: (authorization header, JSON body) per delivery.
type Got = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// An HTTP receiver that answers 503 to its first `fail_first` requests.
fn receiver(fail_first: usize) -> (String, Got) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Got = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        let mut seen = 0usize;
        for conn in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut auth) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = line.split_once(':').unwrap().1.trim().to_string();
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            seen += 1;
            let status = if seen <= fail_first { "503 Service Unavailable" } else { "200 OK" };
            if seen > fail_first {
                g.lock().unwrap().push((auth, serde_json::from_slice(&body).unwrap()));
            }
            let mut conn = conn;
            let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn receivers_get_each_message_in_order_even_after_failures() {
    let (plain, plain_got) = receiver(0);
    let (flaky, flaky_got) = receiver(2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lifeboat.toml"),
        format!("[[notify]]\nurl = \"{plain}\"\n\n[[notify]]\nurl = \"{flaky}\"\nbearer = \"s3cret-bearer\"\nevents = [\"started\", \"awaiting_approval\", \"succeeded\", \"failed\"]\n"),
    )
    .unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args =
        ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::launch(&args, &[]);
    server.dir = Some(dir);
    let _cleanup = Instances(server.local_dir());
    Region::setup(&server, "gate", &[Svc::new("db", &[]), Svc::new("api", &["db"]).extra("approval = true")]);
    let id = server.run(&["recover", "gate", "--yes", "--detach"]).ok().stdout.trim().to_string();
    wait_until(Duration::from_secs(30), "the approval message", || plain_got.lock().unwrap().len() >= 2);
    server.run(&["run", "approve", &id, "api"]).ok();
    server.run(&["run", "watch", &id]).ok();
    for got in [&plain_got, &flaky_got] {
        wait_until(Duration::from_secs(30), "three messages", || got.lock().unwrap().len() >= 3);
        let got = got.lock().unwrap();
        let events: Vec<&str> = got.iter().map(|(_, m)| m["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["started", "awaiting_approval", "succeeded"], "in order");
        let approval = &got[1].1;
        assert_eq!(approval["approve_command"], format!("lifeboat run approve {id} api"));
        assert!(approval["text"].as_str().unwrap().contains("api waits for approval"), "{approval}");
        assert_eq!((got[2].1["run_id"].as_str(), got[2].1["state"].as_str()), (Some(id.as_str()), Some("succeeded")));
        assert_eq!(got[0].1["environment"], "gate");
    }
    assert!(flaky_got.lock().unwrap().iter().all(|(auth, _)| auth == "Bearer s3cret-bearer"));
    assert!(plain_got.lock().unwrap().iter().all(|(auth, _)| auth.is_empty()));
    // The secret is in no message, and nowhere in the store.
    for (_, m) in flaky_got.lock().unwrap().iter() {
        assert!(!m.to_string().contains("s3cret-bearer"));
    }
    let out = std::process::Command::new("grep")
        .args(["-r", "-l", "s3cret-bearer"])
        .arg(server.store.clone())
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}
