//! An ec2 service's `launch` table (validated by the manifest's ec2
//! schema) resolved for one region: per-region maps pick that region's
//! value, plain values apply everywhere.

use std::collections::BTreeMap;

use serde_json::Value;

/// Tags Lifeboat puts on everything it creates; only instances carrying
/// `lifeboat:environment` are ever touched.
pub const TAG_ENVIRONMENT: &str = "lifeboat:environment";
pub const TAG_REGION: &str = "lifeboat:region";
pub const TAG_SERVICE: &str = "lifeboat:service";
pub const TAG_RUN: &str = "lifeboat:run";
pub const TAG_SNAPSHOT: &str = "lifeboat:snapshot";
pub const TAG_LAUNCH_KEY: &str = "lifeboat:launch-key";
pub const TAG_FINGERPRINT: &str = "lifeboat:fingerprint";
/// The identity of the store whose server launched the instance.
pub const TAG_STORE: &str = "lifeboat:store";
/// On a drill's instances: the drill's run ID.
pub const TAG_DRILL: &str = "lifeboat:drill";
/// "true" on the instances a service's traffic goes to (set at cutover).
/// The service's health check, probed by the inventory: `http URL`,
/// `tcp HOST:PORT`, then the probe's timeout in ms.
pub const TAG_HEALTH: &str = "lifeboat:health";
pub const TAG_SERVING: &str = "lifeboat:serving";

pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub zone_id: String,
    pub name: String,
    pub ttl: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootVolume {
    pub size_gb: i32,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub instance_type: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub target_groups: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
    pub root_volume: Option<RootVolume>,
    pub dns: Option<Dns>,
}

/// Settings that exist in some regions but not in `region`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingForRegion(pub Vec<&'static str>);

/// A list, or a map region → list: `None` when a map has no entry for the region.
fn strings_for(v: Option<&Value>, region: &str) -> Result<Vec<String>, ()> {
    let list = |v: &Value| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect());
    match v {
        None => Ok(Vec::new()),
        Some(Value::Object(m)) => m.get(region).and_then(list).ok_or(()),
        Some(other) => Ok(list(other).unwrap_or_default()),
    }
}

pub fn resolve(launch: &BTreeMap<String, Value>, region: &str) -> Result<Settings, MissingForRegion> {
    let mut missing = Vec::new();
    let mut per_region = |key: &'static str| {
        strings_for(launch.get(key), region).unwrap_or_else(|()| {
            missing.push(key);
            Vec::new()
        })
    };
    let subnets = per_region("subnets");
    let security_groups = per_region("security_groups");
    let target_groups = per_region("target_groups");
    let dns = match launch.get("dns") {
        None => None,
        Some(d) if d.get("zone_id").is_some() => Some(d),
        Some(d) => match d.get(region) {
            Some(r) => Some(r),
            None => {
                missing.push("dns");
                None
            }
        },
    }
    .map(|d| Dns {
        zone_id: d["zone_id"].as_str().unwrap_or_default().to_string(),
        name: d["name"].as_str().unwrap_or_default().to_string(),
        ttl: d["ttl"].as_i64().unwrap_or(60),
    });
    if !missing.is_empty() {
        return Err(MissingForRegion(missing));
    }
    let text = |k: &str| launch.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Settings {
        instance_type: text("instance_type").unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_string()),
        subnets,
        security_groups,
        target_groups,
        iam_instance_profile: text("iam_instance_profile"),
        key_name: text("key_name"),
        user_data: text("user_data"),
        root_volume: launch.get("root_volume").map(|r| RootVolume {
            size_gb: r["size_gb"].as_i64().unwrap_or(8) as i32,
            kind: r["type"].as_str().unwrap_or("gp3").to_string(),
        }),
        dns,
    })
}

/// EC2's `ClientToken` is at most 64 characters; launch keys can be longer.
/// A stable digest of the key (and the subnet batch) stays unique per launch.
pub fn client_token(launch_key: &str, batch: usize) -> String {
    let hex = crate::domain::snapshot::sha256_hex(format!("{launch_key}#{batch}").as_bytes());
    format!("lb-{}", &hex[..40])
}

/// `replicas` spread over `subnets` round robin: (subnet, count) batches.
pub fn spread(replicas: u32, subnets: &[String]) -> Vec<(Option<String>, i32)> {
    if subnets.is_empty() {
        return vec![(None, replicas as i32)];
    }
    let mut counts = vec![0i32; subnets.len()];
    for i in 0..replicas as usize {
        counts[i % subnets.len()] += 1;
    }
    subnets.iter().cloned().map(Some).zip(counts).filter(|(_, n)| *n > 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn launch(v: Value) -> BTreeMap<String, Value> {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    #[test]
    fn region_maps_pick_the_region_and_report_what_it_lacks() {
        let l = launch(json!({
            "instance_type": "t3.small",
            "subnets": {"eu-west-1": ["subnet-0a1b2c3d"], "eu-central-1": ["subnet-0e1f2a3b", "subnet-0c0d0e0f"]},
            "security_groups": ["sg-0a1b2c3d"],
            "dns": {"eu-west-1": {"zone_id": "Z1", "name": "api.example.com", "ttl": 30}},
        }));
        let west = resolve(&l, "eu-west-1").unwrap();
        assert_eq!(west.subnets, ["subnet-0a1b2c3d"]);
        assert_eq!(west.security_groups, ["sg-0a1b2c3d"]);
        assert_eq!(west.dns, Some(Dns { zone_id: "Z1".into(), name: "api.example.com".into(), ttl: 30 }));
        assert_eq!(resolve(&l, "eu-central-1").unwrap_err(), MissingForRegion(vec!["dns"]));
        assert_eq!(resolve(&l, "us-east-1").unwrap_err(), MissingForRegion(vec!["subnets", "dns"]));
        assert_eq!(resolve(&BTreeMap::new(), "x").unwrap().instance_type, DEFAULT_INSTANCE_TYPE);
    }

    #[test]
    fn tokens_are_short_and_stable_and_replicas_spread() {
        let key = format!("r-20261128T194756855-251837/{}/3", "s".repeat(63));
        let t = client_token(&key, 0);
        assert!(t.len() <= 64, "{t}");
        assert_eq!(t, client_token(&key, 0));
        assert_ne!(t, client_token(&key, 1));
        let subnets = vec!["a".to_string(), "b".to_string()];
        assert_eq!(spread(3, &subnets), [(Some("a".into()), 2), (Some("b".into()), 1)]);
        assert_eq!(spread(1, &subnets), [(Some("a".into()), 1)]);
        assert_eq!(spread(2, &[]), [(None, 2)]);
    }
}
