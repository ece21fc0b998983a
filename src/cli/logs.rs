//! `lifeboat logs` and `lifeboat run logs`: instances' output, each line
//! prefixed with its instance (one JSON object per line with `--output json`).

use serde_json::json;

use super::client::Client;
use super::output::safe;
use super::{Failure, Output};
use crate::api::pb;

pub async fn print(client: &Client, req: pb::LogsRequest, output: Output) -> Result<(), Failure> {
    let mut svc = client.recovery();
    let mut stream = svc.logs(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner();
    while let Some(line) = stream.message().await.map_err(|e| client.fail(e))? {
        match output {
            Output::Json => println!("{}", json!({"instance": line.instance, "line": line.line})),
            // Instance output is untrusted: never let it drive the terminal.
            Output::Text => println!("{} | {}", line.instance, safe(&line.line)),
        }
    }
    Ok(())
}
