//! Instances' output for `lifeboat logs` (a service's running instances) and
//! `lifeboat run logs` (a run's instances, failed attempts included), read
//! through the provider and optionally followed live.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;

use super::{Engine, async_stream};
use crate::error::{Error, Result};
use crate::provider::{ComputeProvider, LogFrom, LogRead};

/// How often a followed log is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(300);
pub const MAX_LINES: usize = 10_000;

pub struct LogsRequest {
    pub environment: String,
    pub service: String,
    /// Default: the environment's home region (of known-good, else latest).
    pub region: Option<String>,
    /// The instances of this run's service instead of the running ones.
    pub run_id: Option<String>,
    pub lines: usize,
    pub follow: bool,
    /// Who asks: streams are shared out per caller.
    pub caller: super::streams::StreamCaller,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub instance: String,
    pub line: String,
}

impl Engine {
    /// The instances' last lines, then (with `follow`) what they write next,
    /// until the caller goes away.
    pub async fn logs(
        self: &Arc<Self>,
        req: LogsRequest,
    ) -> Result<impl Stream<Item = Result<LogLine>> + Send + 'static> {
        if req.lines == 0 || req.lines > MAX_LINES {
            return Err(Error::InvalidArgument(format!("lines must be 1 to {MAX_LINES}")));
        }
        // Following holds a place until the caller leaves; one read does not.
        let permit =
            if req.follow { Some(self.watchers.acquire(&req.caller, "read the logs without --follow")?) } else { None };
        let (provider, instances) = match &req.run_id {
            Some(id) => self.run_instances(id, &req.service).await?,
            None => self.running_instances(&req).await?,
        };
        // The first read happens before the stream starts, so a provider
        // failure is the call's error, not a cut-off stream.
        let mut cursors = Vec::new();
        let mut first = Vec::new();
        for id in instances {
            let read = provider
                .read_logs(&id, LogFrom::Tail(req.lines))
                .await
                .map_err(|e| Error::Internal(format!("cannot read the output of {id}: {e}")))?
                .unwrap_or_default();
            first.extend(read.lines.iter().map(|l| LogLine { instance: id.clone(), line: l.clone() }));
            cursors.push((id, read.next));
        }
        let follow = req.follow;
        Ok(async_stream(move |tx: mpsc::Sender<Result<LogLine>>| async move {
            let _permit = permit;
            for line in first {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                    _ = tx.closed() => return,
                }
                for (id, cursor) in cursors.iter_mut() {
                    let read = match provider.read_logs(id, LogFrom::Cursor(*cursor)).await {
                        Ok(r) => r.unwrap_or_default(),
                        Err(e) => {
                            tracing::warn!(instance = %id, error = %e, "cannot read instance output; retrying");
                            LogRead { lines: Vec::new(), next: *cursor }
                        }
                    };
                    *cursor = read.next;
                    for line in read.lines {
                        if tx.send(Ok(LogLine { instance: id.clone(), line })).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }))
    }

    /// A run's instances of one service: failed attempts' first, then the
    /// current attempt's.
    async fn run_instances(&self, id: &str, service: &str) -> Result<(Arc<dyn ComputeProvider>, Vec<String>)> {
        let view = self.get(&self.resolve(id).await?).await?;
        let snap = self.repo.get(&view.spec.environment, view.spec.snapshot_version).await?;
        let provider = self.ctx.providers.get(snap.manifest.provider).map_err(Error::FailedPrecondition)?;
        let s = view.services.get(service).ok_or_else(|| {
            let names: Vec<&str> = view.services.keys().map(String::as_str).collect();
            Error::NotFound(format!("run {} has no service {service}; it has: {}", view.spec.id, names.join(", ")))
        })?;
        let mut ids = s.failed_instances.clone();
        ids.extend(s.instances.iter().cloned());
        if ids.is_empty() {
            return Err(Error::NotFound(format!(
                "{service} has no instances in run {} ({})",
                view.spec.id,
                if s.state.as_str() == "healthy" { "kept as it was" } else { s.state.as_str() }
            )));
        }
        Ok((provider, ids))
    }

    /// The service's running instances in the region.
    async fn running_instances(&self, req: &LogsRequest) -> Result<(Arc<dyn ComputeProvider>, Vec<String>)> {
        let env = &req.environment;
        let (manifest, home) = match crate::domain::drill::parse_namespace(env) {
            // A kept drill's namespace (`shop.drill.r-…`): its instances run
            // where the drill did, from the snapshot it restored.
            Some((base, run_id)) => {
                let spec = self.spec(run_id).await?;
                if spec.drill.as_ref().is_none_or(|d| &d.namespace != env) {
                    return Err(Error::NotFound(format!("run {run_id} is not a drill of {base} named {env}")));
                }
                (self.repo.get(base, spec.snapshot_version).await?.manifest, spec.region.clone())
            }
            None => {
                let reference =
                    if self.repo.get_ref(env, "known-good").await?.is_some() { "known-good" } else { "latest" };
                let manifest = self.repo.get_by_ref(env, reference).await?.manifest;
                let region = manifest.region.clone();
                (manifest, region)
            }
        };
        let provider = self.ctx.providers.get(manifest.provider).map_err(Error::FailedPrecondition)?;
        let region = req.region.clone().filter(|r| !r.is_empty()).unwrap_or(home);
        let inventory = provider
            .inventory(env, &region)
            .await
            .map_err(|e| Error::Internal(format!("cannot read the inventory of {env} in {region}: {e}")))?;
        let ids: Vec<String> = inventory.into_iter().filter(|i| i.service == req.service).map(|i| i.id).collect();
        if ids.is_empty() {
            return Err(Error::NotFound(format!(
                "no running instances of {env}/{} in {region}; `lifeboat run logs RUN_ID {}` shows a run's instances, failed ones included",
                req.service, req.service
            )));
        }
        Ok((provider, ids))
    }
}
