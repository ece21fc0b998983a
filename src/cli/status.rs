//! `lifeboat status [ENV]`: per environment and region, what runs and
//! whether it matches known-good.

use serde_json::{Value, json};

use super::client::Client;
use super::follow::{run_json, secs};
use super::output::{print_json, table};
use super::{Failure, Output};
use crate::api::pb;

pub async fn run(client: &Client, environment: Option<String>, output: Output) -> Result<(), Failure> {
    let mut svc = client.recovery();
    let req = pb::StatusRequest { environment: environment.unwrap_or_default() };
    let envs = svc.status(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner().environments;
    match output {
        Output::Json => print_json(&Value::Array(envs.iter().map(status_json).collect())),
        Output::Text if envs.is_empty() => {
            println!("no environments yet: push a snapshot with `lifeboat snapshot push FILE`")
        }
        Output::Text => {
            for (i, e) in envs.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_status(e);
            }
        }
    }
    Ok(())
}

fn version(v: u64) -> Value {
    if v == 0 { Value::Null } else { json!(v) }
}

fn status_json(e: &pb::EnvironmentStatus) -> Value {
    json!({
        "environment": e.environment,
        "region": e.region,
        "home_region": e.home_region,
        "known_good_version": version(e.known_good_version),
        "latest_version": version(e.latest_version),
        "deployed_version": version(e.deployed_version),
        "sync": e.sync,
        "sync_detail": e.sync_detail,
        "services": e.services.iter().map(|s| json!({
            "name": s.name,
            "state": s.state,
            "desired_replicas": s.desired_replicas,
            "address": if s.address.is_empty() { Value::Null } else { json!(s.address) },
            "action": s.action,
            "reason": s.reason,
            "instances": s.instances.iter().map(|i| json!({
                "id": i.id, "healthy": i.healthy, "serving": i.serving, "address": i.address, "run_id": i.run_id,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "last_run": e.last_run.as_ref().map(run_json),
        "last_drill": e.last_drill.as_ref().map(run_json),
        "drift": if e.drift.is_empty() { Value::Null } else { json!({"summary": e.drift, "checked_at": e.drift_checked_at}) },
        "traffic": e.traffic.iter().map(|t| json!({"service": t.service, "via": t.via, "points_to": t.points_to, "here": t.here, "decides": t.decides})).collect::<Vec<_>>(),
        "traffic_error": if e.traffic_error.is_empty() { Value::Null } else { json!(e.traffic_error) },
        "corrupt": e.corrupt.iter().map(super::output::corruption_json).collect::<Vec<_>>(),
    })
}

fn print_status(e: &pb::EnvironmentStatus) {
    let home = if e.home_region { " (home region)" } else { "" };
    println!("{} in {}{home}", e.environment, e.region);
    let deployed = match (e.deployed_version, e.known_good_version) {
        (0, _) => "no run has succeeded here".to_string(),
        (d, k) if d == k => format!("snapshot {d} (known-good)"),
        (d, 0) => format!("snapshot {d} (no known-good yet)"),
        (d, k) => format!("snapshot {d} (known-good is {k})"),
    };
    println!("  deployed  {deployed}");
    let sync = match e.sync.as_str() {
        "synced" => "SYNCED",
        "out_of_sync" => "OUT OF SYNC",
        _ => "UNKNOWN",
    };
    println!("  sync      {sync}: {}", e.sync_detail);
    for c in &e.corrupt {
        println!("  CORRUPT   {} (object {}); skipped", super::output::safe(&c.problem), super::output::safe(&c.key));
    }
    if !e.traffic_error.is_empty() {
        println!("  traffic   UNKNOWN: {}", e.traffic_error);
    } else if !e.traffic.is_empty() {
        let elsewhere: Vec<&str> =
            e.traffic.iter().filter(|t| t.decides && !t.here).map(|t| t.service.as_str()).collect();
        if elsewhere.is_empty() {
            println!("  traffic   HERE: every service is served from this region's instances");
        } else {
            println!("  traffic   NOT HERE for {}: clients reach other instances", elsewhere.join(", "));
        }
        for t in &e.traffic {
            let to = if t.points_to.is_empty() { "nothing".to_string() } else { t.points_to.join(", ") };
            let mark = match (t.here, t.decides) {
                (true, _) => "here",
                (false, true) => "NOT HERE",
                (false, false) => "not here",
            };
            println!("            {:<9} {}: {} -> {to}", mark, t.service, t.via);
        }
    }
    // A drift check from before the last run finished says nothing about now.
    let stale =
        e.last_run.as_ref().is_some_and(|r| !e.drift_checked_at.is_empty() && e.drift_checked_at < r.finished_at);
    if e.drift.is_empty() {
        println!("  drift     not checked yet (`lifeboat drift {}` checks now)", e.environment);
    } else if stale {
        println!(
            "  drift     {} (checked at {}, BEFORE the last run ended; `lifeboat drift {}` checks now)",
            e.drift, e.drift_checked_at, e.environment
        );
    } else {
        println!("  drift     {} (checked at {})", e.drift, e.drift_checked_at);
    }
    if let Some(r) = &e.last_run {
        if r.finished_at.is_empty() {
            println!("  last run  {} {} {}, started at {}", r.id, r.kind, r.state, r.started_at);
        } else {
            println!(
                "  last run  {} {} {}, finished at {} (took {})",
                r.id,
                r.kind,
                r.state,
                r.finished_at,
                secs(r.elapsed_ms)
            );
        }
    }
    if let Some(d) = &e.last_drill {
        println!(
            "  drill     {} of snapshot {}: {} at {} (`lifeboat drill show {}`)",
            d.id, d.snapshot_version, d.state, d.started_at, d.id
        );
    }
    println!();
    let rows: Vec<Vec<String>> = e
        .services
        .iter()
        .map(|s| {
            let healthy = s.instances.iter().filter(|i| i.healthy && i.serving).count();
            let mut ids: Vec<String> = s.instances.iter().take(3).map(|i| i.id.clone()).collect();
            if s.instances.len() > 3 {
                ids.push(format!("+{}", s.instances.len() - 3));
            }
            let plan = match s.action.as_str() {
                "" => "-".to_string(),
                "keep" => "keep".to_string(),
                a => format!("{a} ({})", s.reason),
            };
            vec![
                s.name.clone(),
                s.state.to_uppercase().replace('_', "-"),
                format!("{healthy}/{}", s.desired_replicas),
                if s.address.is_empty() { "-".into() } else { s.address.clone() },
                if ids.is_empty() { "-".into() } else { ids.join(",") },
                plan,
            ]
        })
        .collect();
    let table = table(&["SERVICE", "STATE", "HEALTHY", "ADDRESS", "INSTANCES", "ON RECOVERY"], &rows);
    for line in table.lines() {
        println!("  {line}");
    }
}
