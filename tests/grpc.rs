//! The gRPC API through real clients: grpcurl (reflection, health) and
//! status codes for bad requests.

mod common;

use std::process::Command;

use common::{Backend, Server, grpcurl, manifests};

fn grpcurl_run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(grpcurl()).arg("-plaintext").args(args).output().expect("run grpcurl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn reflection_lists_services_and_health_is_serving() {
    let server = Server::start(Backend::Fs);
    let (code, out, err) = grpcurl_run(&[server.addr(), "list"]);
    assert_eq!(code, 0, "{err}");
    for svc in [
        "lifeboat.v1.SnapshotService",
        "lifeboat.v1.RecoveryService",
        "lifeboat.v1.ImageService",
        "lifeboat.v1.DriftService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(out.lines().any(|l| l.trim() == svc), "{svc} not listed:\n{out}");
    }
    let (code, out, err) = grpcurl_run(&[server.addr(), "describe", "lifeboat.v1.SnapshotService"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rpc Promote"), "{out}");
    let (code, out, err) = grpcurl_run(&[server.addr(), "describe", "lifeboat.v1.RecoveryService"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rpc Watch") && out.contains("stream .lifeboat.v1.RunEvent"), "{out}");

    let (code, out, err) = grpcurl_run(&[server.addr(), "grpc.health.v1.Health/Check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"SERVING\""), "{out}");
    let (code, out, _) = grpcurl_run(&[
        "-d",
        r#"{"service":"lifeboat.v1.SnapshotService"}"#,
        server.addr(),
        "grpc.health.v1.Health/Check",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"SERVING\""), "{out}");
}

#[test]
fn grpc_clients_get_proper_status_codes() {
    let server = Server::start(Backend::Fs);
    let call = |method: &str, body: &str| {
        let out = Command::new(grpcurl())
            .args(["-plaintext", "-d", body, server.addr(), &format!("lifeboat.v1.SnapshotService/{method}")])
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let manifest = std::fs::read_to_string(manifests().join("good/shop.toml")).unwrap();
    let body = serde_json::json!({"manifest": manifest, "message": "via grpcurl"}).to_string();
    let created = call("Create", &body);
    assert!(created.contains("\"version\": \"1\""), "{created}");

    let bad = serde_json::json!({"manifest": "environment = 1"}).to_string();
    let out = call("Create", &bad);
    assert!(out.contains("Code: InvalidArgument") && out.contains("expected a string"), "{out}");
    let out = call("Get", r#"{"environment":"shop","ref":"7"}"#);
    assert!(out.contains("Code: NotFound"), "{out}");
    let out = call("Promote", r#"{"environment":"shop","ref":"1","reason":"r","expected_version":"5","force":true}"#);
    assert!(out.contains("Code: Aborted"), "{out}");
    let out = call("Validate", r#"{"manifest":"environment = \"x\""}"#);
    assert!(out.contains("missing required field `region`"), "{out}");

    // RecoveryService through a plain gRPC client too.
    let rcall = |method: &str, body: &str| {
        let out = Command::new(grpcurl())
            .args(["-plaintext", "-d", body, server.addr(), &format!("lifeboat.v1.RecoveryService/{method}")])
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let out = rcall("Plan", r#"{"environment":"shop","snapshot":"1"}"#);
    assert!(out.contains("\"preflightOk\"") || out.contains("images-in-store"), "{out}");
    assert!(out.contains("images not in the store"), "the shop images were never imported: {out}");
    let out = rcall("Start", r#"{"environment":"shop","snapshot":"1"}"#);
    assert!(out.contains("Code: FailedPrecondition") && out.contains("preflight failed"), "{out}");
    let out = rcall("Get", r#"{"id":"r-missing"}"#);
    assert!(out.contains("Code: NotFound"), "{out}");
    let out = rcall("Get", r#"{"id":"../etc"}"#);
    assert!(out.contains("Code: InvalidArgument"), "{out}");
}

/// Watch streams of a finished run end after its last entry; a `from_seq`
/// past the end is INVALID_ARGUMENT; and after 1,000 of them the server
/// is idle again (it once kept polling the store for every one, forever).
#[test]
fn watch_streams_end_and_leave_the_server_idle() {
    use lifeboat::api::pb;
    use lifeboat::api::pb::recovery_service_client::RecoveryServiceClient;
    let server = Server::start(Backend::Fs);
    let _cleanup = common::Instances(server.local_dir());
    common::Region::setup(&server, "watched", &[common::Svc::new("db", &[])]);
    server.run(&["recover", "watched", "--yes"]).ok();
    let runs = server.run(&["--output", "json", "run", "list"]).ok().json();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = RecoveryServiceClient::connect(server.url.clone()).await.unwrap();
        let count = |c: &mut RecoveryServiceClient<tonic::transport::Channel>, from_seq: u64| {
            let mut c = c.clone();
            let id = id.clone();
            async move {
                let mut stream = c.watch(pb::WatchRunRequest { id, from_seq }).await?.into_inner();
                let mut n = 0u64;
                while let Some(e) = stream.message().await? {
                    assert!(e.seq >= from_seq);
                    n += 1;
                }
                Ok::<u64, tonic::Status>(n)
            }
        };
        let all =
            tokio::time::timeout(std::time::Duration::from_secs(10), count(&mut client, 0)).await.unwrap().unwrap();
        assert!(all >= 5, "{all} entries");
        let err = count(&mut client, all + 1).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("past the end"), "{}", err.message());
        let tasks: Vec<_> = (0..1000u64)
            .map(|i| {
                let fut = count(&mut client, [all, all - 1, 1000][(i % 3) as usize]);
                tokio::spawn(async move { tokio::time::timeout(std::time::Duration::from_secs(30), fut).await })
            })
            .collect();
        let (mut ended, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap().expect("every stream ends") {
                Ok(_) => ended += 1,
                Err(s) if s.code() == tonic::Code::InvalidArgument => ended += 1,
                // Past the server's bound on concurrent watchers.
                Err(s) if s.code() == tonic::Code::ResourceExhausted => refused += 1,
                Err(s) => panic!("{s:?}"),
            }
        }
        assert!(ended >= 500, "{ended} ended, {refused} refused");
    });
    drop(rt);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = server.cpu();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let used = server.cpu() - before;
    assert!(used < std::time::Duration::from_millis(300), "the server used {used:?} of CPU in 3 s while idle");
}

/// Rejected input is not copied whole into audit records: a 3.9 MB tag name
/// leaves a record of a few hundred bytes.
#[test]
fn rejected_input_is_clipped_in_audit_records() {
    use lifeboat::api::pb;
    let server = Server::start(Backend::Fs);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        let mut c = pb::snapshot_service_client::SnapshotServiceClient::connect(server.url.clone()).await.unwrap();
        let huge = "x".repeat(3_900_000);
        let req = pb::TagSnapshotRequest {
            environment: "shop".into(),
            r#ref: "1".into(),
            tag: huge,
            expected_version: None,
            force: false,
        };
        c.tag(req).await.unwrap_err().code()
    });
    assert_eq!(code, tonic::Code::InvalidArgument);
    let audit = std::path::Path::new(&server.store).join("audit");
    let mut total = 0;
    for day in std::fs::read_dir(&audit).unwrap().flatten() {
        for rec in std::fs::read_dir(day.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(rec.path()).unwrap();
            assert!(text.contains("bytes in all"), "{text}");
            total += text.len();
        }
    }
    assert!(total > 0 && total < 4096, "audit records take {total} bytes");
}

/// Raw bytes as a gRPC message, to send what no generated client would.
#[derive(Clone, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

/// Malformed protobuf is INVALID_ARGUMENT (exit 2), an oversized message
/// RESOURCE_EXHAUSTED naming the limit; neither is an internal error.
#[test]
fn malformed_and_oversized_messages_get_the_callers_codes() {
    let server = Server::start(Backend::Fs);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
        let call = |path: &'static str, body: Vec<u8>| {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            async move {
                grpc.ready().await.unwrap();
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
                grpc.unary(tonic::Request::new(body), path, Raw).await.unwrap_err()
            }
        };
        for (what, body) in [
            ("wrong wire type", vec![0x08, 0x01]),
            ("bad UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
            ("truncated", vec![0x0a, 0x05, b'a']),
        ] {
            let s = call("/lifeboat.v1.SnapshotService/Get", body).await;
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{what}: {s:?}");
        }
        let s = call("/lifeboat.v1.RecoveryService/Get", vec![0u8; 5 << 20]).await;
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
        assert!(s.message().contains("the limit is"), "{}", s.message());
    });
}

/// Image imports are bounded: two at once (a third is RESOURCE_EXHAUSTED),
/// and a stream that goes quiet is dropped after the idle timeout.
#[test]
fn imports_are_bounded_in_number_and_idle_time() {
    use lifeboat::api::pb;
    let dir = tempfile::tempdir().unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    std::fs::write(dir.path().join("c.toml"), "[server]\nimport_idle_timeout = \"1s\"\n").unwrap();
    let server = Server::launch(&["--store", &p("store"), "--local-dir", &p("local"), "--config", &p("c.toml")], &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = pb::image_service_client::ImageServiceClient::connect(server.url.clone()).await.unwrap();
        // Two imports that send one chunk, then nothing.
        let mut senders = Vec::new();
        let mut hung = Vec::new();
        for i in 0..2 {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportChunk>(1);
            tx.send(pb::ImportChunk { name: format!("hung{i}.sh"), data: b"#!/bin/sh\n".to_vec() }).await.unwrap();
            senders.push(tx);
            let mut c = client.clone();
            hung.push(tokio::spawn(async move { c.import(tokio_stream::wrappers::ReceiverStream::new(rx)).await }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut c = client.clone();
        let chunk = pb::ImportChunk { name: "third.sh".into(), data: b"#!/bin/sh\nexit 0\n".to_vec() };
        let err = c.import(tokio_stream::iter(vec![chunk.clone()])).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        for h in hung {
            let err = h.await.unwrap().unwrap_err();
            assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
            assert!(err.message().contains("sent nothing for 1.0s"), "{}", err.message());
        }
        drop(senders);
        let img = c.import(tokio_stream::iter(vec![chunk.clone()])).await.unwrap().into_inner();
        assert!(img.id.starts_with("sha256:"));
        // A trickle (a byte every 300 ms, never idle for 1 s) is dropped too,
        // once it falls below 64 KiB/s after the 1 s grace.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportChunk>(1);
        let mut t = client.clone();
        let t0 = std::time::Instant::now();
        let slow = tokio::spawn(async move { t.import(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
        let trickle = tokio::spawn(async move {
            for _ in 0..40 {
                if tx.send(pb::ImportChunk { name: "slow.sh".into(), data: b"#".to_vec() }).await.is_err() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        });
        let err = slow.await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("arrives slower than 64 KiB/s"), "{}", err.message());
        assert!(t0.elapsed() < std::time::Duration::from_secs(4), "dropped after {:?}", t0.elapsed());
        trickle.abort();
        // Its slot is free again.
        c.import(tokio_stream::iter(vec![chunk])).await.unwrap();
    });
}

/// A push carries an idempotency key: when its first attempt stored the
/// snapshot but failed afterwards (here: its audit record could not be
/// written), a retry with the same key returns that snapshot instead of
/// creating a second version.
#[test]
fn a_retried_push_with_the_same_key_creates_one_version() {
    use lifeboat::api::pb;
    let server = Server::start(Backend::Fs);
    let manifest = std::fs::read_to_string(manifests().join("good/shop.toml")).unwrap();
    let audit_day =
        std::path::Path::new(&server.store).join("audit").join(chrono::Utc::now().format("%Y-%m-%d").to_string());
    std::fs::create_dir_all(audit_day.parent().unwrap()).unwrap();
    std::fs::write(&audit_day, b"not a directory").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = pb::snapshot_service_client::SnapshotServiceClient::connect(server.url.clone()).await.unwrap();
        let push = |key: &str| {
            let mut req = tonic::Request::new(pb::CreateSnapshotRequest {
                manifest: manifest.clone(),
                format: String::new(),
                source_name: "shop.toml".into(),
                message: "once".into(),
                labels: Default::default(),
                force: false,
            });
            req.metadata_mut().insert(lifeboat::api::REQUEST_ID_HEADER, key.parse().unwrap());
            req
        };
        let err = c.create(push("k-1")).await.unwrap_err();
        assert!(err.message().contains("audit record could not be written"), "{err:?}");
        std::fs::remove_file(&audit_day).unwrap();
        let first = c.create(push("k-1")).await.unwrap().into_inner();
        assert_eq!(first.version, 1, "the retry returns the snapshot the first attempt stored");
        let again = c.create(push("k-1")).await.unwrap().into_inner();
        assert_eq!((again.version, again.digest), (1, first.digest));
        let other = c.create(push("k-2")).await.unwrap().into_inner();
        assert_eq!(other.version, 2, "another key is another push");
        let bad = c.create(push("no/slashes")).await.unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    });
    let list = server.run(&["--output", "json", "snapshot", "list", "shop"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

/// An import is streamed to disk: the server's peak memory stays far below
/// the artifact's size (a 300 MB import once took 770 MB).
#[test]
fn a_large_import_does_not_grow_the_server() {
    let server = Server::start(Backend::Fs);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.sh");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        f.write_all(b"#!/bin/sh\nexit 0\n").unwrap();
        let line = [b'#'; 1023];
        for _ in 0..(300 << 10) {
            f.write_all(&line).unwrap();
            f.write_all(b"\n").unwrap();
        }
    }
    let peak = || common::peak_rss_kib(server.pid()) >> 10;
    let before = peak();
    let id = server.run(&["image", "import", big.to_str().unwrap()]).ok().stdout.trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let grew = peak() - before;
    assert!(grew < 100, "the server's peak memory grew by {grew} MiB for a 300 MiB import");
    let list = server.run(&["--output", "json", "image", "list"]).ok().json();
    assert_eq!(list[0]["size"], 17 + (300u64 << 20));
}

/// Status, Logs (a server stream) and run ID prefixes through grpcurl.
#[test]
fn status_and_logs_through_grpcurl() {
    let server = Server::start(Backend::Fs);
    let _cleanup = common::Instances(server.local_dir());
    common::Region::setup(&server, "shop", &[common::Svc::new("db", &[])]);
    server.run(&["recover", "shop", "--yes"]).ok();
    let id = server.run(&["run", "list", "-q"]).ok().stdout.trim().to_string();
    let rcall = |method: &str, body: &str| {
        grpcurl_run(&["-d", body, server.addr(), &format!("lifeboat.v1.RecoveryService/{method}")])
    };
    let (code, out, err) = rcall("Status", r#"{"environment":"shop"}"#);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let env = &status["environments"][0];
    assert_eq!((env["environment"].as_str(), env["sync"].as_str()), (Some("shop"), Some("synced")), "{out}");
    assert_eq!(env["services"][0]["state"], "healthy", "{out}");
    assert_eq!(env["lastRun"]["id"], id.as_str(), "{out}");

    let (code, out, err) = rcall("Logs", r#"{"environment":"shop","service":"db","lines":5}"#);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("demo service db listening on 127.0.0.1:"), "{out}");
    let body = serde_json::json!({"run_id": &id[..id.len() - 4], "service": "db"}).to_string();
    let (code, out, err) = rcall("Logs", &body);
    assert_eq!(code, 0, "a run ID prefix works: {err}");
    assert!(out.contains("\"instance\": \"db-"), "{out}");
    let (_, _, err) = rcall("Logs", r#"{"environment":"shop","service":"nosuch"}"#);
    assert!(err.contains("Code: NotFound") && err.contains("no running instances of shop/nosuch"), "{err}");
    let (_, _, err) = rcall("Logs", r#"{"environment":"shop","service":"db","lines":20000}"#);
    assert!(err.contains("Code: InvalidArgument"), "{err}");
    let (_, _, err) = rcall("Status", r#"{"environment":"../x"}"#);
    assert!(err.contains("Code: InvalidArgument"), "{err}");
    let (code, out, err) =
        grpcurl_run(&["-d", r#"{"environment":"shop"}"#, server.addr(), "lifeboat.v1.DriftService/Check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"inSync\": true") && out.contains("\"state\": \"in_sync\""), "{out}");
}

/// A launch announced while its dependency's health gate runs reads the same
/// through gRPC `Watch` (its `waits_for` and `message`) as in the CLI's
/// one line per event.
#[test]
fn a_launch_announced_ahead_reads_the_same_in_grpc_and_the_cli() {
    let server = Server::start(Backend::Fs);
    let _cleanup = common::Instances(server.local_dir());
    let svcs = [common::Svc::new("db", &[]).args(&["--boot-delay", "1s"]), common::Svc::new("api", &["db"])];
    common::Region::setup(&server, "shop", &svcs);
    let out = server.run(&["recover", "shop", "--yes"]).ok();
    let said = "api: launch announced: it begins once db is cut over";
    assert!(out.stdout.contains(said), "{}", out.stdout);
    let launching = out.stdout.find("db: launching").expect("db launches");
    assert!(launching < out.stdout.find(said).unwrap(), "{}", out.stdout);

    let id = server.run(&["run", "list", "-q"]).ok().stdout.trim().to_string();
    let body = serde_json::json!({ "id": id }).to_string();
    let (code, out, err) = grpcurl_run(&["-d", &body, server.addr(), "lifeboat.v1.RecoveryService/Watch"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> =
        serde_json::Deserializer::from_str(&out).into_iter().collect::<Result<_, _>>().expect("a stream of JSON");
    let launch = |service: &str| {
        events.iter().find(|e| e["type"] == "launch_started" && e["service"] == service).cloned().unwrap()
    };
    assert_eq!(launch("api")["waitsFor"], serde_json::json!(["db"]), "{out}");
    assert_eq!(launch("api")["message"], said, "{out}");
    assert_eq!(launch("db")["waitsFor"], serde_json::Value::Null, "nothing to wait for: {out}");
    assert_eq!(launch("db")["message"], "db: launching", "{out}");
}
