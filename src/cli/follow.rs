//! Following a run: live progress bars on a terminal (one line per service
//! in flight plus an overall bar with ETA), one line per event otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::client::Client;
use super::output::safe;
use super::{Failure, Output};
use crate::api::pb;

pub fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

const TERMINAL_EVENTS: [&str; 5] = ["cut_over", "kept", "service_failed", "skipped", "removed"];

/// Streams the run's events until it finishes; returns the final run.
pub async fn follow(client: &Client, id: &str, output: Output) -> Result<pb::Run, Failure> {
    let mut svc = client.recovery();
    let run =
        svc.get(client.request(pb::GetRunRequest { id: id.into() })).await.map_err(|e| client.fail(e))?.into_inner();
    let fancy = output == Output::Text && std::io::stdout().is_terminal();
    let total = run.services.len() as u64;
    let mut progress = if fancy { Some(Bars::new(&run, ProgressDrawTarget::stdout())) } else { None };
    let mut stream = match svc.watch(client.request(pb::WatchRunRequest { id: id.into(), from_seq: 0 })).await {
        Ok(s) => s.into_inner(),
        // The run goes on whether or not it can be streamed: follow it another way.
        Err(e) if e.code() == tonic::Code::ResourceExhausted => {
            eprintln!("cannot stream run {id} ({}); following it by polling instead", safe(e.message()));
            return poll(client, id, output).await;
        }
        Err(e) => return Err(client.fail(e)),
    };
    let mut done = 0u64;
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                if let Some(p) = &progress {
                    p.multi.clear().ok();
                }
                // The stream broke (a server restart, a takeover): the run goes on, follow it by polling.
                if matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal) {
                    eprintln!("the stream of run {id} broke ({}); following it by polling instead", safe(e.message()));
                    return poll(client, id, output).await;
                }
                return Err(client.fail(e));
            }
        };
        if TERMINAL_EVENTS.contains(&event.r#type.as_str()) || event.r#type == "service_cancelled" {
            done += 1;
        }
        // A launch announced ahead of its dependencies' cutovers.
        let queued = !event.waits_for.is_empty();
        match &mut progress {
            Some(p) => p.update(&event, done, queued),
            None => {
                // Messages carry what instances and users wrote: never interpreted by the terminal.
                let line = format!("{:>8}  {}", format!("+{}", secs(event.elapsed_ms)), safe(&event.message));
                // With --output json, stdout is for the final JSON document.
                if output == Output::Json { eprintln!("{line}") } else { println!("{line}") }
            }
        }
    }
    if let Some(p) = progress {
        p.finish(total);
    }
    let run =
        svc.get(client.request(pb::GetRunRequest { id: id.into() })).await.map_err(|e| client.fail(e))?.into_inner();
    Ok(run)
}

/// Follows a run by reading it every 2 s, one line per change, until it ends.
async fn poll(client: &Client, id: &str, output: Output) -> Result<pb::Run, Failure> {
    let mut svc = client.recovery();
    let mut last = String::new();
    let mut unavailable = 0;
    loop {
        // A server restarting (or a takeover) is waited out: the run goes on.
        let run = match svc.get(client.request(pb::GetRunRequest { id: id.into() })).await {
            Ok(r) => r.into_inner(),
            Err(e)
                if matches!(e.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) && unavailable < 60 =>
            {
                unavailable += 1;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(client.fail(e)),
        };
        unavailable = 0;
        let healthy = run.services.iter().filter(|s| s.state == "healthy").count();
        let line = format!("{}: {healthy}/{} services healthy", run.state, run.services.len());
        if line != last {
            let line = format!("{:>8}  {line}", format!("+{}", secs(run.elapsed_ms)));
            if output == Output::Json { eprintln!("{line}") } else { println!("{line}") }
        }
        if !run.finished_at.is_empty() {
            return Ok(run);
        }
        last = format!("{}: {healthy}/{} services healthy", run.state, run.services.len());
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    services: BTreeMap<String, ProgressBar>,
    expected: BTreeMap<String, u64>,
    /// The overall bar's message, and services waiting out a grace period.
    title: String,
    draining: BTreeMap<String, String>,
    /// Services in progress beyond the lines shown (a wide region has
    /// hundreds at once; a line each would not fit a terminal).
    unshown: std::collections::BTreeSet<String>,
}

/// At most this many services in progress get a line of their own.
const SERVICE_LINES: usize = 12;

impl Bars {
    fn new(run: &pb::Run, target: ProgressDrawTarget) -> Bars {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(run.services.len() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} services  ETA {eta}  {msg}",
            )
            .expect("valid template"),
        );
        overall.enable_steady_tick(Duration::from_millis(120));
        let title = format!("{} {} ← snapshot {}", run.environment, run.region, run.snapshot_version);
        overall.set_message(title.clone());
        let expected = run.services.iter().map(|s| (s.name.clone(), s.expected_ms)).collect();
        Bars {
            multi,
            overall,
            services: BTreeMap::new(),
            expected,
            title,
            draining: BTreeMap::new(),
            unshown: Default::default(),
        }
    }

    /// A service's line, unless the lines shown are full (then it is counted).
    fn line(&mut self, service: &str) -> Option<&ProgressBar> {
        if !self.services.contains_key(service) && self.services.len() >= SERVICE_LINES {
            self.unshown.insert(service.to_string());
            return None;
        }
        self.unshown.remove(service);
        let multi = &self.multi;
        let expected = self.expected.get(service).copied().unwrap_or(0);
        self.services.entry(service.to_string()).or_insert_with(|| {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(ProgressStyle::with_template("  {spinner} {prefix:<16} {msg}").expect("valid template"));
            pb.set_prefix(service.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            if expected > 0 {
                pb.set_message(format!("queued (expect ~{})", secs(expected)));
            }
            pb
        });
        self.services.get(service)
    }

    /// `queued`: a launch announced ahead of its dependencies' cutovers.
    fn update(&mut self, e: &pb::RunEvent, done: u64, queued: bool) {
        self.overall.set_position(done);
        if e.service.is_empty() {
            if e.r#type != "run_finished" {
                self.multi.println(format!("  {}", safe(&e.message))).ok();
            }
            return;
        }
        let state = match e.r#type.as_str() {
            "launch_started" if queued => Some("queued (launch announced)"),
            "launch_started" => Some("launching"),
            "instances_launched" => Some("health gate"),
            "healthy" => Some("healthy, cutting over"),
            "approval_requested" => Some("waiting for approval"),
            _ => None,
        };
        if let Some(s) = state
            && let Some(line) = self.line(&e.service)
        {
            line.set_message(s.to_string());
        }
        // After the last cutover the run may wait out grace periods: say so.
        match e.r#type.as_str() {
            "decommission_scheduled" => {
                self.draining.insert(e.service.clone(), e.message.clone());
            }
            "decommissioned" => {
                self.draining.remove(&e.service);
            }
            _ => {}
        }
        if TERMINAL_EVENTS.contains(&e.r#type.as_str()) || e.r#type == "service_cancelled" {
            self.unshown.remove(&e.service);
        }
        let mut message = self.draining.values().next_back().cloned().unwrap_or_else(|| self.title.clone());
        if !self.unshown.is_empty() {
            message.push_str(&format!("  (+{} more in progress)", self.unshown.len()));
        }
        self.overall.set_message(message);
        if matches!(e.r#type.as_str(), "attempt_failed" | "approval_requested") {
            self.multi.println(format!("  {}", safe(&e.message))).ok();
        }
        if TERMINAL_EVENTS.contains(&e.r#type.as_str()) || e.r#type == "service_cancelled" {
            if let Some(pb) = self.services.remove(&e.service) {
                pb.finish_and_clear();
                self.multi.remove(&pb);
            }
            let mark = match e.r#type.as_str() {
                "cut_over" | "kept" | "removed" => "✓",
                "service_failed" => "✗",
                _ => "–",
            };
            self.multi.println(format!("  {mark} {:>8}  {}", format!("+{}", secs(e.elapsed_ms)), e.message)).ok();
        }
    }

    fn finish(self, total: u64) {
        for (_, pb) in self.services {
            pb.finish_and_clear();
        }
        self.overall.set_position(total);
        self.overall.finish_and_clear();
        self.multi.clear().ok();
    }
}

pub fn run_json(r: &pb::Run) -> Value {
    let ms = |v: Option<u64>| v.map_or(Value::Null, |x| json!(x));
    let services: Vec<Value> = r
        .services
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "action": s.action,
                "state": s.state,
                "attempts": s.attempts,
                "depends_on": s.depends_on,
                "queued_ms": ms(s.queued_ms),
                "launched_ms": ms(s.launched_ms),
                "healthy_ms": ms(s.healthy_ms),
                "cutover_ms": ms(s.cutover_ms),
                "finished_ms": ms(s.finished_ms),
                "expected_ms": s.expected_ms,
                "instances": s.instances,
                "error": if s.error.is_empty() { Value::Null } else { json!(s.error) },
                "upstream": if s.upstream.is_empty() { Value::Null } else { json!(s.upstream) },
                "approved_by": if s.approved_by.is_empty() { Value::Null } else { json!(s.approved_by) },
                "logs": s.logs,
            })
        })
        .collect();
    json!({
        "id": r.id,
        "kind": r.kind,
        "environment": r.environment,
        "region": r.region,
        "snapshot_version": r.snapshot_version,
        "snapshot_digest": r.snapshot_digest,
        "state": r.state,
        "started_at": r.started_at,
        "finished_at": if r.finished_at.is_empty() { Value::Null } else { json!(r.finished_at) },
        "created_by": r.created_by,
        "parallelism": r.parallelism,
        "elapsed_ms": r.elapsed_ms,
        "critical_path": r.critical_path,
        "critical_path_ms": r.critical_path_ms,
        "measured_critical_path": r.measured_critical_path,
        "measured_critical_path_ms": r.measured_critical_path_ms,
        "cancel_requested": r.cancel_requested,
        "stopped_ms": r.stopped_ms,
        "awaiting_approval": r.awaiting_approval,
        "approved_by": if r.approved_by.is_empty() { Value::Null } else { json!(r.approved_by) },
        "verify": r.verify.iter().map(|v| json!({"check": v.check, "passed": v.passed, "detail": v.detail})).collect::<Vec<_>>(),
        "replans": r.replans.iter().map(|p| json!({"at": p.at, "changes": p.changes, "failed": p.failed})).collect::<Vec<_>>(),
        "final_probe": if r.probed { json!({"healthy": r.probed_healthy, "unhealthy": r.probed_unhealthy}) } else { Value::Null },
        "proposal_expires_at": if r.proposal_expires_at.is_empty() { Value::Null } else { json!(r.proposal_expires_at) },
        "owners": r.owners,
        "services": services,
    })
}

/// The per-service report of a run.
pub fn print_run(r: &pb::Run) {
    println!("run {}  {} of {} in {} from snapshot {}", r.id, r.kind, r.environment, r.region, r.snapshot_version);
    let finished = if r.finished_at.is_empty() { "-".to_string() } else { r.finished_at.clone() };
    println!(
        "state {}  started {}  finished {}  by {}",
        r.state.to_uppercase(),
        r.started_at,
        finished,
        safe(&r.created_by)
    );
    for p in &r.replans {
        let what = if p.failed.is_empty() { "" } else { " (preflight FAILED: nothing launched)" };
        match p.changes.as_slice() {
            [] if p.failed.is_empty() => println!("planned again at {} against what runs now: the same steps", p.at),
            changes => {
                println!("planned again at {} against what runs now{what}:", p.at);
                for c in changes {
                    println!("    {c}");
                }
            }
        }
        for f in &p.failed {
            println!("    preflight FAILED: {f}");
        }
    }
    let t = |v: Option<u64>| v.map_or("-".to_string(), |x| format!("+{}", secs(x)));
    let rows: Vec<Vec<String>> = r
        .services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.action.clone(),
                s.state.clone(),
                s.attempts.to_string(),
                t(s.queued_ms),
                t(s.launched_ms),
                t(s.healthy_ms),
                t(s.cutover_ms),
                s.error.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        super::output::table(
            &["SERVICE", "ACTION", "STATE", "ATTEMPTS", "QUEUED", "LAUNCHED", "HEALTHY", "CUT OVER", "ERROR"],
            &rows
        )
    );
    for s in r.services.iter().filter(|s| s.state == "failed") {
        println!("\nroot cause: {} failed: {}", s.name, safe(&s.error));
        for l in super::output::collapse(&s.logs) {
            println!("    | {}", safe(&l));
        }
    }
    if r.probed {
        match r.probed_unhealthy {
            0 => {
                println!("final probe: all {} services answered their health checks as the run ended", r.probed_healthy)
            }
            n => {
                println!("final probe: {n} service(s) did NOT answer their health checks as the run ended (see ERROR)")
            }
        }
    }
    for v in &r.verify {
        let verdict = if v.passed { "passed" } else { "FAILED" };
        println!("verify {}: {verdict}: {}", safe(&v.check), safe(&v.detail));
    }
    let skipped = r.services.iter().filter(|s| s.state == "skipped").count();
    if skipped > 0 {
        println!("{skipped} dependent service(s) were skipped; unrelated services were recovered.");
    }
    if r.awaiting_approval {
        println!("proposed: nothing launches until approved: lifeboat run approve {}", r.id);
        println!("(approving it plans again against what runs then; cancel it with: lifeboat run cancel {})", r.id);
        if !r.proposal_expires_at.is_empty() {
            println!("unapproved, it expires at {}", r.proposal_expires_at);
        }
    }
    for s in r.services.iter().filter(|s| s.state == "awaiting_approval") {
        println!("waiting for approval: lifeboat run approve {} {}", r.id, s.name);
    }
    if r.state != "running" {
        let stopped = if r.stopped_ms > 0 {
            format!(" ({} of it with no server running the run)", secs(r.stopped_ms))
        } else {
            String::new()
        };
        println!(
            "took {}{stopped}; critical path of the measured steps {} ({}); planned estimate {}",
            secs(r.elapsed_ms),
            secs(r.measured_critical_path_ms),
            r.measured_critical_path.join(" -> "),
            secs(r.critical_path_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, service: &str) -> pb::RunEvent {
        pb::RunEvent { r#type: kind.into(), service: service.into(), ..Default::default() }
    }

    /// A wide region does not get a line per service in progress: a dozen
    /// lines, and the rest counted on the overall bar.
    #[test]
    fn services_beyond_a_dozen_lines_are_counted_not_drawn() {
        let names: Vec<String> = (0..30).map(|i| format!("s{i:02}")).collect();
        let run = pb::Run {
            services: names.iter().map(|n| pb::ServiceRun { name: n.clone(), ..Default::default() }).collect(),
            ..Default::default()
        };
        let mut bars = Bars::new(&run, ProgressDrawTarget::hidden());
        for n in &names {
            bars.update(&event("launch_started", n), 0, false);
        }
        assert_eq!(bars.services.len(), SERVICE_LINES);
        assert!(bars.overall.message().ends_with("(+18 more in progress)"), "{}", bars.overall.message());
        // One shown and one counted service finish: a line frees, the count drops.
        bars.update(&event("cut_over", "s00"), 1, false);
        bars.update(&event("cut_over", "s29"), 2, false);
        assert_eq!(bars.services.len(), SERVICE_LINES - 1);
        assert!(bars.overall.message().ends_with("(+17 more in progress)"), "{}", bars.overall.message());
        // The next event of a counted service takes the free line.
        bars.update(&event("instances_launched", "s20"), 2, false);
        assert!(bars.services.contains_key("s20"));
        assert!(bars.overall.message().ends_with("(+16 more in progress)"), "{}", bars.overall.message());
        for n in &names[1..29] {
            bars.update(&event("cut_over", n), 3, false);
        }
        assert!(bars.services.is_empty() && bars.unshown.is_empty());
        assert!(!bars.overall.message().contains("more in progress"), "{}", bars.overall.message());
    }
}
