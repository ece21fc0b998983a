//! The local provider's `launch` table: `args`, `env`, `listen` (the
//! service's stable address) and `entrypoint` (inside a tarball artifact).

use std::collections::BTreeMap;

use super::super::validator::{Validator, join};
use crate::domain::source::Node;

pub(super) fn launch(v: &mut Validator, node: &Node, path: &str) -> Option<BTreeMap<String, serde_json::Value>> {
    let mut f = v.table(node, path)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    if let Some(n) = f.take("args") {
        match v.strings(n, &join(path, "args")) {
            Some(a) => {
                out.insert("args".into(), serde_json::json!(a));
            }
            None => ok = false,
        }
    }
    if let Some(n) = f.take("env") {
        match v.string_map(n, &join(path, "env")) {
            Some(m) => {
                out.insert("env".into(), serde_json::json!(m));
            }
            None => ok = false,
        }
    }
    if let Some(n) = f.take("listen") {
        let p = join(path, "listen");
        match v.string(n, &p) {
            Some(s) if s.parse::<std::net::SocketAddr>().is_ok_and(|a| a.port() != 0) => {
                out.insert("listen".into(), serde_json::json!(s));
            }
            Some(s) => {
                v.problem(n.pos, &p, format!("\"{s}\" is not an address with a port, e.g. \"127.0.0.1:8080\""));
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(n) = f.take("entrypoint") {
        let p = join(path, "entrypoint");
        match v.string(n, &p) {
            Some(s) if !s.is_empty() && !s.starts_with('/') && !s.split('/').any(|c| c == "..") => {
                out.insert("entrypoint".into(), serde_json::json!(s));
            }
            Some(s) => {
                v.problem(n.pos, &p, format!("\"{s}\" must be a relative path inside the artifact"));
                ok = false;
            }
            None => ok = false,
        }
    }
    v.finish(f, &["args", "env", "listen", "entrypoint"]);
    ok.then_some(out)
}
