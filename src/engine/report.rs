//! Run reports: a JSON document and a self-contained HTML page (with an SVG
//! timeline of every service's queued, launching and health-gate spans, the
//! critical path marked) stored beside every finished run, drill or recovery.

use serde::{Deserialize, Serialize};

use super::drill::Teardown;
use crate::domain::run::{RunView, ServiceState};
use crate::store::{DynStore, PutOptions, layout};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format_version: u32,
    pub run_id: String,
    pub kind: String,
    pub environment: String,
    pub region: String,
    pub snapshot_version: u64,
    pub state: String,
    pub created_by: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub elapsed_ms: u64,
    /// Drills: passed, passed_over_objective or failed.
    pub verdict: Option<String>,
    /// Start → every service healthy and verified (a drill's measured RTO,
    /// or a successful recovery's duration).
    pub rto_seconds: Option<f64>,
    pub rto_objective_seconds: Option<f64>,
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
    pub root_cause: Option<String>,
    pub services: Vec<ServiceRow>,
    pub verify: Vec<VerifyRow>,
    pub drill: Option<DrillInfo>,
    /// Every instance the run created.
    pub instances_created: Vec<String>,
    pub teardown: Option<Teardown>,
    /// Stretches with no server running the run (from, to ms): part of the
    /// times above, not of any service's start-up.
    #[serde(default)]
    pub stopped: Vec<(u64, u64)>,
    /// The SHA-256 of the `report.html` written beside it, so a page that
    /// was changed is told from the one written (empty in older reports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub html_sha256: String,
}

impl crate::store::codec::Persisted for Report {
    const KIND: &'static str = "run report";
    const FORMAT: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRow {
    pub name: String,
    pub action: String,
    pub state: String,
    pub attempts: u32,
    pub queued_ms: Option<u64>,
    pub launch_started_ms: Option<u64>,
    pub running_ms: Option<u64>,
    pub healthy_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Launch call → instances running (the provider's side).
    pub launch_overhead_ms: Option<u64>,
    /// Running → healthy (the service's own start-up).
    pub startup_ms: Option<u64>,
    pub critical: bool,
    pub error: Option<String>,
    pub logs: Vec<String>,
    /// Each attempt's launch and health gate (reports before this field had none).
    #[serde(default)]
    pub attempt_spans: Vec<crate::domain::run::AttemptSpan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRow {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressRow {
    pub service: String,
    pub production: String,
    pub drill: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillInfo {
    pub namespace: String,
    /// Each production address and the drill address that replaced it (the
    /// shape `drill show --output json` has too).
    pub addresses: Vec<AddressRow>,
    /// The network namespace it ran in, where it had one (then no address
    /// was rewritten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespace: Option<String>,
    pub kept_until: Option<String>,
    pub promotion: Option<String>,
    pub schedule: Option<String>,
}

pub fn build(view: &RunView, teardown: Option<Teardown>) -> Report {
    let spec = &view.spec;
    let j = view.judgement.as_ref();
    let (measured_path, measured_ms) = view.measured_critical_path();
    let critical_path = j.map_or(measured_path, |j| j.critical_path.clone());
    let services = spec
        .steps
        .iter()
        .map(|s| {
            let p = &view.services[&s.service];
            let until = p.healthy_ms.or(p.cutover_ms);
            let began = view.launch_began_ms(s);
            ServiceRow {
                name: s.service.clone(),
                action: crate::domain::plan::action_name(s.action).into(),
                state: p.state.as_str().into(),
                attempts: p.attempts,
                queued_ms: view.queued_ms_of(s),
                launch_started_ms: began,
                running_ms: p.running_ms,
                healthy_ms: until,
                finished_ms: p.finished_ms,
                launch_overhead_ms: began.zip(p.running_ms).map(|(a, b)| b.saturating_sub(a)),
                startup_ms: p.running_ms.zip(until).map(|(a, b)| b.saturating_sub(a)),
                critical: critical_path.contains(&s.service),
                error: p.error.clone(),
                logs: p.logs.clone(),
                attempt_spans: p.attempt_spans.clone(),
            }
        })
        .collect();
    let mut instances: Vec<String> =
        view.services.values().flat_map(|p| p.instances.iter().chain(p.failed_instances.iter()).cloned()).collect();
    if let Some((torn, _)) = &view.torn_down {
        instances.extend(torn.iter().cloned());
    }
    instances.sort();
    instances.dedup();
    let rto_ms = match j {
        Some(j) => (j.root_cause.is_none()).then_some(j.rto_ms),
        None => (view.state == crate::domain::run::RunState::Succeeded).then_some(view.executing_ms()),
    };
    let objective =
        spec.drill.as_ref().and_then(|d| d.rto_objective_ms).or(spec.rto_objective_ms).map(|o| o as f64 / 1000.0);
    Report {
        format_version: 1,
        run_id: spec.id.clone(),
        kind: spec.kind_name().into(),
        environment: spec.environment.clone(),
        region: spec.region.clone(),
        snapshot_version: spec.snapshot_version,
        state: view.state.as_str().into(),
        created_by: spec.created_by.clone(),
        started_at: view.started_at.clone(),
        finished_at: view.finished_at.clone(),
        elapsed_ms: view.elapsed_ms,
        verdict: j.map(|j| j.verdict.as_str().to_string()),
        rto_seconds: rto_ms.map(|ms| ms as f64 / 1000.0),
        rto_objective_seconds: objective,
        critical_path_ms: j.map_or(measured_ms, |j| j.critical_path_ms),
        critical_path,
        root_cause: j.and_then(|j| j.root_cause.clone()).or_else(|| {
            view.services
                .values()
                .find(|s| s.state == ServiceState::Failed)
                .map(|s| format!("{} failed: {}", s.name, s.error.clone().unwrap_or_default()))
        }),
        services,
        verify: view
            .verify
            .iter()
            .map(|(c, passed, d)| VerifyRow { check: c.clone(), passed: *passed, detail: d.clone() })
            .collect(),
        drill: spec.drill.as_ref().map(|d| DrillInfo {
            namespace: d.namespace.clone(),
            addresses: d
                .isolation
                .addresses
                .iter()
                .map(|a| AddressRow {
                    service: a.service.clone(),
                    production: a.production.clone(),
                    drill: a.drill.clone(),
                })
                .collect(),
            network_namespace: d.isolation.network.clone(),
            kept_until: view.kept_until.clone(),
            promotion: view.promotion.as_ref().map(|(_, d)| d.clone()),
            schedule: d.schedule.clone(),
        }),
        instances_created: instances,
        teardown,
        stopped: view.stopped.clone(),
        html_sha256: String::new(),
    }
}

/// Writes a finished run's JSON and HTML reports (best effort: a report
/// that cannot be written is logged, and made again on request). Returns
/// what it wrote: (JSON, HTML).
pub async fn store(store: &DynStore, view: &RunView) -> (String, String) {
    let teardown = super::drill::read_teardown(store, &view.spec.id).await.ok().flatten();
    let mut report = build(view, teardown);
    let page = html(&report);
    report.html_sha256 = crate::domain::snapshot::sha256_hex(page.as_bytes());
    let written = (serde_json::to_string_pretty(&report).expect("reports serialise"), page);
    // The page first, the JSON (which records the page's digest) last: a
    // pair is only ever checked against the page written before it; when
    // the page cannot be written the JSON is removed, so it is made again.
    let (json_key, html_key) =
        (layout::run_report(&view.spec.id, "report.json"), layout::run_report(&view.spec.id, "report.html"));
    match store.put(&html_key, bytes::Bytes::from(written.1.clone()), PutOptions::overwrite()).await {
        Ok(_) => {
            if let Err(e) = store.put(&json_key, bytes::Bytes::from(written.0.clone()), PutOptions::overwrite()).await {
                tracing::error!(run_id = %view.spec.id, error = %e, "cannot write the run's report.json");
            }
        }
        Err(e) => {
            tracing::error!(run_id = %view.spec.id, error = %e, "cannot write the run's report.html");
            let _ = store.delete(&json_key).await;
        }
    }
    written
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The timeline: one bar group per service (queued, launching, health
/// gate), the critical path outlined.
pub fn svg(r: &Report) -> String {
    const LABEL: f64 = 170.0;
    const WIDTH: f64 = 900.0;
    const ROW: f64 = 26.0;
    let end = r
        .services
        .iter()
        .filter_map(|s| s.finished_ms.or(s.healthy_ms).or(s.running_ms))
        .max()
        .unwrap_or(0)
        .max(r.rto_seconds.map_or(0, |s| (s * 1000.0) as u64))
        .max(1);
    let x = |ms: u64| LABEL + (ms as f64 / end as f64) * (WIDTH - LABEL - 20.0);
    let height = ROW * r.services.len() as f64 + 40.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"timeline\">\n"
    );
    for (i, s) in r.services.iter().enumerate() {
        let y = 10.0 + i as f64 * ROW;
        out.push_str(&format!(
            "<g class=\"bar\" data-service=\"{}\" data-critical=\"{}\">\n<text x=\"4\" y=\"{}\" font-size=\"12\" font-weight=\"{}\">{}{}</text>\n",
            esc(&s.name),
            s.critical,
            y + 15.0,
            if s.critical { "bold" } else { "normal" },
            esc(&s.name),
            if s.critical { " ★" } else { "" }
        ));
        let failed = s.state == "failed";
        let mut spans = vec![("queued", s.queued_ms, s.launch_started_ms, QUEUED)];
        if s.attempt_spans.is_empty() {
            // A report from before attempts were recorded: one span each.
            spans.push(("launching", s.launch_started_ms, s.running_ms.or(s.finished_ms), LAUNCHING));
            spans.push((
                "health gate",
                s.running_ms,
                s.healthy_ms.or(s.finished_ms),
                if failed { FAILED } else { GATE },
            ));
        }
        // Each attempt apart: a failed gate in red, then the retry's launch.
        for (k, a) in s.attempt_spans.iter().enumerate() {
            let last = k + 1 == s.attempt_spans.len();
            let end = a.ended_ms.or(if last { s.healthy_ms.or(s.finished_ms) } else { None });
            spans.push(("launching", Some(a.launched_ms), a.running_ms.or(end), LAUNCHING));
            let gate_failed = a.failed || (last && failed && a.ended_ms.is_none());
            let (what, colour) = if gate_failed { ("failed health gate", FAILED) } else { ("health gate", GATE) };
            spans.push((what, a.running_ms, end, colour));
        }
        for (what, from, to, colour) in spans {
            let (Some(a), Some(b)) = (from, to) else { continue };
            let w = (x(b) - x(a)).max(1.5);
            out.push_str(&format!(
                "<rect class=\"span {}\" x=\"{:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"{colour}\"{}><title>{}: {} {} → {}</title></rect>\n",
                what.replace(' ', "-"),
                x(a),
                if s.critical { " stroke=\"#e07b00\" stroke-width=\"2\"" } else { "" },
                esc(&s.name),
                what,
                secs(a),
                secs(b)
            ));
        }
        out.push_str("</g>\n");
    }
    // Time with no server running the run: shaded, so it is not read as start-up.
    for (from, to) in &r.stopped {
        out.push_str(&format!(
            "<rect class=\"stopped\" x=\"{:.1}\" y=\"4\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{STOPPED}\" fill-opacity=\"0.35\"><title>no server ran the run: {} → {}</title></rect>\n",
            x(*from),
            (x(*to) - x(*from)).max(1.5),
            ROW * r.services.len() as f64 + 6.0,
            secs(*from),
            secs(*to)
        ));
    }
    let axis_y = 10.0 + r.services.len() as f64 * ROW + 14.0;
    for k in 0..=4 {
        let ms = end * k / 4;
        // The first label starts at its tick, the last ends there: none is clipped.
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{axis_y}\" font-size=\"11\" fill=\"#555\" text-anchor=\"{anchor}\">{}</text>\n",
            x(ms),
            secs(ms)
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// The timeline's colours, shared by its bars and its legend.
const QUEUED: &str = "#d0d4da";
const LAUNCHING: &str = "#4a7bd0";
const GATE: &str = "#3fa34d";
const FAILED: &str = "#d04a4a";
const STOPPED: &str = "#8a8f99";

pub fn html(r: &Report) -> String {
    let title = format!("{} {} of {} — {}", r.kind, r.run_id, r.environment, r.verdict.as_deref().unwrap_or(&r.state));
    let verdict_class = match r.verdict.as_deref().unwrap_or(&r.state) {
        "passed" | "succeeded" => "ok",
        "passed_over_objective" => "warn",
        _ => "bad",
    };
    let rto = match (r.rto_seconds, r.rto_objective_seconds) {
        (Some(s), Some(o)) => format!("RTO {s:.1}s against an objective of {o:.0}s"),
        (Some(s), None) => format!("RTO {s:.1}s (no objective in the manifest)"),
        (None, _) => "no RTO: not every service became healthy".into(),
    };
    let mut rows = String::new();
    for s in &r.services {
        let ms = |v: Option<u64>| v.map(secs).unwrap_or_else(|| "–".into());
        rows.push_str(&format!(
            "<tr class=\"{}\"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            if s.critical { "critical" } else { "" },
            esc(&s.name),
            if s.critical { " ★" } else { "" },
            esc(&s.action),
            esc(&s.state),
            s.attempts,
            ms(s.queued_ms),
            ms(s.launch_overhead_ms),
            ms(s.startup_ms),
            ms(s.healthy_ms)
        ));
    }
    let mut errors = String::new();
    for s in r.services.iter().filter(|s| s.error.is_some()) {
        errors.push_str(&format!("<h3>{}</h3><p>{}</p>", esc(&s.name), esc(s.error.as_deref().unwrap_or(""))));
        if !s.logs.is_empty() {
            errors.push_str(&format!("<pre>{}</pre>", esc(&s.logs.join("\n"))));
        }
    }
    for v in r.verify.iter().filter(|v| !v.passed) {
        errors.push_str(&format!("<h3>verify {}</h3><p>{}</p>", esc(&v.check), esc(&v.detail)));
    }
    let verify: String = r
        .verify
        .iter()
        .map(|v| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.check),
                if v.passed { "passed" } else { "FAILED" },
                esc(&v.detail)
            )
        })
        .collect();
    let drill = match &r.drill {
        Some(d) => {
            let map: String = d
                .addresses
                .iter()
                .map(|a| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&a.service),
                        esc(&a.production),
                        esc(&a.drill)
                    )
                })
                .collect();
            let teardown = match &r.teardown {
                Some(t) if t.remaining.is_empty() => format!(
                    "<p class=\"ok\">Torn down at {} by the {}: {} instances removed ({}); none left.</p>",
                    esc(&t.at),
                    esc(&t.by),
                    t.instances.len(),
                    esc(&t.instances.join(", "))
                ),
                Some(t) => {
                    format!("<p class=\"bad\">Teardown at {} left: {}</p>", esc(&t.at), esc(&t.remaining.join(", ")))
                }
                None => match &d.kept_until {
                    Some(u) => {
                        format!("<p class=\"warn\">Kept up for inspection until {}, then torn down.</p>", esc(u))
                    }
                    None => "<p class=\"bad\">Not torn down yet: the sweeper removes it.</p>".into(),
                },
            };
            let isolation = match &d.network_namespace {
                Some(n) => format!(
                    "<h3>Network</h3><p>Ran in the network namespace <code>{}</code>: its services kept production's addresses, and production was out of reach.</p>",
                    esc(n)
                ),
                None => format!(
                    "<h3>Address map</h3><table><tr><th>service</th><th>production</th><th>drill</th></tr>{map}</table>"
                ),
            };
            format!(
                "<h2>Drill</h2><p>Namespace <code>{}</code>{}{}</p>{teardown}{isolation}",
                esc(&d.namespace),
                d.promotion.as_ref().map(|p| format!("; {}", esc(p))).unwrap_or_default(),
                d.schedule.as_ref().map(|s| format!("; started by schedule {}", esc(s))).unwrap_or_default(),
            )
        }
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1d2330; }}
.ok {{ color: #1e7b34; }} .warn {{ color: #a86400; }} .bad {{ color: #b3261e; }}
.verdict {{ font-size: 28px; font-weight: 700; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border: 1px solid #ccd; padding: 4px 8px; font-size: 13px; text-align: left; }}
tr.critical td {{ font-weight: 600; background: #fff4e5; }}
pre {{ background: #f4f5f7; padding: 8px; font-size: 12px; overflow-x: auto; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
</style></head>
<body>
<h1>{kind} of {env} from snapshot {version}</h1>
<p>Run <code>{id}</code> in region {region}, started {started} by {by}.</p>
<p class="verdict {verdict_class}">{verdict}</p>
<p>{rto}. Critical path: {path} ({path_s}).</p>
{cause}
<h2>Timeline</h2>
<p class="legend"><span style="background:{QUEUED}"></span>queued<span style="background:{LAUNCHING}"></span>launching<span style="background:{GATE}"></span>health gate<span style="background:{FAILED}"></span>failed health gate<span style="background:{STOPPED};opacity:0.35"></span>no server ran the run<span style="background:#fff;border:2px solid #e07b00"></span>critical path ★</p>
{stopped_note}
{svg}
<h2>Services</h2>
<table><tr><th>service</th><th>action</th><th>state</th><th>attempts</th><th>queued at</th><th>launch overhead</th><th>start-up</th><th>healthy at</th></tr>
{rows}</table>
{verify_table}
{errors_block}
{drill}
<h2>Instances created</h2><p>{instances}</p>
</body></html>
"#,
        stopped_note = match r.stopped.iter().map(|(a, b)| b - a).sum::<u64>() {
            0 => String::new(),
            ms => format!(
                "<p class=\"warn\">For {} no server ran this run (a server stopped and another took it over): the shaded time is part of the run's time, not of any service's start-up.</p>",
                secs(ms)
            ),
        },
        kind = esc(&r.kind),
        env = esc(&r.environment),
        version = r.snapshot_version,
        id = esc(&r.run_id),
        region = esc(&r.region),
        started = esc(&r.started_at),
        by = esc(&r.created_by),
        verdict = esc(&r.verdict.clone().unwrap_or_else(|| r.state.clone()).replace('_', " ").to_uppercase()),
        path = esc(&r.critical_path.join(" → ")),
        path_s = secs(r.critical_path_ms),
        cause =
            r.root_cause.as_ref().map(|c| format!("<p class=\"bad\">Root cause: {}</p>", esc(c))).unwrap_or_default(),
        svg = svg(r),
        verify_table = if verify.is_empty() {
            String::new()
        } else {
            format!("<h2>Verify</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>{verify}</table>")
        },
        errors_block = if errors.is_empty() { String::new() } else { format!("<h2>Errors</h2>{errors}") },
        instances =
            if r.instances_created.is_empty() { "none".to_string() } else { esc(&r.instances_created.join(", ")) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::run::{Action, ENTRY_FORMAT, Entry, Event, PlannedStep, RUN_FORMAT, RunKind, RunSpec, RunState};

    /// A service whose first attempt failed its gate, in a run a server
    /// took over after a gap: the timeline draws each attempt (the failed
    /// gate in red, which the legend names), shades the gap, and keeps its
    /// last axis label inside the picture.
    #[test]
    fn the_timeline_draws_each_attempt_and_the_time_no_server_ran() {
        let spec = RunSpec {
            format_version: RUN_FORMAT,
            id: "r-1".into(),
            kind: RunKind::Recovery,
            environment: "shop".into(),
            region: "local-1".into(),
            snapshot_version: 1,
            snapshot_digest: "sha256:x".into(),
            parallelism: 4,
            created_at: "2026-12-07T00:00:00.000Z".into(),
            created_by: "t".into(),
            steps: vec![PlannedStep {
                service: "db".into(),
                action: Action::Create,
                reason: String::new(),
                fingerprint: String::new(),
                image: "sha256:x".into(),
                replicas: 1,
                depends_on: vec![],
                current: vec![],
                expected_ms: 1000,
            }],
            critical_path: vec!["db".into()],
            critical_path_ms: 1000,
            proposed: false,
            rto_objective_ms: Some(60_000),
            force: false,
            prune: false,
            decommission: false,
            drill: None,
        };
        let s = |x: &str| x.to_string();
        let events = [
            (0, Event::RunStarted { owner: s("a") }),
            (0, Event::LaunchStarted { service: s("db"), attempt: 1 }),
            (100, Event::InstancesLaunched { service: s("db"), attempt: 1, instances: vec![s("db-1")] }),
            (2000, Event::AttemptFailed { service: s("db"), attempt: 1, reason: s("HTTP 503"), logs: vec![] }),
            (3000, Event::LaunchStarted { service: s("db"), attempt: 2 }),
            (3100, Event::InstancesLaunched { service: s("db"), attempt: 2, instances: vec![s("db-2")] }),
            (20_000, Event::RunResumed { owner: s("b") }),
            (20_500, Event::Healthy { service: s("db"), attempt: 2 }),
            (20_600, Event::CutOver { service: s("db"), instances: vec![s("db-2")] }),
            (20_700, Event::RunFinished { state: RunState::Succeeded }),
        ];
        let entries: Vec<Entry> = events
            .into_iter()
            .enumerate()
            .map(|(i, (ms, event))| Entry {
                format_version: ENTRY_FORMAT,
                seq: i as u64,
                at: s("t"),
                elapsed_ms: ms,
                event,
            })
            .collect();
        let view = RunView::replay(spec, &entries);
        assert_eq!(view.stopped, [(3100, 20_000)]);
        let r = build(&view, None);
        assert_eq!(r.rto_objective_seconds, Some(60.0));
        let svg = svg(&r);
        assert_eq!(svg.matches("class=\"span launching\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"span failed-health-gate\"").count(), 1, "{svg}");
        assert_eq!(svg.matches("class=\"span health-gate\"").count(), 1, "{svg}");
        assert!(svg.contains("class=\"stopped\""), "{svg}");
        assert!(svg.contains(&format!("text-anchor=\"end\">{}</text>", secs(20_700))), "{svg}");
        let page = html(&r);
        assert!(
            page.contains(&format!("background:{FAILED}\"></span>failed health gate")),
            "every colour has its legend"
        );
        assert!(page.contains("no server ran this run"), "the gap is said");
    }
}
