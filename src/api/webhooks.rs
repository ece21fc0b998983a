//! Pager webhooks on the HTTP side: `POST /v1/webhooks/pagerduty` (signed
//! with HMAC-SHA256) and `POST /v1/webhooks/alertmanager` (a bearer
//! secret). An authenticated alert is routed by the config's rules and,
//! once per incident or group key, proposes or starts a recovery from
//! known-good. Every decision is logged, counted and audited; requests
//! that fail authentication or parsing change nothing and write nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};

use crate::config::{Secret, WebhookSource, WebhooksSection};
use crate::domain::alert::{self, Alert, Policy, Routes, Rule, Source};
use crate::domain::run::RunState;
use crate::engine::{Engine, StartRequest};
use crate::error::{Error, shown};
use crate::store::webhooks::{Claim, ClaimId, Claims, Events};
use crate::store::{AuditLog, DynStore};

/// The largest delivery accepted; larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// A claim whose run never got recorded (its server died while starting
/// it) is taken over after this long.
const CLAIM_TTL: Duration = Duration::from_secs(120);

/// How far ahead of this server's clock an event may say it occurred.
const MAX_FUTURE_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

pub struct Webhooks {
    engine: Arc<Engine>,
    claims: Claims,
    events: Events,
    audit: AuditLog,
    pagerduty: Option<WebhookSource>,
    alertmanager: Option<WebhookSource>,
    routes: Routes,
}

impl Webhooks {
    /// Checks the `[webhooks]` section, naming what is wrong.
    pub fn check(config: &WebhooksSection) -> Result<Routes, String> {
        for (name, s) in [("pagerduty", &config.pagerduty), ("alertmanager", &config.alertmanager)] {
            if let Some(s) = s {
                if s.secrets.is_empty() {
                    return Err(format!(
                        "webhooks.{name}.secrets is empty: give at least one secret, or remove the section"
                    ));
                }
                if let Some(i) = s.secrets.iter().position(|x| x.0.trim().is_empty()) {
                    return Err(format!("webhooks.{name}.secrets[{i}] is empty"));
                }
            }
        }
        Routes::new(&config.rules)
    }

    pub fn new(config: &WebhooksSection, store: DynStore, engine: Arc<Engine>) -> anyhow::Result<Webhooks> {
        let routes = Webhooks::check(config).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Webhooks {
            engine,
            claims: Claims::new(store.clone()),
            events: Events::new(store.clone()),
            audit: AuditLog::new(store),
            pagerduty: config.pagerduty.clone(),
            alertmanager: config.alertmanager.clone(),
            routes,
        })
    }

    /// Forgets processed events that can no longer be replayed: an event
    /// older than its source's `max_age` is refused as stale anyway (with
    /// the future skew an event may claim as margin).
    pub async fn prune_events(&self) {
        for (source, config) in [("pagerduty", &self.pagerduty), ("alertmanager", &self.alertmanager)] {
            let Some(config) = config else { continue };
            let max_age = config.max_age.map_or(DEFAULT_MAX_AGE, |d| d.0);
            let keep = chrono::TimeDelta::from_std(max_age).unwrap_or(chrono::TimeDelta::MAX) + MAX_FUTURE_SKEW * 2;
            let Some(before) = chrono::Utc::now().checked_sub_signed(keep) else { continue };
            match self.events.prune(source, before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(source, removed = n, "forgot processed webhook events past their max_age"),
                Err(e) => tracing::warn!(source, error = %e, "cannot prune processed webhook events"),
            }
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/v1/webhooks/pagerduty",
                post(|State(w): State<Arc<Webhooks>>, h: HeaderMap, b: Result<Bytes, BytesRejection>| async move {
                    w.receive(Source::Pagerduty, &h, b).await.into_response()
                }),
            )
            .route(
                "/v1/webhooks/alertmanager",
                post(|State(w): State<Arc<Webhooks>>, h: HeaderMap, b: Result<Bytes, BytesRejection>| async move {
                    w.receive(Source::Alertmanager, &h, b).await.into_response()
                }),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    fn source(&self, s: Source) -> Option<&WebhookSource> {
        match s {
            Source::Pagerduty => self.pagerduty.as_ref(),
            Source::Alertmanager => self.alertmanager.as_ref(),
        }
    }

    async fn receive(&self, source: Source, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Reply {
        let reply = self.decide(source, headers, body).await;
        crate::metrics::get()
            .webhooks
            .get_or_create(&crate::metrics::labels(&[("source", source.as_str()), ("outcome", reply.outcome)]))
            .inc();
        if reply.status.is_success() {
            tracing::info!(%source, outcome = reply.outcome, "webhook: {}", reply.message);
        } else {
            tracing::warn!(%source, status = reply.status.as_u16(), outcome = reply.outcome, "webhook refused: {}", reply.message);
        }
        reply
    }

    async fn decide(&self, source: Source, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Reply {
        let body = match body {
            Ok(b) => b,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Reply::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body is larger than {MAX_BODY} bytes"),
                );
            }
            Err(r) => return Reply::new(StatusCode::BAD_REQUEST, "malformed", r.body_text()),
        };
        let Some(config) = self.source(source) else {
            return Reply::new(
                StatusCode::NOT_FOUND,
                "not_configured",
                format!("{source} webhooks are not configured on this server (add [webhooks.{source}] secrets)"),
            );
        };
        // Hashing a body of up to a megabyte is CPU work: off the async
        // workers, so a flood of deliveries cannot stall the API.
        let checked = {
            let (secrets, headers, body) = (config.secrets.clone(), headers.clone(), body.clone());
            tokio::task::spawn_blocking(move || authenticate(source, &secrets, &headers, &body)).await
        };
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Reply::new(StatusCode::UNAUTHORIZED, "unauthorized", why),
            Err(e) => {
                return Reply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "failed",
                    format!("cannot check the signature: {e}"),
                );
            }
        }
        let alert = match source {
            Source::Pagerduty => alert::parse_pagerduty(&body),
            Source::Alertmanager => alert::parse_alertmanager(&body),
        };
        let alert = match alert {
            Ok(a) => a,
            Err(e) => return Reply::new(StatusCode::BAD_REQUEST, "malformed", e),
        };
        let max_age = config.max_age.map_or(DEFAULT_MAX_AGE, |d| d.0);
        // PagerDuty's signature covers no time: the event's own is the only
        // bound on replays, so it must be there and not in the future.
        if source == Source::Pagerduty {
            let Some(at) = alert.occurred_at else {
                return Reply::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the event has no occurred_at: a delivery that cannot be dated is refused".to_string(),
                );
            };
            if at > chrono::Utc::now() + MAX_FUTURE_SKEW {
                return Reply::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!(
                        "the event occurred_at {at} is more than {}s in the future: check the sender's clock",
                        MAX_FUTURE_SKEW.num_seconds()
                    ),
                );
            }
        }
        if let Some(at) = alert.occurred_at {
            let age = chrono::Utc::now().signed_duration_since(at);
            if age.to_std().is_ok_and(|a| a > max_age) {
                return Reply::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!(
                        "stale delivery: the event occurred at {at}, more than {} ago (webhooks.{source}.max_age)",
                        humantime::format_duration(max_age)
                    ),
                );
            }
        }
        // Authenticated from here on: every decision is audited.
        let (reply, target) = self.route(&alert).await;
        let actor = format!("webhook:{source}");
        if let Err(e) = self.audit.record(&actor, &format!("webhook.{source}"), &target, &reply.message).await {
            tracing::error!(%source, error = %e, "cannot write the audit record of a webhook decision");
        }
        reply
    }

    /// What an authenticated alert does, and the audit target.
    async fn route(&self, a: &Alert) -> (Reply, String) {
        // Keys and event names are the sender's text: clipped and escaped
        // wherever they are shown (reply, log, audit, the run's creator).
        let what = match a.source {
            Source::Pagerduty => format!("incident {}", shown(&a.key)),
            Source::Alertmanager => format!("alert group {}", shown(&a.key)),
        };
        let Some(rule) = self.routes.route(a) else {
            return (Reply::accepted("ignored", format!("ignored: no rule matches {} {what}", a.source)), "-".into());
        };
        let target = rule.environment.clone();
        let id = ClaimId { source: a.source.as_str(), environment: &rule.environment, key: &a.key };
        if !a.firing {
            let mut m = format!("ignored: {} for {what} starts nothing (rule {})", shown(&a.event), rule.name);
            // Once resolved, the next firing of the same key is a new alert,
            // unless this very event was processed before (a replay).
            if a.resolved {
                if let Some(seen) = self.replayed(a).await {
                    return (Reply::accepted("duplicate", seen), target);
                }
                match self.claims.read(&id).await {
                    Ok(Some((held, etag))) if held.released_at.is_none() => {
                        match self.claims.release_if(&id, &held, etag).await {
                            Ok(true) => {
                                m.push_str("; a new firing will start a recovery again");
                                self.processed(a, "released the claim").await;
                            }
                            Ok(false) => m.push_str("; a new firing claimed it meanwhile"),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot release the webhook claim of a resolved alert")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot read the webhook claim of a resolved alert"),
                }
            }
            return (Reply::accepted("ignored", m), target);
        }
        if rule.policy == Policy::Ignore {
            return (
                Reply::accepted("ignored", format!("ignored: rule {} has policy ignore ({what})", rule.name)),
                target,
            );
        }
        match self.start_once(a, rule, &what).await {
            Ok((reply, Some(run))) => (reply, format!("{target}/{run}")),
            Ok((reply, None)) => (reply, target),
            Err(reply) => (reply, target),
        }
    }

    /// Claims the alert and starts its run, unless a run for it exists.
    async fn start_once(&self, a: &Alert, rule: &Rule, what: &str) -> Result<(Reply, Option<String>), Reply> {
        let failed =
            |e: Error| Reply::new(StatusCode::SERVICE_UNAVAILABLE, "failed", format!("cannot record {what}: {e}"));
        let source = a.source.as_str();
        let id = ClaimId { source, environment: &rule.environment, key: &a.key };
        let mut claim = Claim {
            format_version: 1,
            source: source.to_string(),
            environment: rule.environment.clone(),
            key: shown(&a.key),
            rule: rule.name.clone(),
            run_id: None,
            claimed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            released_at: None,
        };
        let over = match self.claims.read(&id).await.map_err(failed)? {
            None => None,
            // Resolved since: a new firing, unless this event is a replay.
            Some((held, etag)) if held.released_at.is_some() => Some(etag),
            Some((held, etag)) => match &held.run_id {
                Some(run) => {
                    let state = match self.engine.get(run).await {
                        // A proposal cancelled (or expired) unapproved handled
                        // nothing: the alert firing again proposes anew.
                        Ok(v) if v.state == RunState::Cancelled && v.spec.proposed && v.run_approved_by.is_none() => {
                            String::new()
                        }
                        Ok(v) => v.state.as_str().to_string(),
                        Err(Error::NotFound(_)) => "gone".into(),
                        Err(e) => return Err(failed(e)),
                    };
                    if state.is_empty() {
                        Some(etag)
                    } else {
                        let m = format!(
                            "duplicate: run {run} ({state}) already handles {what} (rule {}); until it is resolved, start another with the CLI",
                            held.rule
                        );
                        return Ok((Reply::accepted("duplicate", m), Some(run.clone())));
                    }
                }
                None if !claim_expired(&held.claimed_at) => {
                    let m = format!("duplicate: another delivery of {what} is starting its run (rule {})", held.rule);
                    return Ok((Reply::accepted("duplicate", m), None));
                }
                None => Some(etag),
            },
        };
        // No run handles the alert now: only an event never processed starts one.
        if let Some(seen) = self.replayed(a).await {
            return Ok((Reply::accepted("duplicate", seen), None));
        }
        let Some(etag) = self.claims.take(&id, &claim, over).await.map_err(failed)? else {
            let m = format!("duplicate: another delivery of {what} is starting its run (rule {})", rule.name);
            return Ok((Reply::accepted("duplicate", m), None));
        };
        let propose = rule.policy == Policy::Propose;
        let start = StartRequest {
            environment: rule.environment.clone(),
            reference: "known-good".into(),
            region: rule.region.clone(),
            parallelism: None,
            force: false,
            prune: true,
            propose,
            decommission: false,
            kind: crate::domain::run::RunKind::Recovery,
            actor: format!("webhook:{source} (rule {}, {what})", rule.name),
            drill: None,
        };
        let view = match self.engine.start(start).await {
            Ok(v) => v,
            Err(e) => {
                if let Err(release) = self.claims.release(&id).await {
                    tracing::error!(error = %release, "cannot release the webhook claim of a run that did not start");
                }
                let status = match &e {
                    Error::Conflict(_) => StatusCode::CONFLICT,
                    Error::Store(_) | Error::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                let m = format!("not started: {what} (rule {}) could not recover {}: {e}", rule.name, rule.environment);
                return Err(Reply::new(status, "failed", m));
            }
        };
        let run = view.spec.id.clone();
        claim.run_id = Some(run.clone());
        self.processed(a, &format!("started run {run}")).await;
        if let Err(e) = self.claims.set_run(&id, &claim, etag).await {
            tracing::error!(run_id = %run, error = %e, "cannot record the run of a webhook claim; a redelivery after {}s may start another", CLAIM_TTL.as_secs());
        }
        let region = &view.spec.region;
        let env = &rule.environment;
        let version = view.spec.snapshot_version;
        let reply = if propose {
            Reply::accepted(
                "proposed",
                format!(
                    "proposed run {run} (rule {}, {what}): recovery of {env} in {region} from known-good (v{version}) waits for approval: lifeboat run approve {run}",
                    rule.name
                ),
            )
        } else {
            Reply::accepted(
                "started",
                format!(
                    "started run {run} (rule {}, {what}): recovering {env} in {region} from known-good (v{version})",
                    rule.name
                ),
            )
        };
        Ok((reply, Some(run)))
    }
}

impl Webhooks {
    /// Why this delivery is a replay, when its event was processed before.
    async fn replayed(&self, a: &Alert) -> Option<String> {
        let event_id = a.event_id.as_deref()?;
        match self.events.processed(a.source.as_str(), event_id).await {
            Ok(Some(p)) => Some(format!(
                "duplicate: event {} was already processed at {} ({}); a replayed delivery changes nothing",
                shown(event_id),
                p.at,
                p.outcome
            )),
            Ok(None) => None,
            Err(e) => {
                // An unreadable record cannot prove a replay: go on.
                tracing::error!(error = %e, "cannot read a processed webhook event");
                None
            }
        }
    }

    async fn processed(&self, a: &Alert, outcome: &str) {
        let Some(event_id) = a.event_id.as_deref() else { return };
        if let Err(e) = self.events.record(a.source.as_str(), event_id, outcome).await {
            tracing::error!(error = %e, "cannot record a processed webhook event; a replay of it could act again");
        }
    }
}

fn claim_expired(claimed_at: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(claimed_at)
        .map_or(true, |t| chrono::Utc::now().signed_duration_since(t).to_std().is_ok_and(|age| age > CLAIM_TTL))
}

/// The most `v1=` entries an `X-PagerDuty-Signature` header may carry.
const MAX_SIGNATURES: usize = 8;

/// PagerDuty: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>…]`, an HMAC-SHA256
/// of the raw body with one of the secrets. Alertmanager: `Authorization:
/// Bearer <secret>`. The reason never contains a secret.
fn authenticate(source: Source, secrets: &[Secret], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    match source {
        Source::Pagerduty => {
            let header = headers
                .get("x-pagerduty-signature")
                .ok_or("no X-PagerDuty-Signature header")?
                .to_str()
                .map_err(|_| "the X-PagerDuty-Signature header is not text")?;
            let entries: Vec<&str> = header.split(',').filter_map(|s| s.trim().strip_prefix("v1=")).collect();
            // PagerDuty sends one signature per secret of the subscription:
            // a few. Many more is an attack on the CPU, refused unread.
            if entries.len() > MAX_SIGNATURES {
                return Err(format!(
                    "the X-PagerDuty-Signature header has {} v1= signatures; at most {MAX_SIGNATURES} are read",
                    entries.len()
                ));
            }
            let signatures: Vec<Vec<u8>> = entries.iter().filter_map(|h| hex::decode(h).ok()).collect();
            if signatures.is_empty() {
                return Err("the X-PagerDuty-Signature header has no v1= signature".into());
            }
            // One HMAC of the body per secret, however many signatures.
            let valid = secrets.iter().any(|secret| {
                let mut mac =
                    Hmac::<sha2::Sha256>::new_from_slice(secret.0.as_bytes()).expect("HMAC takes keys of any length");
                mac.update(body);
                let expected = mac.finalize().into_bytes();
                signatures.iter().any(|sig| super::auth::same(sig, &expected))
            });
            if valid { Ok(()) } else { Err("the signature matches none of the configured secrets".into()) }
        }
        Source::Alertmanager => {
            let header = headers.get("authorization").ok_or("no Authorization header")?;
            let given = header
                .to_str()
                .ok()
                .and_then(super::auth::bearer)
                .ok_or("the Authorization header is not `Bearer <secret>`")?;
            let given = crate::domain::snapshot::sha256_hex(given.trim().as_bytes());
            let valid = secrets.iter().any(|s| {
                super::auth::same(crate::domain::snapshot::sha256_hex(s.0.as_bytes()).as_bytes(), given.as_bytes())
            });
            if valid { Ok(()) } else { Err("the bearer secret matches none of the configured secrets".into()) }
        }
    }
}

struct Reply {
    status: StatusCode,
    /// For metrics: started, proposed, duplicate, ignored, unauthorized, malformed, too_large, failed, not_configured.
    outcome: &'static str,
    message: String,
}

impl Reply {
    fn new(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Reply {
        Reply { status, outcome, message: message.into() }
    }

    fn accepted(outcome: &'static str, message: String) -> Reply {
        Reply::new(StatusCode::ACCEPTED, outcome, message)
    }

    fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        h
    }

    #[test]
    fn pagerduty_signatures_are_checked_against_every_secret() {
        let secrets = [Secret("old-secret".into()), Secret("new-secret".into())];
        let body = br#"{"event":{}}"#;
        let ok = |h: &HeaderMap| authenticate(Source::Pagerduty, &secrets, h, body);
        assert!(ok(&headers("x-pagerduty-signature", &sign("new-secret", body))).is_ok());
        assert!(ok(&headers("x-pagerduty-signature", &sign("old-secret", body))).is_ok());
        // Several signatures while PagerDuty rotates: any valid one passes.
        let both = format!("{}, {}", sign("gone", body), sign("old-secret", body));
        assert!(ok(&headers("x-pagerduty-signature", &both)).is_ok());
        let e = ok(&headers("x-pagerduty-signature", &sign("gone", body))).unwrap_err();
        assert!(e.contains("none of the configured secrets"), "{e}");
        assert!(ok(&HeaderMap::new()).unwrap_err().contains("no X-PagerDuty-Signature"));
        assert!(ok(&headers("x-pagerduty-signature", "v0=abc")).unwrap_err().contains("no v1="));
        let tampered = authenticate(
            Source::Pagerduty,
            &secrets,
            &headers("x-pagerduty-signature", &sign("new-secret", body)),
            b"{}",
        );
        assert!(tampered.is_err());
        // Thousands of entries (a CPU attack) are refused before any hashing.
        let many = vec![sign("gone", body); MAX_SIGNATURES + 1].join(",");
        let e = ok(&headers("x-pagerduty-signature", &many)).unwrap_err();
        assert!(e.contains("has 9 v1= signatures; at most 8 are read"), "{e}");
        let few = format!("{},{}", vec![sign("gone", body); MAX_SIGNATURES - 1].join(","), sign("new-secret", body));
        assert!(ok(&headers("x-pagerduty-signature", &few)).is_ok());
    }

    #[test]
    fn alertmanager_bearer_secrets_are_checked() {
        let secrets = [Secret("am-secret".into())];
        let ok = |h: &HeaderMap| authenticate(Source::Alertmanager, &secrets, h, b"{}");
        assert!(ok(&headers("authorization", "Bearer am-secret")).is_ok());
        assert!(ok(&headers("authorization", "Bearer am-secre")).unwrap_err().contains("none of the configured"));
        assert!(ok(&headers("authorization", "Basic eDp5")).unwrap_err().contains("Bearer"));
        assert!(ok(&HeaderMap::new()).unwrap_err().contains("no Authorization"));
    }

    #[test]
    fn a_claim_without_a_run_expires() {
        let now = chrono::Utc::now();
        assert!(!claim_expired(&now.to_rfc3339()));
        assert!(claim_expired(&(now - chrono::Duration::seconds(600)).to_rfc3339()));
        assert!(claim_expired("not a time"));
    }
}
