//! The snapshot repository: numbering, write-once snapshots, digest checks on
//! every read, and refs moved only by compare-and-swap. Backend-agnostic.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::codec::{self, Persisted, encode};
use super::{DynStore, PutOptions, StoreError, layout};
use crate::domain::manifest::{self, Manifest};
use crate::domain::snapshot::{SNAPSHOT_FORMAT, Snapshot};
use crate::error::{Error, Result};

pub const LATEST: &str = "latest";
pub const KNOWN_GOOD: &str = "known-good";
const REF_FORMAT: u32 = 1;

/// Where a ref points, and who moved it there, when and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefRecord {
    pub format_version: u32,
    pub name: String,
    pub version: u64,
    pub digest: String,
    pub updated_at: String,
    pub updated_by: String,
    pub reason: String,
    /// The version it pointed at before (0: none).
    pub previous: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub format_version: u32,
    pub version: u64,
    pub by: String,
    pub at: String,
    pub reason: String,
}

impl Persisted for RefRecord {
    const KIND: &'static str = "ref";
    const FORMAT: u32 = REF_FORMAT;
}

impl Persisted for Rejection {
    const KIND: &'static str = "rejection record";
    const FORMAT: u32 = 1;
}

pub struct NewSnapshot {
    pub manifest: Manifest,
    pub author: String,
    pub message: String,
    pub labels: BTreeMap<String, String>,
}

/// A snapshot as `list` finds it.
#[derive(Debug)]
pub enum Listed {
    Ok(Box<Snapshot>),
    Corrupt(Corrupt),
}

/// A stored snapshot that fails its integrity check.
#[derive(Debug, Clone)]
pub struct Corrupt {
    pub version: u64,
    /// The object's key, for the operator who goes to look at it.
    pub key: String,
    pub problem: String,
}

impl Listed {
    pub fn version(&self) -> u64 {
        match self {
            Listed::Ok(s) => s.version,
            Listed::Corrupt(c) => c.version,
        }
    }
}

#[derive(Clone)]
pub struct SnapshotRepo {
    store: DynStore,
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Ref and tag names: like environment names, but `latest`/`known-good` are reserved.
fn check_tag(tag: &str) -> Result<()> {
    if !manifest::is_valid_name(tag) || tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidArgument(format!(
            "\"{}\" is not a valid tag: use 1 to 63 characters of a-z, 0-9 and -, not all digits",
            crate::error::shown(tag)
        )));
    }
    if tag == KNOWN_GOOD {
        return Err(Error::InvalidArgument(
            "\"known-good\" is moved only by promotion: use `lifeboat snapshot promote ENV REF --reason ...`".into(),
        ));
    }
    if tag == LATEST {
        return Err(Error::InvalidArgument("\"latest\" is a reserved ref name: every push moves it".into()));
    }
    Ok(())
}

/// How far back a retried push looks for its earlier attempt when the
/// request record is missing.
const RECENT_PUSHES: usize = 32;

fn check_request_id(key: &str) -> Result<()> {
    if !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "\"{}\" is not a request ID: use 1 to 64 letters, digits and -",
            crate::error::shown(key)
        )))
    }
}

pub fn check_environment(env: &str) -> Result<()> {
    if manifest::is_valid_name(env) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "\"{}\" is not a valid environment name: use 1 to 63 characters of a-z, 0-9 and -",
            crate::error::shown(env)
        )))
    }
}

impl SnapshotRepo {
    pub fn new(store: DynStore) -> SnapshotRepo {
        SnapshotRepo { store }
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Stores the next version. Concurrent pushes each get their own number:
    /// the write is create-if-absent, and a taken number means try the next.
    pub async fn push(&self, new: NewSnapshot) -> Result<Snapshot> {
        self.push_once(new, None).await
    }

    /// A push with an idempotency key: if a push with this key already
    /// created a snapshot (its reply lost, say), that snapshot is returned
    /// and nothing new is stored. The key is stored in the snapshot itself,
    /// the object that commits the push, and indexed for a quick look-up.
    pub async fn push_once(&self, new: NewSnapshot, request_id: Option<&str>) -> Result<Snapshot> {
        let env = new.manifest.environment.clone();
        if let Some(key) = request_id {
            check_request_id(key)?;
            if let Some(done) = self.pushed_with(&env, key).await? {
                return Ok(done);
            }
        }
        let mut version = self.latest_version(&env).await?.unwrap_or(0) + 1;
        let manifest = std::sync::Arc::new(new.manifest);
        for _ in 0..1_000 {
            let (snap, bytes) = Snapshot {
                format_version: SNAPSHOT_FORMAT,
                environment: env.clone(),
                version,
                created_at: now_rfc3339(),
                author: new.author.clone(),
                message: new.message.clone(),
                labels: new.labels.clone(),
                parent: version - 1,
                manifest: manifest.clone(),
                request_id: request_id.map(str::to_string),
                digest: String::new(),
            }
            .seal_and_encode();
            let key = layout::snapshot(&env, version);
            let bytes = Bytes::from(bytes);
            let content = decoded::Content::of(&env, version, &bytes);
            match self.store.put(&key, bytes, PutOptions::create().retained()).await {
                // The snapshot object commits the push. The digest index and
                // `latest` follow; readers repair them if they could not be
                // written (`latest_version` probes past the ref, `resolve`
                // scans on an index miss), so a push never reports failure
                // for a snapshot that exists (a retry would add a duplicate).
                Ok(_) => {
                    decoded::keep(content, &snap);
                    let hex = snap.digest.trim_start_matches("sha256:");
                    let index = layout::digest_index(&env, hex);
                    if let Err(e) =
                        self.store.put(&index, Bytes::from(version.to_string()), PutOptions::overwrite()).await
                    {
                        tracing::warn!(key = %index, error = %e, "snapshot stored, but not its digest index; it is rebuilt on lookup");
                    }
                    if let Err(e) = self.advance_latest(&snap).await {
                        tracing::warn!(env = %env, version, error = %e, "snapshot stored, but latest not moved; readers look past it");
                    }
                    if let Some(key) = request_id {
                        let record = layout::push_request(&env, key);
                        if let Err(e) =
                            self.store.put(&record, Bytes::from(version.to_string()), PutOptions::create()).await
                        {
                            tracing::warn!(key = %record, error = %e, "snapshot stored, but not its request record; retries find it by a scan");
                        }
                    }
                    return Ok(snap);
                }
                Err(StoreError::AlreadyExists { .. }) => version += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!("could not find a free version number for {env} after 1000 attempts")))
    }

    /// Moves `latest` forward (never back) by compare-and-swap, in the one
    /// bounded loop (`cas::update`).
    async fn advance_latest(&self, snap: &Snapshot) -> Result<()> {
        let key = layout::reference(&snap.environment, LATEST);
        let describe = self.store.describe();
        super::cas::update(&self.store, &key, super::cas::Budget::default(), |current| {
            let previous = match current {
                Some(obj) => codec::decode::<RefRecord>(&obj.bytes, &key, &describe)?.version,
                None => 0,
            };
            if previous >= snap.version {
                return Ok(super::cas::Step::Done);
            }
            Ok(super::cas::Step::Write(encode(&RefRecord {
                format_version: REF_FORMAT,
                name: LATEST.into(),
                version: snap.version,
                digest: snap.digest.clone(),
                updated_at: snap.created_at.clone(),
                updated_by: snap.author.clone(),
                reason: "push".into(),
                previous,
            })))
        })
        .await?;
        Ok(())
    }

    /// The snapshot an earlier push with this key created, if any: from the
    /// request record, else by a look through the newest snapshots.
    async fn pushed_with(&self, env: &str, key: &str) -> Result<Option<Snapshot>> {
        if let Some(obj) = self.store.get(&layout::push_request(env, key)).await?
            && let Ok(v) = String::from_utf8_lossy(&obj.bytes).trim().parse::<u64>()
        {
            let snap = self.get(env, v).await?;
            if snap.request_id.as_deref() == Some(key) {
                return Ok(Some(snap));
            }
        }
        let Some(latest) = self.latest_version(env).await? else { return Ok(None) };
        for v in (1..=latest).rev().take(RECENT_PUSHES) {
            let snap = self.get(env, v).await?;
            if snap.request_id.as_deref() == Some(key) {
                return Ok(Some(snap));
            }
        }
        Ok(None)
    }

    /// The newest version: the `latest` ref, then a probe past it in case a
    /// push stopped before moving the ref; a listing if there is no ref.
    pub async fn latest_version(&self, env: &str) -> Result<Option<u64>> {
        let mut v = match self.read_ref_object(env, LATEST).await? {
            Some((r, _)) => r.version,
            None => {
                let keys = self.store.list(&layout::snapshots_prefix(env)).await?;
                keys.iter().filter_map(|k| layout::snapshot_version(k)).max().unwrap_or(0)
            }
        };
        while self.store.get(&layout::snapshot(env, v + 1)).await?.is_some() {
            v += 1;
        }
        Ok((v > 0).then_some(v))
    }

    async fn read_ref_object(&self, env: &str, name: &str) -> Result<Option<(RefRecord, String)>> {
        let key = layout::reference(env, name);
        let Some(obj) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let record: RefRecord = codec::decode(&obj.bytes, &key, &self.store.describe())?;
        Ok(Some((record, obj.etag)))
    }

    pub async fn get_ref(&self, env: &str, name: &str) -> Result<Option<RefRecord>> {
        Ok(self.read_ref_object(env, name).await?.map(|(r, _)| r))
    }

    /// Reads and verifies one snapshot.
    pub async fn get(&self, env: &str, version: u64) -> Result<Snapshot> {
        let key = layout::snapshot(env, version);
        let obj = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| Error::NotFound(format!("environment {env} has no snapshot {version}")))?;
        let content = decoded::Content::of(env, version, &obj.bytes);
        if let Some(snap) = decoded::get(&content) {
            return Ok(snap);
        }
        let snap = Snapshot::decode(&obj.bytes, env, version).map_err(|source| Error::Integrity {
            what: format!("snapshot {version} of {env}"),
            key,
            store: self.store.describe(),
            source: Box::new(source),
        })?;
        decoded::keep(content, &snap);
        Ok(snap)
    }

    /// A version number, `latest`, `known-good`, a tag, or a digest (or a
    /// unique prefix of at least 8 hex digits, with or without `sha256:`).
    pub async fn resolve(&self, env: &str, reference: &str) -> Result<u64> {
        check_environment(env)?;
        let r = reference.trim();
        if r.is_empty() {
            return Err(Error::InvalidArgument("empty snapshot reference".into()));
        }
        if let Ok(v) = r.parse::<u64>() {
            if v == 0 {
                return Err(Error::InvalidArgument("snapshot versions start at 1".into()));
            }
            return Ok(v);
        }
        if r == LATEST {
            return self
                .latest_version(env)
                .await?
                .ok_or_else(|| Error::NotFound(format!("environment {env} has no snapshots")));
        }
        let hex = r.strip_prefix("sha256:").unwrap_or(r);
        let looks_like_digest =
            r.starts_with("sha256:") || (hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if looks_like_digest && !(manifest::is_valid_name(r) && self.get_ref(env, r).await?.is_some()) {
            if hex.len() < 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::InvalidArgument(format!(
                    "\"{}\" is not a digest: give at least 8 hex digits",
                    crate::error::shown(r)
                )));
            }
            let keys = self.store.list(&layout::digest_index(env, &hex.to_ascii_lowercase())).await?;
            return match keys.as_slice() {
                [] => self.scan_for_digest(env, &hex.to_ascii_lowercase(), r).await,
                [key] => {
                    let obj = self.store.get(key).await?.ok_or_else(|| Error::NotFound(format!("digest {r}")))?;
                    String::from_utf8_lossy(&obj.bytes)
                        .trim()
                        .parse()
                        .map_err(|_| Error::Internal(format!("digest index {key} is corrupt")))
                }
                many => Err(Error::InvalidArgument(format!(
                    "digest prefix {r} is ambiguous: it matches {} snapshots",
                    many.len()
                ))),
            };
        }
        if !manifest::is_valid_name(r) {
            return Err(Error::InvalidArgument(format!(
                "\"{}\" is not a snapshot reference: use a version number, latest, known-good, a tag, or a digest",
                crate::error::shown(r)
            )));
        }
        match self.get_ref(env, r).await? {
            Some(rec) => Ok(rec.version),
            // An environment nobody pushed is not one with a snapshot to promote.
            None if r == KNOWN_GOOD && self.latest_version(env).await?.is_none() => Err(Error::NotFound(format!(
                "environment {env} has no snapshots; push its manifest first (`lifeboat snapshot push FILE`), or check the name (`lifeboat status` lists every environment)"
            ))),
            None if r == KNOWN_GOOD => Err(Error::NotFound(format!(
                "environment {env} has no known-good snapshot yet; promote one with `lifeboat snapshot promote {env} VERSION --reason ...`"
            ))),
            None => Err(Error::NotFound(format!("environment {env} has no ref or tag named {r}"))),
        }
    }

    /// An index miss: look through the snapshots themselves (a push may have
    /// stored its snapshot but not the index entry), and repair the index.
    async fn scan_for_digest(&self, env: &str, hex: &str, shown: &str) -> Result<u64> {
        let keys = self.store.list(&layout::snapshots_prefix(env)).await?;
        let mut found = Vec::new();
        for v in keys.iter().filter_map(|k| layout::snapshot_version(k)) {
            // A corrupt snapshot has no digest to match.
            let Listed::Ok(snap) = self.get_listed(env, v).await? else { continue };
            let full = snap.digest.trim_start_matches("sha256:");
            if full.starts_with(hex) {
                found.push((v, full.to_string()));
            }
        }
        match found.as_slice() {
            [] => Err(Error::NotFound(format!("environment {env} has no snapshot with digest {shown}"))),
            [(v, full)] => {
                let index = layout::digest_index(env, full);
                let _ = self.store.put(&index, Bytes::from(v.to_string()), PutOptions::create()).await;
                Ok(*v)
            }
            many => Err(Error::InvalidArgument(format!(
                "digest prefix {shown} is ambiguous: it matches {} snapshots",
                many.len()
            ))),
        }
    }

    pub async fn get_by_ref(&self, env: &str, reference: &str) -> Result<Snapshot> {
        let v = self.resolve(env, reference).await?;
        self.get(env, v).await
    }

    /// Every snapshot, oldest first, each verified. One that fails its
    /// check is listed as corrupt, so the others stay usable (a rollback
    /// must be able to choose an earlier one); only using it is refused.
    pub async fn list(&self, env: &str) -> Result<Vec<Listed>> {
        check_environment(env)?;
        let keys = self.store.list(&layout::snapshots_prefix(env)).await?;
        let versions: Vec<u64> = keys.iter().filter_map(|k| layout::snapshot_version(k)).collect();
        futures::stream::iter(versions).map(|v| self.get_listed(env, v)).buffered(16).try_collect().await
    }

    /// One snapshot, or what is wrong with its stored object.
    pub async fn get_listed(&self, env: &str, version: u64) -> Result<Listed> {
        match self.get(env, version).await {
            Ok(s) => Ok(Listed::Ok(Box::new(s))),
            Err(Error::Integrity { key, source, .. }) => {
                Ok(Listed::Corrupt(Corrupt { version, key, problem: source.to_string() }))
            }
            Err(e) => Err(e),
        }
    }

    /// Every ref of the environment, by name.
    pub async fn refs(&self, env: &str) -> Result<BTreeMap<String, RefRecord>> {
        let keys = self.store.list(&layout::refs_prefix(env)).await?;
        let mut out = BTreeMap::new();
        for key in keys {
            let name = key.rsplit('/').next().unwrap_or_default().to_string();
            if let Some(r) = self.get_ref(env, &name).await? {
                out.insert(name, r);
            }
        }
        Ok(out)
    }

    /// A rejected snapshot of the same environment with exactly this
    /// manifest: pushing it again would bring back what someone rejected.
    /// Unreadable rejected snapshots are passed over (they cannot match).
    pub async fn rejected_twin(&self, m: &Manifest) -> Result<Option<(u64, Rejection)>> {
        let env = &m.environment;
        for key in self.store.list(&layout::rejections_prefix(env)).await? {
            let Some(version) = layout::rejected_version(&key) else { continue };
            let Ok(snap) = self.get(env, version).await else { continue };
            if *snap.manifest == *m
                && let Some(r) = self.rejection(env, version).await?
            {
                return Ok(Some((version, r)));
            }
        }
        Ok(None)
    }

    pub async fn rejection(&self, env: &str, version: u64) -> Result<Option<Rejection>> {
        let key = layout::rejection(env, version);
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(obj) => codec::decode(&obj.bytes, &key, &self.store.describe()).map(Some),
        }
    }

    /// Points `known-good` at a snapshot. With `expected`, only if it points
    /// at that version now (0: not set); either way the write is a
    /// compare-and-swap, so of two concurrent promotions one fails. The
    /// guards (images, the drill gate) are `Engine::promote`'s.
    pub async fn promote_snapshot(
        &self,
        snap: &Snapshot,
        actor: &str,
        reason: &str,
        expected: Option<u64>,
    ) -> Result<()> {
        self.move_ref(snap, KNOWN_GOOD, actor, reason, expected).await
    }

    /// A promotion by reference with only the manifest's drill gate: test
    /// and benchmark set-up (the product promotes through `Engine::promote`).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn promote(
        &self,
        env: &str,
        reference: &str,
        actor: &str,
        reason: &str,
        expected: Option<u64>,
    ) -> Result<Snapshot> {
        let snap = self.get_by_ref(env, reference).await?;
        if snap.manifest.promotion == manifest::Promotion::Drill
            && self.passed_drills(env, snap.version).await?.is_empty()
        {
            return Err(Error::Conflict(format!(
                "snapshot {v} of {env} has no passed DR drill, and its manifest has promotion = \"drill\": run `lifeboat drill run {env} --snapshot {v} --promote-on-pass` (or promote it after a drill passed)",
                v = snap.version
            )));
        }
        self.move_ref(&snap, KNOWN_GOOD, actor, reason, expected).await?;
        Ok(snap)
    }

    /// Moves known-good to a snapshot whose drill passed: a compare-and-swap
    /// against the known-good the drill started from.
    pub async fn promote_drilled(
        &self,
        env: &str,
        version: u64,
        run_id: &str,
        expected: Option<u64>,
    ) -> Result<Snapshot> {
        let snap = self.get(env, version).await?;
        let reason = format!("DR drill {run_id} passed");
        self.move_ref(&snap, KNOWN_GOOD, &format!("drill {run_id}"), &reason, expected).await?;
        Ok(snap)
    }

    /// Records that a drill of a snapshot passed.
    pub async fn record_passed_drill(&self, env: &str, version: u64, run_id: &str, at: &str) -> Result<()> {
        let body = serde_json::json!({ "run_id": run_id, "at": at, "version": version });
        let key = layout::passed_drill(env, version, run_id);
        match self.store.put(&key, bytes::Bytes::from(body.to_string()), super::PutOptions::create()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The runs of the drills of a snapshot that passed.
    pub async fn passed_drills(&self, env: &str, version: u64) -> Result<Vec<String>> {
        let prefix = layout::passed_drills_prefix(env, version);
        Ok(self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json").map(str::to_string))
            .collect())
    }

    /// Points a user tag at a snapshot, by compare-and-swap.
    /// Points a tag at a snapshot. A tag that already points elsewhere moves
    /// only with `force` or an `expected` version, as `git tag -f` does.
    pub async fn tag(
        &self,
        env: &str,
        reference: &str,
        tag: &str,
        actor: &str,
        expected: Option<u64>,
        force: bool,
    ) -> Result<Snapshot> {
        check_tag(tag)?;
        let snap = self.get_by_ref(env, reference).await?;
        if !force
            && expected.is_none()
            && let Some(current) = self.get_ref(env, tag).await?
            && current.version != snap.version
        {
            return Err(Error::Conflict(format!(
                "tag {tag} of {env} already points at version {}; move it with --force, or with --expect {}",
                current.version, current.version
            )));
        }
        self.move_ref(&snap, tag, actor, "tag", expected).await?;
        Ok(snap)
    }

    async fn move_ref(
        &self,
        snap: &Snapshot,
        name: &str,
        actor: &str,
        reason: &str,
        expected: Option<u64>,
    ) -> Result<()> {
        let env = &snap.environment;
        if reason.trim().is_empty() {
            return Err(Error::InvalidArgument("a reason is required".into()));
        }
        if let Some(rej) = self.rejection(env, snap.version).await? {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {} of {env} was rejected by {} at {} ({}); it cannot become {name}",
                snap.version, rej.by, rej.at, rej.reason
            )));
        }
        let current = self.read_ref_object(env, name).await?;
        let previous = current.as_ref().map_or(0, |(r, _)| r.version);
        if let Some(want) = expected
            && want != previous
        {
            // Say what it is and what was expected, without guessing why.
            let now = if previous == 0 { "is not set".to_string() } else { format!("points at version {previous}") };
            let wanted = if want == 0 { "to be unset (--expect 0)".to_string() } else { format!("version {want}") };
            return Err(Error::Conflict(format!(
                "{name} of {env} {now}, but --expect said {wanted}; check `lifeboat snapshot list {env}` and retry with --expect {previous}"
            )));
        }
        let record = RefRecord {
            format_version: REF_FORMAT,
            name: name.into(),
            version: snap.version,
            digest: snap.digest.clone(),
            updated_at: now_rfc3339(),
            updated_by: actor.into(),
            reason: reason.into(),
            previous,
        };
        let key = layout::reference(env, name);
        match self.store.put(&key, encode(&record), PutOptions::swap(current.map(|(_, e)| e))).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => Err(Error::Conflict(format!(
                "{name} of {env} was moved by someone else while promoting snapshot {}; check `lifeboat snapshot list {env}` and retry",
                snap.version
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a snapshot bad. The known-good snapshot cannot be rejected:
    /// promote a replacement first, so recovery always has a target.
    /// A corrupt snapshot can be rejected too (that is what it deserves).
    pub async fn reject(&self, env: &str, reference: &str, actor: &str, reason: &str) -> Result<Listed> {
        if reason.trim().is_empty() {
            return Err(Error::InvalidArgument("a reason is required".into()));
        }
        let snap = self.get_listed(env, self.resolve(env, reference).await?).await?;
        if self.get_ref(env, KNOWN_GOOD).await?.is_some_and(|r| r.version == snap.version()) {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {} is the known-good snapshot of {env}; promote another snapshot first, then reject this one",
                snap.version()
            )));
        }
        let record = Rejection {
            format_version: 1,
            version: snap.version(),
            by: actor.into(),
            at: now_rfc3339(),
            reason: reason.into(),
        };
        match self.store.put(&layout::rejection(env, snap.version()), encode(&record), PutOptions::create()).await {
            Ok(_) => Ok(snap),
            Err(StoreError::AlreadyExists { .. }) => {
                Err(Error::FailedPrecondition(format!("snapshot {} of {env} is already rejected", snap.version())))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Forgets the snapshots this process decoded, so that the next read
/// decodes again (to measure a server's first read after a start).
#[cfg(any(test, feature = "test-util"))]
pub fn forget_decoded() {
    decoded::forget();
}

/// Snapshots decoded in this process, by the exact bytes they were decoded
/// from. A snapshot is immutable and its decoding (digest over the canonical
/// form, manifest validation) depends only on those bytes and the name they
/// were read under, so bytes that hash the same decode the same: reading them
/// again skips the work (120 ms at 10,000 services) but not the read. Tampered
/// bytes hash differently and are decoded, and refused, as ever.
mod decoded {
    use std::collections::VecDeque;
    use std::sync::{LazyLock, Mutex};

    use sha2::{Digest, Sha256};

    use crate::domain::snapshot::Snapshot;

    /// How many decoded snapshots are kept (the newest)...
    const KEEP: usize = 4;
    /// ...and how many stored bytes they may add up to (the newest is kept
    /// whatever its size): a server's memory stays bounded with regions at
    /// the 20,000-service limit.
    const KEEP_BYTES: usize = 32 << 20;

    #[derive(Clone, PartialEq, Eq)]
    pub struct Content {
        environment: String,
        version: u64,
        sha256: [u8; 32],
        len: usize,
    }

    impl Content {
        pub fn of(environment: &str, version: u64, bytes: &[u8]) -> Content {
            let sha256 = Sha256::digest(bytes).into();
            Content { environment: environment.to_string(), version, sha256, len: bytes.len() }
        }
    }

    static KEPT: LazyLock<Mutex<VecDeque<(Content, Snapshot)>>> = LazyLock::new(Default::default);

    pub fn get(content: &Content) -> Option<Snapshot> {
        KEPT.lock().expect("lock").iter().find(|(c, _)| c == content).map(|(_, s)| s.clone())
    }

    /// Forgets every decoded snapshot (benchmarks of a cold read).
    #[cfg(any(test, feature = "test-util"))]
    pub fn forget() {
        KEPT.lock().expect("lock").clear();
    }

    pub fn keep(content: Content, snap: &Snapshot) {
        let mut kept = KEPT.lock().expect("lock");
        kept.retain(|(c, _)| c != &content);
        kept.push_front((content, snap.clone()));
        bound(&mut kept, KEEP, KEEP_BYTES);
    }

    /// Drops the oldest entries past `entries` or `bytes` (never the newest).
    fn bound<T>(kept: &mut VecDeque<(Content, T)>, entries: usize, bytes: usize) {
        kept.truncate(entries.max(1));
        let mut total = 0;
        let keep = kept
            .iter()
            .take_while(|(c, _)| {
                total += c.len;
                total <= bytes
            })
            .count()
            .max(1);
        kept.truncate(keep);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_newest_are_kept_within_a_count_and_a_size() {
            let c = |v: u64, len: usize| (Content { environment: "e".into(), version: v, sha256: [0; 32], len }, ());
            let versions = |k: &VecDeque<(Content, ())>| k.iter().map(|(c, _)| c.version).collect::<Vec<_>>();
            let mut kept: VecDeque<_> = [c(5, 10), c(4, 10), c(3, 10), c(2, 10), c(1, 10)].into();
            bound(&mut kept, 4, 100);
            assert_eq!(versions(&kept), [5, 4, 3, 2]);
            bound(&mut kept, 4, 25);
            assert_eq!(versions(&kept), [5, 4]);
            let mut big: VecDeque<_> = [c(9, 500), c(8, 10)].into();
            bound(&mut big, 4, 100);
            assert_eq!(versions(&big), [9], "the newest stays whatever its size");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::source::Format;
    use crate::store::memory::MemStore;

    const RICH: &str = r#"
environment = "cached"
region = "eu-west-1"
rto_objective = "90s"
promotion = "drill"

[services.db]
image = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
replicas = 2
timeout = "1m30s"
attempts = 3
grace_period = "1.5s"
health = { tcp = true, interval = "250ms", timeout = "20s" }
launch = { listen = "127.0.0.1:7801", args = ["--port", "7801"], env = { MODE = "primary" } }
tags = { team = "data", "cost-centre" = "42" }

[services.api]
image = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
depends_on = ["db"]
approval = true
approval_timeout = "2h"
health = { http = "/healthz", interval = "1s" }

[[verify]]
name = "home"
service = "db"
http = "/healthz"
status = 200
timeout = "5s"
"#;

    /// What a push keeps for later reads is exactly what decoding the stored
    /// bytes gives (another server, or this one after a restart, decodes).
    #[tokio::test]
    async fn a_kept_snapshot_is_what_its_bytes_decode_to() {
        let store: DynStore = std::sync::Arc::new(MemStore::new());
        let repo = SnapshotRepo::new(store.clone());
        let random = crate::testkit::random_manifest_toml(40, 3, 11).replace("\"bench\"", "\"cachedrandom\"");
        for text in [RICH.to_string(), random] {
            let m = manifest::parse(text.as_bytes(), Format::Toml).unwrap_or_else(|e| panic!("{e:?}"));
            let env = m.environment.clone();
            let pushed = repo
                .push(NewSnapshot { manifest: m, author: "t".into(), message: "m".into(), labels: BTreeMap::new() })
                .await
                .unwrap();
            let kept = repo.get(&env, pushed.version).await.unwrap();
            let bytes = store.get(&layout::snapshot(&env, pushed.version)).await.unwrap().unwrap().bytes;
            let decoded = Snapshot::decode(&bytes, &env, pushed.version).unwrap();
            assert_eq!(kept, decoded, "{env}");
            // Tampered bytes are not served from what was kept.
            let tampered = String::from_utf8(bytes.to_vec()).unwrap().replacen("sha256:a", "sha256:c", 1);
            store
                .put(&layout::snapshot(&env, pushed.version), Bytes::from(tampered), PutOptions::overwrite())
                .await
                .unwrap();
            assert!(matches!(repo.get(&env, pushed.version).await, Err(Error::Integrity { .. })), "{env}");
        }
    }

    /// A manifest within the size limit stays readable once stored, although
    /// its stored form (every default spelled out, as JSON) is larger than
    /// the limit. (Such a snapshot was pushed, then refused on every read.)
    #[tokio::test]
    async fn a_manifest_under_the_limit_is_readable_after_push_whatever_its_stored_size() {
        let store: DynStore = std::sync::Arc::new(MemStore::new());
        let repo = SnapshotRepo::new(store.clone());
        // 20,000 services (the limit), padded to just under the size limit in TOML.
        let n = 20_000;
        let pad = "x".repeat(manifest::MAX_MANIFEST_BYTES / n - 200);
        let mut text = String::from("environment = \"big\"\nregion = \"local-1\"\n");
        for i in 0..n {
            text.push_str(&format!(
                "[services.s{i:05}]\nimage = \"sha256:{}\"\nlaunch = {{ args = [\"{pad}\"] }}\n",
                "a".repeat(64)
            ));
        }
        assert!(text.len() <= manifest::MAX_MANIFEST_BYTES, "{} bytes", text.len());
        let m = manifest::parse(text.as_bytes(), Format::Toml).unwrap_or_else(|e| panic!("{:?}", &e[..1]));
        let stored = serde_json::to_vec(&m).unwrap().len();
        assert!(stored > manifest::MAX_MANIFEST_BYTES, "the stored form is {stored} bytes");
        let pushed = repo
            .push(NewSnapshot { manifest: m, author: "t".into(), message: String::new(), labels: BTreeMap::new() })
            .await
            .unwrap();
        decoded::forget();
        let read = repo.get("big", pushed.version).await.unwrap();
        assert_eq!(read.manifest.services.len(), pushed.manifest.services.len());
    }
}
