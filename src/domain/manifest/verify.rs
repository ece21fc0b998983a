//! `[[verify]]`: smoke checks run once every service of a run is healthy
//! (an HTTP request to a service, or a command). A run whose check fails
//! fails, even though every service was healthy.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::validator::{Validator, join};
use super::{Provider, Service};
use crate::domain::duration::Dur;
use crate::domain::source::{Node, Value};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyCheck {
    pub name: String,
    #[serde(flatten)]
    pub probe: VerifyProbe,
    /// How long the check may keep trying (traffic just moved).
    pub timeout: Dur,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum VerifyProbe {
    /// GET `path` on `service`'s address (or an absolute URL).
    Http {
        #[serde(skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        http: String,
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        body_contains: Option<String>,
    },
    /// A program on the server's host; exit 0 passes.
    Command { command: Vec<String> },
}

impl Validator {
    /// `declared`: every service name of the manifest, including those that
    /// have problems of their own (and so are not in `services`).
    pub(crate) fn verify(
        &mut self,
        node: &Node,
        services: &BTreeMap<String, Service>,
        declared: &BTreeSet<String>,
        provider: Option<Provider>,
    ) -> Option<Vec<VerifyCheck>> {
        let Value::Array(items) = &node.value else {
            self.problem(node.pos, "verify", "expected an array of checks ([[verify]] tables)".into());
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.check(item, &format!("verify[{i}]"), services, declared, provider) {
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn check(
        &mut self,
        node: &Node,
        path: &str,
        services: &BTreeMap<String, Service>,
        declared: &BTreeSet<String>,
        provider: Option<Provider>,
    ) -> Option<VerifyCheck> {
        let mut f = self.table(node, path)?;
        let name = match f.take("name") {
            Some(n) => self.string(n, &join(path, "name"))?,
            None => path.to_string(),
        };
        let timeout = self.opt_duration(&mut f, "timeout", Dur::secs(10), Dur::millis(100), Dur::secs(3_600));
        let service = match f.take("service") {
            Some(n) => {
                let s = self.string(n, &join(path, "service"))?;
                if !declared.contains(&s) {
                    self.problem(n.pos, &join(path, "service"), format!("no service \"{s}\" in this manifest"));
                    return None;
                }
                Some(s)
            }
            None => None,
        };
        let http = f.take("http");
        let command = f.take("command");
        let probe = match (http, command) {
            (Some(h), None) => {
                let p = join(path, "http");
                let url = self.string(h, &p)?;
                let absolute = url.starts_with("http://") || url.starts_with("https://");
                if !absolute && !url.starts_with('/') {
                    self.problem(h.pos, &p, format!("\"{url}\" is neither a URL nor a path (/healthz)"));
                    return None;
                }
                if !absolute && service.is_none() {
                    self.problem(h.pos, &p, "a path needs `service`, whose address it is requested on".into());
                    return None;
                }
                // A service with problems of its own has them reported there.
                if let (false, Some(svc)) = (absolute, service.as_ref().and_then(|s| services.get(s))) {
                    let s = service.as_deref().unwrap_or_default();
                    let has_address = match provider {
                        Some(Provider::Local) => svc.launch.contains_key("listen"),
                        Some(Provider::Ec2) => svc.launch.contains_key("dns"),
                        None => true,
                    };
                    if !has_address {
                        self.problem(
                            h.pos,
                            &p,
                            format!("service {s} has no stable address (launch.listen, or launch.dns for ec2) to request {url} on"),
                        );
                        return None;
                    }
                }
                let status = match f.take("status") {
                    None => Some(200),
                    Some(n) => self.int(n, &join(path, "status"), 100, 599).map(|x| x as u16),
                };
                let body_contains = match f.take("body_contains") {
                    None => None,
                    Some(n) => Some(self.string(n, &join(path, "body_contains"))?),
                };
                VerifyProbe::Http { service, http: url, status: status?, body_contains }
            }
            (None, Some(c)) => {
                let argv = self.strings(c, &join(path, "command"))?;
                if argv.is_empty() || argv[0].is_empty() {
                    self.problem(c.pos, &join(path, "command"), "a command needs at least a program name".into());
                    return None;
                }
                VerifyProbe::Command { command: argv }
            }
            (Some(_), Some(_)) | (None, None) => {
                self.problem(node.pos, path, "a check is exactly one of `http` or `command`".into());
                return None;
            }
        };
        self.finish(f, &["name", "service", "http", "status", "body_contains", "command", "timeout"]);
        Some(VerifyCheck { name, probe, timeout: timeout? })
    }
}
