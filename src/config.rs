//! The server's configuration file (TOML). Every key is optional; flags win.

use std::path::Path;

use serde::Deserialize;

use crate::store::{ObjectLockConfig, S3Config};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7701";
pub const DEFAULT_STORE: &str = "./lifeboat-data";
pub const DEFAULT_LOCAL_DIR: &str = "./lifeboat-local";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default)]
    pub provider: ProviderSection,
    #[serde(default)]
    pub auth: AuthSection,
    /// `[[notify]]`: where run notifications are POSTed.
    #[serde(default)]
    pub notify: Vec<crate::engine::notify::Receiver>,
    /// `[webhooks]`: pager webhooks (PagerDuty, Alertmanager) and their routing rules.
    #[serde(default)]
    pub webhooks: WebhooksSection,
}

/// A secret from the config file: never printed, not even by `{:?}`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// `POST /v1/webhooks/pagerduty`: deliveries signed (X-PagerDuty-Signature,
    /// HMAC-SHA256) with any of these secrets are accepted.
    pub pagerduty: Option<WebhookSource>,
    /// `POST /v1/webhooks/alertmanager`: `Authorization: Bearer` any of these secrets.
    pub alertmanager: Option<WebhookSource>,
    /// `[[webhooks.rules]]`, in order: the first that matches an alert decides.
    #[serde(default)]
    pub rules: Vec<crate::domain::alert::RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    /// More than one while a secret is rotated.
    pub secrets: Vec<Secret>,
    /// A PagerDuty event that occurred longer ago than this is refused as
    /// stale (a replayed delivery), default 1h.
    pub max_age: Option<crate::domain::duration::Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// PEM CA that client certificates must chain to.
    pub client_ca: Option<std::path::PathBuf>,
}

/// The TLS files' contents (PEM), read at start-up.
#[derive(Debug, Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

impl TlsSection {
    /// Reads the files now, so a wrong path is reported at start-up, naming it.
    pub fn read(&self) -> anyhow::Result<TlsPem> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("server.tls.{what} {}: {e}", p.display()))
        };
        Ok(TlsPem {
            cert: read(&self.cert, "cert")?,
            key: read(&self.key, "key")?,
            client_ca: self.client_ca.as_deref().map(|ca| read(ca, "client_ca")).transpose()?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `[[auth.tokens]]`: name, role (viewer, operator, admin), sha256.
    #[serde(default)]
    pub tokens: Vec<crate::api::auth::TokenEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// How long a region lease lasts without renewal (a crashed server's runs
    /// are taken over after this), default 15s.
    pub lease_ttl: Option<crate::domain::duration::Dur>,
    /// How long a proposed run (`recover --propose`, a pager rule with
    /// policy `propose`) waits for its approval before it expires (default 1h).
    pub proposal_timeout: Option<crate::domain::duration::Dur>,
    /// How far apart the clocks of two servers sharing a store may be
    /// (default 1s): subtracted from the time a lease surely holds.
    pub max_clock_skew: Option<crate::domain::duration::Dur>,
    /// `fast` (default): while the lease surely holds, `healthy` is written
    /// beside the cutover; `fenced`: durable before every cutover.
    pub cutover: Option<crate::engine::CutoverMode>,
    /// How often the server checks every environment for drift from
    /// known-good (default 5m).
    pub drift_interval: Option<crate::domain::duration::Dur>,
    /// How often the server removes what finished or unknown drills left
    /// behind (default 1m).
    pub drill_sweep_interval: Option<crate::domain::duration::Dur>,
    /// How often the server looks for due drill schedules (default 15s).
    pub schedule_interval: Option<crate::domain::duration::Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    #[serde(default)]
    pub local: LocalSection,
    #[serde(default)]
    pub ec2: Ec2Section,
}

/// The ec2 provider needs no configuration beyond the standard AWS
/// environment (credentials chain, `AWS_ENDPOINT_URL`); these override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Section {
    /// `false` leaves the ec2 provider out of this server (default true).
    pub enabled: Option<bool>,
    /// The AWS API endpoint (an EC2-compatible server), instead of AWS's own.
    pub endpoint: Option<String>,
    /// At most this many Lifeboat instances per region (default 500).
    pub max_instances: Option<usize>,
    /// `[provider.ec2.drill]`: where drills launch.
    pub drill: Option<Ec2DrillSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2DrillSection {
    /// A list of subnet IDs, or a map region → list.
    pub subnets: Option<serde_json::Value>,
    /// A list of security group IDs, or a map region → list.
    pub security_groups: Option<serde_json::Value>,
}

impl Ec2Section {
    /// The provider's settings, or `None` when it is switched off.
    pub fn provider_config(&self) -> Option<crate::provider::ec2::Ec2Config> {
        (self.enabled != Some(false)).then(|| crate::provider::ec2::Ec2Config {
            endpoint: self.endpoint.clone(),
            max_instances: self.max_instances,
            credentials: None,
            drill_subnets: self.drill.as_ref().and_then(|d| d.subnets.clone()),
            drill_security_groups: self.drill.as_ref().and_then(|d| d.security_groups.clone()),
            store_id: None,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// Where the local provider keeps instances, logs and unpacked images.
    pub dir: Option<std::path::PathBuf>,
    /// Serve stable addresses (`launch.listen`) on non-loopback interfaces.
    pub allow_public_listen: Option<bool>,
    /// How many bytes one tarball artifact may unpack to (default 4 GiB).
    pub max_unpacked_bytes: Option<u64>,
    /// How drills are kept off production's addresses: `auto` (a network
    /// namespace per drill where the host allows it, else `rewrite`),
    /// `namespace`, or `rewrite`.
    pub drill_network: Option<crate::provider::local::DrillNetwork>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// gRPC address, default 127.0.0.1:7700.
    pub listen: Option<String>,
    /// HTTP address (/healthz, /readyz, /metrics), default 127.0.0.1:7701.
    pub http_listen: Option<String>,
    /// TLS for the gRPC port; with `client_ca`, clients need a certificate
    /// signed by it (mTLS).
    pub tls: Option<TlsSection>,
    /// An image import that sends nothing for this long is dropped (default 30s).
    pub import_idle_timeout: Option<crate::domain::duration::Dur>,
    /// Open connections on the HTTP port (default 512, at most a quarter of
    /// the open-file limit less a reserve of 256).
    pub max_http_connections: Option<usize>,
    /// Open connections on the gRPC port (default 4096, at most half).
    pub max_grpc_connections: Option<usize>,
    /// An HTTP request head (or the next one on a kept-alive connection)
    /// must arrive within this (default 10s).
    pub header_timeout: Option<crate::domain::duration::Dur>,
    /// An HTTP request body must arrive within this (default 10s).
    pub body_timeout: Option<crate::domain::duration::Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// A directory, `file:///path`, or `s3://bucket/prefix`.
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub object_lock: Option<ObjectLockConfig>,
}

impl StoreSection {
    pub fn s3(&self) -> S3Config {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            object_lock: self.object_lock.clone(),
            credentials: None,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// A syntax error shows where it is, never the line itself: the line
    /// may hold a secret (`secrets = [...]`, a token digest, a bearer).
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                let key = text.lines().nth(line - 1).and_then(|l| l.split('=').next()).map(str::trim).unwrap_or("");
                if key.is_empty() || key.len() > 64 { format!("line {line}") } else { format!("line {line} (`{key}`)") }
            });
            anyhow::anyhow!("{} ({})", e.message(), at.unwrap_or_else(|| "somewhere in the file".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntax error names the line and key, and never prints the value.
    #[test]
    fn a_syntax_error_does_not_print_a_secret() {
        let text = "[webhooks.pagerduty]\nsecrets = [\"hunter2-very-secret\"\n";
        let e = Config::parse(text).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 2 (`secrets`)") || e.contains("line 3"), "{e}");
    }

    #[test]
    fn example_config_deserialises() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/lifeboat.example.toml")).unwrap();
        let c = Config::parse(&text).unwrap();
        assert!(c.store.url.unwrap().starts_with("s3://"));
        assert_eq!(c.store.object_lock.unwrap().days, 30);
        assert_eq!(c.engine.lease_ttl.unwrap().0, std::time::Duration::from_secs(15));
        assert_eq!(c.engine.drift_interval.unwrap().0, std::time::Duration::from_secs(300));
        assert!(c.provider.local.dir.is_some());
        assert_eq!(c.server.http_listen.as_deref(), Some("127.0.0.1:7701"));
        assert_eq!(c.provider.ec2.provider_config().and_then(|e| e.max_instances), Some(500));
        let off = Config::parse("[provider.ec2]\nenabled = false\n").unwrap();
        assert!(off.provider.ec2.provider_config().is_none());
        assert!(Config::default().provider.ec2.provider_config().is_some(), "on without configuration");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::parse("[store]\nurll = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `urll`"), "{e}");
    }
}
