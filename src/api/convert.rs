//! Conversions between domain types and protobuf messages.

use super::pb;
use crate::domain::snapshot::{FieldChange, ManifestDiff, Snapshot};
use crate::store::Rejection;

pub fn snapshot(s: &Snapshot, refs: Vec<String>, rejection: Option<Rejection>, with_manifest: bool) -> pb::Snapshot {
    pb::Snapshot {
        environment: s.environment.clone(),
        version: s.version,
        digest: s.digest.clone(),
        created_at: s.created_at.clone(),
        author: s.author.clone(),
        message: s.message.clone(),
        labels: s.labels.clone().into_iter().collect(),
        parent_version: s.parent,
        refs,
        rejection: rejection.map(|r| pb::Rejection { by: r.by, at: r.at, reason: r.reason }),
        manifest_json: if with_manifest {
            serde_json::to_string_pretty(&s.manifest).expect("a manifest always serialises")
        } else {
            String::new()
        },
        service_count: s.manifest.services.len() as u32,
        region: s.manifest.region.clone(),
        provider: s.manifest.provider.as_str().to_string(),
    }
}

fn field(f: &FieldChange) -> pb::FieldChange {
    pb::FieldChange {
        path: f.path.clone(),
        before: f.before.clone().unwrap_or_default(),
        after: f.after.clone().unwrap_or_default(),
    }
}

pub fn diff(d: &ManifestDiff, from: pb::Snapshot, to: pb::Snapshot) -> pb::DiffSnapshotsResponse {
    pb::DiffSnapshotsResponse {
        from: Some(from),
        to: Some(to),
        environment: d.environment.iter().map(field).collect(),
        services: d
            .services
            .iter()
            .map(|s| pb::ServiceDiff {
                service: s.service.clone(),
                change: serde_json::to_value(s.change)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                fields: s.fields.iter().map(field).collect(),
            })
            .collect(),
    }
}
