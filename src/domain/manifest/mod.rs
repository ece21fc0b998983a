//! The environment manifest: its typed model and the validator that turns
//! TOML or JSON text into it, reporting every problem with its location.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::dag::Dag;
use super::duration::Dur;
use super::source::{self, Entry, Format, Node, Pos, Value};

mod launch;
mod validator;
mod verify;

pub use verify::{VerifyCheck, VerifyProbe};

use validator::{Validator, join};

pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
pub const MAX_SERVICES: usize = 20_000;
pub const MAX_DEPENDENCIES: usize = 256;
pub const MAX_REPLICAS: i64 = 1_000;

/// Serialises to the JSON manifest format, so a stored manifest is read back
/// through the same validator as a pushed one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub environment: String,
    pub region: String,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_objective: Option<Dur>,
    pub promotion: Promotion,
    pub services: BTreeMap<String, Service>,
    /// Smoke checks once every service is healthy; left out of the stored
    /// form when there are none, so earlier snapshots keep their digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<VerifyCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Local,
    Ec2,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Ec2 => "ec2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Promotion {
    Manual,
    Drill,
}

pub const DEFAULT_APPROVAL_TIMEOUT: Dur = Dur::secs(3_600);

fn is_default_approval_timeout(d: &Dur) -> bool {
    *d == DEFAULT_APPROVAL_TIMEOUT
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub image: Image,
    pub replicas: u32,
    pub depends_on: Vec<String>,
    /// Launch plus health gate, per attempt.
    pub timeout: Dur,
    /// Launch attempts before the service is marked failed.
    pub attempts: u32,
    pub approval: bool,
    /// How long a service with `approval = true` waits for it before it
    /// fails (and the run ends, freeing the region). Left out of the stored
    /// form at its default, so snapshots from before it keep their digest.
    #[serde(skip_serializing_if = "is_default_approval_timeout")]
    pub approval_timeout: Dur,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// How long old instances keep running after cutover.
    pub grace_period: Dur,
    pub launch: BTreeMap<String, serde_json::Value>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Image {
    Single(String),
    PerRegion(BTreeMap<String, String>),
}

impl Image {
    pub fn for_region(&self, region: &str) -> Option<&str> {
        match self {
            Image::Single(id) => Some(id),
            Image::PerRegion(map) => map.get(region).map(String::as_str),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    #[serde(flatten)]
    pub check: Check,
    pub interval: Dur,
    /// How long the health gate waits for a new instance to become healthy.
    pub timeout: Dur,
    /// Time allowed for one probe.
    pub probe_timeout: Dur,
    /// Consecutive passing probes that make an instance healthy.
    pub healthy_threshold: u32,
    /// Consecutive failing probes that make a healthy instance unhealthy.
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// A URL, or a path probed on the instance's own port.
    Http(String),
    /// `host:port`, or empty for the instance's own port.
    Tcp(String),
    Command(Vec<String>),
}

/// Written as the manifest writes it: `http = "…"`, `tcp = true`, `command = […]`.
impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            Check::Http(u) => m.serialize_entry("http", u)?,
            Check::Tcp(a) if a.is_empty() => m.serialize_entry("tcp", &true)?,
            Check::Tcp(a) => m.serialize_entry("tcp", a)?,
            Check::Command(argv) => m.serialize_entry("command", argv)?,
        }
        m.end()
    }
}

/// One thing wrong with a manifest, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Option<Pos>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = self.pos {
            write!(f, "{pos}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl Manifest {
    pub fn dag(&self) -> Dag {
        Dag::new(self.services.iter().map(|(n, s)| (n.as_str(), s.depends_on.as_slice())))
    }

    pub fn image_for(&self, service: &str, region: &str) -> Option<&str> {
        self.services.get(service).and_then(|s| s.image.for_region(region))
    }
}

/// Parses and validates manifest text; `Err` lists every problem found.
pub fn parse(bytes: &[u8], format: Format) -> Result<Manifest, Vec<Problem>> {
    let whole = |message: String| vec![Problem { pos: None, path: String::new(), message }];
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(whole(format!(
            "manifest is {} bytes, larger than the {} MiB limit",
            bytes.len(),
            MAX_MANIFEST_BYTES / (1024 * 1024)
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        whole(format!(
            "manifest is not UTF-8 text (invalid byte at offset {}); is this a binary file?",
            e.valid_up_to()
        ))
    })?;
    if text.contains('\0') {
        return Err(whole("manifest contains NUL bytes; is this a binary file?".into()));
    }
    if text.trim().is_empty() {
        return Err(whole("manifest is empty; it needs `environment`, `region` and at least one service".into()));
    }
    let root = source::parse(text, format).map_err(|errors| {
        errors.into_iter().map(|e| Problem { pos: e.pos, path: String::new(), message: e.message }).collect::<Vec<_>>()
    })?;
    validate(root)
}

/// Validates a stored manifest, already parsed as JSON (a snapshot's). The
/// size limit is for what users send: the stored form spells out every
/// default and may be larger than the text it was pushed as.
pub fn from_stored(value: serde_json::Value) -> Result<Manifest, Vec<Problem>> {
    validate(source::from_json_value(value))
}

fn validate(root: Node) -> Result<Manifest, Vec<Problem>> {
    let whole = |message: String| vec![Problem { pos: None, path: String::new(), message }];
    if matches!(&root.value, Value::Table(entries) if entries.is_empty()) {
        return Err(whole("manifest is empty; it needs `environment`, `region` and at least one service".into()));
    }
    let mut v = Validator::default();
    let manifest = v.manifest(&root);
    match manifest {
        Some(m) if v.problems.is_empty() => Ok(m),
        _ => {
            if v.problems.is_empty() {
                v.problem(root.pos, "", "manifest is invalid".into());
            }
            // In file order; problems without a position (JSON) keep theirs.
            v.problems.sort_by_key(|p| p.pos.map(|x| (x.line, x.col)).unwrap_or((usize::MAX, 0)));
            Err(v.problems)
        }
    }
}

/// `[a-z0-9-]`, 1 to 63 characters, starting and ending with a letter or digit.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Why an image reference is not an immutable ID, if it is not.
pub fn image_id_problem(id: &str, provider: Provider) -> Option<String> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let ami = id.strip_prefix("ami-").is_some_and(|h| (h.len() == 8 || h.len() == 17) && hex(h));
    let digest = id.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && hex(h));
    match provider {
        _ if id.starts_with("ami-") && !ami => Some(format!(
            "image \"{id}\" is not a valid AMI ID (expected ami- followed by 8 or 17 lowercase hex digits)"
        )),
        _ if id.starts_with("sha256:") && !digest => {
            Some(format!("image \"{id}\" is not a valid digest (expected sha256: followed by 64 lowercase hex digits)"))
        }
        Provider::Local if ami => Some(format!(
            "image \"{id}\" is an AMI, but the local provider runs artifacts imported with `lifeboat image import` (sha256:…)"
        )),
        Provider::Ec2 if digest => {
            Some(format!("image \"{id}\" is a digest, but the ec2 provider launches AMIs (ami-…)"))
        }
        _ if ami || digest => None,
        _ => Some(format!(
            "image \"{id}\" is not an immutable image ID: use an AMI ID (ami-…) or a content digest (sha256:…); mutable tags such as `nginx:latest` are refused"
        )),
    }
}

impl Validator {
    fn manifest(&mut self, root: &Node) -> Option<Manifest> {
        let mut f = self.table(root, "")?;
        let pos = root.pos;
        let environment = self.required(&mut f, "environment", pos).and_then(|n| {
            let s = self.string(n, "environment")?;
            if is_valid_name(&s) {
                Some(s)
            } else {
                self.problem(
                    n.pos,
                    "environment",
                    format!("\"{s}\" is not a valid environment name: use 1 to 63 characters of a-z, 0-9 and -"),
                );
                None
            }
        });
        let region = self.required(&mut f, "region", pos).and_then(|n| {
            let s = self.string(n, "region")?;
            if is_valid_name(&s) {
                Some(s)
            } else {
                self.problem(
                    n.pos,
                    "region",
                    format!("\"{s}\" is not a valid region name: use 1 to 63 characters of a-z, 0-9 and -"),
                );
                None
            }
        });
        let provider = match f.take("provider") {
            None => Some(Provider::Local),
            Some(n) => match self.string(n, "provider").as_deref() {
                Some("local") => Some(Provider::Local),
                Some("ec2") => Some(Provider::Ec2),
                Some(other) => {
                    self.problem(
                        n.pos,
                        "provider",
                        format!("unknown provider \"{other}\"; expected \"local\" or \"ec2\""),
                    );
                    None
                }
                None => None,
            },
        };
        let rto_objective = match f.take("rto_objective") {
            None => Some(None),
            Some(n) => self.duration(n, "rto_objective", Dur::secs(1), Dur::secs(7 * 86_400)).map(Some),
        };
        let promotion = match f.take("promotion") {
            None => Some(Promotion::Manual),
            Some(n) => match self.string(n, "promotion").as_deref() {
                Some("manual") => Some(Promotion::Manual),
                Some("drill") => Some(Promotion::Drill),
                Some(other) => {
                    self.problem(
                        n.pos,
                        "promotion",
                        format!("unknown promotion policy \"{other}\"; expected \"manual\" or \"drill\""),
                    );
                    None
                }
                None => None,
            },
        };
        let services_node = self.required(&mut f, "services", pos);
        let verify_node = f.take("verify");
        self.finish(f, &["environment", "region", "provider", "rto_objective", "promotion", "services", "verify"]);

        let mut services = BTreeMap::new();
        let mut declared = BTreeSet::new();
        let mut services_ok = true;
        if let Some(node) = services_node {
            if let Some(mut sf) = self.table(node, "services") {
                if sf.entries.is_empty() {
                    self.problem(node.pos, "services", "a manifest needs at least one service".into());
                    services_ok = false;
                }
                if sf.entries.len() > MAX_SERVICES {
                    self.problem(
                        node.pos,
                        "services",
                        format!("{} services is more than the limit of {MAX_SERVICES}", sf.entries.len()),
                    );
                    services_ok = false;
                }
                declared = sf.entries.iter().map(|e| e.key.clone()).collect();
                for i in 0..sf.entries.len() {
                    sf.used[i] = true;
                    let e = &sf.entries[i];
                    let path = join("services", &e.key);
                    if !is_valid_name(&e.key) {
                        self.problem(
                            e.key_pos.or(e.node.pos),
                            &path,
                            format!(
                                "\"{}\" is not a valid service name: use 1 to 63 characters of a-z, 0-9 and -",
                                e.key
                            ),
                        );
                        services_ok = false;
                    }
                    match self.service(&e.node, &path, region.as_deref(), provider) {
                        Some(s) => {
                            services.insert(e.key.clone(), s);
                        }
                        None => services_ok = false,
                    }
                }
                self.dependencies(sf.entries, &services, services_ok);
            } else {
                services_ok = false;
            }
        }
        if provider == Some(Provider::Local) {
            self.listen_conflicts(&services);
        }
        let verify = match verify_node {
            None => Some(Vec::new()),
            Some(n) => self.verify(n, &services, &declared, provider),
        };
        Some(Manifest {
            verify: verify?,
            environment: environment?,
            region: region?,
            provider: provider?,
            rto_objective: rto_objective?,
            promotion: promotion?,
            services: if services_ok { services } else { return None },
        })
    }

    /// Dependencies on undeclared services, repeats, limits; cycles only
    /// when every service parsed (`complete`).
    fn dependencies(&mut self, entries: &[Entry], services: &BTreeMap<String, Service>, complete: bool) {
        let declared: BTreeSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        for e in entries {
            let deps_node = match &e.node.value {
                Value::Table(t) => t.iter().find(|x| x.key == "depends_on").map(|x| &x.node),
                _ => None,
            };
            // A service with a problem elsewhere (a bad image) still has its
            // dependencies checked: every problem is reported at once.
            let raw: Vec<String>;
            let depends_on = match services.get(&e.key) {
                Some(s) => &s.depends_on,
                None => {
                    raw = match deps_node.map(|n| &n.value) {
                        Some(Value::Array(items)) => items
                            .iter()
                            .filter_map(|n| match &n.value {
                                Value::Str(d) => Some(d.clone()),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    &raw
                }
            };
            let item_pos = |i: usize| match deps_node.map(|n| &n.value) {
                Some(Value::Array(items)) => items.get(i).and_then(|n| n.pos),
                _ => None,
            };
            let path = join(&join("services", &e.key), "depends_on");
            if depends_on.len() > MAX_DEPENDENCIES {
                self.problem(
                    deps_node.and_then(|n| n.pos),
                    &path,
                    format!("{} dependencies is more than the limit of {MAX_DEPENDENCIES}", depends_on.len()),
                );
            }
            let mut seen = BTreeSet::new();
            for (i, d) in depends_on.iter().enumerate() {
                if !declared.contains(d.as_str()) {
                    self.problem(
                        item_pos(i),
                        &validator::index(&path, i),
                        format!("service \"{}\" depends on \"{d}\", which is not defined in this manifest", e.key),
                    );
                } else if !seen.insert(d) {
                    self.problem(item_pos(i), &validator::index(&path, i), format!("\"{d}\" is listed twice"));
                }
            }
        }
        if !complete {
            return;
        }
        let mut dag_input: Vec<(&str, &[String])> = Vec::new();
        for (n, s) in services {
            dag_input.push((n.as_str(), s.depends_on.as_slice()));
        }
        for cycle in Dag::new(dag_input).cycles() {
            let first = &cycle[0];
            let pos = entries.iter().find(|e| &e.key == first).and_then(|e| e.key_pos.or(e.node.pos));
            let message = if cycle.len() == 2 {
                format!("service \"{first}\" depends on itself")
            } else {
                format!("dependency cycle: {}", cycle.join(" -> "))
            };
            self.problem(pos, &join(&join("services", first), "depends_on"), message);
        }
    }

    fn listen_conflicts(&mut self, services: &BTreeMap<String, Service>) {
        let mut by_addr: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, s) in services {
            if let Some(serde_json::Value::String(addr)) = s.launch.get("listen") {
                by_addr.entry(addr).or_default().push(name);
            }
        }
        for (addr, names) in by_addr {
            if names.len() > 1 {
                self.problem(
                    None,
                    &format!("services.{}.launch.listen", names[1]),
                    format!("services {} all listen on {addr}; each service needs its own address", names.join(", ")),
                );
            }
        }
    }

    fn service(
        &mut self,
        node: &Node,
        path: &str,
        region: Option<&str>,
        provider: Option<Provider>,
    ) -> Option<Service> {
        let mut f = self.table(node, path)?;
        let image = self
            .required(&mut f, "image", node.pos)
            .and_then(|n| self.image(n, &join(path, "image"), region, provider));
        let replicas = match f.take("replicas") {
            None => Some(1),
            Some(n) => self.int(n, &join(path, "replicas"), 1, MAX_REPLICAS).map(|r| r as u32),
        };
        let depends_on = match f.take("depends_on") {
            None => Some(Vec::new()),
            Some(n) => self.strings(n, &join(path, "depends_on")),
        };
        let timeout = self.opt_duration(&mut f, "timeout", Dur::secs(300), Dur::secs(1), Dur::secs(86_400));
        let attempts = match f.take("attempts") {
            None => Some(3),
            Some(n) => self.int(n, &join(path, "attempts"), 1, 20).map(|a| a as u32),
        };
        let approval = match f.take("approval") {
            None => Some(false),
            Some(n) => self.boolean(n, &join(path, "approval")),
        };
        let approval_timeout = self.opt_duration(
            &mut f,
            "approval_timeout",
            DEFAULT_APPROVAL_TIMEOUT,
            Dur::secs(1),
            Dur::secs(7 * 86_400),
        );
        let health = match f.take("health") {
            None => Some(None),
            Some(n) => self.health(n, &join(path, "health"), provider).map(Some),
        };
        let grace_period = self.opt_duration(&mut f, "grace_period", Dur::secs(5), Dur::secs(0), Dur::secs(3_600));
        let launch = match f.take("launch") {
            None => Some(BTreeMap::new()),
            Some(n) => self.launch(n, &join(path, "launch"), provider),
        };
        let tags = match f.take("tags") {
            None => Some(BTreeMap::new()),
            Some(n) => self.string_map(n, &join(path, "tags")),
        };
        self.finish(
            f,
            &[
                "image",
                "replicas",
                "depends_on",
                "timeout",
                "attempts",
                "approval",
                "approval_timeout",
                "health",
                "grace_period",
                "launch",
                "tags",
            ],
        );
        Some(Service {
            image: image?,
            replicas: replicas?,
            depends_on: depends_on?,
            timeout: timeout?,
            attempts: attempts?,
            approval: approval?,
            approval_timeout: approval_timeout?,
            health: health?,
            grace_period: grace_period?,
            launch: launch?,
            tags: tags?,
        })
    }

    fn image(&mut self, node: &Node, path: &str, region: Option<&str>, provider: Option<Provider>) -> Option<Image> {
        let check = |v: &mut Self, id: &str, pos, path: &str| match provider.and_then(|p| image_id_problem(id, p)) {
            Some(msg) => {
                v.problem(pos, path, msg);
                false
            }
            None => true,
        };
        match &node.value {
            Value::Str(id) => check(self, id, node.pos, path).then(|| Image::Single(id.clone())),
            Value::Table(_) => {
                let map = self.string_map(node, path)?;
                let mut ok = true;
                let Value::Table(entries) = &node.value else { return None };
                for e in entries {
                    let p = join(path, &e.key);
                    if !is_valid_name(&e.key) {
                        self.problem(e.key_pos, &p, format!("\"{}\" is not a valid region name", e.key));
                        ok = false;
                    }
                    if let Value::Str(id) = &e.node.value {
                        ok &= check(self, id, e.node.pos, &p);
                    }
                }
                if let Some(r) = region
                    && !map.contains_key(r)
                {
                    self.problem(
                        node.pos,
                        path,
                        format!(
                            "no image for the manifest's region \"{r}\" (images are given for: {})",
                            map.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    );
                    ok = false;
                }
                ok.then_some(Image::PerRegion(map))
            }
            other => {
                self.problem(
                    node.pos,
                    path,
                    format!("expected an image ID or a table of region = image ID, found {}", other.type_name()),
                );
                None
            }
        }
    }

    fn health(&mut self, node: &Node, path: &str, provider: Option<Provider>) -> Option<Health> {
        let mut f = self.table(node, path)?;
        let mut checks = Vec::new();
        if let Some(n) = f.take("http") {
            let p = join(path, "http");
            if let Some(s) = self.string(n, &p) {
                let absolute = s.starts_with("http://") || s.starts_with("https://");
                if !absolute && !s.starts_with('/') {
                    self.problem(n.pos, &p, format!("\"{s}\" is neither a URL (http://host:port/path) nor a path on the instance's own port (/healthz)"));
                } else if !absolute && provider == Some(Provider::Ec2) {
                    self.problem(n.pos, &p, "the ec2 provider needs an absolute health URL or `tcp`".into());
                } else {
                    checks.push(Check::Http(s));
                }
            }
        }
        if let Some(n) = f.take("tcp") {
            let p = join(path, "tcp");
            match &n.value {
                Value::Bool(true) => checks.push(Check::Tcp(String::new())),
                Value::Str(s)
                    if s.rsplit_once(':')
                        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|x| x > 0)) =>
                {
                    checks.push(Check::Tcp(s.clone()))
                }
                other => self.problem(
                    n.pos,
                    &p,
                    format!(
                        "expected `true` (the instance's own port) or \"host:port\", found {}",
                        match other {
                            Value::Str(s) => format!("\"{s}\""),
                            v => v.type_name().to_string(),
                        }
                    ),
                ),
            }
        }
        if let Some(n) = f.take("command") {
            let p = join(path, "command");
            if let Some(argv) = self.strings(n, &p) {
                if argv.is_empty() || argv[0].is_empty() {
                    self.problem(n.pos, &p, "a health command needs at least a program name".into());
                } else {
                    checks.push(Check::Command(argv));
                }
            }
        }
        let interval = self.opt_duration(&mut f, "interval", Dur::secs(2), Dur::millis(100), Dur::secs(600));
        let timeout = self.opt_duration(&mut f, "timeout", Dur::secs(60), Dur::millis(100), Dur::secs(86_400));
        let probe_timeout = self.opt_duration(&mut f, "probe_timeout", Dur::secs(2), Dur::millis(10), Dur::secs(600));
        let healthy_threshold = match f.take("healthy_threshold") {
            None => Some(1),
            Some(n) => self.int(n, &join(path, "healthy_threshold"), 1, 100).map(|x| x as u32),
        };
        let unhealthy_threshold = match f.take("unhealthy_threshold") {
            None => Some(3),
            Some(n) => self.int(n, &join(path, "unhealthy_threshold"), 1, 100).map(|x| x as u32),
        };
        self.finish(
            f,
            &[
                "http",
                "tcp",
                "command",
                "interval",
                "timeout",
                "probe_timeout",
                "healthy_threshold",
                "unhealthy_threshold",
            ],
        );
        if checks.len() != 1 {
            self.problem(
                node.pos,
                path,
                format!("a health check needs exactly one of `http`, `tcp` or `command` ({} given)", checks.len()),
            );
            return None;
        }
        Some(Health {
            check: checks.pop()?,
            interval: interval?,
            timeout: timeout?,
            probe_timeout: probe_timeout?,
            healthy_threshold: healthy_threshold?,
            unhealthy_threshold: unhealthy_threshold?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
environment = "shop"
region = "eu-west-1"
rto_objective = "10m"

[services.db]
image = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
health = { tcp = true }
launch = { listen = "127.0.0.1:7801" }

[services.api]
image = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
depends_on = ["db"]
health = { http = "/healthz", interval = "1s" }
"#;

    fn problems(text: &str) -> Vec<String> {
        parse(text.as_bytes(), Format::detect("m.toml", text))
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn good_manifest_parses_with_defaults() {
        let m = parse(GOOD.as_bytes(), Format::Toml).unwrap();
        assert_eq!(m.services.len(), 2);
        let api = &m.services["api"];
        assert_eq!(api.replicas, 1);
        assert_eq!(api.timeout, Dur::secs(300));
        assert_eq!(api.health.as_ref().unwrap().check, Check::Http("/healthz".into()));
        assert_eq!(m.rto_objective, Some(Dur::secs(600)));
        // A stored manifest round-trips through JSON unchanged.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(parse(json.as_bytes(), Format::Json).unwrap(), m);
    }

    #[test]
    fn reports_every_problem_with_location() {
        let text = GOOD.replace("depends_on = [\"db\"]", "depends_on = [\"cache\"]\nreplica = 2");
        let p = problems(&text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().any(|m| m.contains("unknown field `replica`") && m.starts_with("14:1:")), "{p:?}");
        assert!(
            p.iter().any(|m| m.contains("depends on \"cache\", which is not defined") && m.starts_with("13:15:")),
            "{p:?}"
        );
    }

    /// A service with a bad image still has its dependencies checked, and a
    /// `[[verify]]` naming it is not told the service does not exist.
    #[test]
    fn a_service_with_one_problem_is_checked_for_the_others() {
        let text =
            GOOD.replace("sha256:bbbb", "nginx:latest#").replace("depends_on = [\"db\"]", "depends_on = [\"cache\"]")
                + "\n[[verify]]\nservice = \"api\"\nhttp = \"http://127.0.0.1:7801/\"\n";
        let p = problems(&text);
        assert!(p.iter().any(|m| m.contains("services.api.image")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("depends on \"cache\", which is not defined")), "{p:?}");
        assert!(!p.iter().any(|m| m.contains("no service \"api\"")), "{p:?}");
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn cycle_is_reported_as_a_path() {
        let text = GOOD.replace("health = { tcp = true }", "depends_on = [\"api\"]");
        let p = problems(&text);
        assert!(p.iter().any(|m| m.contains("dependency cycle: api -> db -> api")), "{p:?}");
    }

    #[test]
    fn mutable_tags_and_bad_digests_are_refused() {
        assert!(image_id_problem("nginx:latest", Provider::Local).unwrap().contains("mutable tags"));
        assert!(image_id_problem("sha256:abc", Provider::Local).unwrap().contains("64 lowercase hex"));
        assert!(image_id_problem("ami-0123456789abcdef0", Provider::Local).unwrap().contains("local provider"));
        assert!(image_id_problem("ami-0123456789abcdef0", Provider::Ec2).is_none());
        assert!(image_id_problem("ami-12345678", Provider::Ec2).is_none());
        assert!(image_id_problem("ami-XYZ", Provider::Ec2).is_some());
    }

    #[test]
    fn region_map_must_cover_home_region() {
        let text = r#"
environment = "shop"
region = "eu-west-1"
provider = "ec2"
[services.web]
image = { eu-central-1 = "ami-0123456789abcdef0" }
health = { tcp = "10.0.0.1:80" }
"#;
        let p = problems(text);
        assert!(p.iter().any(|m| m.contains("no image for the manifest's region \"eu-west-1\"")), "{p:?}");
    }

    #[test]
    fn json_duplicates_and_limits() {
        let text = r#"{"environment":"shop","environment":"shop","region":"r","services":{"a":{"image":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","replicas":0}}}"#;
        let p = problems(text);
        assert!(p.iter().any(|m| m.contains("duplicate key `environment`")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("replicas: 0 is out of range")), "{p:?}");
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(parse(&big, Format::Toml).unwrap_err()[0].message.contains("8 MiB"));
    }
}
