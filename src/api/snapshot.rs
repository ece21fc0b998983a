//! `lifeboat.v1.SnapshotService`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::to_status;
use super::{Ctx, actor, convert, pb};
use crate::domain::manifest;
use crate::domain::snapshot::{self, Snapshot};
use crate::domain::source::Format;
use crate::error::{Error, Result};
use crate::store::NewSnapshot;
use crate::store::check_environment;

pub struct Snapshots {
    ctx: Arc<Ctx>,
}

impl Snapshots {
    pub fn new(ctx: Arc<Ctx>) -> Snapshots {
        Snapshots { ctx }
    }

    /// The proto form with the refs that point at it and its rejection.
    async fn view(&self, s: &Snapshot, with_manifest: bool) -> Result<pb::Snapshot> {
        let refs = self.ctx.repo.refs(&s.environment).await?;
        let names = refs.iter().filter(|(_, r)| r.version == s.version).map(|(n, _)| n.clone()).collect();
        let rejection = self.ctx.repo.rejection(&s.environment, s.version).await?;
        Ok(convert::snapshot(s, names, rejection, with_manifest))
    }
}

fn format_of(format: &str, source_name: &str, text: &str) -> Result<Format> {
    match format {
        "" => Ok(Format::detect(source_name, text)),
        "toml" => Ok(Format::Toml),
        "json" => Ok(Format::Json),
        other => Err(Error::InvalidArgument(format!("unknown manifest format \"{other}\"; expected toml or json"))),
    }
}

fn source_name(name: &str) -> String {
    if name.is_empty() { "manifest".into() } else { name.to_string() }
}

fn require(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() { Err(Error::InvalidArgument(format!("{field} is required"))) } else { Ok(()) }
}

fn ok<T>(r: Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(to_status)
}

#[tonic::async_trait]
impl pb::snapshot_service_server::SnapshotService for Snapshots {
    async fn create(&self, req: Request<pb::CreateSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let who = actor(&req);
        let request_id = super::request_id(&req);
        let r = req.into_inner();
        let name = source_name(&r.source_name);
        let result = async {
            let format = format_of(&r.format, &name, &r.manifest)?;
            let m = manifest::parse(r.manifest.as_bytes(), format)
                .map_err(|problems| Error::InvalidManifest { source_name: name.clone(), problems })?;
            for k in r.labels.keys() {
                if k.is_empty() || k.len() > 128 {
                    return Err(Error::InvalidArgument(format!("label key {k:?} must be 1 to 128 characters")));
                }
            }
            let env = m.environment.clone();
            let new = NewSnapshot {
                manifest: m,
                author: who.clone(),
                message: r.message,
                labels: r.labels.into_iter().collect::<BTreeMap<_, _>>(),
            };
            let push = self.ctx.repo.push_once(new, request_id.as_deref());
            let snap = self.ctx.audited(&who, "snapshot.push", &env, push).await?;
            self.view(&snap, false).await
        };
        ok(result.await)
    }

    async fn get(&self, req: Request<pb::GetSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let r = req.into_inner();
        ok(async {
            let snap = self.ctx.repo.get_by_ref(&r.environment, &r.r#ref).await?;
            self.view(&snap, true).await
        }
        .await)
    }

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let r = req.into_inner();
        ok(async {
            check_environment(&r.environment)?;
            let snaps = self.ctx.repo.list(&r.environment).await?;
            let refs = self.ctx.repo.refs(&r.environment).await?;
            let mut out = Vec::with_capacity(snaps.len());
            for s in &snaps {
                let names = refs.iter().filter(|(_, x)| x.version == s.version).map(|(n, _)| n.clone()).collect();
                let rejection = self.ctx.repo.rejection(&s.environment, s.version).await?;
                out.push(convert::snapshot(s, names, rejection, false));
            }
            Ok(pb::ListSnapshotsResponse { snapshots: out })
        }
        .await)
    }

    async fn diff(
        &self,
        req: Request<pb::DiffSnapshotsRequest>,
    ) -> Result<Response<pb::DiffSnapshotsResponse>, Status> {
        let r = req.into_inner();
        ok(async {
            let a = self.ctx.repo.get_by_ref(&r.environment, &r.from_ref).await?;
            let b = self.ctx.repo.get_by_ref(&r.environment, &r.to_ref).await?;
            let d = snapshot::diff(&a.manifest, &b.manifest);
            Ok(convert::diff(&d, self.view(&a, false).await?, self.view(&b, false).await?))
        }
        .await)
    }

    async fn promote(&self, req: Request<pb::PromoteSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        ok(async {
            require("reason", &r.reason)?;
            let target = format!("{}@{}", r.environment, r.r#ref);
            let op = self.ctx.repo.promote(&r.environment, &r.r#ref, &who, &r.reason, r.expected_version);
            let snap = self.ctx.audited(&who, "snapshot.promote", &target, op).await?;
            self.view(&snap, false).await
        }
        .await)
    }

    async fn reject(&self, req: Request<pb::RejectSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        ok(async {
            require("reason", &r.reason)?;
            let target = format!("{}@{}", r.environment, r.r#ref);
            let op = self.ctx.repo.reject(&r.environment, &r.r#ref, &who, &r.reason);
            let snap = self.ctx.audited(&who, "snapshot.reject", &target, op).await?;
            self.view(&snap, false).await
        }
        .await)
    }

    async fn tag(&self, req: Request<pb::TagSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        ok(async {
            let target = format!("{}@{} as {}", r.environment, r.r#ref, r.tag);
            let op = self.ctx.repo.tag(&r.environment, &r.r#ref, &r.tag, &who, r.expected_version, r.force);
            let snap = self.ctx.audited(&who, "snapshot.tag", &target, op).await?;
            self.view(&snap, false).await
        }
        .await)
    }

    async fn validate(
        &self,
        req: Request<pb::ValidateManifestRequest>,
    ) -> Result<Response<pb::ValidateManifestResponse>, Status> {
        let r = req.into_inner();
        ok(async {
            let name = source_name(&r.source_name);
            let format = format_of(&r.format, &name, &r.manifest)?;
            let problems = manifest::parse(r.manifest.as_bytes(), format).err().unwrap_or_default();
            Ok(pb::ValidateManifestResponse {
                valid: problems.is_empty(),
                problems: problems
                    .into_iter()
                    .map(|p| pb::ManifestProblem {
                        position: p.pos.map(|x| x.to_string()).unwrap_or_default(),
                        path: p.path,
                        message: p.message,
                    })
                    .collect(),
            })
        }
        .await)
    }
}
