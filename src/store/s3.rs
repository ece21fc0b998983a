//! S3 adapter: conditional writes (`If-None-Match: *`, `If-Match: <etag>`),
//! SHA-256 checksums, optional Object Lock retention, retries on transient
//! errors with `backon`. Refuses endpoints that ignore conditional writes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use serde::Deserialize;

use super::{ETag, Object, ObjectStore, PutMode, PutOptions, StoreError, StoreResult, check_key};

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
}

impl S3Store {
    /// Connects and verifies that the endpoint honours conditional writes.
    pub async fn connect(cfg: S3Config) -> anyhow::Result<S3Store> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
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
        let store = S3Store { client: aws_sdk_s3::Client::from_conf(b.build()), cfg, lock_mode };
        store.verify_conditional_writes().await?;
        Ok(store)
    }

    /// A store that ignores `If-None-Match` would let two writers overwrite
    /// each other's snapshots: refuse it loudly.
    async fn verify_conditional_writes(&self) -> anyhow::Result<()> {
        let key = format!("_lifeboat/probe/{}", uuid::Uuid::new_v4());
        let describe = self.describe();
        self.put(&key, Bytes::from_static(b"1"), PutOptions::create())
            .await
            .map_err(|e| anyhow::anyhow!("cannot write to {describe}: {e}"))?;
        let second = self.put_once(&key, Bytes::from_static(b"2"), &PutOptions::create()).await;
        let _ = self.delete(&key).await;
        match second {
            Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Ok(_) => anyhow::bail!(
                "{describe} ignores conditional writes (If-None-Match: *); Lifeboat refuses to use it because concurrent writers could overwrite snapshots"
            ),
            Err(e) => anyhow::bail!("cannot check conditional writes on {describe}: {e}"),
        }
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
        let detail = match (&code, e.message()) {
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
            PutMode::Update(etag) => req.if_match(etag.clone()),
        };
        if let (true, Some(mode), Some(lock)) = (opts.retain, &self.lock_mode, &self.cfg.object_lock) {
            let until = std::time::SystemTime::now() + Duration::from_secs(u64::from(lock.days) * 86_400);
            req = req
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from(until));
        }
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

    fn retry_policy() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(5)
            .with_jitter()
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        check_key(key)?;
        let once = || async {
            let resp = self.client.get_object().bucket(&self.cfg.bucket).key(self.full_key(key)).send().await;
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
        };
        once.retry(Self::retry_policy()).when(StoreError::is_retryable).await
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag> {
        check_key(key)?;
        let attempts = AtomicU32::new(0);
        let once = || async {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            match self.put_once(key, bytes.clone(), &opts).await {
                // An earlier attempt may have succeeded with its reply lost:
                // if what is stored is exactly ours, the write happened.
                Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. }) if n > 0 => {
                    match self.get(key).await? {
                        Some(obj) if obj.bytes == bytes => Ok(obj.etag),
                        _ => self.put_once(key, bytes.clone(), &opts).await,
                    }
                }
                other => other,
            }
        };
        once.retry(Self::retry_policy()).when(StoreError::is_retryable).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let full = self.full_key(prefix);
        let strip = if self.cfg.prefix.is_empty() { 0 } else { self.cfg.prefix.len() + 1 };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = || async {
                self.client
                    .list_objects_v2()
                    .bucket(&self.cfg.bucket)
                    .prefix(&full)
                    .set_continuation_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| self.error(prefix, "list", e))
            };
            let out = page.retry(Self::retry_policy()).when(StoreError::is_retryable).await?;
            for o in out.contents() {
                if let Some(k) = o.key()
                    && let Some(rel) = k.get(strip..)
                    && !rel.starts_with("_lifeboat/")
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
        let once = || async {
            self.client
                .delete_object()
                .bucket(&self.cfg.bucket)
                .key(self.full_key(key))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error(key, "delete", e))
        };
        once.retry(Self::retry_policy()).when(StoreError::is_retryable).await
    }

    fn describe(&self) -> String {
        if self.cfg.prefix.is_empty() {
            format!("s3://{}", self.cfg.bucket)
        } else {
            format!("s3://{}/{}", self.cfg.bucket, self.cfg.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    async fn store(bucket: String, prefix: &str, object_lock: Option<ObjectLockConfig>) -> S3Store {
        S3Store::connect(S3Config {
            bucket,
            prefix: prefix.into(),
            endpoint: Some(testkit::s3_endpoint()),
            region: Some("us-east-1".into()),
            path_style: Some(true),
            object_lock,
        })
        .await
        .expect("connect to the test S3 server")
    }

    #[tokio::test]
    async fn conformance_with_and_without_prefix() {
        let bucket = testkit::s3_bucket(false).await;
        crate::store::conformance::run_all(std::sync::Arc::new(store(bucket.clone(), "", None).await)).await;
        crate::store::conformance::run_all(std::sync::Arc::new(store(bucket, "team/prod", None).await)).await;
    }

    #[tokio::test]
    async fn retained_objects_carry_object_lock() {
        let bucket = testkit::s3_bucket(true).await;
        let lock = ObjectLockConfig { mode: "governance".into(), days: 7 };
        let s = store(bucket.clone(), "p", Some(lock)).await;
        s.put("snap", Bytes::from_static(b"x"), PutOptions::create().retained()).await.unwrap();
        s.put("plain", Bytes::from_static(b"y"), PutOptions::create()).await.unwrap();
        let head = s.client.head_object().bucket(&bucket).key("p/snap").send().await.unwrap();
        assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Governance));
        let until = head.object_lock_retain_until_date().expect("a retention date");
        assert!(until.secs() > chrono::Utc::now().timestamp() + 6 * 86_400);
        let plain = s.client.head_object().bucket(&bucket).key("p/plain").send().await.unwrap();
        assert!(plain.object_lock_mode().is_none());
    }

    #[tokio::test]
    async fn bad_lock_mode_is_refused() {
        let bucket = testkit::s3_bucket(false).await;
        let lock = ObjectLockConfig { mode: "forever".into(), days: 7 };
        let err = S3Store::connect(S3Config {
            bucket,
            endpoint: Some(testkit::s3_endpoint()),
            path_style: Some(true),
            object_lock: Some(lock),
            ..Default::default()
        })
        .await
        .err()
        .expect("refused");
        assert!(err.to_string().contains("object_lock.mode"), "{err}");
    }
}
