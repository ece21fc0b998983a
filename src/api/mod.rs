//! The gRPC API: the only module that knows tonic and prost. Handlers are
//! thin: convert, call the repositories, convert back, audit mutations.

pub mod admission;
mod audit;
pub mod auth;
mod convert;
mod drift;
mod drill;
pub mod http;
mod image;
mod recovery;
mod snapshot;
pub mod status;
pub mod store;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::store::{AuditLog, DynStore, ImageRepo, SnapshotRepo};

/// Generated code for `proto/lifeboat/v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("lifeboat.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lifeboat_descriptor");
}

/// Metadata key carrying the caller's name, until token auth names callers.
pub const ACTOR_HEADER: &str = "x-lifeboat-actor";

/// Metadata key carrying an idempotency key: one per CLI invocation, the
/// same on its retries, so a retried push returns what the first created.
pub const REQUEST_ID_HEADER: &str = "x-lifeboat-request-id";

fn request_id<T>(req: &tonic::Request<T>) -> Option<String> {
    req.metadata().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// What every handler shares.
pub struct Ctx {
    pub repo: SnapshotRepo,
    pub images: ImageRepo,
    pub audit: AuditLog,
    pub engine: Arc<Engine>,
    /// Imports in progress at once, at most `Limits::imports`.
    pub imports: Arc<tokio::sync::Semaphore>,
    pub limits: Limits,
}

/// What one server accepts from its callers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// What a tarball artifact may unpack to.
    pub unpack: crate::store::archive::Limits,
    /// Image imports served at once (each buffers its artifact).
    pub imports: usize,
    /// An import stream that sends nothing for this long is dropped.
    pub import_idle: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            unpack: crate::store::archive::Limits::default(),
            imports: 2,
            import_idle: std::time::Duration::from_secs(30),
        }
    }
}

impl Ctx {
    pub fn new(store: DynStore, engine: Arc<Engine>, limits: Limits) -> Arc<Ctx> {
        Arc::new(Ctx {
            repo: SnapshotRepo::new(store.clone()),
            images: ImageRepo::new(store.clone()).with_limits(limits.unpack),
            audit: AuditLog::new(store),
            engine,
            imports: Arc::new(tokio::sync::Semaphore::new(limits.imports)),
            limits,
        })
    }

    /// Every mutation passes here: run it, then record who did what and how it went.
    pub(crate) async fn audited<T>(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        op: impl Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        self.audited_as(actor, action, target, |_| target.to_string(), op).await
    }

    /// The same, recording the target as what the operation acted on once
    /// it succeeded (`shop@v3`, not the `shop@latest` it was asked for).
    pub(crate) async fn audited_as<T>(
        &self,
        actor: &str,
        action: &str,
        asked: &str,
        acted_on: impl FnOnce(&T) -> String,
        op: impl Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        self.audited_noting(actor, action, asked, |t| (acted_on(t), Vec::new()), op).await
    }

    /// As `audited_as`, with what the success overrode said in its outcome
    /// (`ok: promoted with --force although …`).
    pub(crate) async fn audited_noting<T>(
        &self,
        actor: &str,
        action: &str,
        asked: &str,
        acted_on: impl FnOnce(&T) -> (String, Vec<String>),
        op: impl Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        let result = op.await;
        let (target, notes) = match &result {
            Ok(t) => acted_on(t),
            Err(_) => (asked.to_string(), Vec::new()),
        };
        let target = target.as_str();
        let outcome = match &result {
            Ok(_) if notes.is_empty() => "ok".to_string(),
            Ok(_) => format!("ok: {}", notes.join("; ")),
            Err(e) => format!("error: {e}"),
        };
        let m = crate::metrics::get();
        let ok = if result.is_ok() { "ok" } else { "error" };
        m.operations.get_or_create(&crate::metrics::labels(&[("action", action), ("outcome", ok)])).inc();
        if let Err(e) = self.audit.record(actor, action, target, &outcome).await {
            tracing::error!(action, target, error = %e, "cannot write audit record");
            if result.is_ok() {
                return Err(crate::error::Error::Internal(format!(
                    "{action} on {target} succeeded but its audit record could not be written: {e}"
                )));
            }
        }
        result
    }
}

fn actor<T>(req: &tonic::Request<T>) -> String {
    let claimed = req
        .metadata()
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .unwrap_or("anonymous");
    let peer = req.remote_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into());
    // An authenticated caller is its token's name; what the client says is a note.
    match req.extensions().get::<auth::Caller>() {
        Some(c) => format!("{} (claimed {claimed}, from {peer})", c.name),
        None => format!("{claimed} (from {peer})"),
    }
}

/// Serves the gRPC API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    tokens: Arc<auth::Tokens>,
    tls: Option<crate::config::TlsPem>,
    limits: admission::Admission,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<pb::snapshot_service_server::SnapshotServiceServer<snapshot::Snapshots>>().await;
    // Both reflection versions: older clients (grpcurl 1.8) speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        let identity = tonic::transport::Identity::from_pem(t.cert, t.key);
        // A TLS handshake that does not finish in time frees its place.
        let mut c = tonic::transport::ServerTlsConfig::new().identity(identity).timeout(limits.header_timeout);
        if let Some(ca) = t.client_ca {
            c = c.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(c)?;
    }
    builder
        .layer(tower::util::MapResponseLayer::new(status::fix_transport_codes))
        .layer(auth::AuthLayer::new(tokens))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(pb::recovery_service_server::RecoveryServiceServer::new(recovery::Recovery::new(ctx.clone())))
        .add_service(pb::store_service_server::StoreServiceServer::new(store::Store::new(ctx.clone())))
        .add_service(pb::drift_service_server::DriftServiceServer::new(drift::Drift::new(ctx.clone())))
        .add_service(pb::drill_service_server::DrillServiceServer::new(drill::Drill::new(ctx.clone())))
        .add_service(pb::audit_service_server::AuditServiceServer::new(audit::Audit::new(ctx.clone())))
        .add_service(
            pb::image_service_server::ImageServiceServer::new(image::Images::new(ctx.clone()))
                .max_decoding_message_size(2 * 1024 * 1024),
        )
        .add_service(
            pb::snapshot_service_server::SnapshotServiceServer::new(snapshot::Snapshots::new(ctx))
                .max_decoding_message_size(crate::domain::manifest::MAX_MANIFEST_BYTES + 64 * 1024),
        )
        .serve_with_incoming_shutdown(
            admission::admitted(listener, Arc::new(Semaphore::new(limits.grpc_connections)), limits.header_timeout),
            shutdown,
        )
        .await?;
    Ok(())
}
