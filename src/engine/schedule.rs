//! Drill schedules in the engine: stored in the object store, fired by
//! every server. Each tick fires once however many servers share the store
//! (whoever creates the tick's key first starts the drill), and a tick
//! missed while every server was down fires once when one comes back: only
//! the latest due tick is ever considered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::drill::DrillOptions;
use super::{Engine, StartRequest};
use crate::domain::run::RunKind;
use crate::domain::schedule::{Schedule, Timetable, tick_name};
use crate::error::{Error, Result};
use crate::store::codec::{self, Persisted};
use crate::store::{PutOptions, StoreError, check_environment, layout};

impl Persisted for Schedule {
    const KIND: &'static str = "drill schedule";
    const FORMAT: u32 = 1;
}

/// What `lifeboat drill schedule add` asks for.
pub struct NewSchedule {
    pub environment: String,
    pub cron: String,
    pub timezone: String,
    pub snapshot: String,
    pub region: Option<String>,
    pub promote_on_pass: bool,
    pub actor: String,
}

/// A schedule with when it fires next and what it fired last.
pub struct ScheduleView {
    pub schedule: Schedule,
    /// `create_schedule` found the same schedule and added nothing.
    pub existed: bool,
    pub next: Option<DateTime<Utc>>,
    /// (tick, the run it started or why none).
    pub last: Option<(String, String)>,
    /// The stored schedule fails its integrity check: only its ID is
    /// known, it never fires, and deleting it removes it.
    pub corruption: Option<crate::error::Corruption>,
}

/// A stored schedule, or why it cannot be read.
enum Stored {
    Ok(Schedule),
    Corrupt { id: String, corruption: crate::error::Corruption },
}

/// What is known of a corrupt schedule: its ID.
fn corrupt_view(id: String, corruption: crate::error::Corruption) -> ScheduleView {
    let schedule = Schedule {
        format_version: 1,
        id,
        environment: String::new(),
        cron: String::new(),
        timezone: String::new(),
        snapshot: String::new(),
        region: None,
        promote_on_pass: false,
        created_by: String::new(),
        created_at: String::new(),
    };
    ScheduleView { schedule, existed: false, next: None, last: None, corruption: Some(corruption) }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Engine {
    pub async fn create_schedule(&self, n: NewSchedule) -> Result<ScheduleView> {
        check_environment(&n.environment)?;
        let timezone = if n.timezone.is_empty() { "UTC".to_string() } else { n.timezone.clone() };
        let table = Timetable::parse(&n.cron, &timezone).map_err(Error::InvalidArgument)?;
        if let Some(r) = n.region.as_deref().filter(|r| !r.is_empty())
            && !crate::domain::manifest::is_valid_name(r)
        {
            return Err(Error::InvalidArgument(format!(
                "region \"{}\" is not a valid region name (lower-case letters, digits and dashes, as us-east-1)",
                crate::error::shown(r)
            )));
        }
        let snapshot = if n.snapshot.is_empty() { "latest".to_string() } else { n.snapshot.clone() };
        // The environment and snapshot must exist now: a typo is an error, not a drill that fails at 3 a.m.
        self.repo.get_by_ref(&n.environment, &snapshot).await?;
        let now = self.ctx.clock.now();
        let Some(next) = table.next_after(now) else {
            return Err(Error::InvalidArgument(format!(
                "cron expression {:?} never fires (in {timezone}): check its day and month (February has no 30th or 31st)",
                n.cron
            )));
        };
        let mut s = Schedule {
            format_version: 1,
            id: String::new(),
            environment: n.environment,
            cron: n.cron.split_whitespace().collect::<Vec<_>>().join(" "),
            timezone,
            snapshot,
            region: n.region.filter(|r| !r.is_empty()),
            promote_on_pass: n.promote_on_pass,
            created_by: n.actor,
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        // The same schedule added again (a runbook pasted twice) is the one
        // there: its ID is derived from what it does, and an older one with
        // another ID is found by comparing.
        s.id = s.derived_id();
        let same = self.schedules().await?.into_iter().find(|old| old.same_as(&s));
        if let Some(old) = same {
            return Ok(ScheduleView { existed: true, ..self.schedule_view(old).await? });
        }
        match self.ctx.store.put(&layout::schedule(&s.id), codec::encode(&s), PutOptions::create()).await {
            Ok(_) => Ok(ScheduleView { next: Some(next), schedule: s, last: None, existed: false, corruption: None }),
            Err(crate::store::StoreError::AlreadyExists { .. }) => match self.schedule(&s.id).await? {
                Some(old) => Ok(ScheduleView { existed: true, ..self.schedule_view(old).await? }),
                None => {
                    Err(Error::Conflict(format!("schedule {} was added and removed meanwhile; add it again", s.id)))
                }
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Every schedule (of `environment`), and the corrupt ones: their
    /// environment is unknown, so every listing shows them.
    pub async fn list_schedules(&self, environment: Option<&str>) -> Result<Vec<ScheduleView>> {
        let mut out = Vec::new();
        for s in self.stored_schedules().await? {
            match s {
                Stored::Ok(s) if environment.is_none_or(|e| e == s.environment) => {
                    out.push(self.schedule_view(s).await?)
                }
                Stored::Ok(_) => {}
                Stored::Corrupt { id, corruption } => out.push(corrupt_view(id, corruption)),
            }
        }
        Ok(out)
    }

    /// Removes a schedule, a corrupt one included.
    pub async fn delete_schedule(&self, id: &str) -> Result<ScheduleView> {
        let view = match self.stored_schedule(id).await? {
            None => {
                return Err(Error::NotFound(format!("no schedule {id}; `lifeboat drill schedule list` shows them")));
            }
            Some(Stored::Ok(s)) => self.schedule_view(s).await?,
            Some(Stored::Corrupt { id, corruption }) => corrupt_view(id, corruption),
        };
        self.ctx.store.delete(&layout::schedule(id)).await?;
        Ok(view)
    }

    /// Every readable schedule; a corrupt one is logged and skipped, so it
    /// stops only itself.
    async fn schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self
            .stored_schedules()
            .await?
            .into_iter()
            .filter_map(|s| match s {
                Stored::Ok(s) => Some(s),
                Stored::Corrupt { corruption: c, .. } => {
                    tracing::error!(key = %c.key, problem = %c.problem, "a corrupt drill schedule never fires; remove it with `lifeboat drill schedule remove`");
                    None
                }
            })
            .collect())
    }

    async fn stored_schedules(&self) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        for key in self.ctx.store.list(&layout::schedules_prefix()).await? {
            let Some(id) = layout::schedule_id(&key) else { continue };
            out.extend(self.stored_schedule(id).await?);
        }
        Ok(out)
    }

    async fn schedule(&self, id: &str) -> Result<Option<Schedule>> {
        match self.stored_schedule(id).await? {
            Some(Stored::Ok(s)) => Ok(Some(s)),
            Some(Stored::Corrupt { corruption: c, .. }) => Err(Error::FailedPrecondition(format!(
                "{} (object {}); delete the schedule and add it again",
                c.problem, c.key
            ))),
            None => Ok(None),
        }
    }

    async fn stored_schedule(&self, id: &str) -> Result<Option<Stored>> {
        let key = layout::schedule(id);
        match self.ctx.store.get(&key).await {
            Ok(Some(obj)) => match codec::decode(&obj.bytes, &key, &self.ctx.store.describe()) {
                Ok(s) => Ok(Some(Stored::Ok(s))),
                Err(e) => match e.corruption() {
                    Some(corruption) => Ok(Some(Stored::Corrupt { id: id.to_string(), corruption })),
                    None => Err(e),
                },
            },
            Ok(None) => Ok(None),
            // An ID that is not a valid key names no schedule.
            Err(crate::store::StoreError::InvalidKey { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A schedule with its next fire time and what it fired last.
    async fn schedule_view(&self, s: Schedule) -> Result<ScheduleView> {
        let next = Timetable::parse(&s.cron, &s.timezone).ok().and_then(|t| t.next_after(self.ctx.clock.now()));
        let last = self.last_tick(&s.id).await?;
        Ok(ScheduleView { schedule: s, next, last, existed: false, corruption: None })
    }

    async fn last_tick(&self, id: &str) -> Result<Option<(String, String)>> {
        let prefix = layout::schedule_tick(id, "");
        let Some(key) = self.ctx.store.list(&prefix).await?.into_iter().max() else { return Ok(None) };
        let what = match self.ctx.store.get(&key).await? {
            Some(o) => String::from_utf8_lossy(&o.bytes).into_owned(),
            None => String::new(),
        };
        Ok(Some((key.trim_start_matches(&prefix).to_string(), what)))
    }

    /// Fires every schedule whose latest tick is due and not fired yet.
    /// Returns the drills started.
    pub async fn fire_due_schedules(self: &Arc<Self>) -> Result<Vec<String>> {
        let now = self.ctx.clock.now();
        let mut started = Vec::new();
        // Only the due tick's own key is touched: a schedule's history is never listed here.
        for s in self.schedules().await? {
            let Ok(table) = Timetable::parse(&s.cron, &s.timezone) else { continue };
            let Some(due) = table.due(now) else { continue };
            let created = chrono::DateTime::parse_from_rfc3339(&s.created_at).map(|t| t.with_timezone(&Utc));
            if created.is_ok_and(|c| due < c) {
                continue; // ticks before the schedule existed are not missed ticks
            }
            let key = layout::schedule_tick(&s.id, &tick_name(due));
            match self.ctx.store.put(&key, Bytes::from_static(b"starting"), PutOptions::create()).await {
                Ok(_) => {}
                Err(StoreError::AlreadyExists { .. }) => continue, // another server (or this one) fired it
                Err(e) => return Err(e.into()),
            }
            let req = StartRequest {
                environment: s.environment.clone(),
                reference: s.snapshot.clone(),
                region: s.region.clone(),
                parallelism: None,
                force: false,
                prune: false,
                propose: false,
                decommission: false,
                kind: RunKind::Drill,
                actor: format!("schedule:{}", s.id),
                drill: Some(DrillOptions {
                    promote_on_pass: s.promote_on_pass,
                    schedule: Some(s.id.clone()),
                    ..Default::default()
                }),
            };
            let (outcome, target, audited) = match self.start(req).await {
                Ok(view) => {
                    tracing::info!(schedule = %s.id, run_id = %view.spec.id, tick = %rfc3339(due), "schedule fired a drill");
                    started.push(view.spec.id.clone());
                    let target = format!("{}@v{}/{}", s.environment, view.spec.snapshot_version, view.spec.id);
                    (view.spec.id.clone(), target, "ok".to_string())
                }
                Err(e) => {
                    tracing::error!(schedule = %s.id, tick = %rfc3339(due), error = %e, "schedule could not start its drill");
                    (format!("not started: {e}"), format!("{}@{}", s.environment, s.snapshot), format!("error: {e}"))
                }
            };
            // Who started it is the schedule, as `drill run` is its caller.
            let audit = crate::store::AuditLog::new(self.ctx.store.clone());
            if let Err(e) = audit.record(&format!("schedule:{}", s.id), "drill.start", &target, &audited).await {
                tracing::error!(schedule = %s.id, error = %e, "cannot write the audit record of a scheduled drill");
            }
            if let Err(e) = self.ctx.store.put(&key, Bytes::from(outcome), PutOptions::overwrite()).await {
                tracing::warn!(schedule = %s.id, error = %e, "cannot record what a schedule tick started");
            }
        }
        Ok(started)
    }

    /// Fires due schedules now and then every `every`, until aborted.
    pub fn fire_schedules_every(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.fire_due_schedules().await {
                    tracing::warn!(error = %e, "cannot fire drill schedules");
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// RFC 3339 for a schedule's times in the API.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(rfc3339).unwrap_or_default()
}
