//! The ec2 provider's `launch` table. Network settings may differ per
//! region (a map region → value), so one snapshot can be recovered into
//! another region:
//!
//! ```toml
//! launch = { instance_type = "t3.small", subnets = { eu-west-1 = ["subnet-0a1b2c3d"], eu-central-1 = ["subnet-4e5f6a7b"] },
//!            security_groups = ["sg-0123abcd"], target_groups = ["arn:aws:elasticloadbalancing:…"],
//!            dns = { zone_id = "Z123", name = "api.shop.example.com", ttl = 60 },
//!            root_volume = { size_gb = 20, type = "gp3" }, iam_instance_profile = "api", key_name = "ops", user_data = "…" }
//! ```

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::super::is_valid_name;
use super::super::validator::{Validator, join};
use crate::domain::source::{Node, Value};

const KEYS: [&str; 9] = [
    "instance_type",
    "subnets",
    "security_groups",
    "iam_instance_profile",
    "key_name",
    "user_data",
    "root_volume",
    "target_groups",
    "dns",
];
const VOLUME_TYPES: [&str; 7] = ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];
/// EC2's limit on user data (before base64).
const MAX_USER_DATA: usize = 16 * 1024;

pub(super) fn launch(v: &mut Validator, node: &Node, path: &str) -> Option<BTreeMap<String, Json>> {
    let mut f = v.table(node, path)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    let mut put = |key: &str, value: Option<Json>| match value {
        Some(x) => {
            out.insert(key.to_string(), x);
        }
        None => ok = false,
    };
    if let Some(n) = f.take("instance_type") {
        let p = join(path, "instance_type");
        put(
            "instance_type",
            checked_string(v, n, &p, is_instance_type, "an instance type such as \"t3.small\"").map(Json::from),
        );
    }
    for (key, prefix) in [("subnets", "subnet-"), ("security_groups", "sg-")] {
        if let Some(n) = f.take(key) {
            let p = join(path, key);
            let check = move |s: &str| s.strip_prefix(prefix).is_some_and(is_resource_hex);
            let what = format!("an ID such as \"{prefix}0a1b2c3d\"");
            put(key, per_region(v, n, &p, &mut |v, n, p| list(v, n, p, &check, &what)));
        }
    }
    if let Some(n) = f.take("target_groups") {
        let p = join(path, "target_groups");
        let what = "a target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)";
        put("target_groups", per_region(v, n, &p, &mut |v, n, p| list(v, n, p, &is_target_group_arn, what)));
    }
    for key in ["iam_instance_profile", "key_name"] {
        if let Some(n) = f.take(key) {
            let p = join(path, key);
            put(
                key,
                checked_string(v, n, &p, |s| !s.is_empty() && s.len() <= 2048, "a non-empty name").map(Json::from),
            );
        }
    }
    if let Some(n) = f.take("user_data") {
        let p = join(path, "user_data");
        let fits = |s: &str| s.len() <= MAX_USER_DATA;
        put("user_data", checked_string(v, n, &p, fits, "at most 16 KiB of text").map(Json::from));
    }
    if let Some(n) = f.take("root_volume") {
        put("root_volume", root_volume(v, n, &join(path, "root_volume")));
    }
    if let Some(n) = f.take("dns") {
        let p = join(path, "dns");
        // One record, or a map region → record.
        let single = matches!(&n.value, Value::Table(e) if e.iter().any(|e| ["zone_id", "name", "ttl"].contains(&e.key.as_str())));
        put("dns", if single { dns(v, n, &p) } else { region_map(v, n, &p, &mut dns) });
    }
    v.finish(f, &KEYS);
    ok.then_some(out)
}

fn is_resource_hex(h: &str) -> bool {
    (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_instance_type(s: &str) -> bool {
    let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    s.split_once('.').is_some_and(|(family, size)| ok(family) && ok(size))
}

fn is_target_group_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "elasticloadbalancing"
        && parts[5].starts_with("targetgroup/")
}

fn checked_string(v: &mut Validator, n: &Node, p: &str, check: impl Fn(&str) -> bool, what: &str) -> Option<String> {
    let s = v.string(n, p)?;
    if check(&s) {
        Some(s)
    } else {
        v.problem(n.pos, p, format!("\"{}\" is not {what}", crate::error::shown(&s)));
        None
    }
}

fn list(v: &mut Validator, n: &Node, p: &str, check: &dyn Fn(&str) -> bool, what: &str) -> Option<Json> {
    let items = v.strings(n, p)?;
    if items.is_empty() {
        v.problem(n.pos, p, format!("is empty; give at least one, {what}"));
        return None;
    }
    let mut ok = true;
    if let Value::Array(nodes) = &n.value {
        for (i, (s, node)) in items.iter().zip(nodes).enumerate() {
            if !check(s) {
                v.problem(node.pos, &format!("{p}[{i}]"), format!("\"{}\" is not {what}", crate::error::shown(s)));
                ok = false;
            }
        }
    }
    ok.then(|| json!(items))
}

type Check<'a> = dyn FnMut(&mut Validator, &Node, &str) -> Option<Json> + 'a;

/// A value, or a map region → value.
fn per_region(v: &mut Validator, n: &Node, p: &str, one: &mut Check<'_>) -> Option<Json> {
    match &n.value {
        Value::Table(_) => region_map(v, n, p, one),
        _ => one(v, n, p),
    }
}

fn region_map(v: &mut Validator, n: &Node, p: &str, one: &mut Check<'_>) -> Option<Json> {
    let mut f = v.table(n, p)?;
    let mut out = serde_json::Map::new();
    let mut ok = true;
    for (i, e) in f.entries.iter().enumerate() {
        f.used[i] = true;
        let rp = join(p, &e.key);
        if !is_valid_name(&e.key) {
            v.problem(
                e.key_pos.or(e.node.pos),
                &rp,
                format!("\"{}\" is not a region name", crate::error::shown(&e.key)),
            );
            ok = false;
            continue;
        }
        match one(v, &e.node, &rp) {
            Some(x) => {
                out.insert(e.key.clone(), x);
            }
            None => ok = false,
        }
    }
    if out.is_empty() && ok {
        v.problem(n.pos, p, "is an empty map; give a value, or a map region → value".into());
        return None;
    }
    ok.then_some(Json::Object(out))
}

fn root_volume(v: &mut Validator, n: &Node, p: &str) -> Option<Json> {
    let mut f = v.table(n, p)?;
    let size = v.required(&mut f, "size_gb", n.pos).and_then(|x| v.int(x, &join(p, "size_gb"), 1, 16_384));
    let kind = match f.take("type") {
        None => Some("gp3".to_string()),
        Some(x) => {
            let what = format!("a volume type ({})", VOLUME_TYPES.join(", "));
            checked_string(v, x, &join(p, "type"), |s| VOLUME_TYPES.contains(&s), &what)
        }
    };
    v.finish(f, &["size_gb", "type"]);
    Some(json!({"size_gb": size?, "type": kind?}))
}

fn dns(v: &mut Validator, n: &Node, p: &str) -> Option<Json> {
    let mut f = v.table(n, p)?;
    let zone = v.required(&mut f, "zone_id", n.pos).and_then(|x| {
        let ok = |s: &str| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric());
        checked_string(v, x, &join(p, "zone_id"), ok, "a hosted zone ID such as \"Z0123456789ABC\"")
    });
    let name = v.required(&mut f, "name", n.pos).and_then(|x| {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.trim_end_matches('.').split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        checked_string(v, x, &join(p, "name"), ok, "a DNS name such as \"api.shop.example.com\"")
    });
    let ttl = match f.take("ttl") {
        None => Some(60),
        Some(x) => v.int(x, &join(p, "ttl"), 0, 172_800),
    };
    v.finish(f, &["zone_id", "name", "ttl"]);
    Some(json!({"zone_id": zone?, "name": name?, "ttl": ttl?}))
}

#[cfg(test)]
mod tests {
    use crate::domain::manifest::parse;
    use crate::domain::source::Format;

    fn problems(launch: &str) -> Vec<String> {
        let text = format!(
            "environment = \"e\"\nregion = \"eu-west-1\"\nprovider = \"ec2\"\n[services.api]\nimage = \"ami-0123abcd\"\nlaunch = {launch}\n"
        );
        match parse(text.as_bytes(), Format::Toml) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_full_launch_table_is_valid() {
        let ok = r#"{ instance_type = "t3.small", subnets = { eu-west-1 = ["subnet-0a1b2c3d"], eu-central-1 = ["subnet-0123456789abcdef0"] }, security_groups = ["sg-0a1b2c3d"], target_groups = ["arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/0123456789abcdef"], dns = { eu-west-1 = { zone_id = "Z0123", name = "api.shop.example.com" } }, root_volume = { size_gb = 20 }, iam_instance_profile = "api", key_name = "ops", user_data = "echo hi" }"#;
        assert_eq!(problems(ok), Vec::<String>::new());
        assert_eq!(problems(r#"{ dns = { zone_id = "Z1", name = "a.example.com", ttl = 30 } }"#), Vec::<String>::new());
    }

    #[test]
    fn wrong_types_and_unknown_keys_name_their_place() {
        let p = problems(r#"{ instance_type = 3, subnets = "subnet-0a1b2c3d", color = "red" }"#);
        assert!(
            p.iter().any(|x| x.starts_with("6:")
                && x.contains("services.api.launch.instance_type: expected a string, found an integer")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.contains("services.api.launch.subnets: expected an array of strings, found a string")),
            "{p:?}"
        );
        assert!(p.iter().any(|x| x.contains("services.api.launch.color: unknown field `color`; expected one of: instance_type")), "{p:?}");
        let p = problems(r#"{ security_groups = ["sg-xyz"], root_volume = { size_gb = 0, type = "ssd" } }"#);
        assert!(
            p.iter().any(|x| x
                .contains("services.api.launch.security_groups[0]: \"sg-xyz\" is not an ID such as \"sg-0a1b2c3d\"")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.contains("services.api.launch.root_volume.size_gb: 0 is out of range (1 to 16384)")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.contains("services.api.launch.root_volume.type: \"ssd\" is not a volume type")),
            "{p:?}"
        );
        let p = problems(
            r#"{ subnets = { "EU WEST" = ["subnet-0a1b2c3d"] }, dns = { name = "x" }, target_groups = ["tg-1"] }"#,
        );
        assert!(
            p.iter().any(|x| x.contains("services.api.launch.subnets.EU WEST: \"EU WEST\" is not a region name")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.contains("services.api.launch.dns.zone_id: missing required field `zone_id`")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|x| x.contains("services.api.launch.target_groups[0]: \"tg-1\" is not a target group ARN")),
            "{p:?}"
        );
    }
}
