//! S3 adapter: conditional writes (`If-None-Match: *`, `If-Match: <etag>`),
//! SHA-256 checksums, optional Object Lock retention. Single attempts with
//! classified errors: `retry::Retrying` retries them. Some servers (Ceph RGW)
//! accept only the unquoted ETag in `If-Match`: the form is negotiated once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use bytes::Bytes;
use serde::Deserialize;

use super::{ETag, Feature, Object, ObjectStore, PutMode, PutOptions, StoreError, StoreResult, check_key};

/// The `[store]` settings that apply to S3.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(skip)]
    pub bucket: String,
    #[serde(skip)]
    pub prefix: String,
    /// e.g. `http://127.0.0.1:9000`; default: AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most non-AWS servers.
    pub path_style: Option<bool>,
    pub object_lock: Option<ObjectLockConfig>,
    /// Credentials to use instead of the standard AWS chain (tests, tools).
    #[serde(skip)]
    pub credentials: Option<aws_sdk_s3::config::Credentials>,
}

/// Retention applied to every snapshot object (the bucket must have Object Lock enabled).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    /// `governance` or `compliance`.
    pub mode: String,
    pub days: u32,
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    cfg: S3Config,
    lock_mode: Option<ObjectLockMode>,
    /// The endpoint, when not AWS's own, for messages.
    endpoint: Option<String>,
    /// Send `If-Match` ETags without their quotes.
    unquoted_if_match: AtomicBool,
}

impl S3Store {
    /// Connects and finds out which `If-Match` ETag form the server takes;
    /// `selftest::run` then checks the guarantees themselves.
    pub async fn connect(cfg: S3Config) -> anyhow::Result<S3Store> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(c) = &cfg.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let shared = loader.load().await;
        let path_style = cfg
            .path_style
            .unwrap_or_else(|| std::env::var("LIFEBOAT_S3_PATH_STYLE").is_ok_and(|v| v == "true" || v == "1"));
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(path_style)
            // Retries are ours (backon), so an ambiguous conditional write can be checked.
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e.clone());
        }
        if shared.region().is_none() && cfg.region.is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        let lock_mode = match &cfg.object_lock {
            None => None,
            Some(l) if l.days == 0 => anyhow::bail!("store.object_lock.days must be at least 1"),
            Some(l) => Some(match l.mode.to_ascii_lowercase().as_str() {
                "governance" => ObjectLockMode::Governance,
                "compliance" => ObjectLockMode::Compliance,
                other => {
                    anyhow::bail!("store.object_lock.mode is {other:?}; expected \"governance\" or \"compliance\"")
                }
            }),
        };
        let endpoint = cfg.endpoint.clone().or_else(|| shared.endpoint_url().map(str::to_string));
        let store = S3Store {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            cfg,
            lock_mode,
            endpoint,
            unquoted_if_match: AtomicBool::new(false),
        };
        store.negotiate_etag_form().await?;
        Ok(store)
    }

    /// S3 returns quoted ETags and takes them quoted in `If-Match`; Ceph RGW
    /// refuses the quoted form and takes the bare one. Try both once on a
    /// scratch key; if neither works, the self-test reports it.
    async fn negotiate_etag_form(&self) -> anyhow::Result<()> {
        let key = format!("{}{}", super::selftest::SCRATCH_PREFIX, uuid::Uuid::new_v4().simple());
        let describe = self.describe();
        let etag = self
            .put_once(&key, Bytes::from_static(b"1"), &PutOptions::overwrite())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let quoted = self.put_once(&key, Bytes::from_static(b"2"), &PutOptions::update(etag.clone())).await;
        if matches!(quoted, Err(StoreError::Conflict { .. })) && etag.starts_with('"') {
            self.unquoted_if_match.store(true, Ordering::SeqCst);
            let bare = self.put_once(&key, Bytes::from_static(b"2"), &PutOptions::update(etag)).await;
            if bare.is_ok() {
                tracing::info!(store = %describe, "the server takes If-Match ETags only without quotes");
            } else {
                self.unquoted_if_match.store(false, Ordering::SeqCst);
            }
        }
        let _ = self.delete(&key).await;
        Ok(())
    }

    fn full_key(&self, key: &str) -> String {
        if self.cfg.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.cfg.prefix) }
    }

    fn error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        key: &str,
        what: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        let retryable = match &e {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
            _ => matches!(status, Some(408 | 409 | 429 | 500..=599)),
        };
        let detail = match (&code, e.message().filter(|m| !m.is_empty())) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => {
                let mut s = e.to_string();
                let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
                while let Some(inner) = src {
                    s = format!("{s}: {inner}");
                    src = inner.source();
                }
                s
            }
        };
        let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
        StoreError::Backend {
            store: self.describe(),
            message: format!("cannot {what} {key}{status}: {detail}"),
            retryable,
        }
    }

    /// Object Lock retention on the write, when asked for and configured.
    fn retention(
        &self,
        req: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
        opts: &PutOptions,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        match (opts.retain, &self.lock_mode, &self.cfg.object_lock) {
            (true, Some(mode), Some(lock)) => {
                let until = std::time::SystemTime::now() + Duration::from_secs(u64::from(lock.days) * 86_400);
                req.object_lock_mode(mode.clone())
                    .object_lock_retain_until_date(aws_smithy_types::DateTime::from(until))
            }
            _ => req,
        }
    }

    async fn put_once(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> StoreResult<ETag> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .content_type("application/json")
            .body(ByteStream::from(bytes));
        req = match &opts.mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update(etag) if self.unquoted_if_match.load(Ordering::SeqCst) => {
                req.if_match(etag.trim_matches('"'))
            }
            PutMode::Update(etag) => req.if_match(etag.clone()),
        };
        req = self.retention(req, opts);
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_string()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = e.code().unwrap_or_default().to_string();
                match (&opts.mode, status) {
                    (PutMode::Create, Some(412)) => Err(StoreError::AlreadyExists { key: key.into() }),
                    (PutMode::Update(_), Some(412 | 404)) => Err(StoreError::Conflict { key: key.into() }),
                    (_, _) if code == "PreconditionFailed" => Err(match opts.mode {
                        PutMode::Create => StoreError::AlreadyExists { key: key.into() },
                        _ => StoreError::Conflict { key: key.into() },
                    }),
                    _ => Err(self.error(key, "write", e)),
                }
            }
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        check_key(key)?;
        let resp = self.client.get_object().bucket(&self.cfg.bucket).key(self.full_key(key)).send().await;
        {
            match resp {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    let body = out.body.collect().await.map_err(|e| StoreError::Backend {
                        store: self.describe(),
                        message: format!("cannot read {key}: {e}"),
                        retryable: true,
                    })?;
                    Ok(Some(Object { bytes: body.into_bytes(), etag }))
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
                Err(e) => Err(self.error(key, "read", e)),
            }
        }
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag> {
        check_key(key)?;
        self.put_once(key, bytes, &opts).await
    }

    async fn put_file(&self, key: &str, path: &std::path::Path, opts: PutOptions) -> StoreResult<ETag> {
        check_key(key)?;
        let unreadable = |e: String| StoreError::Backend {
            store: self.describe(),
            message: format!("cannot read {}: {e}", path.display()),
            retryable: false,
        };
        // The checksum goes in a header, computed here: the SDK would
        // otherwise send a streamed body with a trailing checksum
        // (aws-chunked), which not every S3 server takes (Ceph RGW 16 does not).
        let src = path.to_path_buf();
        let summary = tokio::task::spawn_blocking(move || super::FileSummary::read(&src))
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .map_err(|e| unreadable(e.to_string()))?;
        let (digest, size) = (summary.sha256, summary.size);
        let body = ByteStream::from_path(path).await.map_err(|e| unreadable(e.to_string()))?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .content_length(size as i64)
            .checksum_sha256(aws_smithy_types::base64::encode(&digest))
            .body(body);
        if opts.mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        req = self.retention(req, &opts);
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_string()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                Err(StoreError::AlreadyExists { key: key.into() })
            }
            Err(e) => Err(self.error(key, "write", e)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let full = self.full_key(prefix);
        let strip = if self.cfg.prefix.is_empty() { 0 } else { self.cfg.prefix.len() + 1 };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.cfg.bucket)
                .prefix(&full)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.error(prefix, "list", e))?;
            for o in out.contents() {
                if let Some(k) = o.key()
                    && let Some(rel) = k.get(strip..)
                    && !super::hidden_from(prefix, rel)
                {
                    keys.push(rel.to_string());
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, "delete", e))
    }

    fn describe(&self) -> String {
        let url = if self.cfg.prefix.is_empty() {
            format!("s3://{}", self.cfg.bucket)
        } else {
            format!("s3://{}/{}", self.cfg.bucket, self.cfg.prefix)
        };
        match &self.endpoint {
            Some(e) => format!("{url} at {e}"),
            None => url,
        }
    }

    async fn features(&self) -> Vec<Feature> {
        let b = &self.cfg.bucket;
        let versioning = match self.client.get_bucket_versioning().bucket(b).send().await {
            Ok(v) => match v.status() {
                Some(s) => s.as_str().to_ascii_lowercase(),
                None => "off".into(),
            },
            // Some servers (moto) answer 200 with a root element the SDK
            // does not expect: read the status from the body.
            Err(e) => match e.raw_response().and_then(|r| r.body().bytes()).map(String::from_utf8_lossy) {
                Some(body) if e.raw_response().is_some_and(|r| r.status().is_success()) => body
                    .split_once("<Status>")
                    .and_then(|(_, rest)| rest.split_once("</Status>"))
                    .map_or_else(|| "off".into(), |(s, _)| s.to_ascii_lowercase()),
                _ => format!("unknown ({})", e.code().unwrap_or("no answer")),
            },
        };
        let lock = match self.client.get_object_lock_configuration().bucket(b).send().await {
            Ok(c) => match c.object_lock_configuration().and_then(|c| c.object_lock_enabled()) {
                Some(s) => s.as_str().to_ascii_lowercase(),
                None => "off".into(),
            },
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => "off".into(),
            Err(e) => format!("unknown ({})", e.code().unwrap_or("no answer")),
        };
        let lock = match (&self.cfg.object_lock, lock.as_str()) {
            (Some(l), _) => format!("{lock}; snapshots retained {} days in {} mode", l.days, l.mode),
            (None, _) => lock,
        };
        let etags = if self.unquoted_if_match.load(Ordering::SeqCst) {
            "sent unquoted in If-Match (this server refuses quoted ETags)"
        } else {
            "sent quoted in If-Match, as S3 returns them"
        };
        vec![
            Feature::new("versioning", versioning),
            Feature::new("object lock", lock),
            Feature::new("etag form", etags),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RetryPolicy, Retrying};
    use crate::testkit;

    async fn store(endpoint: &str, bucket: String, prefix: &str, object_lock: Option<ObjectLockConfig>) -> S3Store {
        S3Store::connect(S3Config { bucket, prefix: prefix.into(), object_lock, ..testkit::s3_config(endpoint) })
            .await
            .expect("connect to the test S3 server")
    }

    async fn checked(endpoint: &str, bucket: String, prefix: &str) -> std::sync::Arc<dyn ObjectStore> {
        let s = Retrying::new(store(endpoint, bucket, prefix, None).await, RetryPolicy::default());
        let report = crate::store::selftest::run(&s).await;
        assert!(report.passed(), "{report:?}");
        std::sync::Arc::new(s)
    }

    #[tokio::test]
    async fn conformance_on_moto_with_and_without_prefix() {
        let e = testkit::s3_endpoint();
        let bucket = testkit::s3_bucket(false).await;
        crate::store::conformance::run_all(checked(&e, bucket.clone(), "").await).await;
        crate::store::conformance::run_all(checked(&e, bucket, "team/prod").await).await;
    }

    #[tokio::test]
    async fn conformance_on_a_versioned_moto_bucket() {
        let e = testkit::s3_endpoint();
        let bucket = testkit::bucket_on(&e, false, true).await;
        let s = checked(&e, bucket, "v").await;
        let report = crate::store::selftest::run(&*s).await;
        let versioning = report.rows.iter().find(|r| r.guarantee == "versioning").unwrap();
        assert_eq!(versioning.detail, "enabled");
        crate::store::conformance::run_all(s).await;
    }

    /// Ceph RGW, a production S3 server: on an unversioned bucket it takes
    /// If-Match only with a bare ETag, which the store negotiates.
    #[tokio::test]
    async fn conformance_on_ceph_rgw() {
        let e = testkit::rgw_endpoint();
        let bucket = testkit::bucket_on(&e, false, false).await;
        let s = checked(&e, bucket.clone(), "").await;
        let report = crate::store::selftest::run(&*s).await;
        assert!(report.rows.iter().any(|r| r.guarantee == "etag form" && r.detail.contains("unquoted")), "{report:?}");
        crate::store::conformance::run_all(s).await;
        crate::store::conformance::run_all(checked(&e, bucket, "team/prod").await).await;
    }

    /// On a versioned bucket RGW ignores If-None-Match: the self-test must
    /// say so, and opening such a store is refused.
    #[tokio::test]
    async fn ceph_rgw_versioned_bucket_is_refused() {
        let e = testkit::rgw_endpoint();
        let bucket = testkit::bucket_on(&e, false, true).await;
        let s = Retrying::new(store(&e, bucket.clone(), "", None).await, RetryPolicy::default());
        let report = crate::store::selftest::run(&s).await;
        assert!(!report.passed(), "{report:?}");
        let why = report.refusal().unwrap();
        assert!(why.contains("create-if-absent") && why.contains(&e) && why.contains(&bucket), "{why}");
        let url = format!("s3://{bucket}/x");
        let err = crate::store::open(&url, &testkit::s3_config(&e)).await.err().expect("refused");
        assert!(err.to_string().contains("does not honour create-if-absent"), "{err}");
    }

    #[tokio::test]
    async fn retained_objects_carry_object_lock() {
        let e = testkit::s3_endpoint();
        let bucket = testkit::s3_bucket(true).await;
        let lock = ObjectLockConfig { mode: "governance".into(), days: 7 };
        let s = store(&e, bucket.clone(), "p", Some(lock)).await;
        s.put("snap", Bytes::from_static(b"x"), PutOptions::create().retained()).await.unwrap();
        s.put("plain", Bytes::from_static(b"y"), PutOptions::create()).await.unwrap();
        let head = s.client.head_object().bucket(&bucket).key("p/snap").send().await.unwrap();
        assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Governance));
        let until = head.object_lock_retain_until_date().expect("a retention date");
        assert!(until.secs() > chrono::Utc::now().timestamp() + 6 * 86_400);
        let plain = s.client.head_object().bucket(&bucket).key("p/plain").send().await.unwrap();
        assert!(plain.object_lock_mode().is_none());
        let features = s.features().await;
        assert!(features.iter().any(|f| f.name == "object lock" && f.detail.starts_with("enabled")), "{features:?}");
    }

    #[tokio::test]
    async fn bad_lock_mode_is_refused() {
        let e = testkit::s3_endpoint();
        let bucket = testkit::s3_bucket(false).await;
        let lock = ObjectLockConfig { mode: "forever".into(), days: 7 };
        let err = S3Store::connect(S3Config { bucket, object_lock: Some(lock), ..testkit::s3_config(&e) })
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("object_lock.mode"), "{err}");
    }
}
