//! `lifeboat store check`: what the object store honours, from the server
//! (its store) or, with `--store`, opened directly from here.

use serde_json::json;

use super::client::Client;
use super::output::{print_json, table};
use super::{Failure, Output, StoreCmd, exit};
use crate::api::pb;
use crate::config::Config;

pub async fn run(server: &str, output: Output, cmd: StoreCmd) -> Result<(), Failure> {
    let StoreCmd::Check { store, config } = cmd;
    let report = match store {
        Some(url) => {
            let config = match &config {
                Some(p) => Config::load(p).map_err(|e| Failure::invalid(e.to_string()))?,
                None => Config::default(),
            };
            let opened = crate::store::open_unchecked(&url, &config.store.s3())
                .await
                .map_err(|e| Failure::new(exit::FAILED, format!("cannot open store {url}: {e:#}")))?;
            crate::api::store::report(&crate::store::selftest::run(&*opened).await)
        }
        None => {
            let client = Client::connect(server).await?;
            let mut svc = client.store();
            svc.check(client.request(pb::CheckStoreRequest {})).await.map_err(|s| client.fail(s))?.into_inner()
        }
    };
    match output {
        Output::Json => print_json(&json!({
            "store": report.store,
            "passed": report.passed,
            "checks": report.rows.iter().map(|r| json!({
                "guarantee": r.guarantee, "verdict": r.verdict, "detail": r.detail,
            })).collect::<Vec<_>>(),
        })),
        Output::Text => {
            println!("store {}", report.store);
            let rows: Vec<Vec<String>> = report
                .rows
                .iter()
                .map(|r| vec![r.guarantee.clone(), r.verdict.to_uppercase(), r.detail.clone()])
                .collect();
            println!("{}", table(&["GUARANTEE", "RESULT", "DETAIL"], &rows));
        }
    }
    if report.passed {
        Ok(())
    } else {
        let failed: Vec<&str> =
            report.rows.iter().filter(|r| r.verdict == "failed").map(|r| r.guarantee.as_str()).collect();
        Err(Failure::new(
            exit::FAILED,
            format!("{} does not honour {}; Lifeboat cannot use it safely", report.store, failed.join(", ")),
        ))
    }
}
