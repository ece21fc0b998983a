//! `lifeboat env policy`: the server's promotion policy for an environment.

use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::client::Client;
use super::output::{print_json, safe};
use super::{Failure, Output};
use crate::api::pb;

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Show the environment's promotion policy, or set it (admin). With
    /// `--promotion drill`, known-good moves only to a snapshot whose DR
    /// drill passed, whatever its manifest says.
    Policy {
        environment: String,
        #[arg(long, value_enum)]
        promotion: Option<PromotionArg>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PromotionArg {
    Manual,
    Drill,
}

pub async fn run(client: &Client, cmd: EnvCmd, output: Output) -> Result<(), Failure> {
    let mut svc = client.snapshots();
    let EnvCmd::Policy { environment, promotion } = cmd;
    let p = match promotion {
        None => {
            let req = pb::GetPolicyRequest { environment };
            svc.get_policy(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner()
        }
        Some(p) => {
            let promotion = match p {
                PromotionArg::Manual => "manual",
                PromotionArg::Drill => "drill",
            };
            let req = pb::SetPolicyRequest { environment, promotion: promotion.into() };
            svc.set_policy(client.request(req)).await.map_err(|e| client.fail(e))?.into_inner()
        }
    };
    match output {
        Output::Json => print_json(&json!({
            "environment": p.environment,
            "promotion": p.promotion,
            "updated_by": if p.updated_by.is_empty() { serde_json::Value::Null } else { json!(p.updated_by) },
            "updated_at": if p.updated_at.is_empty() { serde_json::Value::Null } else { json!(p.updated_at) },
        })),
        Output::Text => {
            let gate = match p.promotion.as_str() {
                "drill" => "known-good moves only to a snapshot whose DR drill passed",
                _ => "known-good moves by `snapshot promote` (unless a snapshot's manifest asks for a drill)",
            };
            println!("{}: promotion = {} ({gate})", p.environment, p.promotion);
            if !p.updated_by.is_empty() {
                println!("set by {} at {}", safe(&p.updated_by), p.updated_at);
            }
        }
    }
    Ok(())
}
