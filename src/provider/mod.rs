//! The compute provider port: what the engine asks of a backend (processes on
//! this host, EC2, …). Every call is idempotent and cancellable.

/// The suite every adapter must pass (used by the adapters' tests).
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod health;
pub mod local;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::domain::manifest::{Health, Manifest};
use crate::domain::plan::{Check, LiveInstance};

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
    LaunchFailed { service: String, message: String },
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
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Backend { retryable: true, .. })
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

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

    /// An instance's output for `lifeboat logs`: its last lines, or what it
    /// wrote since a cursor (to follow it). Instances that ended keep their
    /// output; an instance the provider never had is `Ok(None)`.
    async fn read_logs(&self, instance: &str, from: LogFrom) -> ProviderResult<Option<LogRead>>;
}
