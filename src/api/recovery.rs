//! `lifeboat.v1.RecoveryService`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::status::to_status;
use super::{Ctx, actor, convert, pb};
use crate::domain::run::{RunKind, RunView};
use crate::engine::StartRequest;
use crate::engine::logs::LogsRequest;
use crate::error::Error;
use crate::store::check_environment;

pub struct Recovery {
    ctx: Arc<Ctx>,
}

impl Recovery {
    pub fn new(ctx: Arc<Ctx>) -> Recovery {
        Recovery { ctx }
    }
}

fn snapshot_ref(r: &str) -> &str {
    if r.trim().is_empty() { "known-good" } else { r }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::recovery_service_server::RecoveryService for Recovery {
    async fn plan(&self, req: Request<pb::PlanRequest>) -> Result<Response<pb::PlanResponse>, Status> {
        let r = req.into_inner();
        check_environment(&r.environment).map_err(to_status)?;
        let engine = &self.ctx.engine;
        let (_, plan) = match r.decommission {
            true => engine.plan_decommission(&r.environment, snapshot_ref(&r.snapshot), Some(&r.region), r.force).await,
            false => {
                engine.plan(&r.environment, snapshot_ref(&r.snapshot), Some(&r.region), r.force, !r.no_prune).await
            }
        }
        .map_err(to_status)?;
        Ok(Response::new(convert::plan(&plan)))
    }

    async fn start(&self, req: Request<pb::StartRecoveryRequest>) -> Result<Response<pb::Run>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        check_environment(&r.environment).map_err(to_status)?;
        let start = StartRequest {
            environment: r.environment.clone(),
            reference: snapshot_ref(&r.snapshot).to_string(),
            region: Some(r.region.clone()).filter(|x| !x.is_empty()),
            parallelism: (r.parallelism > 0).then_some(r.parallelism as usize),
            force: r.force,
            prune: !r.no_prune,
            propose: r.propose,
            decommission: r.decommission,
            kind: RunKind::Recovery,
            actor: who.clone(),
            drill: None,
        };
        let target = format!("{}@{}", r.environment, snapshot_ref(&r.snapshot));
        let action = if r.decommission { "recovery.decommission" } else { "recovery.start" };
        let acted_on = |v: &RunView| {
            format!("{}@v{} in {}/{}", v.spec.environment, v.spec.snapshot_version, v.spec.region, v.spec.id)
        };
        let view = self
            .ctx
            .audited_as(&who, action, &target, acted_on, self.ctx.engine.start(start))
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::run(&view)))
    }

    async fn get(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = self.ctx.engine.resolve(&req.into_inner().id).await.map_err(to_status)?;
        let view = self.ctx.engine.get(&id).await.map_err(to_status)?;
        Ok(Response::new(convert::run(&view)))
    }

    async fn list(&self, req: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        let r = req.into_inner();
        let env = Some(r.environment.as_str()).filter(|e| !e.is_empty());
        if let Some(e) = env {
            check_environment(e).map_err(to_status)?;
        }
        let limit = if r.limit == 0 { 20 } else { r.limit.min(1000) as usize };
        let listed = self.ctx.engine.list(env, r.awaiting_approval, limit).await.map_err(to_status)?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: listed.runs.iter().map(convert::run).collect(),
            corrupt: listed.corrupt.into_iter().map(|c| convert::corruption(c.corruption)).collect(),
        }))
    }

    type WatchStream = EventStream;

    async fn watch(&self, req: Request<pb::WatchRunRequest>) -> Result<Response<EventStream>, Status> {
        let caller = super::auth::stream_caller(&req);
        let r = req.into_inner();
        let run_id = self.ctx.engine.resolve(&r.id).await.map_err(to_status)?;
        // Refusals (no such run, past the end, too many watchers) come before the stream starts.
        let stream = self
            .ctx
            .engine
            .watch(&run_id, r.from_seq, &caller)
            .await
            .map_err(to_status)?
            .map(|item| item.map(convert::event).map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel(&self, req: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        let who = actor(&req);
        let id = self.ctx.engine.resolve(&req.into_inner().id).await.map_err(to_status)?;
        let target = self.ctx.engine.run_target(&id).await.map_err(to_status)?;
        let view = self
            .ctx
            .audited(&who, "run.cancel", &target, self.ctx.engine.cancel(&id, &who))
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::run(&view)))
    }

    async fn approve(&self, req: Request<pb::ApproveRequest>) -> Result<Response<pb::Run>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        let id = self.ctx.engine.resolve(&r.id).await.map_err(to_status)?;
        let target = format!("{} {}", self.ctx.engine.run_target(&id).await.map_err(to_status)?, r.service);
        let target = target.trim_end().to_string();
        let op = self.ctx.engine.approve(&id, &r.service, &who);
        let view = self.ctx.audited(&who, "run.approve", &target, op).await.map_err(to_status)?;
        Ok(Response::new(convert::run(&view)))
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let r = req.into_inner();
        let env = Some(r.environment.as_str()).filter(|e| !e.is_empty());
        if let Some(e) = env {
            check_environment(e).map_err(to_status)?;
        }
        let envs = self.ctx.engine.status(env).await.map_err(to_status)?;
        Ok(Response::new(pb::StatusResponse { environments: envs.iter().map(convert::environment_status).collect() }))
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let caller = super::auth::stream_caller(&req);
        let r = req.into_inner();
        if r.run_id.is_empty() {
            // An environment, or a kept drill's namespace (`shop.drill.r-…`).
            match crate::domain::drill::parse_namespace(&r.environment) {
                Some((base, run)) => {
                    check_environment(base).map_err(to_status)?;
                    self.ctx.engine.resolve(run).await.map_err(to_status)?;
                }
                None => check_environment(&r.environment).map_err(to_status)?,
            }
        }
        if !crate::domain::manifest::is_valid_name(&r.service) {
            return Err(to_status(Error::InvalidArgument(format!(
                "\"{}\" is not a service name",
                crate::error::shown(&r.service)
            ))));
        }
        let request = LogsRequest {
            environment: r.environment,
            service: r.service,
            region: Some(r.region).filter(|x| !x.is_empty()),
            run_id: Some(r.run_id).filter(|x| !x.is_empty()),
            lines: if r.lines == 0 { 100 } else { r.lines as usize },
            follow: r.follow,
            caller,
        };
        let stream = self
            .ctx
            .engine
            .logs(request)
            .await
            .map_err(to_status)?
            .map(|item| item.map(|l| pb::LogLine { instance: l.instance, line: l.line }).map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resume(&self, req: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        let who = actor(&req);
        let id = self.ctx.engine.resolve(&req.into_inner().id).await.map_err(to_status)?;
        let target = self.ctx.engine.run_target(&id).await.map_err(to_status)?;
        let view =
            self.ctx.audited(&who, "run.resume", &target, self.ctx.engine.resume(&id)).await.map_err(to_status)?;
        Ok(Response::new(convert::run(&view)))
    }
}
