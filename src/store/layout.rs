//! The one place that knows object keys. Documented in the README so users
//! can inspect a store with ordinary tools.

/// This store's identity: made once, read by every server that uses it, and
/// recorded on everything a provider creates, so that servers of other
/// stores sharing a provider directory or cloud account leave it alone.
pub fn store_id() -> String {
    "store-id".into()
}

pub fn snapshots_prefix(env: &str) -> String {
    format!("environments/{env}/snapshots/")
}

pub fn snapshot(env: &str, version: u64) -> String {
    format!("environments/{env}/snapshots/{version:010}.json")
}

/// The version a snapshot key names, if it is one.
pub fn snapshot_version(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    if name.len() == 10 && name.bytes().all(|b| b.is_ascii_digit()) { name.parse().ok() } else { None }
}

pub fn reference(env: &str, name: &str) -> String {
    format!("environments/{env}/refs/{name}")
}

pub fn refs_prefix(env: &str) -> String {
    format!("environments/{env}/refs/")
}

/// Digest → version index, so a snapshot can be named by (a prefix of) its digest.
pub fn digest_index(env: &str, hex: &str) -> String {
    format!("environments/{env}/digests/{hex}")
}

/// Which snapshot a push with an idempotency key created.
pub fn push_request(env: &str, key: &str) -> String {
    format!("environments/{env}/requests/{key}")
}

/// A passed DR drill of a snapshot (`promotion = "drill"` needs one).
pub fn passed_drill(env: &str, version: u64, run_id: &str) -> String {
    format!("environments/{env}/drills/{version:010}/{run_id}.json")
}

pub fn passed_drills_prefix(env: &str, version: u64) -> String {
    format!("environments/{env}/drills/{version:010}/")
}

/// A drill or recovery report: `report.json` or `report.html`.
pub fn run_report(run_id: &str, file: &str) -> String {
    format!("runs/{run_id}/{file}")
}

/// What a drill's teardown removed, and when (written by the run or the sweeper).
pub fn drill_teardown(run_id: &str) -> String {
    format!("runs/{run_id}/teardown.json")
}

pub fn schedules_prefix() -> String {
    "schedules/".into()
}

pub fn schedule(id: &str) -> String {
    format!("schedules/{id}.json")
}

/// The schedule ID of a key under `schedules_prefix`.
pub fn schedule_id(key: &str) -> Option<&str> {
    key.strip_prefix("schedules/")?.strip_suffix(".json").filter(|id| !id.is_empty() && !id.contains('/'))
}

/// One tick of a schedule: created once, by whichever server fires it.
pub fn schedule_tick(id: &str, tick: &str) -> String {
    format!("schedule-ticks/{id}/{tick}")
}

pub fn rejection(env: &str, version: u64) -> String {
    format!("environments/{env}/rejections/{version:010}.json")
}

pub fn rejections_prefix(env: &str) -> String {
    format!("environments/{env}/rejections/")
}

/// The version a rejection key is about.
pub fn rejected_version(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// One day's audit records.
pub fn audit_day(date: &str) -> String {
    format!("audit/{date}/")
}

pub fn audit(date: &str, stamp: &str, id: &str) -> String {
    format!("audit/{date}/{stamp}-{id}.json")
}

/// The server's policy for an environment (its promotion gate).
pub fn policy(env: &str) -> String {
    format!("environments/{env}/policy.json")
}

/// Measured launch-to-healthy times per service, for plan estimates.
pub fn timings(env: &str) -> String {
    format!("environments/{env}/timings.json")
}

/// Which run handles an incoming alert (`source`: pagerduty, alertmanager;
/// `key_digest`: the SHA-256 of the incident ID or group key).
/// The claim on an alert key routed to an environment.
pub fn webhook_claim(source: &str, environment: &str, key_digest: &str) -> String {
    format!("webhooks/{source}/{environment}/{key_digest}.json")
}

/// A webhook event that changed something (replays of it change nothing).
pub fn webhook_event(source: &str, id_digest: &str) -> String {
    format!("webhook-events/{source}/{id_digest}.json")
}

pub fn run_spec(run_id: &str) -> String {
    format!("runs/{run_id}/run.json")
}

pub fn journal_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/journal/")
}

pub fn journal_object(run_id: &str, slot: u64) -> String {
    format!("runs/{run_id}/journal/{slot:010}.json")
}

/// A finished run's whole journal in one object (see `engine::journal::Compacted`).
pub fn journal_compacted(run_id: &str) -> String {
    format!("runs/{run_id}/journal.json")
}

pub fn journal_slot(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// Cancel and approve requests for a run, picked up by whichever server runs it.
pub fn run_requests_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/requests/")
}

pub fn run_request(run_id: &str, id: &str) -> String {
    format!("runs/{run_id}/requests/{id}.json")
}

/// Everything stored about environments; the first path segment after it
/// names the environment.
pub fn environments_prefix() -> String {
    "environments/".into()
}

pub fn environment_of(key: &str) -> Option<&str> {
    key.strip_prefix("environments/")?.split('/').next().filter(|e| !e.is_empty())
}

/// One empty-ish marker per run, so runs can be listed without their journals.
pub fn run_index_prefix() -> String {
    "run-index/".into()
}

pub fn run_index(run_id: &str) -> String {
    format!("run-index/{run_id}")
}

pub fn run_id_from_index(key: &str) -> Option<&str> {
    key.strip_prefix("run-index/")
}

/// One marker per proposed run that waits for approval (removed once it
/// is approved, cancelled or expired), so the sweep finds them cheaply.
pub fn proposals_prefix() -> String {
    "proposals/".into()
}

pub fn proposal(run_id: &str) -> String {
    format!("proposals/{run_id}")
}

pub fn run_id_from_proposal(key: &str) -> Option<&str> {
    key.strip_prefix("proposals/")
}

pub fn leases_prefix() -> String {
    "leases/".into()
}

pub fn lease(region: &str) -> String {
    format!("leases/{region}")
}

/// A local-provider artifact, by the hex of its sha256 digest.
pub fn image_blob(hex: &str) -> String {
    format!("images/{hex}/artifact")
}

pub fn image_meta(hex: &str) -> String {
    format!("images/{hex}/image.json")
}

/// The digest hex an image record's key names.
pub fn image_hex(meta_key: &str) -> Option<&str> {
    meta_key.strip_prefix("images/")?.strip_suffix("/image.json")
}

pub fn images_prefix() -> String {
    "images/".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_sort_by_version() {
        assert!(snapshot("e", 9) < snapshot("e", 10));
        assert_eq!(snapshot_version(&snapshot("e", 42)), Some(42));
        assert_eq!(snapshot_version("environments/e/snapshots/x.json"), None);
    }
}
