//! Bearer tokens with roles for the gRPC API. Tokens are configured by
//! their SHA-256 (`[[auth.tokens]]`), never stored themselves; every RPC
//! needs a role (health and reflection stay open). With no tokens
//! configured, authentication is off (and the server stays on loopback
//! unless `--insecure`).

use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use tonic::Status;
use tonic::codegen::http;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Pushes, plans, recovers, approves, cancels.
    Operator,
    /// Also promotes, rejects and tags.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `[[auth.tokens]]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token (`lifeboat token create` prints it).
    pub sha256: String,
}

/// Who called: the token's name and role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The role each RPC needs; `None`: open to all (health, reflection).
/// Unknown methods need admin.
pub fn required(path: &str) -> Option<Role> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
        return None;
    }
    let service = service.strip_prefix("lifeboat.v1.").unwrap_or(service);
    Some(match (service, method) {
        ("SnapshotService", "Get" | "List" | "Diff" | "Validate" | "GetPolicy") => Role::Viewer,
        ("SnapshotService", "Create") => Role::Operator,
        ("SnapshotService", "Promote" | "Reject" | "Tag") => Role::Admin,
        ("RecoveryService", "Plan" | "Get" | "List" | "Watch" | "Logs" | "Status") => Role::Viewer,
        ("RecoveryService", "Start" | "Cancel" | "Approve" | "Resume") => Role::Operator,
        ("ImageService", "List") => Role::Viewer,
        ("ImageService", "Import") => Role::Operator,
        ("DriftService", "Check") => Role::Viewer,
        ("DrillService", "Get" | "List" | "GetReport" | "ListSchedules") => Role::Viewer,
        ("DrillService", "Start" | "Sweep") => Role::Operator,
        ("DrillService", "CreateSchedule" | "DeleteSchedule") => Role::Admin,
        ("AuditService", "List") => Role::Viewer,
        // It writes scratch objects to the store.
        ("StoreService", "Check") => Role::Operator,
        _ => Role::Admin,
    })
}

pub fn sha256_hex(token: &str) -> String {
    crate::domain::snapshot::sha256_hex(token.as_bytes())
}

/// The credentials of an `authorization: Bearer …` value; the scheme is
/// case-insensitive (RFC 9110), so `bearer …` is the same.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

/// Equal without an early exit, so timing tells nothing about a digest.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    /// Checks the entries: unique names, digests that are 64 hex digits.
    pub fn new(entries: Vec<TokenEntry>) -> Result<Tokens, String> {
        let mut names = std::collections::BTreeSet::new();
        for e in &entries {
            if !names.insert(e.name.as_str()) {
                return Err(format!("auth.tokens: the name {} is used twice", e.name));
            }
            if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.tokens: {}'s sha256 is not 64 hex digits; `lifeboat token create` prints the entry",
                    e.name
                ));
            }
        }
        Ok(Tokens { entries })
    }

    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The caller of a request to `path` with this `authorization` value.
    pub fn check(&self, path: &str, authorization: Option<&str>) -> Result<Option<Caller>, Status> {
        let Some(need) = required(path) else { return Ok(None) };
        if !self.enabled() {
            return Ok(None);
        }
        let token = authorization.and_then(bearer).map(str::trim).unwrap_or_default();
        if token.is_empty() {
            return Err(Status::unauthenticated(
                "this server requires a token: pass --token or set LIFEBOAT_TOKEN (authorization: Bearer …)",
            ));
        }
        let digest = sha256_hex(token);
        let found = self.entries.iter().find(|e| same(e.sha256.to_ascii_lowercase().as_bytes(), digest.as_bytes()));
        let Some(e) = found else {
            return Err(Status::unauthenticated("the token is not one this server knows"));
        };
        if e.role < need {
            return Err(Status::permission_denied(format!(
                "token {} has the {} role; {path} needs {}",
                e.name,
                e.role.as_str(),
                need.as_str()
            )));
        }
        Ok(Some(Caller { name: e.name.clone(), role: e.role }))
    }
}

/// Who asks for a long-lived stream, for its share (engine/streams.rs):
/// the token's name and whether it is a viewer's; anonymous without tokens.
pub fn stream_caller<T>(req: &tonic::Request<T>) -> crate::engine::streams::StreamCaller {
    match req.extensions().get::<Caller>() {
        Some(c) => crate::engine::streams::StreamCaller { name: c.name.clone(), viewer: c.role == Role::Viewer },
        None => Default::default(),
    }
}

/// For a part of a request that needs more than the RPC does (`drill run
/// --promote-on-pass` moves known-good, which is admin's): refused when the
/// caller's token has a lower role. Without tokens there is no role to check.
pub fn require<T>(req: &tonic::Request<T>, need: Role, what: &str) -> Result<(), Status> {
    match req.extensions().get::<Caller>() {
        Some(c) if c.role < need => Err(Status::permission_denied(format!(
            "token {} has the {} role; {what} needs {}",
            c.name,
            c.role.as_str(),
            need.as_str()
        ))),
        _ => Ok(()),
    }
}

/// The tower layer that checks every gRPC request before it is routed.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Arc<Tokens>,
}

impl AuthLayer {
    pub fn new(tokens: Arc<Tokens>) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, tokens: self.tokens.clone() }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Arc<Tokens>,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let authorization = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match self.tokens.check(req.uri().path(), authorization) {
            Ok(caller) => {
                if let Some(c) = caller {
                    req.extensions_mut().insert(c);
                }
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let e = |name: &str, role, token: &str| TokenEntry { name: name.into(), role, sha256: sha256_hex(token) };
        Tokens::new(vec![e("ci", Role::Viewer, "v"), e("oncall", Role::Operator, "o"), e("lead", Role::Admin, "a")])
            .unwrap()
    }

    #[test]
    fn roles_gate_methods_and_unknown_tokens_are_refused() {
        let t = tokens();
        let promote = "/lifeboat.v1.SnapshotService/Promote";
        assert_eq!(t.check(promote, None).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(t.check(promote, Some("Bearer nope")).unwrap_err().code(), tonic::Code::Unauthenticated);
        let denied = t.check(promote, Some("Bearer o")).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("token oncall has the operator role"), "{}", denied.message());
        assert_eq!(t.check(promote, Some("Bearer a")).unwrap().unwrap().name, "lead");
        // The scheme is case-insensitive, as on the webhook port.
        assert_eq!(t.check(promote, Some("bearer a")).unwrap().unwrap().name, "lead");
        assert_eq!(t.check(promote, Some("BEARER a")).unwrap().unwrap().name, "lead");
        assert_eq!(required("/lifeboat.v1.SnapshotService/SetPolicy"), Some(Role::Admin));
        assert_eq!(required("/lifeboat.v1.SnapshotService/GetPolicy"), Some(Role::Viewer));
        assert!(t.check("/grpc.health.v1.Health/Check", None).unwrap().is_none(), "health is open");
        assert_eq!(required("/lifeboat.v1.SnapshotService/NewThing"), Some(Role::Admin));
        assert!(Tokens::default().check(promote, None).unwrap().is_none(), "no tokens: off");
        let dup = Tokens::new(vec![tokens().entries[0].clone(), tokens().entries[0].clone()]).unwrap_err();
        assert!(dup.contains("used twice"), "{dup}");
    }
}
