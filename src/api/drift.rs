//! `lifeboat.v1.DriftService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::to_status;
use super::{Ctx, convert, pb};
use crate::store::check_environment;

pub struct Drift {
    ctx: Arc<Ctx>,
}

impl Drift {
    pub fn new(ctx: Arc<Ctx>) -> Drift {
        Drift { ctx }
    }
}

#[tonic::async_trait]
impl pb::drift_service_server::DriftService for Drift {
    async fn check(&self, req: Request<pb::DriftRequest>) -> Result<Response<pb::DriftReport>, Status> {
        let r = req.into_inner();
        check_environment(&r.environment).map_err(to_status)?;
        let report = self.ctx.engine.drift(&r.environment, Some(&r.region)).await.map_err(to_status)?;
        Ok(Response::new(convert::drift(&report)))
    }
}
