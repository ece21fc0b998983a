//! `lifeboat.v1.DrillService`: drills, their reports, the sweeper and schedules.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::status::to_status;
use super::{Ctx, actor, convert, pb};
use crate::domain::run::{RunKind, RunView};
use crate::engine::StartRequest;
use crate::engine::drill::DrillOptions;
use crate::engine::schedule::{NewSchedule, ScheduleView, time};
use crate::error::Error;
use crate::store::check_environment;

pub struct Drill {
    ctx: Arc<Ctx>,
}

impl Drill {
    pub fn new(ctx: Arc<Ctx>) -> Drill {
        Drill { ctx }
    }

    async fn drill(&self, view: &RunView) -> Result<pb::Drill, Status> {
        // A corrupt teardown record is named on the drill, not the end of the listing.
        match self.ctx.engine.teardown_of(&view.spec.id).await {
            Ok(teardown) => Ok(drill(view, teardown)),
            Err(e) => match e.corruption() {
                Some(c) => Ok(pb::Drill { teardown_corruption: Some(convert::corruption(c)), ..drill(view, None) }),
                None => Err(to_status(e)),
            },
        }
    }
}

fn duration(what: &str, text: &str) -> Result<Option<Duration>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| to_status(Error::InvalidArgument(format!("{what} {text:?} is not a duration (30m, 2h): {e}"))))
}

pub fn drill(view: &RunView, teardown: Option<crate::engine::drill::Teardown>) -> pb::Drill {
    let j = view.judgement.as_ref();
    let d = view.spec.drill.as_ref();
    let (removed, remaining) = match (&teardown, &view.torn_down) {
        (Some(t), _) => (t.instances.clone(), t.remaining.clone()),
        (None, Some((i, r))) => (i.clone(), r.clone()),
        (None, None) => (Vec::new(), Vec::new()),
    };
    pb::Drill {
        run: Some(convert::run(view)),
        verdict: j.map(|j| j.verdict.as_str().to_string()).unwrap_or_default(),
        rto_seconds: j.map_or(0.0, |j| j.rto_ms as f64 / 1000.0),
        rto_objective_seconds: d.and_then(|d| d.rto_objective_ms).map_or(0.0, |o| o as f64 / 1000.0),
        critical_path: j.map(|j| j.critical_path.clone()).unwrap_or_default(),
        critical_path_ms: j.map_or(0, |j| j.critical_path_ms),
        root_cause: j.and_then(|j| j.root_cause.clone()).unwrap_or_default(),
        namespace: d.map(|d| d.namespace.clone()).unwrap_or_default(),
        addresses: d
            .map(|d| {
                d.isolation
                    .addresses
                    .iter()
                    .map(|a| pb::AddressMapping {
                        service: a.service.clone(),
                        production: a.production.clone(),
                        drill: a.drill.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        torn_down: teardown.is_some() || view.torn_down.is_some(),
        instances_removed: removed,
        remaining,
        kept_until: view.kept_until.clone().unwrap_or_default(),
        promotion: view.promotion.as_ref().map(|(_, d)| d.clone()).unwrap_or_default(),
        schedule: d.and_then(|d| d.schedule.clone()).unwrap_or_default(),
        teardown_corruption: None,
        isolation_warnings: d.map(|d| d.warnings.clone()).unwrap_or_default(),
        network_namespace: d.and_then(|d| d.isolation.network.clone()).unwrap_or_default(),
    }
}

fn schedule(v: &ScheduleView) -> pb::Schedule {
    let s = &v.schedule;
    let (last_fired_at, last_run_id) = v.last.clone().unwrap_or_default();
    pb::Schedule {
        id: s.id.clone(),
        environment: s.environment.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        snapshot: s.snapshot.clone(),
        promote_on_pass: s.promote_on_pass,
        created_by: s.created_by.clone(),
        created_at: s.created_at.clone(),
        next_fire_at: time(v.next),
        last_fired_at,
        last_run_id,
        region: s.region.clone().unwrap_or_default(),
        already_existed: v.existed,
        corruption: v.corruption.clone().map(convert::corruption),
    }
}

#[tonic::async_trait]
impl pb::drill_service_server::DrillService for Drill {
    async fn start(&self, req: Request<pb::StartDrillRequest>) -> Result<Response<pb::Drill>, Status> {
        let who = actor(&req);
        if req.get_ref().promote_on_pass {
            super::auth::require(
                &req,
                super::auth::Role::Admin,
                "moving known-good when the drill passes (--promote-on-pass)",
            )?;
        }
        let r = req.into_inner();
        check_environment(&r.environment).map_err(to_status)?;
        let reference = if r.snapshot.trim().is_empty() { "latest".to_string() } else { r.snapshot.clone() };
        let opts = DrillOptions {
            keep_for: duration("--keep-for", &r.keep_for)?.unwrap_or_default(),
            timeout: duration("--timeout", &r.timeout)?,
            promote_on_pass: r.promote_on_pass,
            schedule: None,
        };
        let start = StartRequest {
            environment: r.environment.clone(),
            reference: reference.clone(),
            region: Some(r.region.clone()).filter(|x| !x.is_empty()),
            parallelism: (r.parallelism > 0).then_some(r.parallelism as usize),
            force: false,
            prune: false,
            propose: false,
            decommission: false,
            kind: RunKind::Drill,
            actor: who.clone(),
            drill: Some(opts),
        };
        let target = format!("{}@{reference}", r.environment);
        let acted_on = |v: &RunView| format!("{}@v{}/{}", v.spec.environment, v.spec.snapshot_version, v.spec.id);
        let view = self
            .ctx
            .audited_as(&who, "drill.start", &target, acted_on, self.ctx.engine.start(start))
            .await
            .map_err(to_status)?;
        Ok(Response::new(self.drill(&view).await?))
    }

    async fn get(&self, req: Request<pb::GetDrillRequest>) -> Result<Response<pb::Drill>, Status> {
        let id = self.ctx.engine.resolve(&req.into_inner().id).await.map_err(to_status)?;
        let view = self.ctx.engine.get(&id).await.map_err(to_status)?;
        if view.spec.kind != RunKind::Drill {
            return Err(to_status(Error::NotFound(format!(
                "run {id} is a recovery, not a drill: `lifeboat run show {id}`"
            ))));
        }
        Ok(Response::new(self.drill(&view).await?))
    }

    async fn list(&self, req: Request<pb::ListDrillsRequest>) -> Result<Response<pb::ListDrillsResponse>, Status> {
        let r = req.into_inner();
        let env = Some(r.environment.as_str()).filter(|e| !e.is_empty());
        if let Some(e) = env {
            check_environment(e).map_err(to_status)?;
        }
        let limit = if r.limit == 0 { 20 } else { r.limit.min(1000) as usize };
        let listed = self.ctx.engine.list_of(env, Some(RunKind::Drill), false, limit).await.map_err(to_status)?;
        let mut drills = Vec::new();
        for v in &listed.runs {
            drills.push(self.drill(v).await?);
        }
        let corrupt = listed.corrupt.into_iter().map(|c| convert::corruption(c.corruption)).collect();
        Ok(Response::new(pb::ListDrillsResponse { drills, corrupt }))
    }

    async fn get_report(&self, req: Request<pb::GetDrillRequest>) -> Result<Response<pb::RunReport>, Status> {
        let id = self.ctx.engine.resolve(&req.into_inner().id).await.map_err(to_status)?;
        let (json, html) = self.ctx.engine.report(&id).await.map_err(to_status)?;
        Ok(Response::new(pb::RunReport { run_id: id, json, html }))
    }

    async fn sweep(&self, req: Request<pb::SweepDrillsRequest>) -> Result<Response<pb::SweepDrillsResponse>, Status> {
        let who = actor(&req);
        let sweep =
            self.ctx.audited(&who, "drill.sweep", "-", self.ctx.engine.sweep_drills()).await.map_err(to_status)?;
        Ok(Response::new(pb::SweepDrillsResponse {
            errors: sweep.errors,
            swept: sweep
                .swept
                .into_iter()
                .map(|s| pb::SweptDrill {
                    namespace: s.namespace,
                    region: s.region,
                    run_id: s.run_id,
                    reason: s.reason,
                    removed: s.removed,
                    remaining: s.remaining,
                })
                .collect(),
        }))
    }

    async fn create_schedule(&self, req: Request<pb::CreateScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        let target = r.environment.clone();
        let n = NewSchedule {
            environment: r.environment,
            cron: r.cron,
            timezone: r.timezone,
            snapshot: r.snapshot,
            region: Some(r.region),
            promote_on_pass: r.promote_on_pass,
            actor: who.clone(),
        };
        let v = self
            .ctx
            .audited_as(
                &who,
                "drill.schedule.create",
                &target,
                |v: &ScheduleView| format!("{}/{}", v.schedule.environment, v.schedule.id),
                self.ctx.engine.create_schedule(n),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(schedule(&v)))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let r = req.into_inner();
        let env = Some(r.environment.as_str()).filter(|e| !e.is_empty());
        let views = self.ctx.engine.list_schedules(env).await.map_err(to_status)?;
        Ok(Response::new(pb::ListSchedulesResponse { schedules: views.iter().map(schedule).collect() }))
    }

    async fn delete_schedule(&self, req: Request<pb::DeleteScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let who = actor(&req);
        let id = req.into_inner().id;
        let v = self
            .ctx
            .audited(&who, "drill.schedule.delete", &id, self.ctx.engine.delete_schedule(&id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(schedule(&v)))
    }
}
