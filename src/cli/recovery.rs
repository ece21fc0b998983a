//! `lifeboat plan`, `lifeboat recover`, `lifeboat run …`.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{Value, json};

use super::client::Client;
use super::follow::{follow, print_run, run_json, secs};
use super::output::{print_json, table};
use super::{Failure, Output, PlanFormat, RunCmd, RunPick, exit};
use crate::api::pb;
use crate::domain::duration::human;
use crate::domain::plan::{Check, Plan};
use crate::domain::run::{Action, PlannedStep};

pub use super::TargetArgs as Target;

async fn get_plan(client: &Client, t: &Target) -> Result<pb::PlanResponse, Failure> {
    let mut svc = client.recovery();
    let req = pb::PlanRequest {
        environment: t.environment.clone(),
        snapshot: t.snapshot.clone(),
        region: t.region.clone().unwrap_or_default(),
        force: t.force,
        no_prune: t.no_prune,
        decommission: t.decommission,
    };
    Ok(svc.plan(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner())
}

fn plan_json(p: &pb::PlanResponse) -> Value {
    json!({
        "environment": p.environment,
        "region": p.region,
        "snapshot_version": p.snapshot_version,
        "snapshot_digest": p.snapshot_digest,
        "steps": p.steps.iter().map(|s| json!({
            "service": s.service, "action": s.action, "image": s.image, "replicas": s.replicas,
            "depends_on": s.depends_on, "current_instances": s.current_instances, "expected_ms": s.expected_ms,
            "reason": s.reason, "approval": s.approval,
            "changes_from_version": if s.changes_from_version == 0 { Value::Null } else { json!(s.changes_from_version) },
            "changes": s.changes.iter().map(super::snapshot::field_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "critical_path": p.critical_path,
        "critical_path_ms": p.critical_path_ms,
        "preflight": p.preflight.iter().map(|c| json!({"name": c.name, "ok": c.ok, "message": c.message})).collect::<Vec<_>>(),
        "preflight_ok": p.preflight_ok,
        "rto_objective_ms": p.rto_objective_ms,
        "warnings": p.warnings,
        "traffic": p.traffic.iter().map(|t| json!({"service": t.service, "via": t.via, "points_to": t.points_to, "here": t.here})).collect::<Vec<_>>(),
    })
}

fn print_plan(p: &pb::PlanResponse, decommission: bool) {
    if decommission {
        println!("Plan: decommission {} in {} (every instance of it removed)\n", p.environment, p.region);
    } else {
        println!(
            "Plan: recover {} in {} from snapshot {} ({})\n",
            p.environment, p.region, p.snapshot_version, p.snapshot_digest
        );
    }
    let rows: Vec<Vec<String>> = p
        .steps
        .iter()
        .map(|s| {
            // A digest is long; an AMI ID is shown whole.
            let image = match s.image.strip_prefix("sha256:") {
                Some(_) if s.image.len() > 19 => format!("{}…", &s.image[..19]),
                _ => s.image.clone(),
            };
            let deps = if s.depends_on.is_empty() { "-".to_string() } else { s.depends_on.join(",") };
            let expected = if s.action == "keep" { "-".to_string() } else { secs(s.expected_ms) };
            let action = if s.approval { format!("{} (approval)", s.action) } else { s.action.clone() };
            vec![s.service.clone(), action, s.replicas.to_string(), image, deps, expected, s.reason.clone()]
        })
        .collect();
    println!("{}", table(&["SERVICE", "ACTION", "REPLICAS", "IMAGE", "DEPENDS ON", "EXPECTED", "WHY"], &rows));
    let n = |a: &str| p.steps.iter().filter(|s| s.action == a).count();
    let moved: Vec<&pb::TrafficPath> = p.traffic.iter().filter(|t| !t.here).collect();
    if !moved.is_empty() {
        println!("\nTraffic that does not reach {} now:", p.region);
        for t in moved {
            let to = if t.points_to.is_empty() { "nothing".to_string() } else { t.points_to.join(", ") };
            println!("  {}: {} -> {to}", t.service, t.via);
        }
    }
    if n("cutover") > 0 {
        println!(
            "\n{} to move traffic here (cutover: health gate, then traffic moves to the running instances).",
            n("cutover")
        );
    }
    if n("delete") > 0 {
        println!(
            "\n{} to create, {} to replace, {} to keep, {} to delete (not in the snapshot; removed after the rest is healthy; --no-prune keeps them).",
            n("create"),
            n("replace"),
            n("keep"),
            n("delete")
        );
    } else {
        println!("\n{} to create, {} to replace, {} to keep.", n("create"), n("replace"), n("keep"));
    }
    if p.steps.iter().any(|s| s.approval && s.action != "keep") {
        println!("(approval): the run waits there for `lifeboat run approve RUN_ID SERVICE`.");
    }
    let changed: Vec<&pb::PlanStep> = p.steps.iter().filter(|s| !s.changes.is_empty()).collect();
    if !changed.is_empty() {
        println!("\nChanges:");
        for s in changed {
            println!("  ~ {} (running snapshot {})", s.service, s.changes_from_version);
            for f in &s.changes {
                println!("      {}", super::snapshot::field_line(f));
            }
        }
        println!();
    }
    println!("Critical path: {} (~{})", p.critical_path.join(" -> "), secs(p.critical_path_ms));
    if let Some(rto) = p.rto_objective_ms {
        let verdict = if p.critical_path_ms > rto { "OVER the objective" } else { "within it" };
        println!("RTO objective: {} (estimate {verdict})", human_ms(rto));
    }
    if !p.warnings.is_empty() {
        println!("\nWarnings:");
        for w in &p.warnings {
            println!("  ! {w}");
        }
    }
    println!("\nPreflight:");
    for c in &p.preflight {
        println!("  {:<4}  {:<18}  {}", if c.ok { "ok" } else { "FAIL" }, c.name, c.message);
    }
}

/// The plan back in domain form, to render it as a graph.
fn to_domain(p: &pb::PlanResponse) -> Plan {
    let action = |a: &str| match a {
        "keep" => Action::Keep,
        "cutover" => Action::Cutover,
        "replace" => Action::Replace,
        "delete" => Action::Delete,
        _ => Action::Create,
    };
    Plan {
        environment: p.environment.clone(),
        region: p.region.clone(),
        snapshot_version: p.snapshot_version,
        snapshot_digest: p.snapshot_digest.clone(),
        steps: p
            .steps
            .iter()
            .map(|s| PlannedStep {
                service: s.service.clone(),
                action: action(&s.action),
                reason: s.reason.clone(),
                fingerprint: String::new(),
                image: s.image.clone(),
                replicas: s.replicas,
                depends_on: s.depends_on.clone(),
                current: s.current_instances.clone(),
                expected_ms: s.expected_ms,
            })
            .collect(),
        critical_path: p.critical_path.clone(),
        critical_path_ms: p.critical_path_ms,
        preflight: p
            .preflight
            .iter()
            .map(|c| Check { name: c.name.clone(), ok: c.ok, message: c.message.clone() })
            .collect(),
        rto_objective_ms: p.rto_objective_ms,
        warnings: p.warnings.clone(),
        approval_gates: p.steps.iter().filter(|s| s.approval).map(|s| s.service.clone()).collect(),
        changes: Default::default(),
        traffic: Vec::new(),
    }
}

/// Exit 1 when preflight fails: the plan ran, and says recovery would not.
/// With `detailed_exitcode` (as Terraform's): 0 nothing to change, 2 changes.
pub async fn plan(
    client: &Client,
    t: Target,
    format: PlanFormat,
    output: Output,
    detailed_exitcode: bool,
) -> Result<(), Failure> {
    let p = get_plan(client, &t).await?;
    match (format, output) {
        (PlanFormat::Json, _) | (_, Output::Json) => print_json(&plan_json(&p)),
        (PlanFormat::Text, _) => print_plan(&p, t.decommission),
        (PlanFormat::Dot, _) => print!("{}", to_domain(&p).to_dot()),
        (PlanFormat::Mermaid, _) => print!("{}", to_domain(&p).to_mermaid()),
    }
    if p.preflight_ok {
        if detailed_exitcode && p.steps.iter().any(|s| s.action != "keep") {
            return Err(Failure::new(exit::CHANGES, ""));
        }
        Ok(())
    } else {
        let failed: Vec<String> =
            p.preflight.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.message)).collect();
        Err(Failure::new(exit::FAILED, format!("preflight failed: {}", failed.join("; "))))
    }
}

pub async fn start(client: &Client, t: Target, parallelism: Option<u32>, propose: bool) -> Result<pb::Run, Failure> {
    let mut svc = client.recovery();
    let req = pb::StartRecoveryRequest {
        environment: t.environment,
        snapshot: t.snapshot,
        region: t.region.unwrap_or_default(),
        parallelism: parallelism.unwrap_or(0),
        force: t.force,
        no_prune: t.no_prune,
        propose,
        decommission: t.decommission,
    };
    Ok(svc.start(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner())
}

pub struct RecoverOptions {
    pub parallelism: Option<u32>,
    pub dry_run: bool,
    pub yes: bool,
    pub detach: bool,
    /// Plan it and wait for `run approve ID` before anything launches.
    pub propose: bool,
}

pub async fn recover(client: &Client, t: Target, o: RecoverOptions, output: Output) -> Result<(), Failure> {
    if o.dry_run {
        return plan(client, t, PlanFormat::Text, output, false).await;
    }
    if !o.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::invalid(
                "recover changes running infrastructure: pass --yes when not run interactively",
            ));
        }
        let p = get_plan(client, &t).await?;
        print_plan(&p, t.decommission);
        if !p.preflight_ok {
            return Err(Failure::new(exit::FAILED, "preflight failed; nothing was changed"));
        }
        match t.decommission {
            true => {
                print!("\nDecommission {} in {} (remove every instance listed) now? [y/N] ", p.environment, p.region)
            }
            false => {
                print!("\nRecover {} in {} from snapshot {} now? [y/N] ", p.environment, p.region, p.snapshot_version)
            }
        }
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "yes" | "Y") {
            return Err(Failure::new(exit::FAILED, "nothing started"));
        }
    }
    let run = start(client, t, o.parallelism, o.propose).await?;
    if o.detach {
        // Only the ID on stdout, for `RUN_ID=$(lifeboat recover … --detach)`.
        match output {
            Output::Json => print_json(&run_json(&run)),
            Output::Text => {
                println!("{}", run.id);
                if o.propose {
                    eprintln!(
                        "proposed run {}: nothing launches until it is approved with: lifeboat run approve {}",
                        run.id, run.id
                    );
                } else {
                    eprintln!("started run {}; follow it with: lifeboat run watch {}", run.id, run.id);
                }
            }
        }
        return Ok(());
    }
    let msg = format!(
        "run {} started: recovering {} in {} from snapshot {}",
        run.id, run.environment, run.region, run.snapshot_version
    );
    if output == Output::Json {
        eprintln!("{msg}")
    } else {
        println!("{msg}")
    }
    finish(client, &run.id, output).await
}

/// Follows a run to its end and reports; exit 1 unless it succeeded.
async fn finish(client: &Client, id: &str, output: Output) -> Result<(), Failure> {
    // Ctrl-C stops following, not the run: say so, and how to get back to it.
    let run = tokio::select! {
        run = follow(client, id, output) => run?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Failure::new(
                super::exit::INTERRUPTED,
                format!("detached: the run goes on; follow it with `lifeboat run watch {id}`, stop it with `lifeboat run cancel {id}`"),
            ));
        }
    };
    match output {
        Output::Json => print_json(&run_json(&run)),
        Output::Text => {
            println!();
            print_run(&run);
        }
    }
    match run.state.as_str() {
        "succeeded" => Ok(()),
        "cancelled" => Err(Failure::new(exit::FAILED, format!("run {} was cancelled", run.id))),
        state => {
            let mut causes: Vec<String> = run
                .services
                .iter()
                .filter(|s| s.state == "failed")
                .map(|s| format!("{} ({})", s.name, s.error))
                .collect();
            causes
                .extend(run.verify.iter().filter(|v| !v.passed).map(|v| format!("verify {} ({})", v.check, v.detail)));
            Err(Failure::new(exit::FAILED, format!("run {} {state}: {}", run.id, causes.join("; "))))
        }
    }
}

/// The run a `show` or `watch` means: its ID (or prefix: the server
/// resolves it), or the newest run of `--latest ENV`.
async fn pick_run(client: &Client, pick: RunPick) -> Result<String, Failure> {
    let Some(env) = pick.latest else {
        return Ok(pick.id.unwrap_or_default());
    };
    let mut svc = client.recovery();
    let req = pb::ListRunsRequest { environment: env.clone(), limit: 1, awaiting_approval: false };
    let runs = svc.list(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner().runs;
    match runs.into_iter().next() {
        Some(r) => Ok(r.id),
        None => Err(Failure::new(exit::NOT_FOUND, format!("environment {env} has no runs yet"))),
    }
}

pub async fn run_cmd(client: &Client, cmd: RunCmd, output: Output) -> Result<(), Failure> {
    let mut svc = client.recovery();
    let show = |run: &pb::Run, text: String| match output {
        Output::Json => print_json(&run_json(run)),
        Output::Text => println!("{text}"),
    };
    match cmd {
        RunCmd::List { environment, limit, quiet, awaiting_approval } => {
            let req = pb::ListRunsRequest { environment: environment.unwrap_or_default(), limit, awaiting_approval };
            let listed = svc.list(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            super::output::warn_corrupt(&listed.corrupt);
            let runs = listed.runs;
            match output {
                Output::Json => print_json(&Value::Array(runs.iter().map(run_json).collect())),
                Output::Text if quiet => runs.iter().for_each(|r| println!("{}", r.id)),
                Output::Text if runs.is_empty() => println!("no runs"),
                Output::Text => {
                    let rows: Vec<Vec<String>> = runs
                        .iter()
                        .map(|r| {
                            // Services the snapshot has; a pruned one is removed, not unhealthy.
                            let wanted = r.services.iter().filter(|s| s.action != "delete").count();
                            let healthy = r.services.iter().filter(|s| s.state == "healthy").count();
                            let removed = r.services.iter().filter(|s| s.state == "removed").count();
                            let health = match removed {
                                0 => format!("{healthy}/{wanted}"),
                                n => format!("{healthy}/{wanted} ({n} removed)"),
                            };
                            let finished = !r.finished_at.is_empty();
                            // A run still going shows the time so far, from its start.
                            let time = if finished {
                                secs(r.elapsed_ms)
                            } else {
                                chrono::DateTime::parse_from_rfc3339(&r.started_at).map_or_else(
                                    |_| "-".to_string(),
                                    |t| {
                                        let so_far = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                                            .num_milliseconds()
                                            .max(0) as u64;
                                        format!("{} so far", secs(so_far))
                                    },
                                )
                            };
                            vec![
                                r.id.clone(),
                                r.kind.clone(),
                                r.environment.clone(),
                                r.region.clone(),
                                r.snapshot_version.to_string(),
                                r.state.clone(),
                                r.started_at.clone(),
                                time,
                                health,
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(
                            &["ID", "KIND", "ENV", "REGION", "SNAPSHOT", "STATE", "STARTED", "TIME", "HEALTHY"],
                            &rows
                        )
                    );
                }
            }
        }
        RunCmd::Report(args) => super::drill::report(client, args, output).await?,
        RunCmd::Show(pick) => {
            let id = pick_run(client, pick).await?;
            let run = svc.get(client.request(pb::GetRunRequest { id })).await.map_err(|e| client.fail(e))?.into_inner();
            match output {
                Output::Json => print_json(&run_json(&run)),
                Output::Text => print_run(&run),
            }
        }
        RunCmd::Watch(pick) => {
            let id = pick_run(client, pick).await?;
            return finish(client, &id, output).await;
        }
        RunCmd::Cancel { id } => {
            let run = svc.cancel(client.request(pb::RunRequest { id })).await.map_err(|e| client.fail(e))?.into_inner();
            show(&run, format!("cancel requested for run {}; instances not yet cut over will be removed", run.id));
        }
        RunCmd::Approve { id, service } => {
            let req = pb::ApproveRequest { id, service: service.clone().unwrap_or_default() };
            let run = svc.approve(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
            match service {
                Some(s) => show(&run, format!("approved {s} in run {}", run.id)),
                None => show(&run, format!("approved run {}; it goes ahead", run.id)),
            }
        }
        RunCmd::Logs { id, service, read } => {
            let req = pb::LogsRequest {
                environment: String::new(),
                service,
                region: String::new(),
                run_id: id,
                lines: read.lines,
                follow: read.follow,
            };
            return super::logs::print(client, req, output).await;
        }
        RunCmd::Resume { id } => {
            let run = svc.resume(client.request(pb::RunRequest { id })).await.map_err(|e| client.fail(e))?.into_inner();
            show(&run, format!("resumed run {}; follow it with: lifeboat run watch {}", run.id, run.id));
        }
    }
    Ok(())
}

fn human_ms(ms: u64) -> String {
    human(std::time::Duration::from_millis(ms))
}
