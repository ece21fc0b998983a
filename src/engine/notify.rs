//! Outbound notifications (`[[notify]]`): a JSON message, Slack-compatible
//! (`text`), POSTed when a run starts, waits for approval, succeeds, fails
//! or is cancelled. Each receiver has its own queue and task: deliveries are
//! retried with backoff, in order, and never block a run.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::domain::run::{Action, Event, RunView, ServiceState};

/// `[[notify]]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    pub url: String,
    /// Sent as `authorization: Bearer …`; never logged.
    pub bearer: Option<String>,
    /// Which of started, awaiting_approval, succeeded, failed, cancelled (default: all).
    #[serde(default)]
    pub events: Vec<String>,
}

pub const EVENTS: [&str; 5] = ["started", "awaiting_approval", "succeeded", "failed", "cancelled"];

/// What the engine hands over; cheap to clone, a no-op without receivers.
#[derive(Clone, Default)]
pub struct Notifier {
    queues: Vec<(Receiver, mpsc::Sender<Value>)>,
}

impl Notifier {
    /// Starts one delivery task per receiver; refuses unknown event names.
    pub fn start(receivers: Vec<Receiver>) -> Result<Notifier, String> {
        let mut queues = Vec::new();
        for r in receivers {
            if let Some(bad) = r.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(format!("notify {}: unknown event \"{bad}\"; expected {}", r.url, EVENTS.join(", ")));
            }
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                return Err(format!("notify: \"{}\" is not an http(s) URL", r.url));
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(deliver(r.clone(), rx));
            queues.push((r, tx));
        }
        Ok(Notifier { queues })
    }

    /// Queues the message an event means, if it means one.
    pub fn event(&self, view: &RunView, event: &Event) {
        if self.queues.is_empty() {
            return;
        }
        let (kind, service) = match event {
            Event::RunStarted { .. } => ("started", None),
            Event::ApprovalRequested { service } => ("awaiting_approval", Some(service.as_str())),
            Event::RunApprovalRequested { .. } => ("awaiting_approval", None),
            Event::RunFinished { state } => (state.as_str(), None),
            _ => return,
        };
        let s = &view.spec;
        let what =
            format!("{} of {} in {} from snapshot {}", s.kind_name(), s.environment, s.region, s.snapshot_version);
        let (text, approve) = match (kind, service) {
            ("awaiting_approval", Some(svc)) => {
                let cmd = format!("lifeboat run approve {} {svc}", s.id);
                (format!("Run {}: {what}: {svc} waits for approval: `{cmd}`", s.id), Some(cmd))
            }
            ("awaiting_approval", None) => {
                let cmd = format!("lifeboat run approve {}", s.id);
                (format!("Run {} proposed: {what}: it waits for approval: `{cmd}`", s.id), Some(cmd))
            }
            ("started", _) => (format!("Run {} started: {what}: {}", s.id, changes_line(view)), None),
            (state, _) => {
                let took = crate::domain::duration::human(Duration::from_millis(view.executing_ms()));
                let cause = root_cause(view).map(|c| format!(": {c}")).unwrap_or_default();
                (format!("Run {} {state}: {what} after {took} ({}){cause}", s.id, changes_line(view)), None)
            }
        };
        let finished = !matches!(kind, "started" | "awaiting_approval");
        let message = json!({
            "text": text,
            "event": kind,
            "run_id": s.id,
            "environment": s.environment,
            "region": s.region,
            "snapshot_version": s.snapshot_version,
            "state": if kind == "started" || kind == "awaiting_approval" { "running" } else { kind },
            "service": service,
            "approve_command": approve,
            "changes": changes(view),
            "took_seconds": if finished { json!(view.executing_ms() as f64 / 1000.0) } else { Value::Null },
            "root_cause": if finished { json!(root_cause(view)) } else { Value::Null },
            "failed_services": view.services.values().filter(|p| p.state == ServiceState::Failed).map(|p| p.name.clone()).collect::<Vec<_>>(),
        });
        for (r, tx) in &self.queues {
            if (r.events.is_empty() || r.events.iter().any(|e| e == kind))
                && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(message.clone())
            {
                tracing::error!(receiver = %shown_url(&r.url), "{QUEUE} notifications wait for this receiver; dropping one");
            }
        }
    }
}

/// How many services a run creates, replaces, keeps and deletes.
fn changes(view: &RunView) -> Value {
    let count = |a: Action| view.spec.steps.iter().filter(|s| s.action == a).count();
    json!({
        "create": count(Action::Create),
        "replace": count(Action::Replace),
        "keep": count(Action::Keep),
        "delete": count(Action::Delete),
    })
}

/// `2 to create, 1 to replace, 5 kept`.
fn changes_line(view: &RunView) -> String {
    let count = |a: Action| view.spec.steps.iter().filter(|s| s.action == a).count();
    let parts: Vec<String> = [
        (Action::Create, "to create"),
        (Action::Replace, "to replace"),
        (Action::Keep, "kept"),
        (Action::Delete, "to delete"),
    ]
    .iter()
    .filter(|(a, _)| count(*a) > 0)
    .map(|(a, what)| format!("{} {what}", count(*a)))
    .collect();
    if parts.is_empty() { "nothing to do".into() } else { parts.join(", ") }
}

/// The first failed service and why (or the failed `[[verify]]` check).
fn root_cause(view: &RunView) -> Option<String> {
    let failed =
        view.spec.steps.iter().filter_map(|s| view.services.get(&s.service)).find(|p| p.state == ServiceState::Failed);
    match failed {
        Some(p) => Some(format!("{} failed: {}", p.name, p.error.clone().unwrap_or_default())),
        None => view.verify.iter().find(|(_, passed, _)| !passed).map(|(c, _, d)| format!("verify {c} failed: {d}")),
    }
}

/// A receiver's URL as logs show it: scheme and host only. A Slack webhook
/// URL's path is its secret; user info and queries may be too.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}/…", u.scheme())
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

/// Messages that may wait for one receiver; more are dropped (and logged).
const QUEUE: usize = 256;
/// How long one message is retried before it is dropped.
const RETRY_BUDGET: Duration = Duration::from_secs(20);

/// Delivers one receiver's messages in order, each retried with backoff for
/// up to `RETRY_BUDGET`. Once a message is dropped the receiver counts as
/// down: later messages get one attempt each (so an approval request is
/// not held for minutes behind a dead receiver) until one gets through.
async fn deliver(r: Receiver, mut rx: mpsc::Receiver<Value>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("an HTTP client builds");
    let mut down = false;
    while let Some(message) = rx.recv().await {
        let started = tokio::time::Instant::now();
        let mut delays = crate::backoff::pauses_at_most(
            Duration::from_millis(200),
            Duration::from_secs(5),
            if down { 0 } else { 30 },
        );
        loop {
            let mut req =
                client.post(&r.url).header(reqwest::header::CONTENT_TYPE, "application/json").body(message.to_string());
            if let Some(b) = &r.bearer {
                req = req.bearer_auth(b);
            }
            let failure = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    down = false;
                    break;
                }
                Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                Err(e) => e.without_url().to_string(),
            };
            match delays.next().filter(|d| started.elapsed() + *d <= RETRY_BUDGET) {
                Some(d) => {
                    tracing::warn!(receiver = %shown_url(&r.url), error = %failure, "notification not delivered; retrying");
                    tokio::time::sleep(d).await;
                }
                None => {
                    tracing::error!(receiver = %shown_url(&r.url), error = %failure, "notification dropped after retries; the receiver counts as down (one attempt per message) until one gets through");
                    down = true;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Slack webhook URL is a secret: logs show its host only.
    #[test]
    fn logs_show_a_receivers_host_not_its_secret_path() {
        assert_eq!(shown_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"), "https://hooks.slack.com/…");
        assert_eq!(shown_url("http://user:pw@127.0.0.1:9093/hook?token=abc"), "http://127.0.0.1:9093/…");
        assert_eq!(shown_url("not a url"), "(an unparsable URL)");
    }
}
