//! `lifeboat.v1.StoreService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Ctx, pb};
use crate::store::selftest::{self, Verdict};

pub struct Store {
    ctx: Arc<Ctx>,
}

impl Store {
    pub fn new(ctx: Arc<Ctx>) -> Store {
        Store { ctx }
    }
}

pub fn report(r: &selftest::Report) -> pb::StoreReport {
    pb::StoreReport {
        store: r.store.clone(),
        passed: r.passed(),
        rows: r
            .rows
            .iter()
            .map(|row| pb::StoreCheckRow {
                guarantee: row.guarantee.clone(),
                verdict: match row.verdict {
                    Verdict::Ok => "ok",
                    Verdict::Failed => "failed",
                    Verdict::Info => "info",
                }
                .into(),
                detail: row.detail.clone(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::store_service_server::StoreService for Store {
    async fn check(&self, _req: Request<pb::CheckStoreRequest>) -> Result<Response<pb::StoreReport>, Status> {
        let r = selftest::run(&**self.ctx.repo.store()).await;
        Ok(Response::new(report(&r)))
    }
}
