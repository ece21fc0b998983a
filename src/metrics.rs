//! Prometheus metrics (prometheus-client), one registry per process, served
//! in the OpenMetrics text format at `/metrics` on the server's HTTP side.

use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    /// Finished runs by kind, environment and outcome.
    pub runs: Family<Labels, Counter>,
    /// Runs this server executes now (each holds its region's lease).
    pub runs_active: Gauge,
    /// How long finished runs took (a recovery's or drill's RTO).
    pub run_seconds: Family<Labels, Histogram>,
    /// Per-service step durations: launch, health_gate, cutover.
    pub step_seconds: Family<Labels, Histogram>,
    /// Changes through the API (snapshot.push, snapshot.promote, recovery.start, …) by outcome.
    pub operations: Family<Labels, Counter>,
    /// Object-store calls, failures (after retries) and retries, by operation.
    pub store_requests: Family<Labels, Counter>,
    pub store_errors: Family<Labels, Counter>,
    pub store_retries: Family<Labels, Counter>,
    /// Object bytes moved by successful calls, by direction (read, written).
    pub store_bytes: Family<Labels, Counter>,
    /// Services drifted from known-good at the latest check.
    pub drifted_services: Family<Labels, Gauge>,
    /// Webhook deliveries by source and outcome (started, proposed, duplicate, ignored, unauthorized, …).
    pub webhooks: Family<Labels, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 10 ms to about 3 h.
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("lifeboat");
        let m = Metrics {
            runs: Family::default(),
            runs_active: Gauge::default(),
            run_seconds: Family::new_with_constructor(seconds_histogram),
            step_seconds: Family::new_with_constructor(seconds_histogram),
            operations: Family::default(),
            store_requests: Family::default(),
            store_errors: Family::default(),
            store_retries: Family::default(),
            store_bytes: Family::default(),
            drifted_services: Family::default(),
            webhooks: Family::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Finished runs by kind, environment and outcome", m.runs.clone());
        registry.register("runs_active", "Runs this server executes now", m.runs_active.clone());
        registry.register("run_duration_seconds", "How long finished runs took", m.run_seconds.clone());
        registry.register(
            "step_duration_seconds",
            "Per-service step durations (launch, health_gate, cutover)",
            m.step_seconds.clone(),
        );
        registry.register("operations", "Changes through the API by action and outcome", m.operations.clone());
        registry.register("store_requests", "Object-store calls by operation", m.store_requests.clone());
        registry.register("store_errors", "Object-store calls that failed after retries", m.store_errors.clone());
        registry.register("store_retries", "Object-store call retries by operation", m.store_retries.clone());
        registry.register("store_bytes", "Object bytes read and written by successful calls", m.store_bytes.clone());
        registry.register(
            "drifted_services",
            "Services drifted from known-good at the latest check",
            m.drifted_services.clone(),
        );
        registry.register("webhook_decisions", "Webhook deliveries by source and outcome", m.webhooks.clone());
        Metrics { registry, ..m }
    })
}

/// The registry in the OpenMetrics text format.
pub fn render() -> String {
    let mut out = String::new();
    encode(&mut out, &get().registry).expect("writing to a String cannot fail");
    out
}
