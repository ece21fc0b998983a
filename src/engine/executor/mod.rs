//! Runs a plan: eager DAG scheduling with bounded parallelism, blue-green per
//! service, failure isolation, approvals, cancellation, lease renewal.
//!
//! One loop owns the journal. Service tasks ask it to persist an event and
//! wait for the acknowledgement before acting ("journal before act"), so a
//! crash at any point leaves a journal from which the run can resume without
//! launching anything twice (launches are idempotent per attempt key).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::clock::rfc3339;
use super::journal::Journal;
use super::lease::Lease;
use super::{Control, RunContext};
use crate::domain::dag::Dag;
use crate::domain::manifest::{Manifest, VerifyCheck};
use crate::domain::run::{Action, Entry, Event, PlannedStep, RunSpec, RunState, RunView, ServiceState};
use crate::error::{Error, Result};
use crate::provider::{CALL_LIMIT, ComputeProvider, ServiceRef, bounded};

/// Failure reports wait this long at most for an instance's last lines.
const LOGS_LIMIT: Duration = Duration::from_secs(10);

/// An event a task wants persisted; the reply says whether to go on.
struct Msg {
    event: Event,
    ack: oneshot::Sender<bool>,
}

/// A journal write in flight: its entries, or why it failed, and how long it took.
type Made = (Result<Vec<Entry>>, Duration);

/// How long events nobody waits for (`ServiceTask::record`: the instances a
/// launch made) may wait to share the write of an event somebody waits for.
/// The journal then makes fewer writes (each a file, or a request), and is
/// free more often when a health gate passes.
const LINGER: Duration = Duration::from_millis(20);

/// A step of a link of the critical path (one service's health gate to its
/// dependent's launch) as a TRACE event of target `lifeboat::timeline`, for
/// the benchmark harness's `--timeline`, which shows where each link's time
/// goes. Unless a subscriber asks for them, each costs an atomic load.
macro_rules! timeline {
    ($service:expr, $step:literal) => {
        tracing::trace!(target: "lifeboat::timeline", service = %$service, step = $step)
    };
}

/// Whether anyone listens to `timeline!` (the loop's steps look through a batch).
fn timeline_on() -> bool {
    tracing::enabled!(target: "lifeboat::timeline", tracing::Level::TRACE)
}
/// A new run's record being written, which its first journal write waits for.
mod service;
mod side;

use service::ServiceTask;
use side::{commit, decommission, final_probe, remove_service, verify_checks};

pub type Registration = tokio::task::JoinHandle<Result<()>>;

/// What to do once a journal write in flight is made.
struct InFlight {
    acks: Vec<oneshot::Sender<bool>>,
    /// Services whose failure it records: their dependents are skipped.
    failed: Vec<String>,
    /// Services whose launch it announces.
    announced: Vec<usize>,
    /// Services it records past their health gate.
    passed: Vec<usize>,
    /// It started while another write was in flight.
    beside: bool,
}

enum Outcome {
    /// Cut over; these old instances are to be decommissioned.
    CutOver(Vec<String>),
    Done,
}

pub struct Executor {
    ctx: Arc<RunContext>,
    /// The provider the run's snapshot names.
    provider: Arc<dyn ComputeProvider>,
    manifest: Arc<Manifest>,
    view: RunView,
    journal: Journal,
    lease: Option<Lease>,
    dag: Dag,
    events: broadcast::Sender<Entry>,
    control: mpsc::Receiver<Control>,
    /// User cancellation: tasks clean up what they launched.
    cancel: CancellationToken,
    /// Lost ownership: tasks stop without touching anything.
    abort: CancellationToken,
    clock_start: tokio::time::Instant,
    base_elapsed: u64,
    seen_requests: BTreeSet<String>,
    /// Per service (DAG index): dependencies not yet healthy.
    waiting_on: Vec<usize>,
    /// Services whose dependencies are all healthy, in the order they became so.
    ready: VecDeque<usize>,
    /// Per service: its current attempt passed the health gate (`Healthy`
    /// is durable) and is not cut over yet.
    gated: Vec<bool>,
    /// Per service: its task reported the cutover done (durable or not yet).
    cut: Vec<bool>,
    /// Services whose launch is announced in the journal and whose task has
    /// not started (they hold a parallelism slot).
    announced: BTreeSet<usize>,
    /// Per service (DAG index): its task (or, for a deletion, its removal) was started.
    running: Vec<bool>,
    /// Per service: an attempt in flight when this owner took the run over,
    /// which the owner before may have launched, even cut over.
    inherited: Vec<bool>,
    /// Dependents to announce in the next write, ahead of their
    /// dependencies' health gates (`queue_ahead`).
    ahead: Vec<usize>,
    /// Until when the region lease surely holds (`last_renewal` plus the TTL
    /// less the margin), for tasks that act without a write first.
    holds: watch::Sender<tokio::time::Instant>,
    /// Journal writes in flight, oldest first, and what each is for: up to
    /// two (the journal's readers and fences allow for exactly one write
    /// past a lost one), as many as the store is seen to make in parallel.
    writes: FuturesOrdered<BoxFuture<'static, Made>>,
    depth: super::depth::Depth,
    in_flight: VecDeque<InFlight>,
    /// Failed services whose dependents are still to be skipped.
    to_skip: Vec<String>,
    /// Events received while the journal was busy, for the next write.
    pending: Vec<Msg>,
    /// When the oldest of `pending` arrived.
    pending_since: Option<tokio::time::Instant>,
    /// When the region lease was last taken or renewed: while it surely
    /// holds, store hiccups are waited out instead of ending the run.
    last_renewal: tokio::time::Instant,
    /// Per service: the step in progress and when it began (for metrics).
    spans: std::collections::HashMap<String, (&'static str, u64)>,
    /// Why a drill was stopped at its timeout.
    timed_out: Option<String>,
    /// Counted in `lifeboat_runs_active` (until the run finishes).
    counted_active: bool,
    /// Every durable entry of the run, for its compacted journal.
    record: Vec<Entry>,
    /// The run's final view, set before watchers hear that it finished:
    /// until the executor ends (its compacted journal written), `Engine::get`
    /// answers from it instead of reading the journal objects.
    finished: Arc<std::sync::OnceLock<RunView>>,
}

impl Executor {
    /// Prepares a run (new or resumed) and persists its first event.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin(
        ctx: Arc<RunContext>,
        manifest: Arc<Manifest>,
        spec: Arc<RunSpec>,
        journal: Journal,
        entries: &[Entry],
        lease: Lease,
        events: broadcast::Sender<Entry>,
        control: mpsc::Receiver<Control>,
        registration: Option<Registration>,
    ) -> Result<Executor> {
        let provider = ctx
            .providers
            .get(manifest.provider)
            .map_err(|why| Error::FailedPrecondition(format!("run {} cannot go on: {why}", spec.id)))?;
        let view = RunView::replay(spec, entries);
        let dag = Dag::new(view.spec.steps.iter().map(|s| (s.service.as_str(), s.depends_on.as_slice())));
        let abort = CancellationToken::new();
        let cancel = abort.child_token();
        // Times are relative to the run's start, across servers: a resumed
        // run goes on from the wall-clock time since it was created.
        let since_created = super::clock::ms_since(&view.spec.created_at, ctx.clock.now());
        let base_elapsed = if entries.is_empty() { 0 } else { view.elapsed_ms.max(since_created) };
        let mut ex = Executor {
            ctx,
            provider,
            manifest,
            view,
            journal,
            lease: Some(lease),
            dag,
            events,
            control,
            cancel,
            abort,
            clock_start: tokio::time::Instant::now(),
            base_elapsed,
            seen_requests: BTreeSet::new(),
            waiting_on: Vec::new(),
            ready: VecDeque::new(),
            gated: Vec::new(),
            cut: Vec::new(),
            announced: BTreeSet::new(),
            running: Vec::new(),
            inherited: Vec::new(),
            ahead: Vec::new(),
            holds: watch::channel(tokio::time::Instant::now()).0,
            writes: FuturesOrdered::new(),
            depth: Default::default(),
            in_flight: VecDeque::new(),
            to_skip: Vec::new(),
            pending: Vec::new(),
            pending_since: None,
            last_renewal: tokio::time::Instant::now(),
            spans: std::collections::HashMap::new(),
            timed_out: None,
            counted_active: false,
            record: entries.to_vec(),
            finished: Default::default(),
        };
        ex.gated = vec![false; ex.dag.len()];
        ex.cut = vec![false; ex.dag.len()];
        ex.running = vec![false; ex.dag.len()];
        ex.inherited = ex.view.spec.steps.iter().map(|s| ex.view.services[&s.service].attempt_in_flight()).collect();
        ex.holds.send_replace(ex.holds_until());
        let states: Vec<ServiceState> = (0..ex.dag.len()).map(|i| ex.state_of(i)).collect();
        ex.waiting_on = (0..ex.dag.len())
            .map(|i| ex.dag.deps(i).iter().filter(|&&d| states[d] != ServiceState::Healthy).count())
            .collect();
        // Deletions (prune) are not scheduled by the DAG: they wait for the rest.
        ex.ready = (0..ex.dag.len())
            .filter(|&i| ex.waiting_on[i] == 0 && !states[i].is_terminal())
            .filter(|&i| ex.view.spec.steps[i].action != Action::Delete)
            .collect();
        let owner = ex.ctx.owner.clone();
        let new_run = registration.is_some();
        if let Some(registration) = registration {
            let registered = registration.await.unwrap_or_else(|e| {
                Err(Error::Internal(format!("writing the record of run {} failed: {e}", ex.view.spec.id)))
            });
            if let Err(e) = registered {
                if let Some(lease) = ex.lease.take()
                    && let Err(release) = lease.release().await
                {
                    tracing::warn!(run_id = %ex.view.spec.id, error = %release, "cannot release the lease of a run that failed to start");
                }
                return Err(e);
            }
        }
        let started = entries.iter().any(|e| matches!(e.event, Event::RunStarted { .. }));
        let resumed_here =
            entries.last().is_some_and(|e| matches!(&e.event, Event::RunResumed { owner: o } if *o == owner));
        if !started {
            // A new run (or an approved proposal) announces the launches it
            // can start at once in its first write, so the first launches
            // wait for one write, not two.
            let roots: Vec<usize> = if ex.view.cancel_requested {
                Vec::new()
            } else {
                let room = ex.view.spec.parallelism.clamp(1, super::journal::MAX_BATCH - 1);
                ex.ready.iter().copied().filter(|&i| ex.starts_with_a_launch(i)).take(room).collect()
            };
            let mut first = vec![Event::RunStarted { owner }];
            first.extend(
                roots.iter().map(|&i| Event::LaunchStarted { service: ex.dag.name(i).to_string(), attempt: 1 }),
            );
            if let Err(e) = ex.persist_all(first).await {
                // The caller hears that the run did not start: it must not
                // run later either. The lease goes back now, and a resume of
                // a run whose journal is empty abandons it (Engine::resume).
                if new_run
                    && let Some(lease) = ex.lease.take()
                    && let Err(release) = lease.release().await
                {
                    tracing::warn!(run_id = %ex.view.spec.id, error = %release, "cannot release the lease of a run that failed to start");
                }
                return Err(e);
            }
            ex.announced.extend(roots);
        } else if !resumed_here {
            ex.persist(Event::RunResumed { owner }).await?;
        }
        if ex.view.cancel_requested {
            ex.cancel.cancel();
        }
        Ok(ex)
    }

    pub fn view(&self) -> &RunView {
        &self.view
    }

    /// Where the run's final view appears once it has finished.
    pub fn finished(&self) -> Arc<std::sync::OnceLock<RunView>> {
        self.finished.clone()
    }

    fn elapsed_ms(&self) -> u64 {
        self.base_elapsed + self.clock_start.elapsed().as_millis() as u64
    }

    fn state_of(&self, i: usize) -> ServiceState {
        self.view.services[self.dag.name(i)].state
    }

    /// How long before the lease could lapse this owner stops acting.
    fn lease_margin(&self) -> Duration {
        (self.ctx.lease_ttl / 3).max(Duration::from_millis(100))
    }

    /// Until when the region lease surely holds: past it, this owner stops
    /// acting. Another server may see it lapse `max_clock_skew` early.
    fn holds_until(&self) -> tokio::time::Instant {
        let sure =
            self.ctx.lease_ttl.saturating_sub(self.lease_margin()).saturating_sub(self.ctx.safety.max_clock_skew);
        self.last_renewal + sure
    }

    /// The next journal write (events that arrived together as one write),
    /// made as a future that waits out a store unavailable for a while,
    /// bounded by the lease: past the time it surely holds, this owner stops
    /// acting. It reports how long it took (for the depth, `depth.rs`).
    fn write(&mut self, events: Vec<Event>) -> BoxFuture<'static, Made> {
        let at = rfc3339(self.ctx.clock.now());
        let elapsed = self.elapsed_ms().max(self.view.elapsed_ms);
        let write = self.journal.prepare(at, elapsed, events);
        let holds_until = self.holds_until();
        let run_id = self.view.spec.id.clone();
        // On a task of its own, so the request goes out now, while this loop
        // absorbs the write before it and starts tasks (polled only by the
        // loop, it waited for all of that). Dropping the future aborts the
        // write, as dropping the write itself did.
        let made = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let began = tokio::time::Instant::now();
            let made = commit(write, run_id, holds_until).await;
            (made, began.elapsed())
        }));
        Box::pin(async move {
            made.await
                .unwrap_or_else(|e| (Err(Error::Internal(format!("a journal write stopped: {e}"))), Duration::ZERO))
        })
    }

    async fn persist(&mut self, event: Event) -> Result<()> {
        self.persist_all(vec![event]).await
    }

    /// Makes events durable (one journal write per `MAX_BATCH`), after every
    /// write in flight, then acts on each in order.
    async fn persist_all(&mut self, events: Vec<Event>) -> Result<()> {
        self.drain().await?;
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let batch: Vec<Event> = events.by_ref().take(super::journal::MAX_BATCH).collect();
            for entry in self.write(batch).await.0? {
                self.absorb(entry);
            }
        }
        Ok(())
    }

    /// Writes every event received and waits for every write in flight,
    /// acting on each.
    async fn drain(&mut self) -> Result<()> {
        loop {
            self.flush_now(0);
            let Some(result) = self.writes.next().await else { return Ok(()) };
            self.written(result)?;
        }
    }

    /// The oldest journal write in flight is made (or failed): its entries
    /// are absorbed and the tasks waiting for it hear. Dependents of the
    /// failures it records are skipped by the loop (`skip_failed`).
    fn written(&mut self, (result, took): Made) -> Result<()> {
        let done = self.in_flight.pop_front().expect("one record per write in flight");
        if let Some((depth, alone, beside)) = self.depth.made(done.beside, took) {
            tracing::debug!(
                run_id = %self.view.spec.id,
                depth,
                alone_ms = alone,
                beside_ms = beside,
                "journal writes in flight changed (median write alone and beside another)"
            );
        }
        let entries = match result {
            Ok(entries) => entries,
            Err(e) => {
                // Dropped acknowledgements tell the waiting tasks to stop.
                return Err(e);
            }
        };
        // The tasks hear first: their events are durable, and what they do
        // next (a cutover, a launch) reaches this loop only after it has
        // absorbed the write.
        if timeline_on() {
            done.announced.iter().for_each(|&i| timeline!(self.dag.name(i), "launch durable"));
        }
        done.acks.into_iter().for_each(|a| {
            let _ = a.send(true);
        });
        for entry in entries {
            self.absorb(entry);
        }
        self.announced.extend(done.announced);
        self.to_skip.extend(done.failed);
        Ok(())
    }

    /// Skips the dependents of services whose failure was written.
    async fn skip_failed(&mut self) -> Result<()> {
        for f in std::mem::take(&mut self.to_skip) {
            self.skip_dependents(&f).await?;
        }
        Ok(())
    }

    /// A durable entry: the run's state, metrics, watchers, notifications,
    /// and the dependents it makes ready.
    fn absorb(&mut self, entry: Entry) {
        let turned_healthy = match &entry.event {
            Event::CutOver { service, .. } | Event::Kept { service } => {
                self.dag.index_of(service).filter(|&i| self.state_of(i) != ServiceState::Healthy)
            }
            _ => None,
        };
        self.observe(&entry);
        self.view.apply(&entry);
        self.record.push(entry.clone());
        if let Some(i) = entry.event.service().and_then(|s| self.dag.index_of(s)) {
            match &entry.event {
                Event::Healthy { .. } => self.gated[i] = true,
                Event::AttemptFailed { .. } | Event::CutOver { .. } => self.gated[i] = false,
                Event::LaunchStarted { .. } if self.running[i] => self.queue_ahead(i),
                _ => {}
            }
            if self.state_of(i).is_terminal() {
                self.gated[i] = false;
                self.announced.remove(&i);
            }
        }
        self.ctx.notifier.event(&self.view, &entry.event);
        if matches!(entry.event, Event::RunFinished { .. }) {
            let _ = self.finished.set(self.view.clone());
        }
        let _ = self.events.send(entry);
        // Dependents whose last dependency this was become ready.
        if let Some(i) = turned_healthy {
            for k in 0..self.dag.dependents(i).len() {
                let d = self.dag.dependents(i)[k];
                self.waiting_on[d] -= 1;
                if self.waiting_on[d] == 0 && !self.state_of(d).is_terminal() {
                    self.ready.push_back(d);
                }
            }
        }
    }

    /// Step durations (launch → instances launched → healthy → cut over)
    /// and finished runs, for the metrics.
    fn observe(&mut self, e: &Entry) {
        let m = crate::metrics::get();
        let next = match &e.event {
            Event::LaunchStarted { .. } => Some("launch"),
            Event::InstancesLaunched { .. } => Some("health_gate"),
            Event::Healthy { .. } => Some("cutover"),
            _ => None,
        };
        if let Some(service) = e.event.service() {
            let ended = match &e.event {
                Event::InstancesLaunched { .. } => Some("launch"),
                Event::Healthy { .. } => Some("health_gate"),
                Event::CutOver { .. } => Some("cutover"),
                _ => None,
            };
            if let (Some(step), Some((began, at))) = (ended, self.spans.get(service).copied())
                && step == began
            {
                let secs = e.elapsed_ms.saturating_sub(at) as f64 / 1000.0;
                m.step_seconds.get_or_create(&crate::metrics::labels(&[("step", step)])).observe(secs);
            }
            match next {
                Some(step) => {
                    self.spans.insert(service.to_string(), (step, e.elapsed_ms));
                }
                None => {
                    self.spans.remove(service);
                }
            }
        }
        if let Event::RunFinished { state } = &e.event {
            // Finished: no longer active, whatever is still written after (the report).
            if std::mem::take(&mut self.counted_active) {
                m.runs_active.dec();
            }
            let kind = if self.view.spec.kind == crate::domain::run::RunKind::Drill { "drill" } else { "recovery" };
            let env = self.view.spec.environment.as_str();
            let l = crate::metrics::labels(&[("kind", kind), ("environment", env), ("outcome", state.as_str())]);
            m.runs.get_or_create(&l).inc();
            let l = crate::metrics::labels(&[("kind", kind), ("environment", env)]);
            m.run_seconds.get_or_create(&l).observe(e.elapsed_ms as f64 / 1000.0);
        }
    }

    fn step(&self, name: &str) -> &PlannedStep {
        // The DAG was built from the steps in order: indices match.
        &self.view.spec.steps[self.dag.index_of(name).expect("every service has a step")]
    }

    /// The launches to announce in the write of `events`: those queued
    /// ahead of their dependencies' health gates (`queue_ahead`), then those
    /// that `events` make possible (a dependent of a service they record past
    /// its gate, announced with it: when it was not announced ahead, each
    /// link of the critical path then waits for this one write). A `CutOver`
    /// or `Kept` announces what an earlier write could not (no free slot
    /// then). Only a fresh first attempt that can start at once (no approval
    /// to wait for, a free slot) is announced; its task then carries on with
    /// the launch in flight, as a resumed one does. A launch is never
    /// announced before every dependency is under way, and a service launches
    /// only once every dependency is cut over (`start_early`, `absorb`).
    fn announce_launches(&mut self, events: &[Event], slots: usize) -> Vec<Event> {
        let ahead = std::mem::take(&mut self.ahead);
        if slots == 0 || self.cancel.is_cancelled() {
            return Vec::new();
        }
        let room = slots.min(super::journal::MAX_BATCH.saturating_sub(events.len()));
        // Services of this batch past their health gate, in order.
        let passed: Vec<usize> = events.iter().filter_map(|e| self.past_gate_in(e)).collect();
        let candidates = ahead.into_iter().chain(passed.iter().flat_map(|&i| self.dag.dependents(i).iter().copied()));
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for d in candidates {
            if out.len() >= room {
                break;
            }
            if seen.insert(d) && self.may_announce(d, &passed) {
                out.push(Event::LaunchStarted { service: self.dag.name(d).to_string(), attempt: 1 });
            }
        }
        out
    }

    /// Whether a service's task (or removal) was started.
    fn task_started(&self, name: &str) -> bool {
        self.dag.index_of(name).is_some_and(|i| self.running[i])
    }

    /// Whether a service's health gate is under way: its task runs and its
    /// launch is durable (the attempt it records includes the cutover).
    fn launching(&self, i: usize) -> bool {
        self.running[i] && matches!(self.state_of(i), ServiceState::Launching | ServiceState::HealthGate)
    }

    /// A service's launch became durable with its task running: its
    /// dependents whose other dependencies are under way too (or past their
    /// gates) are announced in the next write, ahead of those gates, so that
    /// when the last gate passes and its cutover is done they launch at once,
    /// with no write in between (`ServiceTask::attempt`). Only the next level
    /// is announced: an announced service's own dependents wait for its task.
    fn queue_ahead(&mut self, i: usize) {
        for k in 0..self.dag.dependents(i).len() {
            let d = self.dag.dependents(i)[k];
            if !self.ahead.contains(&d) && self.may_announce(d, &[]) {
                self.ahead.push(d);
            }
        }
    }

    /// Whether a service's first launch may be announced now: it would start
    /// with a launch, nothing announces it yet, and every dependency is past
    /// its health gate (`passed`: in the write being prepared) or under way.
    fn may_announce(&self, d: usize, passed: &[usize]) -> bool {
        let under_way = |x: usize| {
            self.state_of(x) == ServiceState::Healthy
                || self.gated[x]
                || self.cut[x]
                || passed.contains(&x)
                || self.in_flight.iter().any(|w| w.passed.contains(&x))
                || self.launching(x)
        };
        !self.announced.contains(&d)
            && !self.announcing(d)
            && self.starts_with_a_launch(d)
            && self.dag.deps(d).iter().all(|&x| under_way(x))
    }

    /// Announced dependents of services whose cutover their tasks just
    /// reported start now (their launch is durable already), without waiting
    /// for the `CutOver` to be written: a crash before it is written resumes
    /// the dependency at its health gate, and the dependent's relaunch with
    /// the same key finds what it launched.
    fn start_early(&mut self, msgs: &[Msg]) {
        for m in msgs {
            let Event::CutOver { service, .. } = &m.event else { continue };
            let Some(i) = self.dag.index_of(service) else { continue };
            self.cut[i] = true;
            for k in 0..self.dag.dependents(i).len() {
                let d = self.dag.dependents(i)[k];
                let deps_cut =
                    self.dag.deps(d).iter().all(|&x| self.cut[x] || self.state_of(x) == ServiceState::Healthy);
                if self.announced.contains(&d) && deps_cut {
                    self.ready.push_front(d);
                }
            }
        }
    }

    /// Starts ready services' tasks, up to the run's parallelism.
    fn fill(
        &mut self,
        tasks: &mut JoinSet<(String, Outcome)>,
        tx: &mpsc::Sender<Msg>,
        approvals: &watch::Receiver<BTreeSet<String>>,
    ) {
        let parallelism = self.view.spec.parallelism.max(1);
        let mut not_yet = Vec::new();
        while tasks.len() < parallelism {
            let Some(i) = self.ready.pop_front() else { break };
            if self.announcing(i) {
                // Its launch is not durable yet: it starts after that write.
                not_yet.push(i);
                continue;
            }
            let name = self.dag.name(i).to_string();
            if self.state_of(i).is_terminal() || self.running[i] {
                continue;
            }
            self.announced.remove(&i);
            self.running[i] = true;
            timeline!(name, "task started");
            let task = self.task(&name, tx.clone(), approvals.clone());
            tasks.spawn(async move { (name, task.run().await) });
            if self.launching(i) {
                self.queue_ahead(i);
            }
        }
        for i in not_yet.into_iter().rev() {
            self.ready.push_front(i);
        }
    }

    /// Whether a write in flight announces this service's launch.
    fn announcing(&self, i: usize) -> bool {
        self.in_flight.iter().any(|w| w.announced.contains(&i))
    }

    /// Whether a ready service's task would begin by launching its first attempt.
    fn starts_with_a_launch(&self, i: usize) -> bool {
        let name = self.dag.name(i);
        let p = &self.view.services[name];
        let step = self.step(name);
        let approval = self.manifest.services.get(name).is_some_and(|s| s.approval) && p.approved_by.is_none();
        p.state == ServiceState::Pending
            && p.attempts == 0
            && !approval
            && matches!(step.action, Action::Create | Action::Replace)
    }

    /// Marks every not-yet-finished transitive dependent of a failed service skipped.
    async fn skip_dependents(&mut self, failed: &str) -> Result<()> {
        let Some(i) = self.dag.index_of(failed) else { return Ok(()) };
        let mut queue = vec![i];
        let mut seen = BTreeSet::new();
        let mut to_skip = Vec::new();
        while let Some(v) = queue.pop() {
            for &d in self.dag.dependents(v) {
                if seen.insert(d) {
                    queue.push(d);
                    let name = self.dag.name(d).to_string();
                    if !self.view.services[&name].state.is_terminal() {
                        to_skip.push(name);
                    }
                }
            }
        }
        to_skip.sort();
        for service in to_skip {
            self.persist(Event::Skipped { service, upstream: failed.to_string() }).await?;
        }
        Ok(())
    }

    /// A service of the region that the snapshot does not have.
    fn retired_ref(&self, name: &str) -> ServiceRef {
        ServiceRef {
            environment: self.view.spec.target_environment().to_string(),
            region: self.view.spec.region.clone(),
            service: name.to_string(),
            settings: Default::default(),
            health: None,
            tags: Default::default(),
        }
    }

    /// Where a service of the snapshot runs, for the provider.
    fn target(&self, name: &str) -> ServiceRef {
        let svc = &self.manifest.services[name];
        ServiceRef {
            environment: self.view.spec.target_environment().to_string(),
            region: self.view.spec.region.clone(),
            service: name.to_string(),
            settings: svc.launch.clone(),
            health: svc.health.clone(),
            tags: svc.tags.clone(),
        }
    }

    /// A cancelled service whose attempt the owner before may have launched
    /// (even cut over) and this owner never carried on: its instances, found
    /// by the run's tag (and those recorded), are removed, traffic pointed
    /// back first to the instances they were to replace. A step that
    /// fails is logged and the cancel goes on; what stays, `lifeboat status`
    /// lists with its run.
    async fn withdraw(&mut self, name: &str) {
        // A server that lost the run touches nothing.
        if self.abort.is_cancelled() {
            return;
        }
        let target = self.target(name);
        let old = &self.step(name).current;
        let found =
            bounded("inventory", CALL_LIMIT, &self.abort, self.provider.inventory(&target.environment, &target.region))
                .await;
        let found = found.unwrap_or_else(|e| {
            tracing::error!(run_id = %self.view.spec.id, service = name, error = %e, "cannot list the instances a cancelled attempt may have launched");
            Vec::new()
        });
        let ours: Vec<_> = found
            .iter()
            .filter(|i| i.service == name && i.run_id == self.view.spec.id && !old.contains(&i.id))
            .collect();
        let recorded = self.view.services[name].instances.iter();
        let theirs: BTreeSet<&String> = recorded.chain(ours.iter().map(|i| &i.id)).collect();
        let theirs: Vec<String> = theirs.into_iter().cloned().collect();
        if theirs.is_empty() {
            return;
        }
        let serving = ours.iter().any(|i| i.serving);
        let back = match (serving, old.is_empty()) {
            (false, _) => Ok(()),
            (true, false) => bounded("cutover", CALL_LIMIT, &self.abort, self.provider.cutover(&target, old)).await,
            (true, true) => bounded("retire", CALL_LIMIT, &self.abort, self.provider.retire(&target)).await,
        };
        if let Err(e) = back {
            tracing::error!(run_id = %self.view.spec.id, service = name, error = %e, "cannot point traffic back before removing a cancelled attempt's instances; they stay");
            return;
        }
        if let Err(e) = bounded("terminate", CALL_LIMIT, &self.abort, self.provider.terminate(&theirs)).await {
            tracing::error!(run_id = %self.view.spec.id, service = name, error = %e, "cannot remove a cancelled attempt's instances");
        }
    }

    fn task(&self, name: &str, tx: mpsc::Sender<Msg>, approvals: watch::Receiver<BTreeSet<String>>) -> ServiceTask {
        let step = self.step(name).clone();
        let svc = self.manifest.services[name].clone();
        ServiceTask {
            provider: self.provider.clone(),
            target: self.target(name),
            progress: self.view.services[name].clone(),
            elapsed_ms: self.elapsed_ms(),
            step,
            svc,
            run_id: self.view.spec.id.clone(),
            snapshot: self.view.spec.snapshot_version,
            tx,
            approvals,
            cancel: self.cancel.clone(),
            abort: self.abort.clone(),
            holds: self.holds.subscribe(),
            fenced: self.ctx.safety.cutover == super::CutoverMode::Fenced,
        }
    }

    async fn handle_control(&mut self, c: Control, approvals: &watch::Sender<BTreeSet<String>>) -> Result<()> {
        match c {
            Control::Cancel { by } => {
                if !self.view.cancel_requested && !self.view.state.is_finished() {
                    self.persist(Event::CancelRequested { by }).await?;
                }
                self.cancel.cancel();
            }
            // A whole run is approved before it runs (`Engine::approve_proposal`).
            Control::Approve { service, .. } if service.is_empty() => {}
            Control::Approve { service, by } => {
                let waiting = self.view.services.get(&service).is_some_and(|s| s.approved_by.is_none());
                if waiting {
                    self.persist(Event::Approved { service: service.clone(), by }).await?;
                }
                approvals.send_modify(|a| {
                    a.insert(service);
                });
            }
        }
        Ok(())
    }

    /// A drill's end: its verdict, then teardown (or keep, when it passed
    /// with `--keep-for`), then `--promote-on-pass`. Returns the run's state.
    async fn finish_drill(&mut self) -> Result<RunState> {
        let d = self.view.spec.drill.clone().expect("a drill");
        let timed_out = self.timed_out.clone().or_else(|| {
            let by_timeout = self.view.cancel_requested && self.view.judgement.is_none();
            // A resumed run whose timeout passed while no server ran it.
            (by_timeout && self.elapsed_ms() >= d.timeout_ms).then(|| {
                format!(
                    "the drill timed out after {}",
                    crate::domain::duration::human(Duration::from_millis(d.timeout_ms))
                )
            })
        });
        let judgement = match self.view.judgement.clone() {
            Some(j) => j,
            None => {
                let j = crate::domain::drill::judge(&self.view, d.rto_objective_ms, timed_out.as_deref());
                self.persist(Event::DrillJudged { judgement: j.clone() }).await?;
                j
            }
        };
        let passed = judgement.verdict != crate::domain::drill::Verdict::Failed;
        if passed && d.keep_for_ms > 0 {
            if self.view.kept_until.is_none() {
                let until = self.ctx.clock.now() + chrono::Duration::milliseconds(d.keep_for_ms as i64);
                let until = until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                self.persist(Event::DrillKept { until }).await?;
            }
        } else if self.view.torn_down.is_none() {
            let (instances, remaining) =
                super::drill::tear_down(self.provider.as_ref(), &d.namespace, &self.view.spec.region).await;
            let record = super::drill::Teardown {
                format_version: 1,
                run_id: self.view.spec.id.clone(),
                at: self.ctx.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                by: "run".into(),
                instances: instances.clone(),
                remaining: remaining.clone(),
            };
            super::drill::write_teardown(&self.ctx.store, &record).await;
            self.persist(Event::DrillTornDown { instances, remaining }).await?;
        }
        if self.view.promotion.is_none()
            && let Some((promoted, detail)) = super::drill::after_pass(&self.ctx.store, &self.view, &judgement).await
        {
            self.persist(Event::DrillPromotion { promoted, detail }).await?;
        }
        Ok(crate::domain::drill::final_state(&judgement, self.view.cancel_requested && timed_out.is_none()))
    }

    /// Picks up cancel/approve requests written by any server.
    async fn poll_requests(&mut self, approvals: &watch::Sender<BTreeSet<String>>) -> Result<()> {
        for (id, c) in super::read_requests(&self.ctx.store, &self.view.spec.id).await? {
            if self.seen_requests.insert(id) {
                self.handle_control(c, approvals).await?;
            }
        }
        Ok(())
    }

    /// Drives the run to its end. `Err(Conflict)` means it was fenced off.
    pub async fn run(mut self) -> Result<RunView> {
        let active = &crate::metrics::get().runs_active;
        active.inc();
        self.counted_active = true;
        let result = self.drive().await;
        if self.counted_active {
            active.dec();
        }
        if result.is_err() {
            // Fenced or the store is gone: stop without cleaning up, so that
            // whoever resumes the run finds everything as the journal says.
            self.abort.cancel();
        }
        result
    }

    async fn drive(&mut self) -> Result<RunView> {
        let (tx, mut rx) = mpsc::channel::<Msg>(256);
        let approved: BTreeSet<String> =
            self.view.services.values().filter(|s| s.approved_by.is_some()).map(|s| s.name.clone()).collect();
        let (approvals_tx, approvals_rx) = watch::channel(approved);
        let mut tasks: JoinSet<(String, Outcome)> = JoinSet::new();
        let mut decommissions: JoinSet<()> = JoinSet::new();
        let mut verify_started = false;
        // A resumed run that probed already does not probe again.
        let mut probe_started = self.view.probed.is_some();

        // Resumed: cut-over services whose old instances were not yet removed.
        for s in self.view.spec.steps.clone() {
            let p = &self.view.services[&s.service];
            if p.state == ServiceState::Healthy
                && matches!(s.action, Action::Create | Action::Replace)
                && !p.decommissioned
                && !s.current.is_empty()
            {
                let grace = self.manifest.services[&s.service].grace_period.0;
                decommissions.spawn(decommission(
                    self.provider.clone(),
                    s.service.clone(),
                    s.current.clone(),
                    grace,
                    tx.clone(),
                    self.abort.clone(),
                ));
            }
        }

        let renew_every = self.lease_margin();
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        // A drill is cancelled (and torn down) at its timeout, counted from its start.
        let drill_timeout = self.view.spec.drill.as_ref().map(|d| Duration::from_millis(d.timeout_ms));
        let deadline = drill_timeout
            .map(|t| tokio::time::Instant::now() + t.saturating_sub(Duration::from_millis(self.elapsed_ms())));
        let mut timed_out = false;
        loop {
            self.skip_failed().await?;
            self.join_finished(&mut tasks, &mut decommissions, &tx).await?;
            if self.cancel.is_cancelled() {
                let pending: Vec<String> = self
                    .view
                    .services
                    .values()
                    .filter(|s| !s.state.is_terminal() && !self.task_started(&s.name))
                    .map(|s| s.name.clone())
                    .collect();
                for service in pending {
                    if self.dag.index_of(&service).is_some_and(|i| self.inherited[i]) {
                        self.withdraw(&service).await;
                    }
                    self.persist(Event::ServiceCancelled { service }).await?;
                }
                self.ready.clear();
            } else {
                self.fill(&mut tasks, &tx, &approvals_rx);
                // Launches the started tasks let it announce ahead go out now.
                self.flush(tasks.len());
            }
            // Every service the run holds healthy is probed once more as it
            // ends, kept ones included: a run never reports healthy what is
            // not healthy now.
            if tasks.is_empty() && self.ready.is_empty() && !self.cancel.is_cancelled() && !probe_started {
                probe_started = true;
                let expected = self.view.to_probe();
                if !expected.is_empty() {
                    let (env, region) =
                        (self.view.spec.target_environment().to_string(), self.view.spec.region.clone());
                    tasks.spawn(final_probe(
                        self.provider.clone(),
                        env,
                        region,
                        expected,
                        tx.clone(),
                        self.abort.clone(),
                    ));
                    continue;
                }
            }
            // Once every service is healthy, the manifest's smoke checks run
            // (those a resumed run has not recorded yet).
            if tasks.is_empty() && self.ready.is_empty() && !self.cancel.is_cancelled() && !verify_started {
                let all_healthy = self
                    .view
                    .spec
                    .steps
                    .iter()
                    .filter(|s| s.action != Action::Delete)
                    .all(|s| self.view.services[&s.service].state == ServiceState::Healthy);
                let done: BTreeSet<&str> = self.view.verify.iter().map(|(c, _, _)| c.as_str()).collect();
                let pending: Vec<VerifyCheck> =
                    self.manifest.verify.iter().filter(|c| !done.contains(c.name.as_str())).cloned().collect();
                verify_started = true;
                if all_healthy && !pending.is_empty() {
                    let (m, region) = (self.manifest.clone(), self.view.spec.region.clone());
                    tasks.spawn(verify_checks(m, region, pending, tx.clone()));
                    continue;
                }
            }
            // Services absent from the snapshot go once everything else is
            // healthy (and verified); if anything did not make it, they stay.
            let verify_failed = self.view.verify.iter().any(|(_, passed, _)| !passed);
            if tasks.is_empty() && self.ready.is_empty() && !self.cancel.is_cancelled() {
                let deletions: Vec<PlannedStep> = self
                    .view
                    .spec
                    .steps
                    .iter()
                    .filter(|s| s.action == Action::Delete)
                    .filter(|s| !self.view.services[&s.service].state.is_terminal() && !self.task_started(&s.service))
                    .cloned()
                    .collect();
                if !deletions.is_empty() {
                    let blocker = self
                        .view
                        .spec
                        .steps
                        .iter()
                        .filter(|s| s.action != Action::Delete)
                        .find(|s| self.view.services[&s.service].state != ServiceState::Healthy)
                        .map(|s| s.service.clone())
                        .or_else(|| verify_failed.then(|| "verify".to_string()));
                    for step in deletions {
                        match &blocker {
                            Some(upstream) => {
                                let upstream = upstream.clone();
                                self.persist(Event::Skipped { service: step.service.clone(), upstream }).await?;
                            }
                            None => {
                                if let Some(i) = self.dag.index_of(&step.service) {
                                    self.running[i] = true;
                                }
                                let target = self.retired_ref(&step.service);
                                tasks.spawn(remove_service(
                                    self.provider.clone(),
                                    target,
                                    step,
                                    tx.clone(),
                                    self.abort.clone(),
                                ));
                            }
                        }
                    }
                    continue;
                }
            }
            // With no task in flight the fill above emptied `ready`.
            if tasks.is_empty()
                && decommissions.is_empty()
                && self.writes.is_empty()
                && self.pending.is_empty()
                && self.ready.is_empty()
            {
                // Nothing in flight and nothing can start: skip what failures
                // left behind (the loop's top), drain late messages, then finish.
                if !self.to_skip.is_empty() {
                    continue;
                }
                if let Ok(msg) = rx.try_recv() {
                    self.hold(vec![msg]);
                    self.flush_now(0);
                    continue;
                }
                break;
            }
            tokio::select! {
                Some(msg) = rx.recv() => {
                    // Whatever else is waiting goes into the same journal write.
                    let mut batch = vec![msg];
                    while batch.len() < super::journal::MAX_BATCH {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    if timeline_on() {
                        for m in &batch {
                            if let Event::CutOver { service, .. } = &m.event {
                                timeline!(service, "cutover received");
                            }
                        }
                    }
                    if !self.cancel.is_cancelled() {
                        self.start_early(&batch);
                        self.join_finished(&mut tasks, &mut decommissions, &tx).await?;
                        self.fill(&mut tasks, &tx, &approvals_rx);
                    }
                    self.hold(batch);
                    self.flush(tasks.len());
                }
                Some(result) = self.writes.next(), if !self.writes.is_empty() => {
                    self.written(result)?;
                    self.flush(tasks.len());
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    self.on_joined(joined, &mut decommissions, &tx).await?;
                }
                Some(_) = decommissions.join_next(), if !decommissions.is_empty() => {}
                _ = tokio::time::sleep_until(self.pending_since.unwrap_or_else(tokio::time::Instant::now) + LINGER),
                    if !self.pending.is_empty() && self.writes.len() < self.depth.limit() => {
                    self.flush(tasks.len());
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() && !timed_out => {
                    timed_out = true;
                    let limit = crate::domain::duration::human(drill_timeout.unwrap_or_default());
                    self.timed_out = Some(format!("the drill timed out after {limit}"));
                    self.handle_control(Control::Cancel { by: format!("drill timeout ({limit})") }, &approvals_tx).await?;
                }
                Some(c) = self.control.recv() => self.handle_control(c, &approvals_tx).await?,
                _ = renew.tick() => {
                    // The lease runs from before the request (its expiry is counted from `now`).
                    let (now, asked) = (self.ctx.clock.now(), tokio::time::Instant::now());
                    if let Some(lease) = self.lease.as_mut() {
                        match lease.renew(now).await {
                            Ok(()) => {
                                self.last_renewal = asked;
                                self.holds.send_replace(self.holds_until());
                            }
                            // Another server owns the region now: stop at once.
                            Err(e @ Error::Conflict(_)) => return Err(e),
                            // A store hiccup: keep going while the lease surely
                            // holds; stop before it could lapse under us.
                            Err(e) if self.last_renewal.elapsed() + renew_every < self.ctx.lease_ttl => {
                                tracing::warn!(run_id = %self.view.spec.id, error = %e, "cannot renew the region lease; retrying");
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    if let Err(e) = self.poll_requests(&approvals_tx).await {
                        tracing::warn!(run_id = %self.view.spec.id, error = %e, "cannot read run requests; retrying");
                    }
                }
            }
        }
        let outcome = match self.view.spec.drill.is_some() {
            true => self.finish_drill().await?,
            false => self.view.outcome(),
        };
        self.persist(Event::RunFinished { state: outcome }).await?;
        // The region first: the next run must not wait for bookkeeping.
        if let Some(lease) = self.lease.take()
            && let Err(e) = lease.release().await
        {
            tracing::warn!(run_id = %self.view.spec.id, error = %e, "cannot release the region lease; it will expire");
        }
        // Reading the finished run is then one request (the first reader
        // compacts it if this fails).
        if let Err(e) =
            super::journal::compact(&self.ctx.store, &self.view.spec.id, std::mem::take(&mut self.record)).await
        {
            tracing::warn!(run_id = %self.view.spec.id, error = %e, "cannot write the compacted journal of the run");
        }
        if outcome == RunState::Succeeded {
            super::record_timings(&self.ctx.store, &self.view).await;
        }
        super::report::store(&self.ctx.store, &self.view).await;
        Ok(self.view.clone())
    }

    /// Every finished task, at once: they give their slots back. Joining
    /// one per turn of the loop let them pile up behind a busy journal (at
    /// 10,000 services, 1,024 finished or nearly finished tasks held every
    /// slot while ready services waited).
    async fn join_finished(
        &mut self,
        tasks: &mut JoinSet<(String, Outcome)>,
        decommissions: &mut JoinSet<()>,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<()> {
        while let Some(joined) = tasks.try_join_next() {
            self.on_joined(joined, decommissions, tx).await?;
        }
        Ok(())
    }

    /// A service task ended: a cut-over service's old instances go after
    /// their grace period.
    async fn on_joined(
        &mut self,
        joined: std::result::Result<(String, Outcome), tokio::task::JoinError>,
        decommissions: &mut JoinSet<()>,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<()> {
        match joined {
            Ok((name, Outcome::CutOver(old))) if !old.is_empty() => {
                let grace = self.manifest.services[&name].grace_period.0;
                if !grace.is_zero() {
                    let event = Event::DecommissionScheduled {
                        service: name.clone(),
                        instances: old.clone(),
                        grace_ms: grace.as_millis() as u64,
                    };
                    self.persist(event).await?;
                }
                decommissions.spawn(decommission(
                    self.provider.clone(),
                    name,
                    old,
                    grace,
                    tx.clone(),
                    self.abort.clone(),
                ));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(run_id = %self.view.spec.id, error = %e, "service task panicked");
                Err(Error::Internal(format!("a service task of run {} panicked: {e}", self.view.spec.id)))
            }
        }
    }

    /// Starts journal writes for the events received, while fewer than the
    /// depth (`depth.rs`) are in flight and someone waits for one of them
    /// (events nobody waits for linger up to `LINGER` for one that somebody
    /// does); the rest wait, gathering into the next write. The loop never waits for a write to take a message, so a
    /// reported cutover starts its announced dependents at once, whatever
    /// the journal is doing. `running`: service tasks running now.
    fn flush(&mut self, running: usize) {
        self.flush_if(running, false)
    }

    /// `flush`, also of events nobody waits for that have not lingered yet.
    fn flush_now(&mut self, running: usize) {
        self.flush_if(running, true)
    }

    /// Events received, to be written (as soon as the journal can take them).
    fn hold(&mut self, msgs: Vec<Msg>) {
        if self.pending.is_empty() {
            self.pending_since = Some(tokio::time::Instant::now());
        }
        self.pending.extend(msgs);
    }

    /// Whether the events received should be written now: someone waits for
    /// one of them, or the oldest has lingered long enough (`LINGER`).
    fn due(&self) -> bool {
        self.pending.iter().any(|m| !m.ack.is_closed())
            || self.pending_since.is_some_and(|t| t.elapsed() >= LINGER)
            || !self.ahead.is_empty()
    }

    fn flush_if(&mut self, running: usize, now: bool) {
        if self.abort.is_cancelled() {
            self.pending.drain(..).for_each(|m| {
                let _ = m.ack.send(false);
            });
            self.pending_since = None;
            return;
        }
        // Launches queued ahead are written at once, with what is pending or alone.
        while (!self.pending.is_empty() || !self.ahead.is_empty())
            && self.writes.len() < self.depth.limit()
            && (now || self.due())
        {
            let n = self.pending.len().min(super::journal::MAX_BATCH);
            let msgs: Vec<Msg> = self.pending.drain(..n).collect();
            if self.pending.is_empty() {
                self.pending_since = None;
            }
            let announcing: usize = self.in_flight.iter().map(|w| w.announced.len()).sum();
            let held = running + self.ready.len() + self.announced.len() + announcing;
            let slots = self.view.spec.parallelism.max(1).saturating_sub(held);
            self.start_write(msgs, slots);
        }
    }

    /// One journal write for events from service tasks that arrived
    /// together (group commit), with the launches they make possible; every
    /// task hears that its event is durable once it and the write before it
    /// are made (`written`). `slots`: how many more service tasks may start.
    fn start_write(&mut self, msgs: Vec<Msg>, slots: usize) {
        let (events, acks): (Vec<Event>, Vec<oneshot::Sender<bool>>) =
            msgs.into_iter().map(|m| (m.event, m.ack)).unzip();
        let failed: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::ServiceFailed { service, .. } => Some(service.clone()),
                _ => None,
            })
            .collect();
        let passed: Vec<usize> = events.iter().filter_map(|e| self.past_gate_in(e)).collect();
        let announced = self.announce_launches(&events, slots);
        let announced_services: Vec<usize> =
            announced.iter().filter_map(|e| e.service().and_then(|s| self.dag.index_of(s))).collect();
        let mut events = events;
        events.extend(announced);
        if events.is_empty() {
            // Only launches queued ahead, none of which may be announced now.
            return;
        }
        let write = self.write(events);
        self.writes.push_back(write);
        let beside = !self.in_flight.is_empty();
        self.depth.started();
        self.in_flight.push_back(InFlight { acks, failed, announced: announced_services, passed, beside });
    }

    /// The service that `event` records past its health gate, if any.
    fn past_gate_in(&self, event: &Event) -> Option<usize> {
        match event {
            Event::Healthy { service, .. } | Event::CutOver { service, .. } | Event::Kept { service } => {
                self.dag.index_of(service)
            }
            _ => None,
        }
    }
}
