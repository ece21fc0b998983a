//! `lifeboat server`: open the store, serve the API until SIGINT/SIGTERM.

use tokio::net::TcpListener;

use super::{Failure, ServerArgs, exit};
use crate::api;
use crate::config::{Config, DEFAULT_LISTEN, DEFAULT_STORE};

pub async fn run(args: ServerArgs) -> Result<(), Failure> {
    let config = match &args.config {
        Some(p) => Config::load(p).map_err(|e| Failure::invalid(e.to_string()))?,
        None => Config::default(),
    };
    let url = args.store.or(config.store.url.clone()).unwrap_or_else(|| DEFAULT_STORE.into());
    let listen = args.listen.or(config.server.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let store = crate::store::open(&url, &config.store.s3())
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot open store {url}: {e:#}")))?;
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    // The first stdout line is for scripts and tests that start a server on port 0.
    println!("lifeboat server listening on {addr}");
    tracing::info!(grpc = %addr, store = %store.describe(), "lifeboat server started");
    api::serve(listener, api::Ctx::new(store), shutdown_signal())
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("server failed: {e:#}")))?;
    tracing::info!("lifeboat server stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
