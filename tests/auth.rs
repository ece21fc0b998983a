//! Tokens and roles: every RPC needs its role, checked against the README's
//! table with a real gRPC client; the CLI carries `--token`; the token's
//! name is the actor; no token is ever written down.

mod common;

use std::process::Command;

use common::{Server, grpcurl, lifeboat, manifests};

/// (service/method, the role it needs) — the README's table.
const TABLE: [(&str, &str); 33] = [
    ("SnapshotService/Create", "operator"),
    ("SnapshotService/Get", "viewer"),
    ("SnapshotService/List", "viewer"),
    ("SnapshotService/Diff", "viewer"),
    ("SnapshotService/Promote", "admin"),
    ("SnapshotService/Reject", "admin"),
    ("SnapshotService/Tag", "admin"),
    ("SnapshotService/Validate", "viewer"),
    ("SnapshotService/GetPolicy", "viewer"),
    ("SnapshotService/SetPolicy", "admin"),
    ("RecoveryService/Plan", "viewer"),
    ("RecoveryService/Start", "operator"),
    ("RecoveryService/Get", "viewer"),
    ("RecoveryService/List", "viewer"),
    ("RecoveryService/Watch", "viewer"),
    ("RecoveryService/Cancel", "operator"),
    ("RecoveryService/Approve", "operator"),
    ("RecoveryService/Resume", "operator"),
    ("RecoveryService/Logs", "viewer"),
    ("RecoveryService/Status", "viewer"),
    ("DrillService/Start", "operator"),
    ("DrillService/Get", "viewer"),
    ("DrillService/List", "viewer"),
    ("DrillService/GetReport", "viewer"),
    ("DrillService/Sweep", "operator"),
    ("DrillService/CreateSchedule", "admin"),
    ("DrillService/ListSchedules", "viewer"),
    ("DrillService/DeleteSchedule", "admin"),
    ("ImageService/Import", "operator"),
    ("ImageService/List", "viewer"),
    ("StoreService/Check", "operator"),
    ("DriftService/Check", "viewer"),
    ("AuditService/List", "viewer"),
];

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 1,
        "operator" => 2,
        "admin" => 3,
        _ => 0,
    }
}

/// `lifeboat token create NAME --role ROLE`: (token, config entry).
fn create(name: &str, role: &str) -> (String, String) {
    let out = lifeboat(None, &["token", "create", name, "--role", role]).ok();
    let token = out.stdout.trim().to_string();
    let entry = out.stderr.split_once("[[auth.tokens]]").map(|(_, e)| format!("[[auth.tokens]]{e}")).unwrap();
    (token, entry)
}

#[test]
fn every_rpc_needs_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let roles = ["viewer", "operator", "admin"];
    let mut tokens = Vec::new();
    let mut config = String::new();
    for (name, role) in [("ci", "viewer"), ("oncall", "operator"), ("lead", "admin")] {
        let (token, entry) = create(name, role);
        assert!(token.starts_with("lbt_") && token.len() > 40, "{token}");
        assert!(!entry.contains(&token), "only the digest goes into the config");
        config.push_str(&entry);
        config.push('\n');
        tokens.push(token);
    }
    std::fs::write(dir.path().join("lifeboat.toml"), &config).unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args =
        ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::launch(&args, &[]);

    // Health and reflection stay open.
    let out = Command::new(grpcurl()).args(["-plaintext", server.addr(), "list"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");

    for (method, needs) in TABLE {
        for (i, who) in ["nobody"].iter().chain(roles.iter()).enumerate() {
            let mut cmd = Command::new(grpcurl());
            cmd.args(["-plaintext", "-max-time", "5", "-d", "{}"]);
            if i > 0 {
                cmd.args(["-H", &format!("authorization: Bearer {}", tokens[i - 1])]);
            }
            let out = cmd.args([server.addr(), &format!("lifeboat.v1.{method}")]).output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let (unauth, denied) = (text.contains("Code: Unauthenticated"), text.contains("Code: PermissionDenied"));
            if i == 0 {
                assert!(unauth, "{method} without a token: {text}");
            } else if rank(who) < rank(needs) {
                assert!(denied, "{method} as {who} (needs {needs}): {text}");
            } else {
                assert!(!unauth && !denied, "{method} as {who} (needs {needs}): {text}");
            }
        }
    }

    // The CLI carries --token / LIFEBOAT_TOKEN; the token's name is the actor.
    let shop = manifests().join("good/shop.toml");
    let out = server.run(&["snapshot", "list", "shop"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains("this server requires a token: pass --token or set LIFEBOAT_TOKEN"), "{out:?}");
    let out = server.run(&["--token", &tokens[0], "snapshot", "push", shop.to_str().unwrap()]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("token ci has the viewer role; /lifeboat.v1.SnapshotService/Create needs operator"),
        "{out:?}"
    );
    server.run(&["--token", &tokens[1], "snapshot", "push", shop.to_str().unwrap()]).ok();
    // An operator may drill, but moving known-good on a pass is admin's.
    let out = server.run(&["--token", &tokens[1], "drill", "run", "shop", "--promote-on-pass"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("token oncall has the operator role; moving known-good when the drill passes (--promote-on-pass) needs admin"),
        "{out:?}"
    );
    // Nor may an operator schedule drills (that might promote on pass): schedules are admin's.
    let out = server.run(&[
        "--token",
        &tokens[1],
        "drill",
        "schedule",
        "add",
        "shop",
        "--cron",
        "0 3 * * *",
        "--promote-on-pass",
    ]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains("/lifeboat.v1.DrillService/CreateSchedule needs admin"), "{out:?}");
    let out = Command::new(common::BIN)
        .args(["--server", &server.url, "snapshot", "promote", "shop", "1", "--reason", "t", "--force"])
        .env("LIFEBOAT_TOKEN", &tokens[2])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let audit = server.run(&["--token", &tokens[0], "--output", "json", "audit", "list"]).ok().json();
    let actors: Vec<&str> = audit.as_array().unwrap().iter().map(|r| r["actor"].as_str().unwrap()).collect();
    assert!(actors.iter().any(|a| a.starts_with("oncall (claimed tester, from 127.0.0.1)")), "{actors:?}");
    assert!(actors.iter().any(|a| a.starts_with("lead (claimed ")), "{actors:?}");

    // No token is ever written down: not in the store (journals, audit, snapshots).
    for e in walk(&dir.path().join("store")) {
        let bytes = std::fs::read(&e).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "{} contains a token", e.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// Streams are shared out per caller: a viewer holding its share of
/// `Watch` streams leaves room for the operators running the incident.
#[test]
fn a_viewer_cannot_take_every_stream() {
    use lifeboat::api::pb;
    let (viewer, v_entry) = create("dashboard", "viewer");
    let (operator, o_entry) = create("oncall", "operator");
    let (admin, a_entry) = create("lead", "admin");
    let mut server = Server::with_config(&format!("{v_entry}\n{o_entry}\n{a_entry}\n"));
    server.token = Some(admin);
    let _cleanup = common::Instances(server.local_dir());
    let svcs = [common::Svc::new("db", &[]), common::Svc::new("api", &["db"]).extra("approval = true")];
    common::Region::setup(&server, "shop", &svcs);
    let started = server.run(&["--output", "json", "recover", "shop", "--yes", "--detach"]).ok().json();
    let id = started["id"].as_str().unwrap().to_string();
    // The run stays open (api waits for its approval) once db is healthy.
    common::wait_until(std::time::Duration::from_secs(20), "db healthy", || {
        let run = server.run(&["--output", "json", "run", "show", &id]).ok().json();
        run["services"].as_array().unwrap().iter().any(|s| s["name"] == "db" && s["state"] == "healthy")
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
        let watch = |token: &str| {
            let mut c = pb::recovery_service_client::RecoveryServiceClient::new(channel.clone());
            let mut req = tonic::Request::new(pb::WatchRunRequest { id: id.clone(), from_seq: 0 });
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            async move { c.watch(req).await }
        };
        let mut held = Vec::new();
        for i in 0..128 {
            held.push(watch(&viewer).await.unwrap_or_else(|e| panic!("stream {i}: {e:?}")).into_inner());
        }
        let refused = watch(&viewer).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("dashboard already holds 128 streams"), "{}", refused.message());
        // The operator still watches and reads logs.
        let mine = watch(&operator).await.unwrap().into_inner();
        let logs = tokio::task::spawn_blocking({
            let server_url = server.url.clone();
            let token = operator.clone();
            move || common::lifeboat_as(Some(&server_url), Some(&token), &["logs", "shop", "db"])
        })
        .await
        .unwrap();
        assert_eq!(logs.code, 0, "{logs:?}");
        drop(mine);
        // A stream that ends gives its place back.
        held.pop();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        watch(&viewer).await.unwrap();
    });
    server.run(&["run", "cancel", &id]).ok();
}
