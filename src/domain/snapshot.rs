//! Immutable snapshots: canonical encoding, content digest, and diff.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::manifest::{self, Manifest};

/// Version of the stored snapshot format; readers refuse others.
pub const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub format_version: u32,
    pub environment: String,
    pub version: u64,
    pub created_at: String,
    pub author: String,
    pub message: String,
    pub labels: BTreeMap<String, String>,
    /// The version that was `latest` when this one was pushed (0: none).
    pub parent: u64,
    /// Shared: a 10,000-service manifest is costly to copy, and snapshots
    /// are immutable.
    pub manifest: std::sync::Arc<Manifest>,
    /// The idempotency key of the push that created it, if any: a retried
    /// push with the same key returns this snapshot instead of a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `sha256:<hex>` of the canonical encoding of every other field.
    pub digest: String,
}

/// The stored form; its manifest is read back through the validator.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    format_version: u32,
    environment: String,
    version: u64,
    created_at: String,
    author: String,
    message: String,
    labels: BTreeMap<String, String>,
    parent: u64,
    manifest: serde_json::Value,
    #[serde(default)]
    request_id: Option<String>,
    digest: String,
}

/// Why a stored snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("is malformed ({0})")]
    Malformed(String),
    #[error(
        "has format_version {found}, which this lifeboat cannot read (it reads {known}){}",
        if found > known { "; it was written by a newer lifeboat: upgrade this one" } else { "" }
    )]
    UnknownFormat { found: u64, known: u64 },
    #[error("failed its digest check: it records {recorded} but its content hashes to {actual}")]
    DigestMismatch { recorded: String, actual: String },
    #[error("claims to be {claimed}, not {expected}")]
    WrongIdentity { claimed: String, expected: String },
}

/// Canonical JSON: object keys sorted, no whitespace.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    // serde_json's Map is a BTreeMap here (no `preserve_order`), so keys are sorted.
    serde_json::to_vec(value).expect("a JSON value always serialises")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    lower_hex(&Sha256::digest(bytes))
}

/// Lower-case hex, as `hex::encode` writes it, without its per-character
/// iterator (digests and fingerprints of 10,000 services add up).
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex is ASCII")
}

/// The digest of a snapshot's JSON: over everything but `digest`, which is
/// taken out (not copied: a 10,000-service document is megabytes); the
/// caller puts it back if it needs the whole document.
fn digest_of(body: &mut serde_json::Value) -> String {
    if let Some(obj) = body.as_object_mut() {
        obj.remove("digest");
    }
    format!("sha256:{}", sha256_hex(&canonical_json(body)))
}

impl Snapshot {
    /// Computes the snapshot's digest, and gives the bytes `encode()` gives
    /// for the sealed snapshot, from one serialisation.
    pub fn seal_and_encode(mut self) -> (Snapshot, Vec<u8>) {
        let mut body = serde_json::to_value(&self).expect("a snapshot always serialises");
        self.digest = digest_of(&mut body);
        if let Some(obj) = body.as_object_mut() {
            obj.insert("digest".into(), self.digest.clone().into());
        }
        let bytes = canonical_json(&body);
        (self, bytes)
    }

    /// The bytes stored in the object store.
    pub fn encode(&self) -> Vec<u8> {
        canonical_json(&serde_json::to_value(self).expect("a snapshot always serialises"))
    }

    /// Parses stored bytes, verifying format, digest and identity.
    pub fn decode(bytes: &[u8], environment: &str, version: u64) -> Result<Snapshot, IntegrityError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| IntegrityError::Malformed(format!("not JSON: {e}")))?;
        match value.get("format_version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(SNAPSHOT_FORMAT) => {}
            Some(v) => return Err(IntegrityError::UnknownFormat { found: v, known: SNAPSHOT_FORMAT.into() }),
            None => return Err(IntegrityError::Malformed("no format_version".into())),
        }
        let recorded = value.get("digest").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
        let actual = digest_of(&mut value);
        if recorded != actual {
            return Err(IntegrityError::DigestMismatch { recorded, actual });
        }
        if let Some(obj) = value.as_object_mut() {
            obj.insert("digest".into(), recorded.into());
        }
        let raw: RawSnapshot = serde_json::from_value(value).map_err(|e| IntegrityError::Malformed(e.to_string()))?;
        let manifest = manifest::from_stored(raw.manifest).map_err(|problems| {
            IntegrityError::Malformed(format!(
                "its manifest does not validate: {}",
                problems.first().map(ToString::to_string).unwrap_or_default()
            ))
        })?;
        let snap = Snapshot {
            format_version: raw.format_version,
            environment: raw.environment,
            version: raw.version,
            created_at: raw.created_at,
            author: raw.author,
            message: raw.message,
            labels: raw.labels,
            parent: raw.parent,
            manifest: manifest.into(),
            request_id: raw.request_id,
            digest: raw.digest,
        };
        if snap.environment != environment || snap.version != version {
            return Err(IntegrityError::WrongIdentity {
                claimed: format!("{} v{}", snap.environment, snap.version),
                expected: format!("{environment} v{version}"),
            });
        }
        Ok(snap)
    }
}

/// One changed setting: JSON text before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDiff {
    pub service: String,
    pub change: ChangeKind,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ManifestDiff {
    pub environment: Vec<FieldChange>,
    pub services: Vec<ServiceDiff>,
}

/// Differences between two manifests, per service and per setting.
pub fn diff(a: &Manifest, b: &Manifest) -> ManifestDiff {
    let to_value = |m: &Manifest| serde_json::to_value(m).expect("a manifest always serialises");
    let (mut va, mut vb) = (to_value(a), to_value(b));
    let sa = va.as_object_mut().and_then(|o| o.remove("services")).unwrap_or_default();
    let sb = vb.as_object_mut().and_then(|o| o.remove("services")).unwrap_or_default();
    let mut out = ManifestDiff::default();
    leaf_changes("", Some(&va), Some(&vb), &mut out.environment);
    let empty = serde_json::Map::new();
    let (sa, sb) = (sa.as_object().unwrap_or(&empty), sb.as_object().unwrap_or(&empty));
    let names: std::collections::BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
    for name in names {
        let (x, y) = (sa.get(name), sb.get(name));
        let change = match (x, y) {
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Removed,
            _ => ChangeKind::Changed,
        };
        let mut fields = Vec::new();
        leaf_changes("", x, y, &mut fields);
        if !fields.is_empty() {
            out.services.push(ServiceDiff { service: name.clone(), change, fields });
        }
    }
    out
}

/// Recurses through tables (a missing table counts as empty) and records
/// every leaf that differs.
fn leaf_changes(path: &str, a: Option<&serde_json::Value>, b: Option<&serde_json::Value>, out: &mut Vec<FieldChange>) {
    let empty = serde_json::Map::new();
    fn table<'a>(
        v: Option<&'a serde_json::Value>,
        empty: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a serde_json::Map<String, serde_json::Value>> {
        match v {
            None => Some(empty),
            Some(serde_json::Value::Object(m)) => Some(m),
            Some(_) => None,
        }
    }
    if let (Some(x), Some(y)) = (table(a, &empty), table(b, &empty)) {
        let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for k in keys {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            leaf_changes(&p, x.get(k), y.get(k), out);
        }
    } else if a != b {
        out.push(FieldChange {
            path: path.to_string(),
            before: a.map(ToString::to_string),
            after: b.map(ToString::to_string),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::source::Format;

    fn manifest(replicas: u32, image: char) -> Manifest {
        let text = format!(
            "environment = \"shop\"\nregion = \"r1\"\n[services.api]\nimage = \"sha256:{}\"\nreplicas = {replicas}\nlaunch = {{ env = {{ LOG = \"info\" }} }}\n",
            image.to_string().repeat(64)
        );
        manifest::parse(text.as_bytes(), Format::Toml).unwrap()
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            format_version: SNAPSHOT_FORMAT,
            environment: "shop".into(),
            version: 3,
            created_at: "2026-11-27T00:00:00Z".into(),
            author: "alice".into(),
            message: "m".into(),
            labels: BTreeMap::new(),
            parent: 2,
            manifest: manifest(1, 'a').into(),
            request_id: None,
            digest: String::new(),
        }
        .seal_and_encode()
        .0
    }

    #[test]
    fn seal_and_encode_gives_the_digest_and_bytes_of_encode() {
        let random = crate::testkit::random_manifest_toml(200, 3, 5);
        let random = manifest::parse(random.as_bytes(), Format::Toml).unwrap();
        let mut with_everything = snapshot();
        with_everything.request_id = Some("push-1".into());
        with_everything.labels.insert("ticket".into(), "INC-7 \"é\"".into());
        with_everything.manifest = random.into();
        // Digests pinned from the definition before seal_and_encode: they never change.
        let pinned = [
            "sha256:cf6b538ae175de998c93294b41433d5c83ad9672957ed2640fe07f04140270f4",
            "sha256:eb6c0aafc4557f80a38e1adfa2e3df6d663a66d9ccf7cf6b13f10a4d42fbaf05",
        ];
        for (s, digest) in [snapshot(), with_everything].into_iter().zip(pinned) {
            let (sealed, bytes) = s.seal_and_encode();
            assert_eq!(sealed.digest, digest);
            assert_eq!(bytes, sealed.encode());
            assert_eq!(Snapshot::decode(&bytes, "shop", 3).unwrap(), sealed);
        }
    }

    #[test]
    fn round_trip_and_every_flipped_byte_is_caught() {
        let s = snapshot();
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes, "shop", 3).unwrap(), s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Snapshot::decode(&bad, "shop", 3).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_identity_is_refused() {
        let bytes = snapshot().encode();
        assert!(matches!(Snapshot::decode(&bytes, "shop", 4), Err(IntegrityError::WrongIdentity { .. })));
    }

    #[test]
    fn diff_reports_leaf_changes() {
        let mut b = manifest(3, 'b');
        b.services.insert("web".into(), b.services["api"].clone());
        let d = diff(&manifest(1, 'a'), &b);
        assert_eq!(d.services.len(), 2);
        let api = &d.services[0];
        assert_eq!(api.change, ChangeKind::Changed);
        let paths: Vec<&str> = api.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["image", "replicas"]);
        assert_eq!(d.services[1].change, ChangeKind::Added);
        assert!(d.services[1].fields.iter().any(|f| f.path == "launch.env.LOG"));
    }
}
