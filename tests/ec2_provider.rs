//! The ec2 provider against a real EC2/ELBv2/Route 53 API server (moto on
//! loopback): the provider conformance suite, and recoveries through the
//! real CLI and server. Each test makes its own VPC, subnets, security
//! group, AMIs, target groups and hosted zone through the SDK.

mod common;

use std::collections::BTreeMap;

use common::ec2::{SERVICES, World, ec2_server, push, tag};
use lifeboat::domain::duration::Dur;
use lifeboat::domain::manifest::{Check, Health};
use lifeboat::provider::ServiceRef;
use lifeboat::provider::conformance::{Fixtures, run_all};
use lifeboat::provider::ec2::{Ec2Config, Ec2Provider};
use lifeboat::testkit::ec2::{Region, a_record};

fn target(region: &Region, env: &str, service: &str, health: Option<Health>) -> ServiceRef {
    ServiceRef {
        environment: env.into(),
        region: region.name.clone(),
        service: service.into(),
        settings: BTreeMap::from([
            ("subnets".to_string(), serde_json::json!(region.subnets)),
            ("security_groups".to_string(), serde_json::json!([region.security_group])),
        ]),
        health,
        tags: BTreeMap::from([("team".to_string(), "sre".to_string())]),
    }
}

fn provider() -> std::sync::Arc<Ec2Provider> {
    Ec2Provider::new(Ec2Config {
        endpoint: Some(lifeboat::testkit::s3_endpoint()),
        max_instances: None,
        credentials: Some(lifeboat::testkit::s3_credentials()),
        drill_subnets: None,
        drill_security_groups: None,
        store_id: None,
    })
}

#[tokio::test]
async fn ec2_provider_conformance() {
    let region = Region::create("eu-west-1").await;
    let env = format!("conf{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let image = region.ami("conformance").await;
    // Never healthy: no instance here serves HTTP on its private address
    // (it times out, or a network middlebox answers 404).
    let unreachable = Health {
        check: Check::Http("http://x:1/healthz".into()),
        interval: Dur::millis(200),
        timeout: Dur::secs(2),
        probe_timeout: Dur::millis(200),
        healthy_threshold: 1,
        unhealthy_threshold: 3,
    };
    let fixtures = Fixtures {
        healthy: target(&region, &env, "web", None),
        healthy_image: image.clone(),
        broken: target(&region, &env, "broken", Some(unreachable)),
        broken_image: image,
    };
    run_all(provider().as_ref(), &fixtures).await;
    // Tags on every instance, the manifest's own included.
    let tagged = region.instances(&[("tag:lifeboat:environment", &env)]).await;
    assert!(tagged.is_empty(), "everything the suite launched was terminated");
}

/// A 6-service diamond recovers on EC2 through the CLI and server: every
/// instance runs its region's AMI with Lifeboat's tags, sits in its target
/// group, and web's DNS record points at it. A second recovery keeps all;
/// a new AMI replaces one service blue-green; the same snapshot recovers
/// into eu-central-1 with that region's AMIs; an untagged instance in the
/// same subnet is never touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_diamond_region_recovers_on_ec2() {
    let w = World::create().await;
    let untagged = w.west.untagged_instance(&w.amis[&("eu-west-1".to_string(), "db".to_string())]).await;
    let server = ec2_server();
    push(&server, "shop.json", &w.manifest(|_, _| {}));
    server.run(&["snapshot", "promote", &w.env, "1", "--reason", "t"]).ok();
    let plan = server.run(&["plan", &w.env]).ok().stdout;
    assert!(plan.contains("6 to create") && plan.contains("ok    ec2-images"), "{plan}");
    server.run(&["recover", &w.env, "--yes"]).ok();

    let run = server.run(&["--output", "json", "run", "show", "--latest", &w.env]).ok().json();
    for (s, _) in SERVICES {
        let found = w.instances("eu-west-1", s).await;
        assert_eq!(found.len(), if s == "web" { 2 } else { 1 }, "{s}");
        for i in &found {
            assert_eq!(i.image_id(), Some(w.amis[&("eu-west-1".to_string(), s.to_string())].as_str()), "{s}");
            assert_eq!(tag(i, "lifeboat:run"), run["id"].as_str());
            assert_eq!(tag(i, "lifeboat:snapshot"), Some("1"));
            assert_eq!(tag(i, "team"), Some("payments"));
            assert!(tag(i, "lifeboat:launch-key").is_some() && tag(i, "lifeboat:fingerprint").is_some());
        }
        let mut ids: Vec<String> = found.iter().filter_map(|i| i.instance_id().map(str::to_string)).collect();
        ids.sort();
        assert_eq!(w.west.targets(&w.target_groups[&("eu-west-1".to_string(), s.to_string())]).await, ids, "{s}");
    }
    let web_ips = |found: Vec<aws_sdk_ec2::types::Instance>| {
        let mut ips: Vec<String> = found.iter().filter_map(|i| i.private_ip_address().map(str::to_string)).collect();
        ips.sort();
        ips
    };
    assert_eq!(a_record(&w.zone, &w.dns_name).await, web_ips(w.instances("eu-west-1", "web").await));

    // Nothing changed: every service is kept, nothing is launched.
    let before = w.all_ids("eu-west-1").await;
    let out = server.run(&["recover", &w.env, "--yes"]).ok().stdout;
    assert!(out.matches("kept").count() >= 6, "{out}");
    assert_eq!(w.all_ids("eu-west-1").await, before);

    // api gets a new AMI: it alone is replaced; its old instance leaves the group and is terminated.
    let new_ami = w.west.ami("api-v2").await;
    let old_api = w.instances("eu-west-1", "api").await[0].instance_id().unwrap().to_string();
    push(
        &server,
        "shop-v2.json",
        &w.manifest(|s, svc| {
            if s == "api" {
                svc["image"]["eu-west-1"] = serde_json::json!(new_ami);
            }
        }),
    );
    server.run(&["snapshot", "promote", &w.env, "2", "--reason", "api v2"]).ok();
    let plan = server.run(&["plan", &w.env]).ok().stdout;
    assert!(plan.contains("1 to replace, 5 to keep"), "{plan}");
    server.run(&["recover", &w.env, "--yes"]).ok();
    let api = w.instances("eu-west-1", "api").await;
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].image_id(), Some(new_ami.as_str()));
    let api_tg = w.west.targets(&w.target_groups[&("eu-west-1".to_string(), "api".to_string())]).await;
    assert_eq!(api_tg, [api[0].instance_id().unwrap().to_string()], "the old api instance left its group");
    assert!(!w.all_ids("eu-west-1").await.contains(&old_api), "the old api instance was terminated");

    // Cross-region: the same snapshot in eu-central-1 uses that region's AMIs and groups.
    server.run(&["recover", &w.env, "--region", "eu-central-1", "--yes"]).ok();
    for (s, _) in SERVICES {
        let found = w.instances("eu-central-1", s).await;
        assert!(!found.is_empty(), "{s} runs in eu-central-1");
        let ami = &w.amis[&("eu-central-1".to_string(), s.to_string())];
        assert!(found.iter().all(|i| i.image_id() == Some(ami.as_str())), "{s}");
        let subnets = &w.central.subnets;
        assert!(found.iter().all(|i| i.subnet_id().is_some_and(|x| subnets.iter().any(|s| s == x))), "{s}");
        let tg = &w.target_groups[&("eu-central-1".to_string(), s.to_string())];
        assert_eq!(w.central.targets(tg).await.len(), found.len(), "{s}");
    }
    let status = server.run(&["status", &w.env]).ok().stdout;
    assert!(status.contains(&format!("{} in eu-west-1 (home region)", w.env)), "{status}");
    assert!(status.contains(&format!("{} in eu-central-1", w.env)), "{status}");

    // The untagged instance in the same subnet was never touched.
    let still = w.west.instances(&[("instance-id", &untagged)]).await;
    assert_eq!(still.len(), 1, "the untagged instance still runs");
}

/// A missing AMI in the target region fails preflight, naming the AMI and
/// the service, and launches nothing; a permanent AWS error (an unknown
/// instance profile) fails its service on the first attempt, with its code.
#[tokio::test(flavor = "multi_thread")]
async fn missing_amis_and_permanent_errors_are_named() {
    let w = World::create().await;
    let server = ec2_server();
    push(
        &server,
        "shop.json",
        &w.manifest(|s, svc| {
            if s == "cache" {
                svc["image"]["eu-west-1"] = serde_json::json!("ami-0123abcd");
            }
        }),
    );
    server.run(&["snapshot", "promote", &w.env, "1", "--reason", "t", "--force"]).ok();
    let out = server.run(&["recover", &w.env, "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("AMIs missing in eu-west-1: cache (ami-0123abcd: InvalidAMIID.NotFound)"), "{out:?}");
    assert!(w.all_ids("eu-west-1").await.is_empty(), "nothing was launched");

    push(
        &server,
        "shop-v2.json",
        &w.manifest(|s, svc| {
            svc["attempts"] = serde_json::json!(3);
            if s == "db" {
                svc["launch"]["iam_instance_profile"] = serde_json::json!("no-such-profile");
            }
        }),
    );
    server.run(&["snapshot", "promote", &w.env, "2", "--reason", "t"]).ok();
    let out = server.run(&["recover", &w.env, "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    let run = server.run(&["--output", "json", "run", "show", "--latest", &w.env]).ok().json();
    let db = run["services"].as_array().unwrap().iter().find(|s| s["name"] == "db").unwrap().clone();
    assert_eq!(db["attempts"], 1, "a permanent error is not retried: {db}");
    let error = db["error"].as_str().unwrap();
    assert!(error.contains("RunInstances for db: AWS NoSuchEntity") && error.contains("not retried"), "{error}");
}

/// Throttling is transient: a `RunInstances` answered with
/// `RequestLimitExceeded` (more often than the SDK retries by itself) is
/// retried by the engine, and the recovery succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_and_the_recovery_succeeds() {
    let w = World::create().await;
    let proxy = common::aws_proxy::Proxy::start(lifeboat::testkit::s3_endpoint()).await;
    proxy.faults.lock().unwrap().throttle_run_instances = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::ec2::ec2_server_in(dir.path(), &proxy.url);
    server.dir = Some(dir);
    push(&server, "shop.json", &w.manifest(|_, svc| svc["attempts"] = serde_json::json!(3)));
    server.run(&["snapshot", "promote", &w.env, "1", "--reason", "t"]).ok();
    let out = tokio::task::spawn_blocking({
        let env = w.env.clone();
        let url = server.url.clone();
        move || common::lifeboat(Some(&url), &["recover", &env, "--yes"])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("attempt 1 failed: launch of db failed: RunInstances for db: AWS RequestLimitExceeded"),
        "{}",
        out.stdout
    );
    assert_eq!(proxy.faults.lock().unwrap().throttled, 4);
    assert_eq!(w.instances("eu-west-1", "db").await.len(), 1, "exactly one db instance");
}

/// A server SIGKILLed after `RunInstances` reached EC2 but before its answer
/// (so before the launch was journalled) is restarted; the run finishes with
/// exactly `replicas` instances per service: the resumed launch finds the
/// instances by their launch-key tag instead of creating more.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_during_run_instances_resumes_without_extra_instances() {
    let w = World::create().await;
    let proxy = common::aws_proxy::Proxy::start(lifeboat::testkit::s3_endpoint()).await;
    proxy.faults.lock().unwrap().swallow_run_instances = true;
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::ec2::ec2_server_in(dir.path(), &proxy.url);
    let manifest = dir.path().join("shop.json");
    std::fs::write(&manifest, w.manifest(|_, _| {})).unwrap();
    server.run(&["snapshot", "push", manifest.to_str().unwrap()]).ok();
    server.run(&["snapshot", "promote", &w.env, "1", "--reason", "t"]).ok();
    let id = server.run(&["recover", &w.env, "--yes", "--detach"]).ok().stdout.trim().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.faults.lock().unwrap().run_instances_forwarded == 0 {
        assert!(std::time::Instant::now() < deadline, "RunInstances never reached EC2");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.kill();
    assert_eq!(w.instances("eu-west-1", "db").await.len(), 1, "db's instance exists, unknown to the journal");
    proxy.faults.lock().unwrap().swallow_run_instances = false;

    let server = common::ec2::ec2_server_in(dir.path(), &proxy.url);
    let out = tokio::task::spawn_blocking({
        let url = server.url.clone();
        move || common::lifeboat(Some(&url), &["run", "watch", &id])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    for (s, _) in SERVICES {
        let want = if s == "web" { 2 } else { 1 };
        assert_eq!(w.instances("eu-west-1", s).await.len(), want, "{s}: exactly its replicas");
    }
}

/// A drill on ec2: tagged `lifeboat:drill`, in the drill subnets and
/// security groups, never in production's target groups or DNS, and gone
/// after its keep time.
#[tokio::test]
async fn an_ec2_drill_stays_out_of_production_traffic_and_is_torn_down() {
    let w = World::create().await;
    let drill_net = Region::create("eu-west-1").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[provider.ec2.drill]\nsubnets = {{ \"eu-west-1\" = [\"{}\"] }}\nsecurity_groups = [\"{}\"]\n",
        drill_net.subnets[0], drill_net.security_group
    );
    let mut server = common::ec2::ec2_server_configured(dir.path(), &lifeboat::testkit::s3_endpoint(), &extra);
    server.dir = Some(dir);
    push(&server, "shop.json", &w.manifest(|_, _| {}));
    server.run(&["snapshot", "promote", &w.env, "1", "--reason", "t"]).ok();
    server.run(&["recover", &w.env, "--yes"]).ok();
    let production = w.all_ids("eu-west-1").await;
    let targets_before = production_targets(&w).await;
    let dns_before = a_record(&w.zone, &w.dns_name).await;

    let out = server.run(&["--output", "json", "drill", "run", &w.env, "--keep-for", "2s"]).ok();
    // Its progress never says traffic moved.
    assert!(!out.stderr.contains("traffic cut over"), "{}", out.stderr);
    assert!(out.stderr.contains("production traffic is never touched"), "{}", out.stderr);
    let d = out.json();
    assert_eq!(d["verdict"], "passed", "{d}");
    let id = d["id"].as_str().unwrap();
    let drills = w.west.instances(&[("tag:lifeboat:drill", id)]).await;
    assert_eq!(drills.len(), 7, "every service's replicas, tagged with the drill");
    for i in &drills {
        assert_eq!(tag(i, "lifeboat:environment"), Some(format!("{}.drill.{id}", w.env).as_str()));
        assert_eq!(i.subnet_id(), Some(drill_net.subnets[0].as_str()), "in the drill subnet");
        let sgs: Vec<&str> = i.security_groups().iter().filter_map(|g| g.group_id()).collect();
        assert_eq!(sgs, [drill_net.security_group.as_str()], "in the drill security group");
    }
    assert_eq!(production_targets(&w).await, targets_before, "no drill instance in a production target group");
    assert_eq!(a_record(&w.zone, &w.dns_name).await, dns_before, "production DNS unchanged");
    assert_eq!(w.all_ids("eu-west-1").await, production, "production instances untouched");

    // Someone plans against a region that does not exist: it must not stop the sweep.
    let out = server.run(&["plan", &w.env, "--region", "xx-fake-1"]);
    assert_ne!(out.code, 0, "{out:?}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let out = server.run(&["drill", "sweep"]);
    assert_eq!(out.code, 1, "a region it could not look at is an error: {out:?}");
    assert!(out.stdout.contains("removed 7 instances"), "the rest is swept: {out:?}");
    assert!(out.stderr.contains("NOT swept: ec2: cannot list drill leftovers in xx-fake-1"), "{out:?}");
    assert!(w.west.instances(&[("tag:lifeboat:drill", id)]).await.is_empty(), "the drill is gone");
    assert_eq!(w.all_ids("eu-west-1").await, production);
    // The region never answered: it is not looked at again.
    let out = server.run(&["drill", "sweep"]).ok();
    assert!(out.stdout.contains("nothing to sweep"), "{out:?}");
}

/// Each service's targets in its eu-west-1 group.
async fn production_targets(w: &World) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (s, _) in SERVICES {
        out.push(w.west.targets(&w.target_groups[&("eu-west-1".to_string(), s.to_string())]).await);
    }
    out
}
