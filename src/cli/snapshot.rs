//! `lifeboat snapshot …`: client commands for SnapshotService.

use serde_json::{Value, json};

use super::client::Client;
use super::output::{print_json, safe, short_digest, snapshot_json, table};
use super::{Failure, Output, SnapshotCmd};
use crate::api::pb;

pub async fn run(server: &str, output: Output, cmd: SnapshotCmd) -> Result<(), Failure> {
    // A bad manifest is reported before contacting the server.
    let push_text = match &cmd {
        SnapshotCmd::Push { file, .. } => Some(super::manifest::load(file)?),
        _ => None,
    };
    let client = Client::connect(server).await?;
    let mut svc = client.snapshots().max_encoding_message_size(crate::domain::manifest::MAX_MANIFEST_BYTES + 64 * 1024);
    match cmd {
        SnapshotCmd::Push { file, message, labels, force, quiet } => {
            let (_, text) = push_text.expect("loaded above");
            let req = pb::CreateSnapshotRequest {
                manifest: text,
                format: String::new(),
                source_name: file.display().to_string(),
                message,
                labels: labels.into_iter().collect(),
                force,
            };
            // A push whose reply is lost (the connection dropped, the server
            // restarted) is retried with the same idempotency key: the server
            // returns the snapshot the first attempt created, if it did.
            let mut attempt = 0;
            let s = loop {
                attempt += 1;
                match svc.create(client.request(req.clone())).await {
                    Ok(r) => break r.into_inner(),
                    Err(e) if e.code() == tonic::Code::Unavailable && attempt < 3 => {
                        tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
                    }
                    Err(e) => return Err(client.fail(e)),
                }
            };
            match output {
                Output::Json => print_json(&snapshot_json(&s)),
                Output::Text if quiet => println!("{}", s.version),
                Output::Text => println!("pushed {} version {} ({})", s.environment, s.version, s.digest),
            }
        }
        SnapshotCmd::List { environment } => {
            let req = pb::ListSnapshotsRequest { environment: environment.clone() };
            let list = svc.list(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner().snapshots;
            match output {
                Output::Json => print_json(&Value::Array(list.iter().map(snapshot_json).collect())),
                Output::Text if list.is_empty() => println!("environment {environment} has no snapshots"),
                Output::Text => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|s| {
                            let mut marks = s.refs.clone();
                            if s.rejection.is_some() {
                                marks.push("REJECTED".into());
                            }
                            if let Some(c) = &s.corruption {
                                marks.push("CORRUPT".into());
                                let what = format!("object {}: {}", c.key, c.problem);
                                let dash = || "-".to_string();
                                return vec![
                                    s.version.to_string(),
                                    dash(),
                                    dash(),
                                    dash(),
                                    dash(),
                                    marks.join(","),
                                    what,
                                ];
                            }
                            let refs = marks.join(",");
                            vec![
                                s.version.to_string(),
                                s.created_at.clone(),
                                s.author.clone(),
                                s.service_count.to_string(),
                                short_digest(&s.digest).to_string(),
                                refs,
                                s.message.clone(),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(&["VERSION", "CREATED", "AUTHOR", "SERVICES", "DIGEST", "REFS", "MESSAGE"], &rows)
                    );
                    if list.iter().any(|s| s.corruption.is_some()) {
                        eprintln!(
                            "A CORRUPT snapshot failed its integrity check: it can never be deployed; choose another version, and reject it with `lifeboat snapshot reject {environment} VERSION --reason ...`"
                        );
                    }
                }
            }
        }
        SnapshotCmd::Show { environment, reference, quiet } => {
            let req = pb::GetSnapshotRequest { environment, r#ref: reference };
            let s = svc.get(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&snapshot_json(&s)),
                Output::Text if quiet => println!("{}", s.version),
                Output::Text => print_show(&s),
            }
        }
        SnapshotCmd::Diff { environment, from, to, exit_code } => {
            let req = pb::DiffSnapshotsRequest { environment, from_ref: from, to_ref: to };
            let d = svc.diff(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&diff_json(&d)),
                Output::Text => print_diff(&d),
            }
            let corrupt = [&d.from, &d.to].iter().any(|s| s.as_ref().is_some_and(|s| s.corruption.is_some()));
            let differs = corrupt || !d.environment.is_empty() || !d.services.is_empty();
            if exit_code && differs {
                return Err(Failure::new(super::exit::CHANGES, ""));
            }
        }
        SnapshotCmd::Promote { environment, reference, reason, from_drill, expect, force } => {
            let req = pb::PromoteSnapshotRequest {
                environment,
                r#ref: reference.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
                expected_version: expect,
                from_drill: from_drill.unwrap_or_default(),
                force,
            };
            let s = svc.promote(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            for w in &s.warnings {
                eprintln!("warning: {}", safe(w));
            }
            match output {
                Output::Json => print_json(&snapshot_json(&s)),
                Output::Text => println!("{}: known-good is now version {} ({})", s.environment, s.version, s.digest),
            }
        }
        SnapshotCmd::Reject { environment, reference, reason } => {
            let req = pb::RejectSnapshotRequest { environment, r#ref: reference, reason };
            let s = svc.reject(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&snapshot_json(&s)),
                Output::Text => println!("{}: version {} is rejected", s.environment, s.version),
            }
        }
        SnapshotCmd::Tag { environment, reference, tag, expect, force } => {
            let req = pb::TagSnapshotRequest {
                environment,
                r#ref: reference,
                tag: tag.clone(),
                expected_version: expect,
                force,
            };
            let s = svc.tag(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&snapshot_json(&s)),
                Output::Text => println!("{}: tag {tag} now points at version {}", s.environment, s.version),
            }
        }
    }
    Ok(())
}

fn print_show(s: &pb::Snapshot) {
    println!("environment  {}", s.environment);
    println!("version      {}", s.version);
    println!("digest       {}", s.digest);
    println!("created      {} by {}", s.created_at, safe(&s.author));
    if !s.message.is_empty() {
        println!("message      {}", safe(&s.message));
    }
    if !s.refs.is_empty() {
        println!("refs         {}", s.refs.join(", "));
    }
    for (k, v) in s.labels.iter().collect::<std::collections::BTreeMap<_, _>>() {
        println!("label        {}={}", safe(k), safe(v));
    }
    if let Some(r) = &s.rejection {
        println!("REJECTED     by {} at {}: {}", safe(&r.by), r.at, safe(&r.reason));
    }
    println!("region       {} (provider {})", s.region, s.provider);
    let manifest: Value = serde_json::from_str(&s.manifest_json).unwrap_or(Value::Null);
    if let Some(rto) = manifest.get("rto_objective").and_then(Value::as_str) {
        println!("rto          {rto}");
    }
    if manifest.get("promotion").and_then(Value::as_str) == Some("drill") {
        println!("promotion    {}", crate::domain::plan::DRILL_PROMOTION_NOTE);
    }
    let Some(services) = manifest.get("services").and_then(Value::as_object) else {
        return;
    };
    println!();
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|(name, svc)| {
            let image = match svc.get("image") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(m)) => m
                    .get(&s.region)
                    .and_then(Value::as_str)
                    .map(|i| format!("{i} (+{} regions)", m.len() - 1))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let deps = svc
                .get("depends_on")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            let replicas = svc.get("replicas").map(ToString::to_string).unwrap_or_default();
            vec![name.clone(), replicas, image, if deps.is_empty() { "-".into() } else { deps }]
        })
        .collect();
    println!("{}", table(&["SERVICE", "REPLICAS", "IMAGE", "DEPENDS ON"], &rows));
}

pub fn field_json(f: &pb::FieldChange) -> Value {
    let parse = |s: &str| if s.is_empty() { Value::Null } else { serde_json::from_str(s).unwrap_or(Value::Null) };
    json!({"path": f.path, "before": parse(&f.before), "after": parse(&f.after)})
}

fn diff_json(d: &pb::DiffSnapshotsResponse) -> Value {
    json!({
        "from": d.from.as_ref().map(snapshot_json),
        "to": d.to.as_ref().map(snapshot_json),
        "environment": d.environment.iter().map(field_json).collect::<Vec<_>>(),
        "services": d.services.iter().map(|s| json!({
            "service": s.service,
            "change": s.change,
            "fields": s.fields.iter().map(field_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn print_diff(d: &pb::DiffSnapshotsResponse) {
    let (from, to) = (d.from.clone().unwrap_or_default(), d.to.clone().unwrap_or_default());
    println!("{}: version {} -> version {}", to.environment, from.version, to.version);
    let corrupt: Vec<String> = [&from, &to]
        .iter()
        .filter_map(|s| {
            s.corruption.as_ref().map(|c| format!("version {} is CORRUPT (object {}: {})", s.version, c.key, c.problem))
        })
        .collect();
    if !corrupt.is_empty() {
        for line in corrupt {
            println!("{line}");
        }
        println!("nothing to compare: a corrupt snapshot can never be deployed");
        return;
    }
    if d.environment.is_empty() && d.services.is_empty() {
        println!("no differences");
        return;
    }
    for f in &d.environment {
        println!("{}", field_line(f));
    }
    for s in &d.services {
        let mark = match s.change.as_str() {
            "added" => "+",
            "removed" => "-",
            _ => "~",
        };
        println!("{mark} service {} ({})", s.service, s.change);
        for f in &s.fields {
            println!("    {}", field_line(f));
        }
    }
}

/// `~ launch.env.APP_VERSION: "1" → "2"`, `+ path: v`, `- path: v`; digests shortened.
pub fn field_line(f: &pb::FieldChange) -> String {
    let short = |v: &str| {
        let unquoted = v.trim_matches('"');
        match unquoted.strip_prefix("sha256:") {
            Some(hex) if hex.len() > 12 && v.starts_with('"') => format!("sha256:{}…", &hex[..12]),
            _ => safe(v),
        }
    };
    match (f.before.is_empty(), f.after.is_empty()) {
        (true, _) => format!("+ {}: {}", f.path, short(&f.after)),
        (_, true) => format!("- {}: {}", f.path, short(&f.before)),
        _ => format!("~ {}: {} → {}", f.path, short(&f.before), short(&f.after)),
    }
}
