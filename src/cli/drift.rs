//! `lifeboat drift ENV [--region R]`: exit 0 in sync with known-good, 1 drifted.

use serde_json::json;

use super::client::Client;
use super::output::{print_json, table};
use super::{Failure, Output, exit};
use crate::api::pb;

pub async fn run(client: &Client, environment: String, region: Option<String>, output: Output) -> Result<(), Failure> {
    let mut svc = client.drift();
    let req = pb::DriftRequest { environment, region: region.unwrap_or_default() };
    let r = svc.check(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
    match output {
        Output::Json => print_json(&json!({
            "environment": r.environment,
            "region": r.region,
            "snapshot_version": r.snapshot_version,
            "checked_at": r.checked_at,
            "in_sync": r.in_sync,
            "services": r.services.iter().map(|s| json!({
                "service": s.service, "state": s.state, "detail": s.detail, "instances": s.instances,
            })).collect::<Vec<_>>(),
        })),
        Output::Text => {
            println!(
                "{} in {} against known-good (snapshot {}), checked at {}",
                r.environment, r.region, r.snapshot_version, r.checked_at
            );
            let rows: Vec<Vec<String>> = r
                .services
                .iter()
                .map(|s| {
                    vec![s.service.clone(), s.state.to_uppercase(), s.instances.len().to_string(), s.detail.clone()]
                })
                .collect();
            println!("{}", table(&["SERVICE", "STATE", "INSTANCES", "DETAIL"], &rows));
        }
    }
    if r.in_sync {
        return Ok(());
    }
    let drifted: Vec<String> =
        r.services.iter().filter(|s| s.state != "in_sync").map(|s| format!("{} {}", s.service, s.state)).collect();
    Err(Failure::new(
        exit::FAILED,
        format!(
            "{} has drifted from known-good in {}: {}; `lifeboat plan {}` shows what a recovery would change",
            r.environment,
            r.region,
            drifted.join(", "),
            r.environment
        ),
    ))
}
