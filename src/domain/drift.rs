//! Drift: how what runs in a region differs from known-good, per service.
//! The same comparison the planner makes (`plan::differs`), reported as a
//! state per service instead of an action.

use std::collections::BTreeMap;

use serde::Serialize;

use super::manifest::Manifest;
use super::plan::{Difference, LiveInstance, differs, fingerprint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    InSync,
    Missing,
    WrongImage,
    WrongSettings,
    WrongCount,
    Unhealthy,
    /// Instances tagged for the environment, of a service not in the snapshot.
    Unmanaged,
}

impl DriftState {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftState::InSync => "in_sync",
            DriftState::Missing => "missing",
            DriftState::WrongImage => "wrong_image",
            DriftState::WrongSettings => "wrong_settings",
            DriftState::WrongCount => "wrong_count",
            DriftState::Unhealthy => "unhealthy",
            DriftState::Unmanaged => "unmanaged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDrift {
    pub service: String,
    pub state: DriftState,
    /// What differs, in words ("runs sha256:ab…, known-good has sha256:cd…").
    pub detail: String,
    pub instances: Vec<String>,
}

/// Every service of `m` in `region`, and every other service running there.
pub fn drift(m: &Manifest, region: &str, inventory: &[LiveInstance]) -> Vec<ServiceDrift> {
    let mut by_service: BTreeMap<&str, Vec<&LiveInstance>> = BTreeMap::new();
    for i in inventory {
        by_service.entry(i.service.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (name, svc) in &m.services {
        let live = by_service.remove(name.as_str()).unwrap_or_default();
        let ids = live.iter().map(|i| i.id.clone()).collect();
        let image = svc.image.for_region(region).unwrap_or_default();
        let (state, detail) = if live.is_empty() {
            (DriftState::Missing, format!("no instance runs (want {})", svc.replicas))
        } else {
            match differs(svc, image, &fingerprint(svc, image), &live) {
                None => (DriftState::InSync, String::new()),
                Some(Difference::Image) => {
                    let running: Vec<&str> = live.iter().map(|i| i.image.as_str()).filter(|i| *i != image).collect();
                    (DriftState::WrongImage, format!("runs {}, known-good has {image}", running.join(", ")))
                }
                Some(Difference::Settings) => {
                    (DriftState::WrongSettings, "launched with other settings than known-good".into())
                }
                Some(d @ Difference::Count { .. }) => (DriftState::WrongCount, d.to_string()),
                Some(d @ (Difference::Unhealthy | Difference::NotServing)) => {
                    let bad: Vec<&str> =
                        live.iter().filter(|i| !i.healthy || !i.serving).map(|i| i.id.as_str()).collect();
                    (DriftState::Unhealthy, format!("{d}: {}", bad.join(", ")))
                }
            }
        };
        out.push(ServiceDrift { service: name.clone(), state, detail, instances: ids });
    }
    for (name, live) in by_service {
        out.push(ServiceDrift {
            service: name.to_string(),
            state: DriftState::Unmanaged,
            detail: "not in known-good".into(),
            instances: live.iter().map(|i| i.id.clone()).collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::manifest;
    use crate::domain::source::Format;

    fn shop() -> Manifest {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/good/shop.toml")).unwrap();
        manifest::parse(text.as_bytes(), Format::Toml).unwrap()
    }

    fn live(m: &Manifest, service: &str, n: usize) -> Vec<LiveInstance> {
        let image = m.image_for(service, "eu-west-1").unwrap().to_string();
        (0..n)
            .map(|i| LiveInstance {
                id: format!("{service}-{i}"),
                service: service.into(),
                fingerprint: fingerprint(&m.services[service], &image),
                image: image.clone(),
                healthy: true,
                serving: true,
                run_id: "r".into(),
                address: String::new(),
            })
            .collect()
    }

    #[test]
    fn each_way_of_drifting_is_named() {
        let m = shop();
        let mut inv = Vec::new();
        for (name, s) in &m.services {
            inv.extend(live(&m, name, s.replicas as usize));
        }
        assert!(drift(&m, "eu-west-1", &inv).iter().all(|d| d.state == DriftState::InSync));
        let names: Vec<String> = m.services.keys().cloned().collect();
        let (a, b, c, d, e) = (&names[0], &names[1], &names[2], &names[3], &names[4]);
        inv.retain(|i| &i.service != a);
        for i in inv.iter_mut() {
            if &i.service == b {
                i.image = "sha256:other".into();
            }
            if &i.service == c {
                i.fingerprint = "x".into();
            }
            if &i.service == d {
                i.healthy = false;
            }
        }
        let extra = inv.iter().position(|i| &i.service == e).unwrap();
        inv.remove(extra);
        let mut stray = live(&m, e, 1).remove(0);
        stray.service = "legacy".into();
        inv.push(stray);
        let report = drift(&m, "eu-west-1", &inv);
        let state = |s: &str| report.iter().find(|x| x.service == s).unwrap().state;
        assert_eq!(state(a), DriftState::Missing);
        assert_eq!(state(b), DriftState::WrongImage);
        assert_eq!(state(c), DriftState::WrongSettings);
        assert_eq!(state(d), DriftState::Unhealthy);
        let want = m.services[e].replicas;
        assert_eq!(state(e), if want > 1 { DriftState::WrongCount } else { DriftState::Missing });
        assert_eq!(state("legacy"), DriftState::Unmanaged);
        assert!(
            report
                .iter()
                .find(|x| &x.service == b)
                .unwrap()
                .detail
                .starts_with("runs sha256:other, known-good has sha256:")
        );
    }
}
