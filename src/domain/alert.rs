//! Incoming alerts (PagerDuty v3 webhooks, Alertmanager version 4
//! notifications) and the routing rules that map one to an environment,
//! a region and a policy. Pure: no IO, no HTTP.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Where an alert came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Pagerduty,
    Alertmanager,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Pagerduty => "pagerduty",
            Source::Alertmanager => "alertmanager",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One delivery, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub source: Source,
    /// The PagerDuty incident ID or the Alertmanager group key: deliveries
    /// with the same key are one alert.
    pub key: String,
    /// Only a firing alert (`incident.triggered`, status `firing`) starts anything.
    pub firing: bool,
    /// The alert is over (`incident.resolved`, status `resolved`): its next
    /// firing is a new alert.
    pub resolved: bool,
    /// What happened, for messages: `incident.triggered`, `resolved`, …
    pub event: String,
    /// What rules match on.
    pub labels: BTreeMap<String, String>,
    /// When the event happened, if the payload says (PagerDuty's `occurred_at`).
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The delivered event's own ID (PagerDuty `event.id`), when it has one.
    pub event_id: Option<String>,
}

/// A PagerDuty v3 webhook payload (`{"event": {...}}`), for example:
/// `{"event":{"id":"01DE…","event_type":"incident.triggered","occurred_at":"2026-…",
/// "data":{"id":"Q1X…","type":"incident","title":"…","urgency":"high",
/// "service":{"id":"PSHOP01","summary":"Shop EU"}}}}`.
pub fn parse_pagerduty(body: &[u8]) -> Result<Alert, String> {
    #[derive(Deserialize)]
    struct Payload {
        event: Event,
    }
    #[derive(Deserialize)]
    struct Event {
        #[serde(default)]
        id: Option<String>,
        event_type: String,
        occurred_at: Option<String>,
        #[serde(default)]
        data: serde_json::Value,
    }
    let p: Payload = serde_json::from_slice(body).map_err(|e| format!("not a PagerDuty v3 webhook payload: {e}"))?;
    let e = p.event;
    let occurred_at = match e.occurred_at.as_deref() {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|err| format!("event.occurred_at {t:?} is not an RFC 3339 time: {err}"))?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let str_at = |path: &[&str]| {
        let mut v = &e.data;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str().map(str::to_string)
    };
    let mut labels = BTreeMap::new();
    labels.insert("event_type".to_string(), e.event_type.clone());
    for (label, path) in [
        ("service_id", &["service", "id"][..]),
        ("service", &["service", "summary"][..]),
        ("title", &["title"][..]),
        ("urgency", &["urgency"][..]),
        ("priority", &["priority", "summary"][..]),
        ("incident_key", &["incident_key"][..]),
    ] {
        if let Some(v) = str_at(path) {
            labels.insert(label.to_string(), v);
        }
    }
    let is_incident = e.event_type.starts_with("incident.");
    let key = match str_at(&["id"]) {
        Some(id) if !id.is_empty() => id,
        _ if is_incident => return Err(format!("{} event has no event.data.id (the incident ID)", e.event_type)),
        _ => String::new(),
    };
    Ok(Alert {
        source: Source::Pagerduty,
        key,
        firing: e.event_type == "incident.triggered",
        resolved: e.event_type == "incident.resolved",
        event: e.event_type,
        labels,
        occurred_at,
        event_id: e.id.filter(|id| !id.is_empty()),
    })
}

/// An Alertmanager webhook notification, version 4.
pub fn parse_alertmanager(body: &[u8]) -> Result<Alert, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload {
        version: String,
        group_key: String,
        status: String,
        #[serde(default)]
        group_labels: BTreeMap<String, String>,
        #[serde(default)]
        common_labels: BTreeMap<String, String>,
        #[serde(default)]
        receiver: String,
    }
    let p: Payload =
        serde_json::from_slice(body).map_err(|e| format!("not an Alertmanager webhook notification: {e}"))?;
    if p.version != "4" {
        return Err(format!("Alertmanager webhook version {:?} is not supported (only \"4\")", p.version));
    }
    if p.group_key.is_empty() {
        return Err("groupKey is empty".into());
    }
    if p.status != "firing" && p.status != "resolved" {
        return Err(format!("status {:?} is neither \"firing\" nor \"resolved\"", p.status));
    }
    let mut labels = p.group_labels;
    labels.extend(p.common_labels);
    labels.entry("receiver".into()).or_insert(p.receiver);
    Ok(Alert {
        source: Source::Alertmanager,
        key: p.group_key,
        firing: p.status == "firing",
        resolved: p.status == "resolved",
        event: p.status,
        labels,
        occurred_at: None,
        event_id: None,
    })
}

/// An Alertmanager-style matcher: `name="value"`, `name!="value"`,
/// `name=~"regex"` or `name!~"regex"` (regexes match the whole value).
#[derive(Debug, Clone)]
pub struct Matcher {
    text: String,
    name: String,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Eq(String),
    Ne(String),
    Re(regex::Regex),
    NotRe(regex::Regex),
}

impl Matcher {
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let t = text.trim();
        let at = t
            .find(['=', '!'])
            .ok_or_else(|| format!("matcher {text:?} has no operator (use name=\"value\", !=, =~ or !~)"))?;
        let name = t[..at].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("matcher {text:?}: {name:?} is not a label name"));
        }
        let rest = &t[at..];
        let (op, value) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
            .ok_or_else(|| format!("matcher {text:?}: unknown operator (use =, !=, =~ or !~)"))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("matcher {text:?}: the value must be in double quotes"))?
            .to_string();
        let regex =
            |v: &str| regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("matcher {text:?}: bad regex: {e}"));
        let op = match op {
            "=" => Op::Eq(value),
            "!=" => Op::Ne(value),
            "=~" => Op::Re(regex(&value)?),
            _ => Op::NotRe(regex(&value)?),
        };
        Ok(Matcher { text: t.to_string(), name: name.to_string(), op })
    }

    /// A missing label is the empty string, as in Alertmanager.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match &self.op {
            Op::Eq(x) => v == x,
            Op::Ne(x) => v != x,
            Op::Re(r) => r.is_match(v),
            Op::NotRe(r) => !r.is_match(v),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a matched alert does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Plan a recovery and wait for `lifeboat run approve ID`.
    #[default]
    Propose,
    /// Recover from known-good at once.
    Auto,
    /// Do nothing (but say so).
    Ignore,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Propose => "propose",
            Policy::Auto => "auto",
            Policy::Ignore => "ignore",
        }
    }
}

/// `[[webhooks.rules]]` as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// `pagerduty` or `alertmanager`; any source when absent.
    pub source: Option<Source>,
    /// Every matcher must hold (`service_id="PSHOP01"`, `alertname=~"Region.*"`).
    #[serde(default, rename = "match")]
    pub matchers: Vec<String>,
    pub environment: String,
    /// The region to recover; the snapshot's own when absent.
    pub region: Option<String>,
    #[serde(default)]
    pub policy: Policy,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub source: Option<Source>,
    pub matchers: Vec<Matcher>,
    pub environment: String,
    pub region: Option<String>,
    pub policy: Policy,
}

/// The rules in order; the first that matches decides.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    rules: Vec<Rule>,
}

impl Routes {
    /// Checks every rule, naming the one that is wrong.
    pub fn new(rules: &[RuleConfig]) -> Result<Routes, String> {
        let mut out = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in rules.iter().enumerate() {
            let at = format!("webhooks.rules[{i}] ({:?})", r.name);
            if r.name.trim().is_empty() {
                return Err(format!("webhooks.rules[{i}]: name is empty"));
            }
            if !names.insert(r.name.clone()) {
                return Err(format!("{at}: a rule of that name is already defined"));
            }
            if let Err(e) = crate::store::check_environment(&r.environment) {
                return Err(format!("{at}: environment: {e}"));
            }
            let matchers = r
                .matchers
                .iter()
                .map(|m| Matcher::parse(m))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{at}: {e}"))?;
            out.push(Rule {
                name: r.name.clone(),
                source: r.source,
                matchers,
                environment: r.environment.clone(),
                region: r.region.clone().filter(|r| !r.is_empty()),
                policy: r.policy,
            });
        }
        Ok(Routes { rules: out })
    }

    pub fn route(&self, alert: &Alert) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.source.is_none_or(|s| s == alert.source) && r.matchers.iter().all(|m| m.matches(&alert.labels)))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pd(event_type: &str, service: &str) -> Vec<u8> {
        serde_json::json!({"event": {"id": "01E", "event_type": event_type, "resource_type": "incident",
            "occurred_at": "2026-11-28T10:00:00.000Z",
            "data": {"id": "Q1INC", "type": "incident", "title": "Shop EU is down", "urgency": "high",
                     "service": {"id": service, "summary": "Shop EU", "type": "service_reference"}}}})
        .to_string()
        .into_bytes()
    }

    fn am(status: &str) -> Vec<u8> {
        serde_json::json!({"version": "4", "groupKey": "{}:{alertname=\"RegionDown\"}", "status": status,
            "receiver": "lifeboat", "groupLabels": {"alertname": "RegionDown"},
            "commonLabels": {"alertname": "RegionDown", "region": "eu-west-1", "severity": "page"},
            "alerts": []})
        .to_string()
        .into_bytes()
    }

    fn rules(text: &str) -> Routes {
        #[derive(Deserialize)]
        struct R {
            rules: Vec<RuleConfig>,
        }
        Routes::new(&toml::from_str::<R>(text).unwrap().rules).unwrap()
    }

    #[test]
    fn pagerduty_payloads_become_alerts() {
        let a = parse_pagerduty(&pd("incident.triggered", "PSHOP01")).unwrap();
        assert_eq!((a.key.as_str(), a.firing), ("Q1INC", true));
        assert_eq!(a.labels["service_id"], "PSHOP01");
        assert_eq!(a.labels["service"], "Shop EU");
        assert_eq!(a.labels["title"], "Shop EU is down");
        assert!(a.occurred_at.is_some());
        for quiet in ["incident.acknowledged", "incident.resolved"] {
            assert!(!parse_pagerduty(&pd(quiet, "PSHOP01")).unwrap().firing, "{quiet}");
        }
        let ping = parse_pagerduty(br#"{"event":{"event_type":"pagey.ping","data":{}}}"#).unwrap();
        assert!(!ping.firing);
        let e = parse_pagerduty(br#"{"event":{"event_type":"incident.triggered","data":{}}}"#).unwrap_err();
        assert!(e.contains("event.data.id"), "{e}");
        let e = parse_pagerduty(b"{\"event\": ").unwrap_err();
        assert!(e.contains("not a PagerDuty"), "{e}");
    }

    #[test]
    fn alertmanager_payloads_become_alerts() {
        let a = parse_alertmanager(&am("firing")).unwrap();
        assert!(a.firing);
        assert_eq!(a.key, "{}:{alertname=\"RegionDown\"}");
        assert_eq!(a.labels["region"], "eu-west-1");
        assert!(!parse_alertmanager(&am("resolved")).unwrap().firing);
        let v3 = String::from_utf8(am("firing")).unwrap().replace("\"4\"", "\"3\"");
        assert!(parse_alertmanager(v3.as_bytes()).unwrap_err().contains("version \"3\""));
    }

    #[test]
    fn matchers_follow_alertmanager_syntax() {
        let labels: BTreeMap<String, String> = [("alertname", "RegionDown"), ("severity", "page")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (m, want) in [
            (r#"alertname="RegionDown""#, true),
            (r#"alertname!="RegionDown""#, false),
            (r#"alertname=~"Region.*""#, true),
            (r#"alertname=~"Region""#, false),
            (r#"severity!~"info|warning""#, true),
            (r#"team="""#, true),
            (r#" severity = "page" "#, true),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&labels), want, "{m}");
        }
        for (bad, says) in [
            ("alertname", "no operator"),
            ("alertname=RegionDown", "double quotes"),
            (r#"alert-name="x""#, "not a label name"),
            (r#"a=~"(""#, "bad regex"),
        ] {
            let e = Matcher::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let routes = rules(
            r#"
            [[rules]]
            name = "shop-pd"
            source = "pagerduty"
            match = ['service_id="PSHOP01"']
            environment = "shop"
            policy = "auto"
            [[rules]]
            name = "quiet"
            match = ['severity="info"']
            environment = "shop"
            policy = "ignore"
            [[rules]]
            name = "any-region-down"
            match = ['alertname="RegionDown"']
            environment = "shop"
            region = "eu-west-1"
            "#,
        );
        let pd_alert = parse_pagerduty(&pd("incident.triggered", "PSHOP01")).unwrap();
        let r = routes.route(&pd_alert).unwrap();
        assert_eq!((r.name.as_str(), r.policy), ("shop-pd", Policy::Auto));
        assert!(routes.route(&parse_pagerduty(&pd("incident.triggered", "POTHER")).unwrap()).is_none());
        let r = routes.route(&parse_alertmanager(&am("firing")).unwrap()).unwrap();
        assert_eq!(
            (r.name.as_str(), r.policy, r.region.as_deref()),
            ("any-region-down", Policy::Propose, Some("eu-west-1"))
        );
    }

    #[test]
    fn bad_rules_are_named() {
        #[derive(Deserialize)]
        struct R {
            #[allow(dead_code)]
            rules: Vec<RuleConfig>,
        }
        let e = toml::from_str::<R>("[[rules]]\nname = \"x\"\nenvironment = \"shop\"\npolicy = \"yolo\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("yolo"), "{e}");
        let parse = |t: &str| Routes::new(&toml::from_str::<R>(t).unwrap().rules).unwrap_err();
        let e = parse("[[rules]]\nname = \"x\"\nenvironment = \"shop\"\nmatch = ['a=b']\n");
        assert!(e.contains("webhooks.rules[0] (\"x\")") && e.contains("double quotes"), "{e}");
        let e = parse("[[rules]]\nname = \"x\"\nenvironment = \"Shop/EU\"\n");
        assert!(e.contains("environment"), "{e}");
        let e = parse("[[rules]]\nname = \"x\"\nenvironment = \"a\"\n[[rules]]\nname = \"x\"\nenvironment = \"b\"\n");
        assert!(e.contains("already defined"), "{e}");
    }
}
