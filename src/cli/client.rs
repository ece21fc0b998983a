//! Connecting to the server, and turning gRPC statuses into exit codes.

use std::time::Duration;

use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::exit;
use crate::api::{ACTOR_HEADER, REQUEST_ID_HEADER};

/// A command's failure: the exit code and one sentence for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(exit::INVALID, message)
    }
}

/// The one mapping from gRPC status codes to exit codes.
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => exit::OK,
        Code::InvalidArgument | Code::OutOfRange => exit::INVALID,
        Code::NotFound => exit::NOT_FOUND,
        // A conflict: someone else holds or moved the thing (a lease, a ref).
        Code::AlreadyExists | Code::Aborted => exit::CONFLICT,
        // The state forbids it (a failed preflight, a rejected snapshot, a
        // finished run): the operation ran and failed.
        Code::FailedPrecondition => exit::FAILED,
        Code::Unauthenticated | Code::PermissionDenied => exit::DENIED,
        Code::Unavailable => exit::UNREACHABLE,
        _ => exit::FAILED,
    }
}

/// The largest reply the CLI accepts (gRPC's default is 4 MiB): a snapshot
/// or run of a region at the 20,000-service limit is tens of MiB.
pub const MAX_REPLY_BYTES: usize = 256 << 20;

/// A client of each gRPC service on the connection, accepting replies up
/// to `MAX_REPLY_BYTES`.
macro_rules! services {
    ($($method:ident => $client:ident),* $(,)?) => {
        impl Client {
            $(
                pub fn $method(&self) -> pb::$client<Channel> {
                    pb::$client::new(self.channel.clone()).max_decoding_message_size(MAX_REPLY_BYTES)
                }
            )*
        }
    };
}

mod pb {
    pub use crate::api::pb::audit_service_client::AuditServiceClient;
    pub use crate::api::pb::drift_service_client::DriftServiceClient;
    pub use crate::api::pb::drill_service_client::DrillServiceClient;
    pub use crate::api::pb::image_service_client::ImageServiceClient;
    pub use crate::api::pb::recovery_service_client::RecoveryServiceClient;
    pub use crate::api::pb::snapshot_service_client::SnapshotServiceClient;
    pub use crate::api::pb::store_service_client::StoreServiceClient;
}

services! {
    audit => AuditServiceClient,
    drift => DriftServiceClient,
    drills => DrillServiceClient,
    images => ImageServiceClient,
    recovery => RecoveryServiceClient,
    snapshots => SnapshotServiceClient,
    store => StoreServiceClient,
}

pub struct Client {
    pub channel: Channel,
    url: String,
    /// This invocation's idempotency key, sent with every request.
    request_id: String,
}

/// The innermost cause, e.g. "Connection refused (os error 111)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A TLS handshake that failed, as the exit code and sentence it deserves:
/// the server refusing this client's certificate is 5, this client not
/// trusting the server's is 6, and a certificate that cannot be used is 5.
fn tls_failure(url: &str, cause: &str) -> Option<Failure> {
    if !url.starts_with("https://") {
        return None;
    }
    let has = |words: &[&str]| words.iter().any(|w| cause.contains(w));
    if has(&["UnsupportedCertVersion"]) {
        return Some(Failure::new(
            exit::DENIED,
            format!(
                "this client's certificate (--cert) cannot be used: it is an X.509 v1 certificate ({cause}); TLS needs v3: reissue it with extensions (openssl x509 -req … -extfile, e.g. extendedKeyUsage=clientAuth)"
            ),
        ));
    }
    if has(&["CertificateRequired", "certificate required"]) {
        return Some(Failure::new(
            exit::DENIED,
            format!(
                "the lifeboat server at {url} refused this client: it requires a client certificate ({cause}); pass --cert and --key with one its client CA signed"
            ),
        ));
    }
    if has(&[
        "UnknownCA",
        "BadCertificate",
        "DecryptError",
        "AccessDenied",
        "CertificateUnknown",
        "UnsupportedCertificate",
    ]) && has(&["received", "alert"])
    {
        return Some(Failure::new(
            exit::DENIED,
            format!(
                "the lifeboat server at {url} refused this client's certificate ({cause}); pass --cert and --key with one its client CA signed"
            ),
        ));
    }
    if has(&[
        "invalid peer certificate",
        "UnknownIssuer",
        "NotValidForName",
        "CertificateExpired",
        "certificate expired",
    ]) {
        return Some(Failure::new(
            exit::UNREACHABLE,
            format!(
                "cannot trust the lifeboat server at {url} ({cause}): pass --ca with the CA that signed its certificate"
            ),
        ));
    }
    // With TLS 1.3 the server checks the client's certificate after the
    // handshake and hangs up: the client sees its first request cut off.
    if has(&[
        "broken pipe",
        "connection reset",
        "Connection reset",
        "unexpected EOF",
        "stream closed",
        "operation was canceled",
        "connection closed",
    ]) {
        let sent = TLS.get().is_some_and(|t| t.cert.is_some());
        let why = if sent {
            "it refused this client's certificate: pass --cert and --key with one its client CA signed"
        } else {
            "it requires a client certificate (mTLS): pass --cert and --key with one its client CA signed"
        };
        return Some(Failure::new(
            exit::DENIED,
            format!(
                "the lifeboat server at {url} closed the connection ({cause}): {why} (if it needs none, it stopped: check it)"
            ),
        ));
    }
    None
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client, Failure> {
        // `host:port` means plaintext HTTP/2; `https://` means TLS, never a
        // silent fallback to plaintext.
        let url = &if url.contains("://") { url.to_string() } else { format!("http://{url}") };
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| Failure::invalid(format!("--server {url:?} is not a valid URL: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        let tls = TLS.get().cloned().unwrap_or_default();
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(tls.config()?).map_err(|e| {
                let cause = root_cause(&e);
                tls_failure(url, &cause).unwrap_or_else(|| Failure::invalid(format!("TLS for {url}: {cause}")))
            })?;
        } else if tls.cert.is_some() || tls.ca.is_some() {
            return Err(Failure::invalid(format!(
                "--ca/--cert are for TLS, but --server {url} is plaintext: use https://"
            )));
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let cause = root_cause(&e);
            tls_failure(url, &cause).unwrap_or_else(|| {
                Failure::new(exit::UNREACHABLE, format!("cannot reach lifeboat server at {url}: {cause}"))
            })
        })?;
        Ok(Client { channel, url: url.to_string(), request_id: uuid::Uuid::new_v4().simple().to_string() })
    }

    /// A request carrying who is asking.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(v) = actor_name().parse() {
            req.metadata_mut().insert(ACTOR_HEADER, v);
        }
        if let Ok(v) = self.request_id.parse() {
            req.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
        if let Some(Ok(v)) = TOKEN.get().map(|t| format!("Bearer {t}").parse()) {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// Turns a status into a failure with its exit code.
    pub fn fail(&self, status: tonic::Status) -> Failure {
        // Only a transport failure can be a TLS refusal; an error the server
        // sent (one naming an AWS `ExpiredToken`, say) is never taken for one.
        let transport = matches!(status.code(), Code::Unknown | Code::Unavailable | Code::Cancelled);
        if transport && let Some(f) = tls_failure(&self.url, &root_cause(&status)) {
            return f;
        }
        let code = exit_code(status.code());
        let message = if status.code() == Code::Unavailable && status.message().is_empty() {
            format!("lifeboat server at {} is unavailable", self.url)
        } else if status.code() == Code::Unavailable && status.message().contains("transport") {
            format!("lost connection to lifeboat server at {}: {}", self.url, status.message())
        } else {
            status.message().to_string()
        };
        Failure::new(code, message)
    }
}

static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static TLS: std::sync::OnceLock<TlsFiles> = std::sync::OnceLock::new();

/// `--ca`, `--cert`, `--key`: PEM files for `https://` servers.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    fn config(&self) -> Result<tonic::transport::ClientTlsConfig, Failure> {
        let read = |p: &std::path::Path, flag: &str| {
            std::fs::read(p).map_err(|e| Failure::invalid(format!("--{flag} {}: {e}", p.display())))
        };
        let mut c = tonic::transport::ClientTlsConfig::new();
        c = match &self.ca {
            Some(ca) => c.ca_certificate(tonic::transport::Certificate::from_pem(read(ca, "ca")?)),
            None => c.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                c = c.identity(tonic::transport::Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
            }
            (None, None) => {}
            _ => return Err(Failure::invalid("--cert and --key go together (a client certificate and its key)")),
        }
        Ok(c)
    }
}

pub fn set_tls(files: TlsFiles) {
    let _ = TLS.set(files);
}

/// The bearer token every request of this invocation carries.
pub fn set_token(token: &str) {
    let _ = TOKEN.set(token.to_string());
}

static AUTHOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `--author` (or `LIFEBOAT_ACTOR`): who this invocation acts for, in audit records.
pub fn set_author(name: &str) {
    let _ = AUTHOR.set(name.to_string());
}

/// `--author`, else `user@host`, the user from `$USER`, `$LOGNAME` or this
/// process's user ID in /etc/passwd (a cron job or a container has no `$USER`).
fn actor_name() -> String {
    if let Some(a) = AUTHOR.get().filter(|a| !a.trim().is_empty()) {
        return a.clone();
    }
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .or_else(user_of_this_process)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if host.is_empty() { user } else { format!("{user}@{host}") }
}

/// The name /etc/passwd gives this process's user ID (`uid:1000` without one).
fn user_of_this_process() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    });
    Some(name.unwrap_or_else(|| format!("uid:{uid}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_design_exit_codes() {
        assert_eq!(exit_code(Code::InvalidArgument), 2);
        assert_eq!(exit_code(Code::NotFound), 3);
        assert_eq!(exit_code(Code::Aborted), 4);
        assert_eq!(exit_code(Code::FailedPrecondition), 1);
        assert_eq!(exit_code(Code::PermissionDenied), 5);
        assert_eq!(exit_code(Code::Unavailable), 6);
        assert_eq!(exit_code(Code::DataLoss), 1);
    }
}
