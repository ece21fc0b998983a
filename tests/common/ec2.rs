//! An environment's AWS side for tests of the ec2 provider: two regions on
//! the EC2-API test server, an AMI and a target group per service and
//! region, a hosted zone, and a manifest over them.

use std::collections::BTreeMap;

use lifeboat::testkit::ec2::{Region, hosted_zone};

pub const SERVICES: [(&str, &[&str]); 6] = [
    ("db", &[]),
    ("cache", &["db"]),
    ("queue", &["db"]),
    ("api", &["cache", "queue"]),
    ("worker", &["cache", "queue"]),
    ("web", &["api", "worker"]),
];

/// One environment's AWS side in two regions.
pub struct World {
    pub env: String,
    pub west: Region,
    pub central: Region,
    pub amis: BTreeMap<(String, String), String>,
    pub target_groups: BTreeMap<(String, String), String>,
    pub zone: String,
    pub dns_name: String,
}

impl World {
    pub async fn create() -> World {
        World::create_named(&format!("shop{}", &uuid::Uuid::new_v4().simple().to_string()[..6])).await
    }

    pub async fn create_named(env: &str) -> World {
        let env = env.to_string();
        let (west, central) = (Region::create("eu-west-1").await, Region::create("eu-central-1").await);
        let mut amis = BTreeMap::new();
        let mut target_groups = BTreeMap::new();
        for r in [&west, &central] {
            for (s, _) in SERVICES {
                amis.insert((r.name.clone(), s.to_string()), r.ami(s).await);
                target_groups.insert((r.name.clone(), s.to_string()), r.target_group(s).await);
            }
        }
        let domain = format!("{env}.example.com");
        let zone = hosted_zone(&domain).await;
        World { dns_name: format!("web.{domain}"), env, west, central, amis, target_groups, zone }
    }

    pub fn region(&self, name: &str) -> &Region {
        if name == self.west.name { &self.west } else { &self.central }
    }

    /// The manifest, with `change` applied to each service's JSON.
    pub fn manifest(&self, change: impl Fn(&str, &mut serde_json::Value)) -> String {
        let per_region = |f: &dyn Fn(&Region) -> serde_json::Value| serde_json::json!({ "eu-west-1": f(&self.west), "eu-central-1": f(&self.central) });
        let mut services = serde_json::Map::new();
        for (s, deps) in SERVICES {
            let key = |r: &Region| (r.name.clone(), s.to_string());
            let mut launch = serde_json::json!({
                "instance_type": "t3.small",
                "subnets": per_region(&|r| serde_json::json!(r.subnets)),
                "security_groups": per_region(&|r| serde_json::json!([r.security_group])),
                "target_groups": per_region(&|r| serde_json::json!([self.target_groups[&key(r)]])),
            });
            if s == "web" {
                launch["dns"] = serde_json::json!({ "zone_id": self.zone, "name": self.dns_name, "ttl": 30 });
            }
            let mut svc = serde_json::json!({
                "image": per_region(&|r| serde_json::json!(self.amis[&key(r)])),
                "replicas": if s == "web" { 2 } else { 1 },
                "depends_on": deps,
                "grace_period": "0s",
                "launch": launch,
                "tags": { "team": "payments" },
            });
            change(s, &mut svc);
            services.insert(s.to_string(), svc);
        }
        serde_json::to_string_pretty(&serde_json::json!({
            "environment": self.env, "region": "eu-west-1", "provider": "ec2", "services": services,
        }))
        .unwrap()
    }

    /// Live Lifeboat instances of a service in a region.
    pub async fn instances(&self, region: &str, service: &str) -> Vec<aws_sdk_ec2::types::Instance> {
        self.region(region)
            .instances(&[("tag:lifeboat:environment", &self.env), ("tag:lifeboat:service", service)])
            .await
    }

    pub async fn all_ids(&self, region: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .region(region)
            .instances(&[("tag:lifeboat:environment", &self.env)])
            .await
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }
}

pub fn tag<'a>(i: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

pub fn ec2_server() -> super::Server {
    let dir = tempfile::tempdir().unwrap();
    let mut s = ec2_server_in(dir.path(), &lifeboat::testkit::s3_endpoint());
    s.dir = Some(dir);
    s
}

/// A server with its state in `dir` (restartable there), talking to the
/// EC2 API at `endpoint`, with a 2 s region lease (a killed server's runs
/// are taken over quickly).
pub fn ec2_server_in(dir: &std::path::Path, endpoint: &str) -> super::Server {
    ec2_server_configured(dir, endpoint, "")
}

/// The same, with more configuration appended.
pub fn ec2_server_configured(dir: &std::path::Path, endpoint: &str, extra: &str) -> super::Server {
    let p = |x: &str| dir.join(x).display().to_string();
    std::fs::write(
        dir.join("lifeboat.toml"),
        format!("[engine]\nlease_ttl = \"2s\"\nmax_clock_skew = \"100ms\"\n{extra}"),
    )
    .unwrap();
    let args =
        ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env = lifeboat::testkit::s3_env_vars();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", endpoint.to_string()));
    super::Server::launch(&args, &env)
}

pub fn push(server: &super::Server, name: &str, text: &str) {
    let path = server.dir.as_ref().unwrap().path().join(name);
    std::fs::write(&path, text).unwrap();
    server.run(&["snapshot", "push", path.to_str().unwrap()]).ok();
}
