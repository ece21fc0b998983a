//! `lifeboat manifest validate`: offline, every problem with its location.

use std::path::Path;

use serde_json::json;

use super::output::{print_json, read_manifest_file};
use super::{Failure, Output};
use crate::domain::manifest::{self, Manifest};
use crate::domain::source::Format;
use crate::error::render_problems;

/// Parses a manifest file; on problems the failure lists them all.
pub fn load(path: &Path) -> Result<(Manifest, String), Failure> {
    let bytes = read_manifest_file(path)?;
    let name = path.display().to_string();
    let format = Format::detect(&name, &String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]));
    match manifest::parse(&bytes, format) {
        Ok(m) => Ok((m, String::from_utf8_lossy(&bytes).into_owned())),
        Err(problems) => Err(Failure::invalid(format!(
            "{name} is not a valid manifest ({} problem{}):\n{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            render_problems(&name, &problems)
        ))),
    }
}

pub fn validate(path: &Path, output: Output) -> Result<(), Failure> {
    let name = path.display().to_string();
    let bytes = read_manifest_file(path)?;
    let format = Format::detect(&name, &String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]));
    let result = manifest::parse(&bytes, format);
    let warnings = result.as_ref().map(warnings).unwrap_or_default();
    if output == Output::Json {
        let problems = result.as_ref().err().cloned().unwrap_or_default();
        print_json(&json!({
            "file": name,
            "valid": problems.is_empty(),
            "warnings": warnings,
            "problems": problems.iter().map(|p| json!({
                "position": p.pos.map(|x| x.to_string()),
                "path": p.path,
                "message": p.message,
            })).collect::<Vec<_>>(),
        }));
    }
    match result {
        Ok(m) => {
            if output == Output::Text {
                let edges: usize = m.services.values().map(|s| s.depends_on.len()).sum();
                println!(
                    "{name}: valid — environment {}, region {}, provider {}, {} services, {edges} dependencies",
                    m.environment,
                    m.region,
                    m.provider.as_str(),
                    m.services.len()
                );
                for w in &warnings {
                    println!("warning: {w}");
                }
            }
            Ok(())
        }
        Err(problems) => Err(Failure::invalid(format!(
            "{name} is not a valid manifest ({} problem{}):\n{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            render_problems(&name, &problems)
        ))),
    }
}

/// What a valid manifest still deserves a look for, offline: the checks the
/// server's plan makes too (drill-only promotion, for the local provider a
/// stable address in this host's ephemeral port range).
fn warnings(m: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    if m.provider == manifest::Provider::Local {
        out.extend(crate::provider::local::listen_warnings(m, crate::provider::local::ephemeral_range()));
    }
    if m.promotion == manifest::Promotion::Drill {
        out.push(crate::domain::plan::DRILL_PROMOTION_NOTE.to_string());
    }
    out
}
