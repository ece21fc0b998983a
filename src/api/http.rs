//! The server's HTTP side (axum): `/healthz`, `/readyz`, `/metrics` and the
//! pager webhooks (webhooks.rs), under the limits of admission.rs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// Serves until `shutdown`. `ready` is set once the store passed its
/// self-test and the gRPC API is up.
pub async fn serve(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    webhooks: Arc<super::webhooks::Webhooks>,
    limits: super::admission::Admission,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting: the store self-test has not passed yet\n")
                    }
                }
            }),
        )
        .route("/metrics", get(metrics))
        .merge(webhooks.router());
    super::admission::serve_http(listener, app, limits, shutdown).await
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], crate::metrics::render())
}
