//! What the local provider keeps in its directory, read by the provider and
//! by the router process. Every record has a `format_version` and is
//! checked on read: a corrupt record is an integrity error naming its file,
//! never "missing" (which could start a second instance) and never a default.
//! ```text
//! instances/<id>/instance.json, output.log
//! keys/<sha256 of launch key>.json   launch key -> instance IDs (idempotent launches)
//! services/<env>/<service>.json      cutover pointer: the instances that get traffic
//! networks/<name>.json               a drill's network namespace (see `netns`)
//! images/<hex>/ready.json            an unpacked image
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process;
use crate::provider::ProviderError;
use crate::store::codec::{Persisted, decode_raw};
use crate::store::images::ArtifactKind;

/// How to probe one instance, resolved at launch (its port is known then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Http(String),
    Tcp(String),
    Command(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub format_version: u32,
    pub id: String,
    pub environment: String,
    pub region: String,
    pub service: String,
    pub image: String,
    pub run_id: String,
    pub launch_key: String,
    pub port: u16,
    pub pid: Option<u32>,
    pub start_time: Option<u64>,
    pub created_at: String,
    pub probe: Option<Probe>,
    pub probe_timeout_ms: u64,
    pub terminated: bool,
    pub exit: Option<String>,
    pub fingerprint: String,
    /// The store whose server launched it (`store-id`); absent in records
    /// from before stores were told apart: taken as this store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The network namespace it runs in (a drill's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// Format 2: a record that names a network namespace (`netns`). One
/// without is written as format 1, which older binaries read; they refuse
/// format 2, so none of them ever starts or serves a drill's instance
/// outside its namespace.
pub const NETNS_FORMAT: u32 = 2;

/// The format of a record, by whether it names a network namespace.
pub fn format_for(netns: &Option<String>) -> u32 {
    if netns.is_some() { NETNS_FORMAT } else { 1 }
}

impl Persisted for InstanceRecord {
    const KIND: &'static str = "local instance record";
    const FORMAT: u32 = NETNS_FORMAT;
    const OLDEST: u32 = 1;
}

impl InstanceRecord {
    pub fn alive(&self) -> bool {
        match (self.pid, self.start_time) {
            (Some(p), Some(t)) => !self.terminated && process::is_alive(p, t),
            _ => false,
        }
    }
}

/// Where a service's traffic goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    pub format_version: u32,
    pub environment: String,
    pub service: String,
    pub listen: Option<String>,
    pub targets: Vec<String>,
    /// The store whose server cut over to it (as `InstanceRecord::store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The network namespace its address is served in (a drill's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl Persisted for Pointer {
    const KIND: &'static str = "cutover pointer";
    const FORMAT: u32 = NETNS_FORMAT;
    const OLDEST: u32 = 1;
}

impl Pointer {
    /// What the router serves it under (`route_key`).
    pub fn route(&self) -> Option<String> {
        self.listen.as_deref().map(|l| route_key(l, self.netns.as_deref()))
    }
}

/// A stable address as the router serves it: the address, or `ADDR in
/// NETNS` for one inside a drill's network namespace (the same address
/// may be served on the host and in any number of namespaces).
pub fn route_key(listen: &str, netns: Option<&str>) -> String {
    match netns {
        Some(n) => format!("{listen} in {n}"),
        None => listen.to_string(),
    }
}

/// `(address, network namespace)` of a route key.
pub fn parse_route_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once(" in ") {
        Some((listen, netns)) => (listen, Some(netns)),
        None => (key, None),
    }
}

/// A drill's network namespace, recorded when it is made, so that a sweep
/// finds it even if the drill launched nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub format_version: u32,
    pub name: String,
    /// The drill's environment, `ENV.drill.RUN`.
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// When it was made (RFC 3339): a sweep leaves a young one alone (its
    /// drill may not have recorded its run yet).
    #[serde(default)]
    pub created_at: String,
}

impl Persisted for NetworkRecord {
    const KIND: &'static str = "network namespace record";
    const FORMAT: u32 = 1;
}

/// Removes a record; one already gone is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn network_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("networks").join(format!("{name}.json"))
}

/// The recorded network namespaces, and those that cannot be read.
pub fn readable_networks(dir: &Path) -> (Vec<NetworkRecord>, Vec<ProviderError>) {
    let (mut out, mut corrupt) = (Vec::new(), Vec::new());
    read_all_in(&dir.join("networks"), &mut out, &mut corrupt);
    (out, corrupt)
}

/// Every record of a directory (dot files are writes in progress): the
/// readable ones into `out`, the others into `corrupt`.
fn read_all_in<T: Persisted>(dir: &Path, out: &mut Vec<T>, corrupt: &mut Vec<ProviderError>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match read::<T>(&e.path()) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => corrupt.push(e),
        }
    }
}

/// The instances a launch key created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchKeyRecord {
    pub format_version: u32,
    pub launch_key: String,
    pub instances: Vec<String>,
}

impl Persisted for LaunchKeyRecord {
    const KIND: &'static str = "launch key record";
    const FORMAT: u32 = 1;
}

/// An unpacked image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyMarker {
    pub format_version: u32,
    pub kind: ArtifactKind,
}

impl Persisted for ReadyMarker {
    const KIND: &'static str = "unpacked image marker";
    const FORMAT: u32 = 1;
}

pub fn integrity(path: &Path, what: &str, why: impl std::fmt::Display) -> ProviderError {
    ProviderError::Integrity { path: path.display().to_string(), message: format!("{what} {why}") }
}

/// Writes a record atomically: a temporary file, then a rename.
pub fn write<T: Persisted>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().expect("paths have parents");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, crate::store::codec::encode(value))?;
    std::fs::rename(&tmp, path)
}

/// `Ok(None)` when there is no such file; an integrity error when it does not decode.
pub fn read<T: Persisted>(path: &Path) -> Result<Option<T>, ProviderError> {
    match std::fs::read(path) {
        Ok(bytes) => decode_raw::<T>(&bytes).map(Some).map_err(|e| integrity(path, T::KIND, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(ProviderError::Backend { message: format!("cannot read {}: {e}", path.display()), retryable: true })
        }
    }
}

pub fn instance_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("instances").join(id).join("instance.json")
}

pub fn pointer_path(dir: &Path, env: &str, service: &str) -> PathBuf {
    dir.join("services").join(env).join(format!("{service}.json"))
}

/// Every instance record, by ID.
pub fn instances(dir: &Path) -> Result<Vec<InstanceRecord>, ProviderError> {
    let (out, corrupt) = readable_instances(dir);
    corrupt.into_iter().next().map_or(Ok(out), Err)
}

/// Every readable instance record, by ID, and the errors of the others.
pub fn readable_instances(dir: &Path) -> (Vec<InstanceRecord>, Vec<ProviderError>) {
    let Ok(entries) = std::fs::read_dir(dir.join("instances")) else { return (Vec::new(), Vec::new()) };
    let (mut out, mut corrupt) = (Vec::new(), Vec::new());
    for e in entries.flatten() {
        match read::<InstanceRecord>(&e.path().join("instance.json")) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => corrupt.push(e),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    (out, corrupt)
}

/// Every cutover pointer, optionally of one environment.
pub fn pointers(dir: &Path, env: Option<&str>) -> Result<Vec<Pointer>, ProviderError> {
    let (out, corrupt) = readable_pointers(dir, env);
    corrupt.into_iter().next().map_or(Ok(out), Err)
}

/// Every readable cutover pointer (optionally of one environment), and the
/// errors of the others: one bad file must not stop the rest.
pub fn readable_pointers(dir: &Path, env: Option<&str>) -> (Vec<Pointer>, Vec<ProviderError>) {
    let (mut out, mut corrupt) = (Vec::new(), Vec::new());
    let Ok(envs) = std::fs::read_dir(dir.join("services")) else { return (out, corrupt) };
    for e in envs.flatten() {
        if env.is_some_and(|x| e.file_name().to_str() != Some(x)) {
            continue;
        }
        read_all_in(&e.path(), &mut out, &mut corrupt);
    }
    (out, corrupt)
}

/// The loopback addresses of the live instances among `ids`.
pub fn target_addrs(dir: &Path, ids: &[String]) -> Vec<SocketAddr> {
    ids.iter()
        .filter_map(|id| read::<InstanceRecord>(&instance_path(dir, id)).ok().flatten())
        .filter(InstanceRecord::alive)
        .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
        .collect()
}

/// What the router serves: every stable address and its live targets, and
/// the pointers that cannot be read (path, why): the others are still served.
#[derive(Debug, Default)]
pub struct Routes {
    pub served: BTreeMap<String, Vec<SocketAddr>>,
    pub corrupt: Vec<(PathBuf, String)>,
}

pub fn routes(dir: &Path) -> Routes {
    let mut out = Routes::default();
    let Ok(envs) = std::fs::read_dir(dir.join("services")) else { return out };
    for e in envs.flatten() {
        let Ok(files) = std::fs::read_dir(e.path()) else { continue };
        for f in files.flatten() {
            if f.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match read::<Pointer>(&f.path()) {
                Ok(Some(p)) if p.listen.is_some() => {
                    out.served.insert(p.route().unwrap_or_default(), target_addrs(dir, &p.targets));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "a corrupt cutover pointer: its address keeps its last route");
                    out.corrupt.push((f.path(), e.to_string()));
                }
            }
        }
    }
    out
}
