//! `lifeboat audit list`: who did what, newest first.

use serde_json::{Value, json};

use super::client::Client;
use super::output::{print_json, table};
use super::{AuditCmd, Failure, Output};
use crate::api::pb;

pub async fn run(client: &Client, cmd: AuditCmd, output: Output) -> Result<(), Failure> {
    let AuditCmd::List { since, actor, action, environment, limit } = cmd;
    let mut svc = client.audit();
    let req = pb::ListAuditRequest {
        since: since.unwrap_or_default(),
        actor: actor.unwrap_or_default(),
        action: action.unwrap_or_default(),
        environment: environment.unwrap_or_default(),
        limit,
    };
    let listed = svc.list(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
    super::output::warn_corrupt(&listed.corrupt);
    let records = listed.records;
    match output {
        Output::Json => print_json(&Value::Array(
            records
                .iter()
                .map(|r| {
                    json!({"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "target": r.target, "outcome": r.outcome})
                })
                .collect(),
        )),
        Output::Text if records.is_empty() => println!("no audit records match"),
        Output::Text => {
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| vec![r.at.clone(), r.actor.clone(), r.action.clone(), r.target.clone(), r.outcome.clone()])
                .collect();
            println!("{}", table(&["AT", "ACTOR", "ACTION", "TARGET", "OUTCOME"], &rows));
        }
    }
    Ok(())
}
