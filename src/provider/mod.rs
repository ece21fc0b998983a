//! The compute provider port: what the engine asks of a backend (processes on
//! this host, EC2, …). Every call is idempotent and cancellable.

/// The suite every adapter must pass (used by the adapters' tests).
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod ec2;
pub mod health;
pub mod local;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::domain::manifest::{Health, Manifest};
use crate::domain::plan::{Check, LiveInstance};

/// Every provider a server has, by name; a snapshot's `provider` picks one.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<&'static str, std::sync::Arc<dyn ComputeProvider>>,
}

impl Providers {
    pub fn new() -> Providers {
        Providers::default()
    }

    /// Adds a provider under its own name.
    pub fn with(mut self, p: std::sync::Arc<dyn ComputeProvider>) -> Providers {
        self.by_name.insert(p.name(), p);
        self
    }

    /// The provider for a manifest, or a sentence saying why there is none.
    pub fn get(&self, kind: crate::domain::manifest::Provider) -> Result<std::sync::Arc<dyn ComputeProvider>, String> {
        self.by_name.get(kind.as_str()).cloned().ok_or_else(|| {
            let hint = match kind {
                crate::domain::manifest::Provider::Local => {
                    "run a server with the local provider (the default) on the host that should run the instances"
                }
                crate::domain::manifest::Provider::Ec2 => {
                    "enable it with [provider.ec2] in the server's configuration (remove `enabled = false`)"
                }
            };
            format!("this server has no {} provider (it has: {}); {hint}", kind.as_str(), self.names().join(", "))
        })
    }

    /// A provider by its name (`local`, `ec2`).
    pub fn get_named(&self, name: &str) -> Result<std::sync::Arc<dyn ComputeProvider>, String> {
        self.by_name.get(name).cloned().ok_or_else(|| format!("no {name} provider"))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }
}

/// The service a call is about.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    pub environment: String,
    pub region: String,
    pub service: String,
    /// The manifest's provider-specific `launch` table.
    pub settings: BTreeMap<String, serde_json::Value>,
    pub health: Option<Health>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub target: ServiceRef,
    pub image: String,
    pub replicas: u32,
    pub run_id: String,
    /// The snapshot version the run deploys (tagged on instances).
    pub snapshot: u64,
    /// Idempotency key: launching again with the same key returns the
    /// instances the first call created instead of creating more.
    pub launch_key: String,
    /// Recorded on the instances and reported by `inventory`.
    pub fingerprint: String,
}

/// Where to start reading an instance's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFrom {
    /// The last N lines.
    Tail(usize),
    /// From this cursor on (returned by the previous read).
    Cursor(u64),
}

/// Complete lines of an instance's output, and the cursor after them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    pub lines: Vec<String>,
    pub next: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("image {image} is not available: {message}")]
    ImageUnavailable { image: String, message: String },
    #[error("launch of {service} failed: {message}")]
    LaunchFailed { service: String, message: String, retryable: bool },
    #[error("{service} did not become healthy within {}: {last}", crate::domain::duration::human(*after))]
    Unhealthy { service: String, after: Duration, last: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{message}")]
    Backend { message: String, retryable: bool },
    /// A record the provider keeps is corrupt: never acted on.
    #[error("{path} is corrupt ({message}); refusing to act on it")]
    Integrity { path: String, message: String },
}

impl ProviderError {
    /// Whether another attempt may succeed: throttling, capacity, a network
    /// hiccup, or instances that did not pass their health gate (new ones
    /// may). A missing image, bad settings or a corrupt record are
    /// permanent: retrying cannot help, so the service fails at once.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Backend { retryable, .. } | ProviderError::LaunchFailed { retryable, .. } => *retryable,
            ProviderError::Unhealthy { .. } => true,
            ProviderError::ImageUnavailable { .. } | ProviderError::Integrity { .. } | ProviderError::Cancelled => {
                false
            }
        }
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// The preflight checks (by name) that say whether a snapshot's images can
/// be launched: promotion requires them to pass.
pub const IMAGE_CHECKS: [&str; 3] = ["images-for-region", "images-in-store", "ec2-images"];

/// How long one provider call may take before the engine gives up on it
/// (launches and health gates have their own, per-service limits).
pub const CALL_LIMIT: Duration = Duration::from_secs(120);

/// A provider call bounded in time and stopped by `stop`: a call that hangs
/// (a stuck API, a wedged process) becomes a retryable error instead of
/// holding a run for ever.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    stop: &CancellationToken,
    call: impl std::future::Future<Output = ProviderResult<T>>,
) -> ProviderResult<T> {
    tokio::select! {
        r = tokio::time::timeout(limit, call) => r.unwrap_or_else(|_| Err(ProviderError::Backend {
            message: format!("{what} did not finish within {}", crate::domain::duration::human(limit)),
            retryable: true,
        })),
        _ = stop.cancelled() => Err(ProviderError::Cancelled),
    }
}

/// What `drill_leftovers` found: (namespace, region) pairs, and the
/// regions it could not look at, each with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leftovers {
    pub found: Vec<(String, String)>,
    pub failed: Vec<String>,
}

#[async_trait]
pub trait ComputeProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Checks that can fail a plan before anything is launched (images exist
    /// in the target region, capacity caps); `launching` names the services
    /// the plan creates or replaces.
    async fn preflight(&self, manifest: &Manifest, region: &str, launching: &[String]) -> Vec<Check>;

    /// What deserves a look in a manifest without stopping a recovery.
    fn warnings(&self, _manifest: &Manifest) -> Vec<String> {
        Vec::new()
    }

    /// Instances of an environment running in a region now.
    async fn inventory(&self, environment: &str, region: &str) -> ProviderResult<Vec<LiveInstance>>;

    /// Where each service's traffic paths (DNS records, target groups,
    /// stable addresses) point now, seen from `region`, given what runs
    /// there (`inventory`). A provider without traffic paths has none.
    async fn traffic(
        &self,
        _environment: &str,
        _manifest: &Manifest,
        _region: &str,
        _inventory: &[LiveInstance],
    ) -> ProviderResult<Vec<crate::domain::plan::Traffic>> {
        Ok(Vec::new())
    }

    /// Starts `replicas` new instances; returns their IDs. Idempotent per `launch_key`.
    async fn launch(&self, spec: &LaunchSpec, cancel: &CancellationToken) -> ProviderResult<Vec<String>>;

    /// Waits until every instance passes the health check, up to `within`.
    async fn wait_healthy(
        &self,
        target: &ServiceRef,
        instances: &[String],
        within: Duration,
        cancel: &CancellationToken,
    ) -> ProviderResult<()>;

    /// Sends the service's traffic to exactly these instances.
    async fn cutover(&self, target: &ServiceRef, instances: &[String]) -> ProviderResult<()>;

    /// Stops sending a service's traffic anywhere and gives up its stable
    /// address: the service left the environment (prune). Idempotent.
    async fn retire(&self, target: &ServiceRef) -> ProviderResult<()>;

    /// Stops and removes instances; unknown or already stopped ones are fine.
    async fn terminate(&self, instances: &[String]) -> ProviderResult<()>;

    /// The last lines an instance wrote, for failure reports.
    async fn logs(&self, instance: &str, lines: usize) -> Vec<String>;

    /// How a drill of `manifest` in `region`, run as the environment
    /// `namespace` (`ENV.drill.RUN`), is kept apart from production: the
    /// network of its own it runs in, or the drill addresses that replace
    /// its stable addresses; the traffic targets it drops, the settings it
    /// launches with instead.
    async fn isolation(
        &self,
        manifest: &Manifest,
        region: &str,
        namespace: &str,
    ) -> ProviderResult<crate::domain::drill::Isolation>;

    /// Removes everything of one drill namespace in a region: its instances
    /// terminated, its addresses given up. Returns the instances removed
    /// and what is still there afterwards (empty when all is gone).
    async fn tear_down(&self, namespace: &str, region: &str) -> ProviderResult<(Vec<String>, Vec<String>)>;

    /// Drill namespaces that still have instances or addresses here, with
    /// their region, for the sweeper; a region that cannot be listed is
    /// reported in `failed` and the others are still listed.
    async fn drill_leftovers(&self) -> ProviderResult<Leftovers>;

    /// An instance's output for `lifeboat logs`: its last lines, or what it
    /// wrote since a cursor (to follow it). Instances that ended keep their
    /// output; an instance the provider never had is `Ok(None)`.
    async fn read_logs(&self, instance: &str, from: LogFrom) -> ProviderResult<Option<LogRead>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_hangs_is_bounded_and_a_stopped_one_is_cancelled() {
        let never = CancellationToken::new();
        let hang = std::future::pending::<ProviderResult<()>>();
        let err = bounded("cutover", Duration::from_secs(120), &never, hang).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.to_string(), "cutover did not finish within 2m 00s");
        let stop = CancellationToken::new();
        stop.cancel();
        let err = bounded("terminate", CALL_LIMIT, &stop, std::future::pending::<ProviderResult<()>>()).await;
        assert!(matches!(err, Err(ProviderError::Cancelled)));
        assert_eq!(bounded("x", CALL_LIMIT, &never, async { Ok(7) }).await.unwrap(), 7);
    }
}
