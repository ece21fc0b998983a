//! The layering rules of ARCHITECTURE.md, checked.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Code lines of a file, without its `#[cfg(test)] mod tests` block (a
/// whole test module file, `tests.rs` or any file under a `tests/` folder,
/// is test code too).
fn code(p: &Path) -> String {
    let rel = p.strip_prefix(src()).unwrap_or(p);
    if p.file_name().is_some_and(|n| n == "tests.rs") || rel.components().any(|c| c.as_os_str() == "tests") {
        return String::new();
    }
    let text = std::fs::read_to_string(p).unwrap();
    text.split("#[cfg(test)]\nmod tests").next().unwrap().to_string()
}

fn offenders(pattern: &[&str], allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let root = src();
    rust_files(&root)
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            let text = code(&p);
            (!allowed(&rel) && pattern.iter().any(|pat| text.contains(pat))).then_some(rel)
        })
        .collect()
}

#[test]
fn domain_does_no_io() {
    let bad = offenders(&["std::fs", "std::net::Tcp", "std::net::Udp", "tokio", "std::process"], |f| {
        !f.starts_with("domain/")
    });
    assert!(bad.is_empty(), "IO in domain/: {bad:?}");
}

#[test]
fn only_api_and_cli_know_tonic() {
    let bad = offenders(&["tonic::", "prost::"], |f| f.starts_with("api/") || f.starts_with("cli/"));
    assert!(bad.is_empty(), "tonic/prost outside api/ and cli/: {bad:?}");
    let bad = offenders(&["Status::new", "Status::invalid_argument"], |f| f == "api/status.rs");
    assert!(bad.is_empty(), "Status built outside api/status.rs: {bad:?}");
}

#[test]
fn only_layout_knows_object_keys() {
    let bad = offenders(&["\"environments/", "\"audit/", "\"runs/", "\"leases/", "\"images/", "\"run-index/"], |f| {
        f == "store/layout.rs"
    });
    assert!(bad.is_empty(), "object keys outside store/layout.rs: {bad:?}");
}
