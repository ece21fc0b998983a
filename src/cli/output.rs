//! Text and JSON rendering of results. JSON field names are stable snake_case.

use serde_json::{Value, json};

use super::Failure;
use crate::api::pb;

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON values always serialise"));
}

pub fn snapshot_json(s: &pb::Snapshot) -> Value {
    let mut v = json!({
        "environment": s.environment,
        "version": s.version,
        "digest": s.digest,
        "created_at": s.created_at,
        "author": s.author,
        "message": s.message,
        "labels": s.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "refs": s.refs,
        "parent_version": if s.parent_version == 0 { Value::Null } else { json!(s.parent_version) },
        "region": s.region,
        "provider": s.provider,
        "service_count": s.service_count,
        "rejection": s.rejection.as_ref().map(|r| json!({"by": r.by, "at": r.at, "reason": r.reason})),
        "corruption": s.corruption.as_ref().map(corruption_json),
    });
    if !s.warnings.is_empty() {
        v["warnings"] = json!(s.warnings);
    }
    if !s.manifest_json.is_empty() {
        v["manifest"] = serde_json::from_str(&s.manifest_json).unwrap_or(Value::Null);
    }
    v
}

/// Records a listing skipped because they fail their integrity check: one
/// line each on stderr (in text and JSON output alike), the listing itself
/// on stdout as usual.
pub fn warn_corrupt(corrupt: &[pb::Corruption]) {
    for c in corrupt {
        eprintln!("CORRUPT, skipped: {} (object {}); the rest is listed", safe(&c.problem), safe(&c.key));
    }
}

pub fn corruption_json(c: &pb::Corruption) -> Value {
    json!({"key": c.key, "problem": c.problem})
}

/// `sha256:0123456789ab` — enough to tell snapshots apart in a table.
pub fn short_digest(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}

/// Text for a terminal: control characters (escape sequences, newlines,
/// carriage returns) in values that came from users are shown escaped,
/// never interpreted. JSON output is not passed through this.
pub fn safe(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Left-aligned columns separated by two spaces; cells are `safe`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| safe(c)).collect()).collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// Reads a manifest file, refusing oversized files before reading them.
pub fn read_manifest_file(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    use crate::domain::manifest::MAX_MANIFEST_BYTES;
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::invalid(format!("cannot read manifest {}: {e}", path.display())))?;
    if meta.is_dir() {
        return Err(Failure::invalid(format!("{} is a directory, not a manifest file", path.display())));
    }
    if meta.len() > MAX_MANIFEST_BYTES as u64 {
        return Err(Failure::invalid(format!(
            "{}: manifest is {} bytes, larger than the {} MiB limit",
            path.display(),
            meta.len(),
            MAX_MANIFEST_BYTES / (1024 * 1024)
        )));
    }
    std::fs::read(path).map_err(|e| Failure::invalid(format!("cannot read manifest {}: {e}", path.display())))
}

/// Failure logs with repeated lines folded: replicas failing the same way
/// print `db-1: connection refused` once, then `… 2 more like this (db-2,
/// db-3)`. Lines compare without their `instance: ` prefix.
pub fn collapse(lines: &[String]) -> Vec<String> {
    let text = |l: &str| l.split_once(": ").map_or(l.to_string(), |(_, t)| t.to_string());
    let source = |l: &str| l.split_once(": ").map_or(String::new(), |(s, _)| s.to_string());
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for l in lines {
        let t = text(l);
        match groups.iter_mut().find(|(first, _)| text(first) == t) {
            Some((_, more)) => more.push(source(l)),
            None => groups.push((l.clone(), Vec::new())),
        }
    }
    let mut out = Vec::new();
    for (first, more) in groups {
        out.push(first);
        if !more.is_empty() {
            let mut from: Vec<String> = more.clone();
            from.dedup();
            let from = from.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(", ");
            let from = if from.is_empty() { String::new() } else { format!(" ({from})") };
            out.push(format!("… {} more like this{from}", more.len()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_lines_are_collapsed_per_text() {
        let lines: Vec<String> = [
            "db-1: starting",
            "db-1: connection refused",
            "db-2: connection refused",
            "db-2: connection refused",
            "db-3: connection refused",
            "db-3: out of memory",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            collapse(&lines),
            ["db-1: starting", "db-1: connection refused", "… 3 more like this (db-2, db-3)", "db-3: out of memory"]
        );
        assert_eq!(collapse(&[]), Vec::<String>::new());
    }
}
