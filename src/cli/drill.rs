//! `lifeboat drill …` (DrillService) and `lifeboat run report`.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::Client;
use super::follow::{follow, run_json, secs};
use super::output::{print_json, safe, table};
use super::{Failure, Output, exit};
use crate::api::pb;
use crate::api::pb::drill_service_client::DrillServiceClient;

#[derive(Debug, Subcommand)]
pub enum DrillCmd {
    /// Recover a snapshot into an isolated target (never production), judge it against the RTO
    /// objective, and tear it down. Exit 0 when it passed, 1 when it failed.
    Run {
        environment: String,
        /// Snapshot: latest (default), known-good, a version, a tag or a digest.
        #[arg(long, default_value = "latest")]
        snapshot: String,
        /// Target region [default: the snapshot's].
        #[arg(long)]
        region: Option<String>,
        /// Keep a passed drill up this long for inspection (at most 24h), then tear it down.
        #[arg(long)]
        keep_for: Option<String>,
        /// Cancel and tear down after this long [default: 2 x the manifest's rto_objective, or 1h].
        #[arg(long)]
        timeout: Option<String>,
        /// Move known-good to the snapshot if the drill passes.
        #[arg(long)]
        promote_on_pass: bool,
        /// Start it and print only its run ID.
        #[arg(long)]
        detach: bool,
    },
    /// Recent drills, newest first.
    List {
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A drill's verdict, RTO, critical path, address map and teardown.
    Show { id: String },
    /// A finished drill's report: the summary, or the HTML page (--html FILE) or JSON document (--json).
    Report(ReportArgs),
    /// Remove what finished or unknown drills left behind (the server also does this every minute).
    Sweep,
    /// Drills fired by cron schedules.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run ID (or a unique prefix).
    pub id: String,
    /// Write the self-contained HTML report to this file.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
    /// Print the JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Add a schedule: `--cron "0 3 * * SUN"` (5 fields, or 6 with seconds first).
    Add {
        environment: String,
        #[arg(long)]
        cron: String,
        #[arg(long, default_value = "latest")]
        snapshot: String,
        /// IANA time zone of the cron expression [default: UTC].
        #[arg(long, default_value = "UTC")]
        timezone: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        promote_on_pass: bool,
    },
    /// Every schedule, with its next fire time.
    List {
        #[arg(long)]
        environment: Option<String>,
    },
    /// Remove a schedule.
    Remove { id: String },
}

fn drill_json(d: &pb::Drill) -> Value {
    let mut v = d.run.as_ref().map(run_json).unwrap_or_else(|| json!({}));
    let extra = json!({
        "verdict": d.verdict,
        "rto_seconds": d.rto_seconds,
        "rto_objective_seconds": (d.rto_objective_seconds > 0.0).then_some(d.rto_objective_seconds),
        "critical_path": d.critical_path,
        "critical_path_ms": d.critical_path_ms,
        "root_cause": (!d.root_cause.is_empty()).then_some(&d.root_cause),
        "namespace": d.namespace,
        "addresses": d.addresses.iter().map(|a| json!({"service": a.service, "production": a.production, "drill": a.drill})).collect::<Vec<_>>(),
        "torn_down": d.torn_down,
        "instances_removed": d.instances_removed,
        "remaining": d.remaining,
        "kept_until": (!d.kept_until.is_empty()).then_some(&d.kept_until),
        "promotion": (!d.promotion.is_empty()).then_some(&d.promotion),
        "schedule": (!d.schedule.is_empty()).then_some(&d.schedule),
        "teardown_corruption": d.teardown_corruption.as_ref().map(super::output::corruption_json),
        "isolation_warnings": d.isolation_warnings,
        "network_namespace": (!d.network_namespace.is_empty()).then_some(&d.network_namespace),
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

fn print_drill(d: &pb::Drill) {
    let Some(run) = &d.run else { return };
    println!("drill {} of {} (snapshot {}) in {}", run.id, run.environment, run.snapshot_version, run.region);
    let verdict =
        if d.verdict.is_empty() { run.state.to_uppercase() } else { d.verdict.replace('_', " ").to_uppercase() };
    println!("verdict   {verdict}");
    for w in &d.isolation_warnings {
        println!("WARNING   {}", safe(w));
    }
    if d.rto_seconds > 0.0 {
        let objective = if d.rto_objective_seconds > 0.0 {
            format!(" (objective {})", secs((d.rto_objective_seconds * 1000.0) as u64))
        } else {
            " (no rto_objective in the manifest)".to_string()
        };
        println!("rto       {}{objective}", secs((d.rto_seconds * 1000.0) as u64));
    }
    if !d.critical_path.is_empty() {
        println!("critical  {} ({})", d.critical_path.join(" -> "), secs(d.critical_path_ms));
    }
    if !d.root_cause.is_empty() {
        println!("cause     {}", safe(&d.root_cause));
    }
    if !d.network_namespace.is_empty() {
        println!(
            "network   {} (production's addresses are the drill's there; production is out of reach)",
            d.network_namespace
        );
    }
    if !d.addresses.is_empty() {
        let rows: Vec<Vec<String>> =
            d.addresses.iter().map(|a| vec![a.service.clone(), a.production.clone(), a.drill.clone()]).collect();
        println!("{}", table(&["SERVICE", "PRODUCTION", "DRILL ADDRESS"], &rows));
    }
    if let Some(c) = &d.teardown_corruption {
        println!("teardown  UNKNOWN: the record is CORRUPT, {} (object {})", safe(&c.problem), safe(&c.key));
    } else if !d.kept_until.is_empty() && !d.torn_down {
        println!("kept      up for inspection until {}, then torn down", d.kept_until);
    } else if d.torn_down && d.remaining.is_empty() {
        println!("teardown  {} instances removed, none left", d.instances_removed.len());
    } else if d.torn_down {
        println!("teardown  INCOMPLETE: {} (the sweeper tries again)", d.remaining.join(", "));
    }
    if !d.promotion.is_empty() {
        println!("promotion {}", d.promotion);
    }
}

fn verdict_exit(d: &pb::Drill) -> Result<(), Failure> {
    match d.verdict.as_str() {
        "passed" | "passed_over_objective" => Ok(()),
        _ => {
            let id = d.run.as_ref().map(|r| r.id.clone()).unwrap_or_default();
            Err(Failure::new(
                exit::FAILED,
                format!(
                    "drill {id} failed: {}; `lifeboat drill report {id} --html report.html` has the timeline and logs",
                    if d.root_cause.is_empty() { "see the report" } else { &d.root_cause }
                ),
            ))
        }
    }
}

pub async fn run(client: &Client, cmd: DrillCmd, output: Output) -> Result<(), Failure> {
    let mut svc = client.drills();
    match cmd {
        DrillCmd::Run { environment, snapshot, region, keep_for, timeout, promote_on_pass, detach } => {
            let req = pb::StartDrillRequest {
                environment,
                snapshot,
                region: region.unwrap_or_default(),
                keep_for: keep_for.unwrap_or_default(),
                timeout: timeout.unwrap_or_default(),
                promote_on_pass,
                parallelism: 0,
            };
            let d = svc.start(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            let run = d.run.clone().unwrap_or_default();
            for w in &d.isolation_warnings {
                eprintln!("WARNING: {}", safe(w));
            }
            if detach {
                println!("{}", run.id);
                eprintln!("started drill {}; follow it with: lifeboat run watch {}", run.id, run.id);
                return Ok(());
            }
            let msg = format!(
                "drill {} started: snapshot {} of {} into {} in {}",
                run.id, run.snapshot_version, run.environment, d.namespace, run.region
            );
            if output == Output::Json {
                eprintln!("{msg}")
            } else {
                println!("{msg}")
            };
            if output == Output::Text {
                if !d.network_namespace.is_empty() {
                    println!("  in network namespace {}: production is out of reach", d.network_namespace);
                }
                for a in &d.addresses {
                    println!("  {}: {} -> {}", a.service, a.production, a.drill);
                }
            }
            follow(client, &run.id, Output::Json).await.ok();
            let d = svc
                .get(client.request(pb::GetDrillRequest { id: run.id.clone() }))
                .await
                .map_err(|e| client.fail(e))?
                .into_inner();
            match output {
                Output::Json => print_json(&drill_json(&d)),
                Output::Text => print_drill(&d),
            }
            verdict_exit(&d)
        }
        DrillCmd::List { environment, limit } => {
            let req = pb::ListDrillsRequest { environment: environment.unwrap_or_default(), limit };
            let listed = svc.list(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            super::output::warn_corrupt(&listed.corrupt);
            let drills = listed.drills;
            match output {
                Output::Json => print_json(&Value::Array(drills.iter().map(drill_json).collect())),
                Output::Text if drills.is_empty() => println!("no drills"),
                Output::Text => {
                    let rows: Vec<Vec<String>> = drills
                        .iter()
                        .map(|d| {
                            let r = d.run.clone().unwrap_or_default();
                            vec![
                                r.id,
                                r.environment,
                                r.snapshot_version.to_string(),
                                if d.verdict.is_empty() { r.state } else { d.verdict.clone() },
                                if d.rto_seconds > 0.0 { secs((d.rto_seconds * 1000.0) as u64) } else { "-".into() },
                                if d.teardown_corruption.is_some() {
                                    "UNKNOWN (corrupt record)".into()
                                } else if d.torn_down && d.remaining.is_empty() {
                                    "torn down".into()
                                } else if !d.kept_until.is_empty() {
                                    format!("kept until {}", d.kept_until)
                                } else if d.torn_down {
                                    "INCOMPLETE".into()
                                } else {
                                    "-".into()
                                },
                            ]
                        })
                        .collect();
                    println!("{}", table(&["DRILL", "ENVIRONMENT", "SNAPSHOT", "VERDICT", "RTO", "TEARDOWN"], &rows));
                }
            }
            Ok(())
        }
        DrillCmd::Show { id } => {
            let d = svc.get(client.request(pb::GetDrillRequest { id })).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&drill_json(&d)),
                Output::Text => print_drill(&d),
            }
            Ok(())
        }
        DrillCmd::Report(args) => report(client, args, output).await,
        DrillCmd::Sweep => {
            let r =
                svc.sweep(client.request(pb::SweepDrillsRequest {})).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&Value::Array(
                    r.swept
                        .iter()
                        .map(|s| json!({"namespace": s.namespace, "region": s.region, "run_id": s.run_id, "reason": s.reason, "removed": s.removed, "remaining": s.remaining}))
                        .collect(),
                )),
                Output::Text if r.swept.is_empty() && r.errors.is_empty() => {
                    println!("nothing to sweep: no drill left anything behind")
                }
                Output::Text => {
                    for s in &r.swept {
                        println!(
                            "{}: {}; removed {} instances ({}){}",
                            s.namespace,
                            s.reason,
                            s.removed.len(),
                            s.removed.join(", "),
                            if s.remaining.is_empty() {
                                String::new()
                            } else {
                                format!("; NOT removed: {}", s.remaining.join(", "))
                            }
                        );
                    }
                }
            }
            for e in &r.errors {
                eprintln!("NOT swept: {}", safe(e));
            }
            if !r.errors.is_empty() {
                return Err(Failure::new(
                    exit::FAILED,
                    format!(
                        "the sweep could not look everywhere ({} errors above); what it could see was swept",
                        r.errors.len()
                    ),
                ));
            }
            if r.swept.iter().any(|s| !s.remaining.is_empty()) {
                return Err(Failure::new(exit::FAILED, "some drill resources could not be removed; see above"));
            }
            Ok(())
        }
        DrillCmd::Schedule(cmd) => schedule(&mut svc, client, cmd, output).await,
    }
}

fn schedule_json(s: &pb::Schedule) -> Value {
    json!({
        "id": s.id, "environment": s.environment, "cron": s.cron, "timezone": s.timezone, "snapshot": s.snapshot,
        "region": (!s.region.is_empty()).then_some(&s.region), "promote_on_pass": s.promote_on_pass,
        "created_by": s.created_by, "created_at": s.created_at, "next_fire_at": s.next_fire_at,
        "last_fired_at": (!s.last_fired_at.is_empty()).then_some(&s.last_fired_at),
        "last_run_id": (!s.last_run_id.is_empty()).then_some(&s.last_run_id),
        "already_existed": s.already_existed,
        "corruption": s.corruption.as_ref().map(super::output::corruption_json),
    })
}

async fn schedule(
    svc: &mut DrillServiceClient<tonic::transport::Channel>,
    client: &Client,
    cmd: ScheduleCmd,
    output: Output,
) -> Result<(), Failure> {
    match cmd {
        ScheduleCmd::Add { environment, cron, snapshot, timezone, region, promote_on_pass } => {
            let req = pb::CreateScheduleRequest {
                environment,
                cron,
                timezone,
                snapshot,
                promote_on_pass,
                region: region.unwrap_or_default(),
            };
            let s = svc.create_schedule(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&schedule_json(&s)),
                Output::Text if s.already_existed => println!(
                    "schedule {} already does this (drill {} ({}) at \"{}\" {}); nothing added; next at {}",
                    s.id, s.environment, s.snapshot, s.cron, s.timezone, s.next_fire_at
                ),
                Output::Text => println!(
                    "schedule {}: drill {} ({}) at \"{}\" {}; next at {}",
                    s.id, s.environment, s.snapshot, s.cron, s.timezone, s.next_fire_at
                ),
            }
        }
        ScheduleCmd::List { environment } => {
            let req = pb::ListSchedulesRequest { environment: environment.unwrap_or_default() };
            let all = svc.list_schedules(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner().schedules;
            match output {
                Output::Json => print_json(&Value::Array(all.iter().map(schedule_json).collect())),
                Output::Text if all.is_empty() => println!("no schedules"),
                Output::Text => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|s| {
                            if let Some(c) = &s.corruption {
                                let what = format!("CORRUPT: {} (object {})", c.problem, c.key);
                                return vec![
                                    s.id.clone(),
                                    what,
                                    "-".into(),
                                    "-".into(),
                                    "-".into(),
                                    "never".into(),
                                    "-".into(),
                                ];
                            }
                            vec![
                                s.id.clone(),
                                s.environment.clone(),
                                format!("{} ({})", s.cron, s.timezone),
                                s.snapshot.clone(),
                                if s.promote_on_pass { "on pass".into() } else { "-".into() },
                                s.next_fire_at.clone(),
                                if s.last_run_id.is_empty() { "-".into() } else { s.last_run_id.clone() },
                            ]
                        })
                        .collect();
                    println!("{}", table(&["ID", "ENVIRONMENT", "CRON", "SNAPSHOT", "PROMOTE", "NEXT", "LAST"], &rows));
                    if all.iter().any(|s| s.corruption.is_some()) {
                        eprintln!(
                            "A CORRUPT schedule never fires: remove it with `lifeboat drill schedule remove ID`, then add it again"
                        );
                    }
                }
            }
        }
        ScheduleCmd::Remove { id } => {
            let s = svc
                .delete_schedule(client.request(pb::DeleteScheduleRequest { id }))
                .await
                .map_err(|e| client.fail(e))?
                .into_inner();
            match output {
                Output::Json => print_json(&schedule_json(&s)),
                Output::Text if s.corruption.is_some() => println!("removed corrupt schedule {}", s.id),
                Output::Text => println!("removed schedule {} ({} at \"{}\")", s.id, s.environment, s.cron),
            }
        }
    }
    Ok(())
}

/// `drill report` and `run report`: the stored report of a finished run.
pub async fn report(client: &Client, args: ReportArgs, output: Output) -> Result<(), Failure> {
    let mut svc = client.drills();
    let r = svc
        .get_report(client.request(pb::GetDrillRequest { id: args.id }))
        .await
        .map_err(|e| client.fail(e))?
        .into_inner();
    if let Some(path) = &args.html {
        std::fs::write(path, &r.html)
            .map_err(|e| Failure::new(exit::FAILED, format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote the HTML report of {} to {}", r.run_id, path.display());
    }
    let doc: Value = serde_json::from_str(&r.json)
        .map_err(|e| Failure::new(exit::FAILED, format!("the stored report of {} is not JSON: {e}", r.run_id)))?;
    if args.json || output == Output::Json {
        print_json(&doc);
        return Ok(());
    }
    if args.html.is_some() {
        return Ok(());
    }
    let s = |k: &str| doc[k].as_str().unwrap_or("").to_string();
    println!(
        "{} {} of {} (snapshot {}) in {}: {}",
        s("kind"),
        s("run_id"),
        s("environment"),
        doc["snapshot_version"],
        s("region"),
        doc["verdict"].as_str().unwrap_or(&s("state")).replace('_', " ").to_uppercase()
    );
    if let Some(rto) = doc["rto_seconds"].as_f64() {
        match doc["rto_objective_seconds"].as_f64() {
            Some(o) => println!("rto       {rto:.1}s (objective {o:.0}s)"),
            None => println!("rto       {rto:.1}s"),
        }
    }
    let path: Vec<&str> = doc["critical_path"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    println!("critical  {}", path.join(" -> "));
    if let Some(c) = doc["root_cause"].as_str() {
        println!("cause     {}", safe(c));
    }
    let rows: Vec<Vec<String>> = doc["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let ms = |k: &str| r[k].as_u64().map(secs).unwrap_or_else(|| "-".into());
            vec![
                format!("{}{}", r["name"].as_str().unwrap_or(""), if r["critical"] == true { " *" } else { "" }),
                r["state"].as_str().unwrap_or("").to_string(),
                ms("launch_overhead_ms"),
                ms("startup_ms"),
                ms("healthy_ms"),
            ]
        })
        .collect();
    println!("{}", table(&["SERVICE (* critical)", "STATE", "LAUNCH OVERHEAD", "START-UP", "HEALTHY AT"], &rows));
    if let Some(t) = doc.get("teardown").filter(|t| !t.is_null()) {
        let removed = t["instances"].as_array().map_or(0, Vec::len);
        let left: Vec<&str> = t["remaining"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if left.is_empty() {
            println!("teardown  {removed} instances removed by the {}, none left", t["by"].as_str().unwrap_or(""));
        } else {
            println!("teardown  INCOMPLETE: {}", left.join(", "));
        }
    }
    Ok(())
}
