//! Proposed runs: planned and recorded, then nothing until someone approves
//! them. A proposal holds no lease while it waits (it blocks no other
//! recovery of the region); approving it takes the lease and plans again
//! against what runs now, and the run executes that plan, not the proposal.
//! A proposal nobody approves expires after `proposal_timeout`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::clock::rfc3339;
use super::journal::{self, Journal};
use super::lease::Lease;
use super::{Engine, report};
use crate::domain::plan;
use crate::domain::run::{Event, Replan, ReplanAt, RunSpec, RunState, RunView};
use crate::error::{Error, Result};
use crate::store::codec;
use crate::store::{PutOptions, layout};

/// How long a proposal waits for its approval by default.
pub const DEFAULT_PROPOSAL_TIMEOUT: Duration = Duration::from_secs(3600);

impl Engine {
    /// Records a proposed run: its record, its first entry (it waits for
    /// approval) and a marker that the sweep finds to expire it.
    pub(super) async fn propose(&self, spec: RunSpec) -> Result<RunView> {
        let store = &self.ctx.store;
        let id = spec.id.clone();
        store.put(&layout::run_index(&id), Bytes::from_static(b"{}"), PutOptions::create()).await?;
        store.put(&layout::run_spec(&id), codec::encode_compact(&spec), PutOptions::create()).await?;
        store.put(&layout::proposal(&id), Bytes::from_static(b"{}"), PutOptions::create()).await?;
        let mut journal = Journal::new_run(store.clone(), &id);
        let now = self.ctx.clock.now();
        let expires = now + chrono::Duration::from_std(self.ctx.proposal_timeout).unwrap_or(chrono::Duration::MAX);
        let asked = Event::RunApprovalRequested { expires_at: Some(rfc3339(expires)) };
        let entries = journal.append_all(rfc3339(now), 0, vec![asked.clone()]).await?;
        let view = RunView::replay(spec, &entries);
        self.ctx.notifier.event(&view, &asked);
        Ok(view)
    }

    /// The plan of a run made again against the live inventory: services
    /// the run has not acted on take their fresh steps (`plan::refresh`).
    pub(super) async fn replan(&self, view: &RunView, at: ReplanAt) -> Result<Replan> {
        let spec = &view.spec;
        let snap = self.run_snapshot(spec).await?;
        let (_, fresh) = self
            .plan_snapshot(snap, spec.target_environment(), &spec.region, &spec.lease_key(), spec.force, spec.prune)
            .await?;
        // The run holds the lease it checks.
        let failed: Vec<String> = fresh
            .preflight
            .iter()
            .filter(|c| !c.ok && c.name != "region-lease")
            .map(|c| format!("{}: {}", c.name, c.message))
            .collect();
        // A kept service launched nothing: it is judged again like one not
        // yet started (a kept db that died while no server ran is relaunched).
        let untouched = |s: &str| view.services.get(s).is_none_or(|p| p.untouched() || p.only_kept());
        let (steps, changes) = plan::refresh(&spec.steps, untouched, fresh.steps);
        Ok(Replan {
            at,
            steps,
            critical_path: fresh.critical_path,
            critical_path_ms: fresh.critical_path_ms,
            changes,
            failed,
        })
    }

    /// Approves a proposal that waits (no server runs it): takes the
    /// region's lease, plans again, records both, and runs that plan. A
    /// plan that now fails preflight ends the run, launching nothing.
    pub(super) async fn approve_proposal(self: &Arc<Self>, view: RunView, by: &str) -> Result<RunView> {
        let id = view.spec.id.clone();
        if let Some(left) = self.expired(&view) {
            self.expire(&view, left).await?;
            return Err(Error::FailedPrecondition(format!(
                "run {id} was a proposal that expired unapproved (proposal_timeout {}); propose the recovery again",
                crate::domain::duration::human(self.ctx.proposal_timeout)
            )));
        }
        let now = self.ctx.clock.now();
        let lease =
            Lease::acquire(&self.ctx.store, &view.spec.lease_key(), &id, &self.ctx.owner, self.ctx.lease_ttl, now)
                .await
                .map_err(|e| match e {
                    Error::Conflict(why) => Error::Conflict(format!(
                        "{why}; approve run {id} again once it finishes (nothing of the proposal ran)"
                    )),
                    e => e,
                })?;
        let started = async {
            let (mut journal, mut entries) = Journal::open(self.ctx.store.clone(), &id).await?;
            let view = RunView::replay(view.spec.clone(), &entries);
            if !view.awaiting_approval() {
                return Err(Error::FailedPrecondition(format!("run {id} no longer waits for approval")));
            }
            let replan = self.replan(&view, ReplanAt::Approval).await?;
            let refused = !replan.failed.is_empty();
            let mut events = vec![Event::RunApproved { by: by.to_string() }, Event::Replanned(replan.clone())];
            if refused {
                events.push(Event::RunFinished { state: RunState::Failed });
            }
            let at = rfc3339(self.ctx.clock.now());
            let elapsed = self.elapsed_since_created(&view.spec);
            entries.extend(journal.append_all(at, elapsed, events).await?);
            Ok((journal, entries, refused, replan))
        }
        .await;
        let (journal, entries, refused, replan) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = lease.release().await;
                return Err(e);
            }
        };
        self.forget_proposal(&id).await;
        if refused {
            let _ = lease.release().await;
            let done = RunView::replay(view.spec.clone(), &entries);
            self.wrap_up(&done).await;
            return Err(Error::FailedPrecondition(format!(
                "run {id} did not start: the plan made now against what runs fails preflight: {}",
                replan.failed.join("; ")
            )));
        }
        let spec = RunView::replay(view.spec.clone(), &entries).spec;
        let snap = self.run_snapshot(&spec).await?;
        self.launch(snap, spec, journal, entries, lease, None).await
    }

    /// Cancels a proposal that waits: it ends without having launched anything.
    pub(super) async fn cancel_proposal(&self, view: &RunView, by: &str) -> Result<()> {
        let events =
            vec![Event::CancelRequested { by: by.to_string() }, Event::RunFinished { state: RunState::Cancelled }];
        self.end_proposal(view, events).await
    }

    /// A proposal past its `proposal_timeout`: how long it waited.
    fn expired(&self, view: &RunView) -> Option<Duration> {
        let waited = Duration::from_millis(self.elapsed_since_created(&view.spec));
        (view.awaiting_approval() && waited >= self.ctx.proposal_timeout).then_some(waited)
    }

    async fn expire(&self, view: &RunView, waited: Duration) -> Result<()> {
        let by = format!(
            "proposal_timeout: nobody approved it within {} (it waited {})",
            crate::domain::duration::human(self.ctx.proposal_timeout),
            crate::domain::duration::human(waited)
        );
        self.end_proposal(view, vec![Event::CancelRequested { by }, Event::RunFinished { state: RunState::Cancelled }])
            .await
    }

    async fn end_proposal(&self, view: &RunView, events: Vec<Event>) -> Result<()> {
        let id = &view.spec.id;
        let (mut journal, entries) = Journal::open(self.ctx.store.clone(), id).await?;
        let now = RunView::replay(view.spec.clone(), &entries);
        if !now.awaiting_approval() {
            return Err(Error::Conflict(format!("run {id} was approved or ended meanwhile; look again")));
        }
        let elapsed = self.elapsed_since_created(&view.spec);
        let mut all = entries;
        all.extend(journal.append_all(rfc3339(self.ctx.clock.now()), elapsed, events).await?);
        let done = RunView::replay(view.spec.clone(), &all);
        if let Some(e) = all.last() {
            self.ctx.notifier.event(&done, &e.event);
        }
        self.forget_proposal(id).await;
        self.wrap_up(&done).await;
        Ok(())
    }

    /// A run that ended without an executor: its compacted journal and report.
    async fn wrap_up(&self, done: &RunView) {
        let id = &done.spec.id;
        match journal::read_run(&self.ctx.store, id).await {
            Ok(entries) => {
                if let Err(e) = journal::compact(&self.ctx.store, id, entries).await {
                    tracing::warn!(run_id = %id, error = %e, "cannot write the compacted journal of the run");
                }
            }
            Err(e) => tracing::warn!(run_id = %id, error = %e, "cannot read the journal of the run"),
        }
        report::store(&self.ctx.store, done).await;
    }

    async fn forget_proposal(&self, id: &str) {
        if let Err(e) = self.ctx.store.delete(&layout::proposal(id)).await {
            tracing::warn!(run_id = %id, error = %e, "cannot remove the marker of a proposal that no longer waits");
        }
    }

    /// Ends every proposal that waited longer than `proposal_timeout` (from the sweep).
    pub(super) async fn expire_proposals(&self) -> Result<()> {
        for key in self.ctx.store.list(&layout::proposals_prefix()).await? {
            let Some(id) = layout::run_id_from_proposal(&key) else { continue };
            let view = match self.get(id).await {
                Ok(v) => v,
                Err(Error::NotFound(_)) => {
                    self.forget_proposal(id).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(run_id = %id, error = %e, "cannot read a proposal to expire it");
                    continue;
                }
            };
            if !view.awaiting_approval() {
                self.forget_proposal(id).await;
            } else if let Some(waited) = self.expired(&view) {
                match self.expire(&view, waited).await {
                    Ok(()) => tracing::info!(run_id = %id, "proposal expired unapproved"),
                    Err(e) => tracing::warn!(run_id = %id, error = %e, "cannot expire a proposal"),
                }
            }
        }
        Ok(())
    }

    /// Milliseconds since a run was created (wall clock, across servers).
    pub(super) fn elapsed_since_created(&self, spec: &RunSpec) -> u64 {
        super::clock::ms_since(&spec.created_at, self.ctx.clock.now())
    }
}
