//! The ec2 provider: instances launched from the snapshot's AMIs with the
//! AWS SDK, traffic moved with ELBv2 target groups and Route 53, and
//! everything tagged so that only what Lifeboat created is ever touched.
//!
//! Instance IDs this provider hands out are `REGION/i-…`, so calls that
//! carry only IDs (terminate, logs) reach the right region.

mod errors;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification, Instance, InstanceStateName,
    InstanceType, ResourceType, SummaryStatus, Tag, TagSpecification, VolumeType,
};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use tokio_util::sync::CancellationToken;

use self::errors::{aws_error, code_of};
use self::settings::*;
use super::health::{probe_http, probe_tcp};
use super::{ComputeProvider, LaunchSpec, LogFrom, LogRead, ProviderError, ProviderResult, ServiceRef};
use crate::domain::manifest::{Check as HealthCheck, Manifest};
use crate::domain::plan::{Check, LiveInstance};

pub const DEFAULT_MAX_INSTANCES: usize = 500;

/// `[provider.ec2]`: everything optional; the standard AWS environment
/// (credentials chain, `AWS_ENDPOINT_URL`) applies otherwise.
#[derive(Debug, Clone, Default)]
pub struct Ec2Config {
    pub endpoint: Option<String>,
    pub max_instances: Option<usize>,
    /// Instead of the standard chain (for programs that embed the provider).
    pub credentials: Option<aws_sdk_ec2::config::Credentials>,
    /// `[provider.ec2.drill]`: the subnets and security groups drills launch
    /// into (a list, or a map region → list), instead of the manifest's.
    pub drill_subnets: Option<serde_json::Value>,
    pub drill_security_groups: Option<serde_json::Value>,
    /// The identity of the store this provider serves (`store-id`): tagged
    /// `lifeboat:store` on every instance; the sweeper touches only its own.
    pub store_id: Option<String>,
}

struct Clients {
    ec2: aws_sdk_ec2::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    dns: aws_sdk_route53::Client,
}

pub struct Ec2Provider {
    config: Ec2Config,
    clients: tokio::sync::Mutex<BTreeMap<String, Arc<Clients>>>,
    /// Regions that answered a call at least once.
    answered: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

fn permanent(message: impl Into<String>) -> ProviderError {
    ProviderError::Backend { message: message.into(), retryable: false }
}

/// `eu-west-1/i-0123` → (`eu-west-1`, `i-0123`).
fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('/').filter(|(r, i)| !r.is_empty() && i.starts_with("i-"))
}

fn tag_of<'a>(i: &'a Instance, key: &str) -> Option<&'a str> {
    i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.iter().map(|v| v.to_string()).collect())).build()
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn state(i: &Instance) -> InstanceStateName {
    i.state().and_then(|s| s.name()).cloned().unwrap_or(InstanceStateName::Pending)
}

const LIVE_STATES: [&str; 2] = ["pending", "running"];

impl Ec2Provider {
    pub fn new(config: Ec2Config) -> Arc<Ec2Provider> {
        Arc::new(Ec2Provider {
            config,
            clients: tokio::sync::Mutex::new(BTreeMap::new()),
            answered: Default::default(),
        })
    }

    fn answered(&self, region: &str) {
        let mut a = self.answered.lock().expect("lock");
        if !a.contains(region) {
            a.insert(region.to_string());
        }
    }

    fn max_instances(&self) -> usize {
        self.config.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES)
    }

    /// The SDK clients for a region, made on first use.
    async fn clients(&self, region: &str) -> Arc<Clients> {
        let mut all = self.clients.lock().await;
        if let Some(c) = all.get(region) {
            return c.clone();
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(e) = &self.config.endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(c) = &self.config.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let shared = loader.load().await;
        let c = Arc::new(Clients {
            ec2: aws_sdk_ec2::Client::new(&shared),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&shared),
            dns: aws_sdk_route53::Client::new(&shared),
        });
        all.insert(region.to_string(), c.clone());
        c
    }

    async fn describe(&self, c: &Clients, filters: Vec<Filter>) -> ProviderResult<Vec<Instance>> {
        let mut out = Vec::new();
        let mut pages = c.ec2.describe_instances().set_filters(Some(filters)).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("DescribeInstances", &e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    /// Live instances Lifeboat created for a service (or every service) of an environment.
    async fn tagged(&self, c: &Clients, env: &str, service: Option<&str>) -> ProviderResult<Vec<Instance>> {
        let mut filters =
            vec![filter(&format!("tag:{TAG_ENVIRONMENT}"), &[env]), filter("instance-state-name", &LIVE_STATES)];
        if let Some(s) = service {
            filters.push(filter(&format!("tag:{TAG_SERVICE}"), &[s]));
        }
        self.describe(c, filters).await
    }

    /// The instances with these IDs that carry Lifeboat's tags: anything
    /// else is never touched.
    async fn ours(&self, c: &Clients, ids: &[&str]) -> ProviderResult<Vec<Instance>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.describe(c, vec![filter("instance-id", ids)]).await?;
        Ok(found.into_iter().filter(|i| tag_of(i, TAG_ENVIRONMENT).is_some()).collect())
    }

    fn settings(&self, target: &ServiceRef) -> ProviderResult<Settings> {
        resolve(&target.settings, &target.region).map_err(|m| {
            permanent(format!(
                "{} has no {} for region {}; add them to its launch table (a map region → value)",
                target.service,
                m.0.join(" or "),
                target.region
            ))
        })
    }

    async fn set_tag(&self, c: &Clients, ids: &[String], key: &str, value: &str) -> ProviderResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        c.ec2
            .create_tags()
            .set_resources(Some(ids.to_vec()))
            .tags(tag(key, value))
            .send()
            .await
            .map_err(|e| aws_error("CreateTags", &e))?;
        Ok(())
    }

    /// The instance IDs a target group holds.
    async fn members(&self, c: &Clients, tg: &str) -> ProviderResult<Vec<String>> {
        let health = c
            .elb
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTargetHealth", &e))?;
        Ok(health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
            .collect())
    }

    /// Removes from a target group those of `ids` it holds (nothing else).
    async fn deregister(&self, c: &Clients, tg: &str, ids: &[String], service: &str) -> ProviderResult<()> {
        let held: Vec<TargetDescription> = self
            .members(c, tg)
            .await?
            .into_iter()
            .filter(|id| ids.contains(id))
            .map(|id| TargetDescription::builder().id(id).build())
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        c.elb
            .deregister_targets()
            .target_group_arn(tg)
            .set_targets(Some(held))
            .send()
            .await
            .map_err(|e| aws_error(&format!("DeregisterTargets for {service}"), &e))?;
        Ok(())
    }

    /// One probe of the manifest's health check against an instance's private IP.
    async fn probe(&self, target: &ServiceRef, ip: &str) -> Result<(), String> {
        let Some(h) = &target.health else { return Ok(()) };
        probe_check(&h.check, h.probe_timeout.0, ip).await
    }
}

/// The `lifeboat:health` tag of a health check (the ec2 provider probes
/// http and tcp only); `None` when there is none or it does not fit a tag.
fn health_tag(h: Option<&crate::domain::manifest::Health>) -> Option<String> {
    let h = h?;
    let ms = h.probe_timeout.0.as_millis();
    let tag = match &h.check {
        HealthCheck::Http(url) => format!("http {url} {ms}"),
        HealthCheck::Tcp(addr) => format!("tcp {addr} {ms}"),
        HealthCheck::Command(_) => return None,
    };
    (tag.len() <= 256).then_some(tag)
}

/// Probes an instance by its `lifeboat:health` tag; untagged, running is healthy.
async fn probe_tagged(tag: Option<&str>, ip: &str) -> Result<(), String> {
    let Some(tag) = tag else { return Ok(()) };
    let mut parts = tag.split(' ');
    let (kind, what, ms) = (parts.next(), parts.next().unwrap_or_default(), parts.next());
    let timeout = Duration::from_millis(ms.and_then(|m| m.parse().ok()).unwrap_or(2000));
    let check = match kind {
        Some("http") => HealthCheck::Http(what.to_string()),
        Some("tcp") => HealthCheck::Tcp(what.to_string()),
        _ => return Err(format!("unreadable {TAG_HEALTH} tag {tag:?}")),
    };
    probe_check(&check, timeout, ip).await
}

/// One probe of a health check against an instance's private IP.
async fn probe_check(check: &HealthCheck, t: Duration, ip: &str) -> Result<(), String> {
    match check {
        HealthCheck::Http(url) => {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
            let (hostport, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            let port = hostport.rsplit_once(':').map(|(_, p)| format!(":{p}")).unwrap_or_default();
            let scheme = if url.starts_with("https://") { "https" } else { "http" };
            probe_http(&format!("{scheme}://{ip}{port}/{path}"), t).await
        }
        HealthCheck::Tcp(addr) => {
            let port = addr.rsplit_once(':').map_or("80", |(_, p)| p);
            probe_tcp(&format!("{ip}:{port}"), t).await
        }
        HealthCheck::Command(_) => Err("the ec2 provider runs no health commands; use http or tcp".into()),
    }
}

/// Whether a service's settings name a DNS record.
fn has_record(s: &Settings) -> bool {
    let Settings { dns, .. } = s;
    dns.is_some()
}

#[async_trait]
impl ComputeProvider for Ec2Provider {
    fn name(&self) -> &'static str {
        "ec2"
    }

    async fn preflight(&self, m: &Manifest, region: &str, launching: &[String]) -> Vec<Check> {
        let c = self.clients(region).await;
        let mut checks = Vec::new();
        // The AMIs, each named with its service.
        let mut missing = Vec::new();
        let mut amis: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, s) in m.services.iter().filter(|(n, _)| launching.contains(n)) {
            if let Some(ami) = s.image.for_region(region) {
                amis.entry(ami).or_default().push(name);
            }
        }
        for (ami, services) in &amis {
            match c.ec2.describe_images().image_ids(*ami).send().await {
                Ok(out) if !out.images().is_empty() => {}
                Ok(_) => missing.push(format!("{} ({ami}: not found in {region})", crate::domain::listed(services))),
                Err(e) => missing.push(format!(
                    "{} ({ami}: {})",
                    crate::domain::listed(services),
                    code_of(&e).unwrap_or_else(|| aws_error("DescribeImages", &e).to_string())
                )),
            }
        }
        checks.push(if amis.is_empty() {
            Check::pass("ec2-images", "no service is launched: no AMI to check")
        } else if missing.is_empty() {
            Check::pass("ec2-images", format!("all {} AMIs exist in {region}", amis.len()))
        } else {
            Check::fail("ec2-images", format!("AMIs missing in {region}: {}", missing.join("; ")))
        });
        // Network settings for the region, and that they exist.
        let mut problems = Vec::new();
        let mut subnets = BTreeSet::new();
        let mut groups = BTreeSet::new();
        let mut target_groups = BTreeSet::new();
        for (name, s) in m.services.iter().filter(|(n, _)| launching.contains(n)) {
            match resolve(&s.launch, region) {
                Ok(st) => {
                    subnets.extend(st.subnets.into_iter().map(|x| (x, name.clone())));
                    groups.extend(st.security_groups.into_iter().map(|x| (x, name.clone())));
                    target_groups.extend(st.target_groups.into_iter().map(|x| (x, name.clone())));
                }
                Err(missing) => problems.push(format!("{name} has no {} for {region}", missing.0.join(" or "))),
            }
        }
        for (id, service) in &subnets {
            if let Err(e) = c.ec2.describe_subnets().subnet_ids(id).send().await {
                problems.push(format!("{service}: subnet {id}: {}", code_of(&e).unwrap_or_else(|| e.to_string())));
            }
        }
        for (id, service) in &groups {
            if let Err(e) = c.ec2.describe_security_groups().group_ids(id).send().await {
                problems
                    .push(format!("{service}: security group {id}: {}", code_of(&e).unwrap_or_else(|| e.to_string())));
            }
        }
        for (arn, service) in &target_groups {
            if let Err(e) = c.elb.describe_target_groups().target_group_arns(arn).send().await {
                problems
                    .push(format!("{service}: target group {arn}: {}", code_of(&e).unwrap_or_else(|| e.to_string())));
            }
        }
        checks.push(if problems.is_empty() {
            Check::pass("ec2-network", "subnets, security groups and target groups exist")
        } else {
            Check::fail("ec2-network", problems.join("; "))
        });
        // The instance cap, over every environment's Lifeboat instances in the region.
        let wanted: usize =
            m.services.iter().filter(|(n, _)| launching.contains(n)).map(|(_, s)| s.replicas as usize).sum();
        let running = self
            .describe(&c, vec![filter("tag-key", &[TAG_ENVIRONMENT]), filter("instance-state-name", &LIVE_STATES)])
            .await;
        checks.push(match running {
            Ok(r) if r.len() + wanted <= self.max_instances() => Check::pass(
                "capacity",
                format!("{wanted} new instances, {} running in {region}, cap {}", r.len(), self.max_instances()),
            ),
            Ok(r) => Check::fail(
                "capacity",
                format!(
                    "{wanted} new instances with {} running in {region} would exceed [provider.ec2] max_instances = {}",
                    r.len(),
                    self.max_instances()
                ),
            ),
            Err(e) => Check::fail("capacity", e.to_string()),
        });
        checks
    }

    async fn inventory(&self, environment: &str, region: &str) -> ProviderResult<Vec<LiveInstance>> {
        let c = self.clients(region).await;
        let found = self.tagged(&c, environment, None).await?;
        self.answered(region);
        let found: Vec<_> = found.iter().filter(|i| tag_of(i, TAG_REGION).is_none_or(|r| r == region)).collect();
        // Healthy is running and answering the service's health check now
        // (the check launch tagged it with), as the health gate judged it.
        let probes = found.iter().map(|i| async move {
            state(i) == InstanceStateName::Running
                && probe_tagged(tag_of(i, TAG_HEALTH), i.private_ip_address().unwrap_or_default()).await.is_ok()
        });
        let health = futures::future::join_all(probes).await;
        Ok(found
            .iter()
            .zip(health)
            .map(|(i, healthy)| LiveInstance {
                id: format!("{region}/{}", i.instance_id().unwrap_or_default()),
                service: tag_of(i, TAG_SERVICE).unwrap_or_default().to_string(),
                image: i.image_id().unwrap_or_default().to_string(),
                healthy,
                serving: tag_of(i, TAG_SERVING) == Some("true"),
                run_id: tag_of(i, TAG_RUN).unwrap_or_default().to_string(),
                fingerprint: tag_of(i, TAG_FINGERPRINT).unwrap_or_default().to_string(),
                address: i.private_ip_address().unwrap_or_default().to_string(),
            })
            .collect())
    }

    async fn traffic(
        &self,
        _environment: &str,
        m: &Manifest,
        region: &str,
        inventory: &[LiveInstance],
    ) -> ProviderResult<Vec<crate::domain::plan::Traffic>> {
        use crate::domain::plan::Traffic;
        let c = self.clients(region).await;
        let mut out = Vec::new();
        // Clients come in through the environment's DNS records; services
        // behind only a target group are reached from inside the region. With
        // no DNS record at all, the target groups are the way in.
        let has_dns = m.services.values().filter_map(|s| resolve(&s.launch, region).ok()).any(|x| has_record(&x));
        for (name, svc) in &m.services {
            // A service without settings for this region has no paths here (preflight says so).
            let Ok(settings) = resolve(&svc.launch, region) else { continue };
            let mine: Vec<&LiveInstance> = inventory.iter().filter(|i| &i.service == name).collect();
            let ids: Vec<&str> = mine.iter().filter_map(|i| split_id(&i.id).map(|(_, id)| id)).collect();
            let ips: Vec<&str> = mine.iter().map(|i| i.address.as_str()).filter(|a| !a.is_empty()).collect();
            for tg in &settings.target_groups {
                let members = self.members(&c, tg).await?;
                let here = !members.is_empty() && members.iter().all(|m| ids.contains(&m.as_str()));
                let decides = !has_dns;
                out.push(Traffic {
                    service: name.clone(),
                    via: format!("target group {tg}"),
                    points_to: members,
                    here,
                    decides,
                });
            }
            if let Some(dns) = &settings.dns {
                let want = format!("{}.", dns.name.trim_end_matches('.'));
                let found = c
                    .dns
                    .list_resource_record_sets()
                    .hosted_zone_id(&dns.zone_id)
                    .start_record_name(&want)
                    .start_record_type(RrType::A)
                    .max_items(1)
                    .send()
                    .await
                    .map_err(|e| aws_error("ListResourceRecordSets", &e))?;
                let values: Vec<String> = found
                    .resource_record_sets()
                    .iter()
                    .filter(|r| r.name() == want && r.r#type() == &RrType::A)
                    .flat_map(|r| r.resource_records().iter().map(|v| v.value().to_string()))
                    .collect();
                let here = !values.is_empty() && values.iter().all(|v| ips.contains(&v.as_str()));
                out.push(Traffic {
                    service: name.clone(),
                    via: format!("dns {}", dns.name),
                    points_to: values,
                    here,
                    decides: true,
                });
            }
        }
        Ok(out)
    }

    async fn launch(&self, spec: &LaunchSpec, cancel: &CancellationToken) -> ProviderResult<Vec<String>> {
        let t = &spec.target;
        let settings = self.settings(t)?;
        let c = self.clients(&t.region).await;
        // Idempotent by tag (EC2-API servers may ignore ClientToken): what
        // an earlier call with this key launched counts.
        let key_filter = filter(&format!("tag:{TAG_LAUNCH_KEY}"), &[&spec.launch_key]);
        let existing = self.describe(&c, vec![key_filter.clone(), filter("instance-state-name", &LIVE_STATES)]).await?;
        let mut ids: Vec<String> = existing.iter().filter_map(|i| i.instance_id().map(str::to_string)).collect();
        let needed = (spec.replicas as usize).saturating_sub(ids.len()) as u32;
        let mut tags = vec![
            tag(TAG_ENVIRONMENT, &t.environment),
            tag(TAG_REGION, &t.region),
            tag(TAG_SERVICE, &t.service),
            tag(TAG_RUN, &spec.run_id),
            tag(TAG_SNAPSHOT, &spec.snapshot.to_string()),
            tag(TAG_LAUNCH_KEY, &spec.launch_key),
            tag(TAG_FINGERPRINT, &spec.fingerprint),
            tag("Name", &format!("{}-{}", t.environment, t.service)),
        ];
        if let Some(h) = health_tag(t.health.as_ref()) {
            tags.push(tag(TAG_HEALTH, &h));
        }
        if let Some(store) = &self.config.store_id {
            tags.push(tag(TAG_STORE, store));
        }
        tags.extend(t.tags.iter().filter(|(k, _)| !k.starts_with("lifeboat:")).map(|(k, v)| tag(k, v)));
        if let Some(run) = t.tags.get(TAG_DRILL) {
            tags.push(tag(TAG_DRILL, run));
        }
        for (batch, (subnet, count)) in spread(needed, &settings.subnets).into_iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(ProviderError::Cancelled);
            }
            let mut req = c
                .ec2
                .run_instances()
                .image_id(&spec.image)
                .instance_type(InstanceType::from(settings.instance_type.as_str()))
                .min_count(count)
                .max_count(count)
                .set_subnet_id(subnet)
                .set_security_group_ids(Some(settings.security_groups.clone()).filter(|g| !g.is_empty()))
                .set_key_name(settings.key_name.clone())
                .set_user_data(settings.user_data.as_ref().map(aws_smithy_types::base64::encode))
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Instance)
                        .set_tags(Some(tags.clone()))
                        .build(),
                )
                .client_token(client_token(&spec.launch_key, ids.len() + batch));
            if let Some(p) = &settings.iam_instance_profile {
                let profile = if p.starts_with("arn:") {
                    IamInstanceProfileSpecification::builder().arn(p).build()
                } else {
                    IamInstanceProfileSpecification::builder().name(p).build()
                };
                req = req.iam_instance_profile(profile);
            }
            if let Some(v) = &settings.root_volume {
                let ebs = EbsBlockDevice::builder()
                    .volume_size(v.size_gb)
                    .volume_type(VolumeType::from(v.kind.as_str()))
                    .delete_on_termination(true)
                    .build();
                req =
                    req.block_device_mappings(BlockDeviceMapping::builder().device_name("/dev/xvda").ebs(ebs).build());
            }
            let out =
                req.send().await.map_err(|e| match aws_error(&format!("RunInstances for {}", t.service), &e) {
                    // A bad AMI or parameter will not launch on a second attempt.
                    ProviderError::Backend { message, retryable } => {
                        ProviderError::LaunchFailed { service: t.service.clone(), message, retryable }
                    }
                    other => other,
                })?;
            ids.extend(out.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)));
        }
        ids.sort();
        Ok(ids.into_iter().map(|i| format!("{}/{i}", t.region)).collect())
    }

    async fn wait_healthy(
        &self,
        target: &ServiceRef,
        instances: &[String],
        within: Duration,
        cancel: &CancellationToken,
    ) -> ProviderResult<()> {
        let c = self.clients(&target.region).await;
        let ids: Vec<&str> = instances.iter().filter_map(|i| split_id(i).map(|(_, id)| id)).collect();
        let interval = target.health.as_ref().map_or(Duration::from_secs(2), |h| h.interval.0);
        let needed = target.health.as_ref().map_or(1, |h| h.healthy_threshold.max(1));
        let started = tokio::time::Instant::now();
        let mut passes = 0u32;
        let mut last = String::from("not checked yet");
        loop {
            let round = async {
                let found = self.describe(&c, vec![filter("instance-id", &ids)]).await?;
                for id in &ids {
                    let Some(i) = found.iter().find(|i| i.instance_id() == Some(*id)) else {
                        return Ok(Err(format!("{id} is not found")));
                    };
                    match state(i) {
                        InstanceStateName::Running => {}
                        InstanceStateName::Pending => return Ok(Err(format!("{id} is pending"))),
                        other => {
                            return Err(ProviderError::Unhealthy {
                                service: target.service.clone(),
                                after: started.elapsed(),
                                last: format!("{id} is {}", other.as_str()),
                            });
                        }
                    }
                }
                // EC2 status checks, where the API reports them.
                let status = c
                    .ec2
                    .describe_instance_status()
                    .set_instance_ids(Some(ids.iter().map(|s| s.to_string()).collect()))
                    .include_all_instances(true)
                    .send()
                    .await
                    .map_err(|e| aws_error("DescribeInstanceStatus", &e))?;
                for s in status.instance_statuses() {
                    let impaired = |x: Option<&SummaryStatus>| matches!(x, Some(SummaryStatus::Impaired));
                    if impaired(s.instance_status().and_then(|x| x.status()))
                        || impaired(s.system_status().and_then(|x| x.status()))
                    {
                        return Ok(Err(format!("{} fails its EC2 status checks", s.instance_id().unwrap_or_default())));
                    }
                }
                for i in &found {
                    let ip = i.private_ip_address().unwrap_or_default();
                    if let Err(e) = self.probe(target, ip).await {
                        return Ok(Err(format!("{}: {e}", i.instance_id().unwrap_or_default())));
                    }
                }
                Ok(Ok(()))
            };
            match round.await? {
                Ok(()) => {
                    passes += 1;
                    if passes >= needed {
                        return Ok(());
                    }
                }
                Err(why) => {
                    passes = 0;
                    last = why;
                }
            }
            if started.elapsed() + interval > within {
                return Err(ProviderError::Unhealthy { service: target.service.clone(), after: within, last });
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = cancel.cancelled() => return Err(ProviderError::Cancelled),
            }
        }
    }

    async fn cutover(&self, target: &ServiceRef, instances: &[String]) -> ProviderResult<()> {
        let settings = self.settings(target)?;
        let c = self.clients(&target.region).await;
        let new: Vec<String> = instances.iter().filter_map(|i| split_id(i).map(|(_, id)| id.to_string())).collect();
        let mine = self.tagged(&c, &target.environment, Some(&target.service)).await?;
        let old: Vec<String> =
            mine.iter().filter_map(|i| i.instance_id().map(str::to_string)).filter(|id| !new.contains(id)).collect();
        for tg in &settings.target_groups {
            let targets = |ids: &[String]| ids.iter().map(|id| TargetDescription::builder().id(id).build()).collect();
            c.elb
                .register_targets()
                .target_group_arn(tg)
                .set_targets(Some(targets(&new)))
                .send()
                .await
                .map_err(|e| aws_error(&format!("RegisterTargets for {}", target.service), &e))?;
            // Only this service's own old instances leave the group.
            self.deregister(&c, tg, &old, &target.service).await?;
        }
        if let Some(dns) = &settings.dns {
            let found = self
                .describe(&c, vec![filter("instance-id", &new.iter().map(String::as_str).collect::<Vec<_>>())])
                .await?;
            let records: Vec<ResourceRecord> = found
                .iter()
                .filter_map(|i| i.private_ip_address())
                .map(|ip| ResourceRecord::builder().value(ip).build().expect("a value is set"))
                .collect();
            let set = ResourceRecordSet::builder()
                .name(&dns.name)
                .r#type(RrType::A)
                .ttl(dns.ttl)
                .set_resource_records(Some(records))
                .build()
                .map_err(|e| permanent(format!("DNS record for {}: {e}", target.service)))?;
            let change = Change::builder()
                .action(ChangeAction::Upsert)
                .resource_record_set(set)
                .build()
                .map_err(|e| permanent(format!("DNS change for {}: {e}", target.service)))?;
            let batch =
                ChangeBatch::builder().changes(change).build().map_err(|e| permanent(format!("DNS batch: {e}")))?;
            c.dns
                .change_resource_record_sets()
                .hosted_zone_id(&dns.zone_id)
                .change_batch(batch)
                .send()
                .await
                .map_err(|e| aws_error(&format!("ChangeResourceRecordSets for {}", target.service), &e))?;
        }
        self.set_tag(&c, &new, TAG_SERVING, "true").await?;
        self.set_tag(&c, &old, TAG_SERVING, "false").await
    }

    async fn isolation(
        &self,
        _m: &Manifest,
        _region: &str,
        _namespace: &str,
    ) -> ProviderResult<crate::domain::drill::Isolation> {
        // A drill is never registered in production's target groups or DNS.
        let mut set = BTreeMap::new();
        if let Some(s) = &self.config.drill_subnets {
            set.insert("subnets".to_string(), s.clone());
        }
        if let Some(g) = &self.config.drill_security_groups {
            set.insert("security_groups".to_string(), g.clone());
        }
        Ok(crate::domain::drill::Isolation {
            addresses: Vec::new(),
            remove: vec!["target_groups".into(), "dns".into()],
            set,
            ..Default::default()
        })
    }

    async fn tear_down(&self, namespace: &str, region: &str) -> ProviderResult<(Vec<String>, Vec<String>)> {
        let c = self.clients(region).await;
        let ids: Vec<String> = self
            .tagged(&c, namespace, None)
            .await?
            .iter()
            .filter_map(|i| i.instance_id().map(|id| format!("{region}/{id}")))
            .collect();
        self.terminate(&ids).await?;
        let remaining = self
            .tagged(&c, namespace, None)
            .await?
            .iter()
            .filter(|i| !matches!(state(i), InstanceStateName::Terminated | InstanceStateName::ShuttingDown))
            .filter_map(|i| i.instance_id().map(|id| format!("{region}/{id}")))
            .collect();
        Ok((ids, remaining))
    }

    async fn drill_leftovers(&self) -> ProviderResult<crate::provider::Leftovers> {
        // The regions this server has worked in. One that fails is reported
        // and skipped: the others are still swept. One that never answered
        // (a typo a viewer planned against) is forgotten after it is reported.
        let regions: Vec<String> = self.clients.lock().await.keys().cloned().collect();
        let mut out = std::collections::BTreeSet::new();
        let mut failed = Vec::new();
        for region in regions {
            let c = self.clients(&region).await;
            let found = match self
                .describe(&c, vec![filter("tag-key", &[TAG_DRILL]), filter("instance-state-name", &LIVE_STATES)])
                .await
            {
                Ok(found) => found,
                Err(e) => {
                    let never = !self.answered.lock().expect("lock").contains(&region);
                    if never {
                        self.clients.lock().await.remove(&region);
                    }
                    failed.push(format!(
                        "cannot list drill leftovers in {region}: {e}{}",
                        if never { " (it never answered; not looked at again)" } else { "" }
                    ));
                    continue;
                }
            };
            self.answered(&region);
            // Another deployment's drills (another store, same account) are its own to sweep.
            let mine = |i: &Instance| match (tag_of(i, TAG_STORE), &self.config.store_id) {
                (Some(theirs), Some(ours)) => theirs == ours,
                _ => true,
            };
            for i in found.iter().filter(|i| mine(i)) {
                if let Some(ns) = tag_of(i, TAG_ENVIRONMENT) {
                    out.insert((ns.to_string(), region.clone()));
                }
            }
        }
        Ok(crate::provider::Leftovers { found: out.into_iter().collect(), failed })
    }

    async fn retire(&self, target: &ServiceRef) -> ProviderResult<()> {
        let c = self.clients(&target.region).await;
        let mine: Vec<String> = self
            .tagged(&c, &target.environment, Some(&target.service))
            .await?
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        // The service is gone from the snapshot, so its settings are too:
        // find the groups that hold its instances.
        let mut pages = c.elb.describe_target_groups().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("DescribeTargetGroups", &e))?;
            for tg in page.target_groups().iter().filter_map(|g| g.target_group_arn()) {
                self.deregister(&c, tg, &mine, &target.service).await?;
            }
        }
        self.set_tag(&c, &mine, TAG_SERVING, "false").await
    }

    async fn terminate(&self, instances: &[String]) -> ProviderResult<()> {
        let mut by_region: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for i in instances {
            if let Some((region, id)) = split_id(i) {
                by_region.entry(region).or_default().push(id);
            }
        }
        for (region, ids) in by_region {
            let c = self.clients(region).await;
            let ours: Vec<String> = self
                .ours(&c, &ids)
                .await?
                .iter()
                .filter(|i| !matches!(state(i), InstanceStateName::Terminated | InstanceStateName::ShuttingDown))
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect();
            if ours.is_empty() {
                continue;
            }
            c.ec2
                .terminate_instances()
                .set_instance_ids(Some(ours))
                .send()
                .await
                .map_err(|e| aws_error("TerminateInstances", &e))?;
        }
        Ok(())
    }

    async fn logs(&self, instance: &str, lines: usize) -> Vec<String> {
        match self.read_logs(instance, LogFrom::Tail(lines)).await {
            Ok(Some(r)) => r.lines,
            _ => Vec::new(),
        }
    }

    async fn read_logs(&self, instance: &str, from: LogFrom) -> ProviderResult<Option<LogRead>> {
        let Some((region, id)) = split_id(instance) else { return Ok(None) };
        let c = self.clients(region).await;
        if self.ours(&c, &[id]).await?.is_empty() {
            return Ok(None);
        }
        let out =
            c.ec2.get_console_output().instance_id(id).send().await.map_err(|e| aws_error("GetConsoleOutput", &e))?;
        let bytes = out.output().and_then(|o| aws_smithy_types::base64::decode(o).ok()).unwrap_or_default();
        Ok(Some(console_read(&bytes, from)))
    }
}

/// A line's fingerprint for a console cursor (FNV-1a, never 0).
fn line_mark(line: &[u8]) -> u32 {
    let h = line.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    h.max(1)
}

/// Lines of an instance's console output (EC2 keeps only its last 64 KiB,
/// so the window rolls). The cursor is the byte offset after the last line
/// read, with that line's fingerprint in its upper half: when the window
/// has moved, reading resumes after the same line wherever it now is, so
/// nothing is skipped or repeated; when it is gone, a note says so. Bytes
/// are split on newlines before decoding: no offset falls inside a character.
fn console_read(bytes: &[u8], from: LogFrom) -> LogRead {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let lines: Vec<(usize, &[u8])> = {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, b) in bytes[..complete].iter().enumerate() {
            if *b == b'\n' {
                let line = &bytes[start..i];
                out.push((i + 1, line.strip_suffix(b"\r").unwrap_or(line)));
                start = i + 1;
            }
        }
        out
    };
    let mark = |i: usize| line_mark(lines[i].1);
    let next = lines.last().map_or(0, |(end, _)| ((mark(lines.len() - 1) as u64) << 32) | *end as u64);
    let text =
        |ls: &[(usize, &[u8])]| ls.iter().map(|(_, l)| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>();
    let skip = match from {
        LogFrom::Tail(n) => lines.len().saturating_sub(n),
        LogFrom::Cursor(0) => 0,
        LogFrom::Cursor(c) => {
            let (wanted, offset) = ((c >> 32) as u32, (c & 0xffff_ffff) as usize);
            // Still where it was; else where that line is now, if it is there
            // only once (a blank or repeated line would be a guess: said instead).
            let matches: Vec<usize> = (0..lines.len()).filter(|&i| mark(i) == wanted).collect();
            match lines.iter().position(|(end, _)| *end == offset).filter(|&i| mark(i) == wanted) {
                Some(i) => i + 1,
                None => match matches.as_slice() {
                    [i] => i + 1,
                    _ => {
                        let mut out = vec![
                            "[earlier console output is no longer kept by EC2; some lines were not read]".to_string(),
                        ];
                        out.extend(text(&lines));
                        return LogRead { lines: out, next };
                    }
                },
            }
        }
    };
    LogRead { lines: text(&lines[skip..]), next }
}

#[cfg(test)]
mod console_tests {
    use super::*;

    #[test]
    fn a_cursor_survives_a_rolling_window_and_multibyte_text() {
        let first = "boot ✓\nstarting é\npartial ü".as_bytes();
        let r = console_read(first, LogFrom::Cursor(0));
        assert_eq!(r.lines, vec!["boot ✓", "starting é"]);
        // The window rolls: the first line is gone, two new ones came.
        let rolled = "starting é\npartial ü done\nready\n".as_bytes();
        let r2 = console_read(rolled, LogFrom::Cursor(r.next));
        assert_eq!(r2.lines, vec!["partial ü done", "ready"], "nothing skipped or repeated");
        // Nothing new: nothing read.
        assert!(console_read(rolled, LogFrom::Cursor(r2.next)).lines.is_empty());
        // The line read last is there twice after the window rolled: not guessed, said.
        let twice = "ready\nx\nready\ny\n".as_bytes();
        assert!(console_read(twice, LogFrom::Cursor(r2.next)).lines[0].contains("no longer kept"));
        // The line read last is gone from the window: said, then all that is there.
        let gone = "x\ny\n".as_bytes();
        let r3 = console_read(gone, LogFrom::Cursor(r2.next));
        assert!(r3.lines[0].contains("no longer kept"), "{:?}", r3.lines);
        assert_eq!(&r3.lines[1..], ["x", "y"]);
        // A cursor in the middle of a multi-byte character never panics.
        let odd = console_read("é\n".as_bytes(), LogFrom::Cursor(1));
        assert!(!odd.lines.is_empty());
        assert_eq!(console_read(rolled, LogFrom::Tail(1)).lines, vec!["ready"]);
    }
}

#[cfg(test)]
mod health_tag_tests {
    use super::*;
    use crate::domain::duration::Dur;
    use crate::domain::manifest::Health;

    fn health(check: HealthCheck) -> Health {
        Health {
            check,
            interval: Dur::millis(100),
            timeout: Dur::secs(1),
            probe_timeout: Dur::millis(300),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        }
    }

    /// The inventory probes what launch tagged: an instance that stopped
    /// answering is not healthy however long it has been running.
    #[tokio::test]
    async fn the_health_tag_is_probed_as_the_gate_would() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let tcp = health_tag(Some(&health(HealthCheck::Tcp(format!("x:{port}"))))).unwrap();
        assert_eq!(tcp, format!("tcp x:{port} 300"));
        assert!(probe_tagged(Some(&tcp), "127.0.0.1").await.is_ok());
        drop(l);
        assert!(probe_tagged(Some(&tcp), "127.0.0.1").await.is_err(), "nothing answers now");
        let http = health_tag(Some(&health(HealthCheck::Http("/healthz".into())))).unwrap();
        assert_eq!(http, "http /healthz 300");
        assert!(probe_tagged(None, "127.0.0.1").await.is_ok(), "no check: running is healthy");
        assert!(probe_tagged(Some("bogus"), "127.0.0.1").await.is_err());
        assert_eq!(health_tag(Some(&health(HealthCheck::Command(vec!["true".into()])))), None);
        assert_eq!(health_tag(Some(&health(HealthCheck::Http(format!("/{}", "x".repeat(300)))))), None);
    }
}
