//! Drills on the local provider: how a drill is kept apart from production
//! (a network namespace of its own, or production's addresses rewritten),
//! its teardown, and what drills left behind for the sweeper.

use std::collections::BTreeMap;

use super::records::{self, NetworkRecord};
use super::{DrillNetwork, LocalProvider, backend, netns, pick_listen_ports};
use crate::domain::drill::{AddressMap, Isolation, parse_namespace};
use crate::domain::manifest::{Check as HealthCheck, Manifest, VerifyProbe};
use crate::provider::{ComputeProvider, Leftovers, ProviderResult};

impl LocalProvider {
    /// Why a drill of `m` cannot run in a network namespace, which has only
    /// a loopback interface: an address on another interface cannot be
    /// served there, and an https check cannot be sent from there.
    pub(super) fn unfit_for_a_namespace(m: &Manifest) -> Option<String> {
        for (name, s) in &m.services {
            if let Some(addr) = s.launch.get("listen").and_then(|v| v.as_str())
                && addr.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_loopback())
            {
                return Some(format!("{name} listens on {addr}, not on loopback"));
            }
            if let Some(h) = &s.health
                && let HealthCheck::Http(url) = &h.check
                && url.starts_with("https://")
            {
                return Some(format!("{name}'s health check is https"));
            }
        }
        m.verify.iter().find_map(|c| match &c.probe {
            VerifyProbe::Http { http, .. } if http.starts_with("https://") => {
                Some(format!("verify check {:?} is https", c.name))
            }
            _ => None,
        })
    }

    /// Makes a drill's network namespace, recorded first (so that a sweep
    /// finds it whatever happens next).
    pub(super) async fn make_network(&self, name: &str, namespace: &str) -> Result<(), String> {
        let record = NetworkRecord {
            format_version: 1,
            name: name.to_string(),
            namespace: namespace.to_string(),
            store: Some(self.store_id.clone()),
            created_at: crate::store::snapshots::now_rfc3339(),
        };
        self.io(move |dir| {
            let path = records::network_path(dir, &record.name);
            std::fs::create_dir_all(dir.join("networks")).map_err(|e| e.to_string())?;
            records::write(&path, &record).map_err(|e| format!("cannot record it: {e}"))?;
            netns::create(&record.name).inspect_err(|_| {
                let _ = std::fs::remove_file(&path);
            })
        })
        .await
    }

    /// How a drill of `m`, run as `namespace`, is kept apart: a network
    /// namespace of its own where the host allows it, else the rewrite.
    pub(super) async fn isolate(&self, m: &Manifest, namespace: &str) -> ProviderResult<Isolation> {
        let how = *self.drill_network.lock().unwrap_or_else(|e| e.into_inner());
        let without = |why: &str| {
            format!(
                "this drill has no network namespace of its own ({why}): production's addresses are rewritten to drill ones, and a form the rewrite misses would reach production"
            )
        };
        let mut warnings = Vec::new();
        if how != DrillNetwork::Rewrite {
            let made = match Self::unfit_for_a_namespace(m) {
                Some(why) => Err(why),
                None => {
                    let name = netns::name_for(namespace)
                        .ok_or_else(|| backend(format!("{namespace} is not a drill's environment")))?;
                    self.make_network(&name, namespace).await.map(|()| name)
                }
            };
            match made {
                Ok(name) => {
                    // Production's addresses are kept: inside, they are the drill's.
                    let set = BTreeMap::from([(netns::LAUNCH_KEY.to_string(), serde_json::Value::from(name.clone()))]);
                    return Ok(Isolation { network: Some(name), set, ..Default::default() });
                }
                Err(why) if how == DrillNetwork::Namespace => {
                    return Err(backend(format!(
                        "drill_network = \"namespace\" but {why}; set [provider.local] drill_network = \"auto\" to rewrite addresses instead"
                    )));
                }
                Err(why) => warnings.push(without(&why)),
            }
        }
        let listening: Vec<(&String, &str)> = m
            .services
            .iter()
            .filter_map(|(name, s)| s.launch.get("listen").and_then(|v| v.as_str()).map(|l| (name, l)))
            .collect();
        let ports =
            pick_listen_ports(listening.len()).map_err(|e| backend(format!("cannot pick drill addresses: {e}")))?;
        let addresses = listening
            .into_iter()
            .zip(ports)
            .map(|((service, production), port)| {
                let host = production.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
                AddressMap {
                    service: service.clone(),
                    production: production.to_string(),
                    drill: format!("{host}:{port}"),
                }
            })
            .collect();
        Ok(Isolation { addresses, warnings, ..Default::default() })
    }

    /// Removes a drill's instances, addresses and network namespace.
    pub(super) async fn tear_down_drill(
        &self,
        namespace: &str,
        region: &str,
    ) -> ProviderResult<(Vec<String>, Vec<String>)> {
        let mine =
            |r: &records::InstanceRecord| r.environment == namespace && (region.is_empty() || r.region == region);
        let ids: Vec<String> =
            self.records().await?.into_iter().filter(|r| mine(r) && !r.terminated).map(|r| r.id).collect();
        self.terminate(&ids).await?;
        for p in self.pointers(Some(namespace)).await? {
            let path = records::pointer_path(&self.dir, namespace, &p.service);
            self.io(move |_| records::remove(&path))
                .await
                .map_err(|e| backend(format!("cannot give up {namespace}/{}'s address: {e}", p.service)))?;
        }
        self.router.sync().await.map_err(backend)?;
        let mut remaining: Vec<String> =
            self.records().await?.into_iter().filter(|r| mine(r) && r.alive()).map(|r| r.id).collect();
        remaining.extend(
            self.pointers(Some(namespace)).await?.into_iter().map(|p| format!("address of {namespace}/{}", p.service)),
        );
        // The network namespace goes last, once nothing runs in it.
        if let Some(name) = netns::name_for(namespace)
            && remaining.is_empty()
        {
            let owned = name.clone();
            let gone = self
                .io(move |dir| {
                    netns::delete(&owned)?;
                    records::remove(&records::network_path(dir, &owned)).map_err(|e| e.to_string())
                })
                .await;
            if let Err(e) = gone {
                remaining.push(format!("network namespace {name} ({e})"));
            }
        }
        Ok((ids, remaining))
    }

    /// What drills of this store left here, for the sweeper.
    pub(super) async fn leftovers(&self) -> ProviderResult<Leftovers> {
        // Only what this store's servers made: another store's servers may
        // share this directory, and their drills are theirs to sweep.
        let mine = |store: &Option<String>| store.as_deref().is_none_or(|s| s == self.store_id);
        // A corrupt record is reported, and the others are still swept.
        let ((records, bad_records), (pointers, bad_pointers), (networks, bad_networks)) = self
            .io(|d| {
                (records::readable_instances(d), records::readable_pointers(d, None), records::readable_networks(d))
            })
            .await;
        let failed: Vec<String> =
            bad_records.iter().chain(&bad_pointers).chain(&bad_networks).map(|e| format!("skipped {e}")).collect();
        let mut out = std::collections::BTreeSet::new();
        for r in records {
            if !r.terminated && mine(&r.store) && parse_namespace(&r.environment).is_some() {
                out.insert((r.environment.clone(), r.region.clone()));
            }
        }
        for p in pointers {
            if parse_namespace(&p.environment).is_some()
                && mine(&p.store)
                && !out.iter().any(|(ns, _)| ns == &p.environment)
            {
                out.insert((p.environment.clone(), String::new()));
            }
        }
        // A namespace made in the last minutes may belong to a drill that has
        // not recorded its run yet: it is not "unknown to the store".
        let young = |n: &NetworkRecord| {
            chrono::DateTime::parse_from_rfc3339(&n.created_at)
                .is_ok_and(|t| chrono::Utc::now().signed_duration_since(t) < chrono::TimeDelta::minutes(10))
        };
        for n in networks {
            if mine(&n.store) && !young(&n) && !out.iter().any(|(ns, _)| ns == &n.namespace) {
                out.insert((n.namespace.clone(), String::new()));
            }
        }
        Ok(Leftovers { found: out.into_iter().collect(), failed })
    }
}
