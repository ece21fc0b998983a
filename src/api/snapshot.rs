//! `lifeboat.v1.SnapshotService`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::to_status;
use super::{Ctx, actor, convert, pb};
use crate::domain::manifest;
use crate::domain::snapshot::{self, Snapshot};
use crate::domain::source::Format;
use crate::engine::{PromoteRequest, Promoted};
use crate::error::{Error, Result};
use crate::store::check_environment;
use crate::store::snapshots::Listed;
use crate::store::{NewSnapshot, RefRecord};

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

    /// A listed snapshot's view, corrupt or not.
    async fn listed_view(&self, env: &str, s: &Listed, refs: &BTreeMap<String, RefRecord>) -> Result<pb::Snapshot> {
        let names = refs.iter().filter(|(_, r)| r.version == s.version()).map(|(n, _)| n.clone()).collect();
        let rejection = self.ctx.repo.rejection(env, s.version()).await?;
        Ok(match s {
            Listed::Ok(snap) => convert::snapshot(snap, names, rejection, false),
            Listed::Corrupt(c) => convert::corrupt_snapshot(env, c, names, rejection),
        })
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

/// How an audit record names a snapshot acted on: `shop@v3`.
pub(super) fn snapshot_target(s: &Snapshot) -> String {
    format!("{}@v{}", s.environment, s.version)
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
            if !r.force
                && let Some((v, rej)) = self.ctx.repo.rejected_twin(&m).await?
            {
                return Err(Error::FailedPrecondition(format!(
                    "this manifest is exactly snapshot {v} of {env}, which {} rejected at {}: {}; push it again anyway with --force",
                    rej.by, rej.at, rej.reason
                )));
            }
            let new = NewSnapshot {
                manifest: m,
                author: who.clone(),
                message: r.message,
                labels: r.labels.into_iter().collect::<BTreeMap<_, _>>(),
            };
            let push = self.ctx.repo.push_once(new, request_id.as_deref());
            let snap = self.ctx.audited_as(&who, "snapshot.push", &env, snapshot_target, push).await?;
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
                out.push(self.listed_view(&r.environment, s, &refs).await?);
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
            let env = &r.environment;
            let a = self.ctx.repo.get_listed(env, self.ctx.repo.resolve(env, &r.from_ref).await?).await?;
            let b = self.ctx.repo.get_listed(env, self.ctx.repo.resolve(env, &r.to_ref).await?).await?;
            let refs = self.ctx.repo.refs(env).await?;
            let (from, to) = (self.listed_view(env, &a, &refs).await?, self.listed_view(env, &b, &refs).await?);
            Ok(match (&a, &b) {
                (Listed::Ok(a), Listed::Ok(b)) => convert::diff(&snapshot::diff(&a.manifest, &b.manifest), from, to),
                // A corrupt side has no content to compare: both are reported.
                _ => pb::DiffSnapshotsResponse { from: Some(from), to: Some(to), ..Default::default() },
            })
        }
        .await)
    }

    async fn promote(&self, req: Request<pb::PromoteSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        ok(async {
            let named = if r.from_drill.is_empty() { r.r#ref.clone() } else { format!("drill {}", r.from_drill) };
            let target = format!("{}@{named}", r.environment);
            let op = self.ctx.engine.promote(PromoteRequest {
                environment: r.environment.clone(),
                reference: r.r#ref,
                from_drill: r.from_drill,
                reason: r.reason,
                expected: r.expected_version,
                force: r.force,
                actor: who.clone(),
            });
            let done = self
                .ctx
                .audited_noting(
                    &who,
                    "snapshot.promote",
                    &target,
                    |p: &Promoted| (snapshot_target(&p.snapshot), p.notes.clone()),
                    op,
                )
                .await?;
            let mut view = self.view(&done.snapshot, false).await?;
            view.warnings = done.notes;
            Ok(view)
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
            let snap = self
                .ctx
                .audited_as(
                    &who,
                    "snapshot.reject",
                    &target,
                    |l: &Listed| format!("{}@v{}", r.environment, l.version()),
                    op,
                )
                .await?;
            self.listed_view(&r.environment, &snap, &self.ctx.repo.refs(&r.environment).await?).await
        }
        .await)
    }

    async fn tag(&self, req: Request<pb::TagSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        ok(async {
            let target = format!("{}@{} as {}", r.environment, r.r#ref, r.tag);
            let op = self.ctx.repo.tag(&r.environment, &r.r#ref, &r.tag, &who, r.expected_version, r.force);
            let snap = self.ctx.audited_as(&who, "snapshot.tag", &target, snapshot_target, op).await?;
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

    async fn get_policy(&self, req: Request<pb::GetPolicyRequest>) -> Result<Response<pb::EnvironmentPolicy>, Status> {
        let r = req.into_inner();
        ok(async { Ok(convert::policy(&self.ctx.engine.policy(&r.environment).await?)) }.await)
    }

    async fn set_policy(&self, req: Request<pb::SetPolicyRequest>) -> Result<Response<pb::EnvironmentPolicy>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        ok(async {
            let promotion = match r.promotion.as_str() {
                "manual" => manifest::Promotion::Manual,
                "drill" => manifest::Promotion::Drill,
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "promotion \"{}\" is not a policy; expected manual or drill",
                        crate::error::shown(other)
                    )));
                }
            };
            let target = r.environment.clone();
            let outcome_target = format!("{target} promotion={}", r.promotion);
            let op = self.ctx.engine.set_policy(&r.environment, promotion, &who);
            let p = self.ctx.audited_as(&who, "env.policy", &target, |_| outcome_target.clone(), op).await?;
            Ok(convert::policy(&p))
        }
        .await)
    }
}
