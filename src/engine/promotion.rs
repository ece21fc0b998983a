//! Moving known-good, guarded: known-good is what a recovery falls back to
//! on the worst day, so a promotion checks that every image of the snapshot
//! exists (`--force` overrides, and says so), honours the environment's
//! drill gate (the stricter of the server's policy and the manifest's), and
//! `--from-drill` promotes exactly the snapshot a passed drill restored.

use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::domain::drill::Verdict;
use crate::domain::manifest::Promotion;
use crate::domain::run::RunKind;
use crate::domain::snapshot::Snapshot;
use crate::error::{Error, Result};
use crate::provider::{CALL_LIMIT, IMAGE_CHECKS, bounded};
use crate::store::policy::{self, Policy};

/// A request to move known-good.
pub struct PromoteRequest {
    pub environment: String,
    /// A version, tag, `latest`, digest; empty with `from_drill`.
    pub reference: String,
    /// The drill run whose restored snapshot to promote (it must have passed).
    pub from_drill: String,
    /// Empty with `from_drill`: "DR drill ID passed".
    pub reason: String,
    pub expected: Option<u64>,
    /// Promote even though the image check fails (recorded in the reason).
    pub force: bool,
    pub actor: String,
}

/// A promotion done: the snapshot, and what deserves saying about it.
pub struct Promoted {
    pub snapshot: Snapshot,
    pub notes: Vec<String>,
}

impl Engine {
    pub async fn promote(&self, req: PromoteRequest) -> Result<Promoted> {
        let env = req.environment.as_str();
        let (snap, drill) = self.promotion_target(&req).await?;
        let server = policy::read(&self.ctx.store, env).await?;
        let gate = policy::effective(server.as_ref(), snap.manifest.promotion);
        let v = snap.version;
        if gate == Promotion::Drill && drill.is_none() && self.repo.passed_drills(env, v).await?.is_empty() {
            let whose = match (server.as_ref().map(|p| p.promotion), snap.manifest.promotion) {
                (Some(Promotion::Drill), _) => "the server's policy for it (`lifeboat env policy`)".to_string(),
                _ => "its manifest".to_string(),
            };
            return Err(Error::Conflict(format!(
                "snapshot {v} of {env} has no passed DR drill, and {whose} says promotion = \"drill\": run `lifeboat drill run {env} --snapshot {v} --promote-on-pass`, or `lifeboat snapshot promote {env} --from-drill RUN_ID` after a drill passed"
            )));
        }
        let mut notes = Vec::new();
        let failed = self.image_problems(&snap).await;
        let mut reason = match (&drill, req.reason.trim()) {
            (Some(id), "") => format!("DR drill {id} passed"),
            (_, r) => r.to_string(),
        };
        if !failed.is_empty() {
            if !req.force {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {v} of {env} cannot become known-good: {}; a recovery from it would fail (override with --force)",
                    failed.join("; ")
                )));
            }
            let note = format!("promoted with --force although {}", failed.join("; "));
            reason = format!("{reason} [{note}]");
            notes.push(note);
        }
        self.repo.promote_snapshot(&snap, &req.actor, &reason, req.expected).await?;
        Ok(Promoted { snapshot: snap, notes })
    }

    /// The snapshot to promote, and the drill it comes from.
    async fn promotion_target(&self, req: &PromoteRequest) -> Result<(Snapshot, Option<String>)> {
        let env = req.environment.as_str();
        if req.from_drill.is_empty() {
            if req.reference.is_empty() {
                return Err(Error::InvalidArgument("name the snapshot to promote, or --from-drill RUN_ID".into()));
            }
            if req.reason.trim().is_empty() {
                return Err(Error::InvalidArgument("a reason is required (--reason)".into()));
            }
            return Ok((self.repo.get_by_ref(env, &req.reference).await?, None));
        }
        let id = self.resolve(&req.from_drill).await?;
        let view = self.get(&id).await?;
        let spec = &view.spec;
        if spec.kind != RunKind::Drill {
            return Err(Error::InvalidArgument(format!("run {id} is a recovery, not a drill")));
        }
        if spec.environment != env {
            return Err(Error::InvalidArgument(format!("run {id} is a drill of {}, not of {env}", spec.environment)));
        }
        if !view.state.is_finished() {
            return Err(Error::FailedPrecondition(format!(
                "drill {id} is still running; wait for its verdict (`lifeboat run watch {id}`)"
            )));
        }
        let v = spec.snapshot_version;
        match view.judgement.as_ref().map(|j| (j.verdict, j.root_cause.clone())) {
            Some((Verdict::Passed, _)) => {}
            Some((verdict, why)) => {
                let why = why.map(|w| format!(": {w}")).unwrap_or_default();
                return Err(Error::FailedPrecondition(format!(
                    "drill {id} of snapshot {v} did not pass ({}{why}); known-good stays where it is",
                    verdict.as_str().replace('_', " ")
                )));
            }
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "drill {id} of snapshot {v} ended {} without a verdict; known-good stays where it is",
                    view.state.as_str()
                )));
            }
        }
        if !req.reference.is_empty() {
            let named = self.repo.get_by_ref(env, &req.reference).await?;
            if named.version != v {
                return Err(Error::InvalidArgument(format!(
                    "drill {id} restored snapshot {v}, not {} ({}); leave the snapshot out with --from-drill",
                    named.version, req.reference
                )));
            }
        }
        let snap = self.repo.get(env, v).await?;
        if snap.digest != spec.snapshot_digest {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {v} of {env} no longer has the digest drill {id} restored"
            )));
        }
        Ok((snap, Some(id)))
    }

    /// Why a recovery from `snap` could not launch its images, checked in
    /// its home region by its provider (empty: every image is there).
    async fn image_problems(&self, snap: &Snapshot) -> Vec<String> {
        let m = &snap.manifest;
        let provider = match self.ctx.providers.get(m.provider) {
            Ok(p) => p,
            Err(why) => return vec![format!("its images cannot be checked: {why}")],
        };
        let mut problems = Vec::new();
        let missing: Vec<&str> = m
            .services
            .iter()
            .filter(|(_, s)| s.image.for_region(&m.region).is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            problems.push(format!("no image for region {} for: {}", m.region, crate::domain::listed(&missing)));
        }
        let all: Vec<String> = m.services.keys().cloned().collect();
        let checks = bounded("preflight", CALL_LIMIT, &CancellationToken::new(), async {
            Ok(provider.preflight(m, &m.region, &all).await)
        })
        .await;
        match checks {
            Ok(checks) => problems.extend(
                checks
                    .into_iter()
                    .filter(|c| !c.ok && IMAGE_CHECKS.contains(&c.name.as_str()))
                    .map(|c| format!("{}: {}", c.name, c.message)),
            ),
            Err(e) => problems.push(format!("its images cannot be checked: {e}")),
        }
        problems
    }

    /// The server's policy for an environment (`manual` when never set).
    pub async fn policy(&self, env: &str) -> Result<Policy> {
        crate::store::check_environment(env)?;
        Ok(policy::read(&self.ctx.store, env).await?.unwrap_or(Policy {
            format_version: 1,
            environment: env.to_string(),
            promotion: Promotion::Manual,
            updated_by: String::new(),
            updated_at: String::new(),
        }))
    }

    pub async fn set_policy(&self, env: &str, promotion: Promotion, actor: &str) -> Result<Policy> {
        crate::store::check_environment(env)?;
        let p = Policy {
            format_version: 1,
            environment: env.to_string(),
            promotion,
            updated_by: actor.to_string(),
            updated_at: super::clock::rfc3339(self.ctx.clock.now()),
        };
        policy::write(&self.ctx.store, &p).await?;
        Ok(p)
    }
}
